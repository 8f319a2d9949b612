from __future__ import annotations

import pytest

from pytest_repoclones import InvalidInputError
from pytest_repoclones.urls import parse_url, redact


@pytest.mark.parametrize(
    "variant",
    [
        "https://github.com/psf/requests",
        "https://github.com/psf/requests.git",
        "https://github.com/psf/requests/",
        "https://github.com/psf/requests.git/",
        "https://GitHub.com/PSF/Requests",
        "https://user:token@github.com/psf/requests.git",
    ],
)
def test_variants_of_one_repository_share_a_cache_key(variant: str) -> None:
    assert parse_url(variant).key == parse_url("https://github.com/psf/requests").key


def test_cache_key_is_readable_and_hashed() -> None:
    key = parse_url("https://example.com/org/requests.git").key
    name, _, digest = key.rpartition("-")
    assert name == "requests"
    assert len(digest) == 16
    assert int(digest, 16) >= 0


def test_different_hosts_never_share_an_entry() -> None:
    assert parse_url("https://a.example/x/repo").key != parse_url("https://b.example/x/repo").key


def test_path_case_matters_on_unknown_hosts() -> None:
    assert (
        parse_url("https://example.com/X/Repo").key != parse_url("https://example.com/x/repo").key
    )


def test_local_path_and_file_url_share_an_entry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo.git"
    assert parse_url(str(repo)).key == parse_url(repo.as_uri()).key


def test_password_never_reaches_key_fetch_url_or_redacted_form() -> None:
    parsed = parse_url("https://alice:s3cret@example.com/org/repo.git")
    for text in (parsed.key, parsed.fetch_url, parsed.canonical, parsed.redacted):
        assert "s3cret" not in text
    assert parsed.redacted == "https://alice:***@example.com/org/repo.git"
    assert parsed.fetch_url == "https://example.com/org/repo.git"  # user goes via env
    assert parsed.password == "s3cret"
    assert parsed.scrub("fatal: s3cret rejected") == "fatal: *** rejected"


def test_http_token_as_user_name_is_redacted() -> None:
    assert redact("https://ghp_abc@github.com/o/r") == "https://***@github.com/o/r"


def test_ssh_user_name_is_kept_in_redacted_form() -> None:
    assert redact("ssh://git@example.com/o/r.git") == "ssh://git@example.com/o/r.git"


def test_scp_like_url_is_ssh() -> None:
    parsed = parse_url("git@github.com:Org/Repo.git")
    assert parsed.scheme == "ssh"
    assert parsed.canonical == "ssh://github.com/org/repo"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("--upload-pack=touch /tmp/pwned", "option"),
        ("-x", "option"),
        ("ext::sh -c touch% /tmp/pwned", "Transport 'ext'"),
        ("fd::3", "Transport 'fd'"),
        ("ftp://example.com/repo.git", "not allowed"),
        ("https://example.com/repo\n.git", "control character"),
        ("https://example.com/\x00repo", "control character"),
        ("https://" + "a" * 3000, "characters long"),
        ("https:///no-host", "no host"),
        ("file://remote.example/x", "remote host"),
    ],
)
def test_hostile_or_malformed_urls_are_rejected(url: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        parse_url(url)


def test_protocol_list_is_configurable() -> None:
    with pytest.raises(InvalidInputError, match="not allowed"):
        parse_url("https://example.com/repo", protocols=("file",))
