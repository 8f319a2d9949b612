from __future__ import annotations

from pathlib import Path

import pytest

from pytest_repoclones import InvalidInputError
from pytest_repoclones.urls import carries_secret, parse_url, redact


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
    assert parsed.canonical == "ssh://git@github.com/org/repo"


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


# -- identity: two URLs share an entry only when they name the same repository for certain ----
#
# What git sends over ssh decides (checked against git in test_url_identity.py): the login picks
# the home directory, 'host:x' and 'ssh://host/~/x' both send '~/x' or 'x' (relative to it),
# 'ssh://host/x' sends '/x'.


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("alice@host:project.git", "bob@host:project.git"),
        ("host:project.git", "alice@host:project.git"),
        ("ssh://alice@host/srv/x", "ssh://bob@host/srv/x"),
        ("ssh://host/srv/x", "ssh://git@host/srv/x"),
        ("host:x", "ssh://host/x"),
        ("alice@host:x", "alice@host:/x"),
        ("ssh://host/~/x", "ssh://host/x"),
        ("ssh://host:2222/x", "ssh://host/x"),
        ("git@github.com:org/repo", "ssh://github.com/org/repo"),
        ("git@github.com:org/repo", "https://github.com/org/repo"),
    ],
)
def test_ssh_urls_of_possibly_different_repositories_never_share_an_entry(
    one: str, other: str
) -> None:
    assert parse_url(one).key != parse_url(other).key


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("host:x", "ssh://host/~/x"),
        ("host:x", "host:~/x"),
        ("alice@host:x.git", "ssh://alice@HOST/~/x/"),
        ("alice@host:~alice/x", "ssh://alice@host/~alice/x.git"),
        ("alice@host:/srv/x", "ssh://alice@host/srv/x.git"),
        ("alice@Host:/srv/x", "git+ssh://alice@host/srv/x"),
        ("ssh+git://alice@host/srv/x", "ssh://alice@host/srv/x"),
        ("ssh://al%69ce@host/srv/a%20b", "alice@host:/srv/a b"),  # git decodes ssh:// URLs
        ("ssh://alice:pw@host/srv/x", "ssh://alice@host/srv/x"),
        # Forges' ssh paths are repository names: relative or absolute, any case.
        ("git@github.com:Org/Repo.git", "ssh://git@github.com/org/repo"),
        ("git@GitLab.com:org/repo/", "git+ssh://git@gitlab.com/Org/Repo.git"),
        ("git@bitbucket.org:Org/Repo", "ssh://git@bitbucket.org/org/repo"),
    ],
)
def test_ssh_spellings_of_one_repository_share_an_entry(one: str, other: str) -> None:
    assert parse_url(one).key == parse_url(other).key


def test_ssh_user_is_kept_and_password_dropped_in_the_canonical_form() -> None:
    assert parse_url("alice@host:project.git").canonical == "ssh://alice@host/~/project"
    parsed = parse_url("ssh://alice:s3cret@host/srv/x.git")
    assert parsed.canonical == "ssh://alice@host/srv/x"
    assert "s3cret" not in parsed.fetch_url + parsed.key + repr(parsed)


def test_canonical_form_parses_back_to_the_same_entry(tmp_path: Path) -> None:
    # cache_admin rebuilds an entry from the canonical form stored in its marker.
    for url in (
        "alice@host:project.git",
        "ssh://host/srv/a%20b.git",
        "git@github.com:Org/Repo.git",
        "https://user:pw@example.com/org/repo.git",
        str(tmp_path / "a b é%41" / "repo.git"),
    ):
        parsed = parse_url(url)
        assert parse_url(parsed.canonical).key == parsed.key, url


@pytest.mark.parametrize("name", ["with space", "accentué", "per%25cent", "plus+sign@at#hash?q"])
def test_percent_encoded_file_url_and_plain_path_share_an_entry(tmp_path: Path, name: str) -> None:
    repo = tmp_path / name / "repo.git"
    plain = parse_url(str(repo))
    for spelling in (repo.as_uri(), repo.as_uri() + "/", f"file://localhost{repo.as_uri()[7:]}"):
        parsed = parse_url(spelling)
        assert parsed.key == plain.key, spelling
        assert parsed.fetch_url == repo.as_uri(), "git decodes it back to the directory"


# -- credentials with unencoded '#', '/', '?' -------------------------------------------------

AWKWARD_PASSWORDS = ["pa#ss", "p/ss", "p?w", "Zq7#Kx9/Wv3?Pm", "#Hd8Lq", "9/Jm4Tz", "Rg5@Yp?Bn#Ck/"]
AWKWARD_FORMS = [
    "https://user:{pw}@host.example/repo",
    "http://user:{pw}@host.example:8080/org/repo.git",
    "ssh://user:{pw}@host.example/srv/repo.git",
    "https://user:{pw}@host.example/org/repo@v2",
]


def _leaks(text: str, secret: str) -> list[str]:
    """Every piece of ``secret`` of 3 characters or more that appears in ``text``."""
    return [secret[i : i + 3] for i in range(len(secret) - 2) if secret[i : i + 3] in text]


def _texts_of(error: InvalidInputError) -> str:
    return "\n".join([str(error), repr(error), repr(error.args), *map(str, vars(error).values())])


@pytest.mark.parametrize("password", AWKWARD_PASSWORDS)
@pytest.mark.parametrize("form", AWKWARD_FORMS)
def test_password_with_unencoded_delimiters_is_refused_without_showing_it(
    form: str, password: str
) -> None:
    # git and curl end the authority at the first '/', '?' or '#', so such a URL means another
    # host to them; which reading was meant cannot be told, so it is refused, not guessed.
    url = form.format(pw=password)
    assert _leaks(redact(url), password) == []
    assert carries_secret(url)
    with pytest.raises(InvalidInputError) as info:
        parse_url(url)
    assert _leaks(_texts_of(info.value), password) == []
    assert "percent-encode" in (info.value.hint or "")
    if "@v2" not in form:  # (an '@' in the path hides the host too: see redact's test)
        assert "host.example" in str(info.value)  # still says which repository


@pytest.mark.parametrize(
    "url",
    [
        "alice:{pw}@host.example:org/repo.git",  # scp-like syntax cannot carry a password
        "https://alice:{pw}@host.example/" + "a" * 3000,  # too long: cut after redacting
        "https://alice:{pw}@host.example/re\npo",
        "https://alice:{pw}@host.example:99999/repo",
        "https://alice:{pw}@[::1/repo",
    ],
    ids=["scp-like", "too-long", "control-character", "bad-port", "bad-ipv6"],
)
@pytest.mark.parametrize("password", ["Zq7Kx9Wv3Pm", "Zq7#Kx9/Wv3?Pm", "x" * 100 + "Zq7"])
def test_rejected_urls_never_show_the_password(url: str, password: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_url(url.format(pw=password))
    assert _leaks(_texts_of(info.value), password) == []


def test_encoded_delimiters_in_credentials_are_decoded_for_git() -> None:
    parsed = parse_url("https://us%2Fer:p%23s%2Fs%3Fw%40rd@host.example/repo.git")
    assert (parsed.username, parsed.password) == ("us/er", "p#s/s?w@rd")
    assert parsed.fetch_url == "https://host.example/repo.git"
    assert parsed.redacted == "https://us%2Fer:***@host.example/repo.git"
    # An unencoded '@' is unambiguous: the userinfo ends at the last '@' of the authority.
    assert parse_url("https://user:p@ss@host.example/repo").password == "p@ss"


def test_repr_of_a_parsed_url_hides_its_credentials() -> None:
    for url in ("https://alice:s3cretpw@host.example/r", "https://t0kenvalue@host.example/r"):
        text = repr(parse_url(url))
        assert "s3cretpw" not in text
        assert "t0kenvalue" not in text
        assert "host.example" in text


def test_redact_hides_everything_before_the_last_at_followed_by_a_host() -> None:
    assert redact("https://user:pa#ss@host/repo") == "https://user:***@host/repo"
    assert redact("https://user:p/ss@host/x") == "https://user:***@host/x"
    assert redact("https://u:p?w@h/r") == "https://u:***@h/r"
    assert redact("https://t/k#n@host/r") == "https://***@host/r"
    assert redact("alice:pw@host:org/repo") == "alice:***@host:org/repo"
    # Over-redacting a path that holds an '@' is the price of never missing a password.
    assert redact("https://host/a@b/c") == "https://***@b/c"
    # Nothing to hide: unchanged.
    for url in ("ssh://git@host/x", "git@host:x", "file:///tmp/a@b/x", "/tmp/a:b@c/x"):
        assert redact(url) == url
