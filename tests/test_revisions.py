from __future__ import annotations

import subprocess

import pytest

from pytest_repoclones import InvalidInputError
from pytest_repoclones.revisions import check_branch_name, parse_revision

SHA1 = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("commit", "kind"),
    [
        (None, "default"),
        (SHA1, "full"),
        (SHA1.upper(), "full"),
        ("a" * 64, "full"),
        ("0123456", "abbrev"),
        ("main", "name"),
        ("v1.0", "name"),
        ("release/2.x", "name"),
        ("refs/pull/7/head", "name"),
        ("abc", "name"),  # too short to be an abbreviation
    ],
)
def test_commit_forms_are_classified(commit: str | None, kind: str) -> None:
    assert parse_revision(commit).kind == kind


def test_full_names_are_lowercased() -> None:
    assert parse_revision(SHA1.upper()).text == SHA1


@pytest.mark.parametrize(
    "commit",
    [
        "",
        "-x",
        "--output=/tmp/x",
        "main~1",
        "HEAD^",
        "a..b",
        "foo@{1}",
        "@",
        "with space",
        "new\nline",
        "nul\x00",
        "trailing/",
        "dot.",
        "x.lock",
        "a//b",
        ".hidden",
        "star*",
        "x" * 300,
    ],
)
def test_invalid_commits_are_rejected_before_git(commit: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_revision(commit)


@pytest.mark.parametrize("commit", [1234567, b"main", ["main"]])
def test_non_string_commits_are_rejected(commit: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a string"):
        parse_revision(commit)


@pytest.mark.parametrize(
    "name",
    ["main", "feature/x", "v1.0", "a-b_c", "x..y", "x.lock", "a//b", "-bad", "sp ace", "q?"],
)
def test_ref_name_check_agrees_with_git(name: str) -> None:
    git_says = (
        subprocess.run(
            ["git", "check-ref-format", "--allow-onelevel", name], capture_output=True, check=False
        ).returncode
        == 0
    )
    try:
        check_branch_name(name)
        ours = True
    except InvalidInputError:
        ours = False
    assert ours == git_says
