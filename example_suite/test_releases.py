"""What each release of semverkit ships: its version string and its public API."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from pytest_repoclones import RepoStore, Worktree

from .helpers import git, python

WorktreeFactory = Callable[..., Worktree]

#: tag -> (version string, names in semverkit.__all__)
RELEASES = {
    "v0.1.0": ("0.1.0", {"Version", "parse"}),
    "v0.2.0": ("0.2.0", {"Version", "parse", "compare"}),
    "v0.2.1": ("0.2.1", {"Version", "parse", "compare"}),
    "v1.0.0": ("1.0.0", {"Version", "parse", "compare", "compare_versions", "bump"}),
}
LIGHTWEIGHT_TAGS = {"v0.1.0"}


@pytest.mark.parametrize("tag", RELEASES)
def test_release_contents(worktree: WorktreeFactory, upstream_url: str, tag: str) -> None:
    """The version in the code and in the packaging metadata both match the tag."""
    wt = worktree(upstream_url, tag)
    version, api = RELEASES[tag]
    assert python(wt, "import semverkit; print(semverkit.__version__)") == version
    metadata = re.search(r'^version = "(.+)"$', (wt / "pyproject.toml").read_text(), re.M)
    assert metadata is not None
    assert metadata.group(1) == version
    assert set(python(wt, "import semverkit; print(*semverkit.__all__)").split()) == api


@pytest.mark.parametrize("tag", RELEASES)
def test_checkout_is_the_tagged_commit(
    worktree: WorktreeFactory, repo_store: RepoStore, upstream_url: str, tag: str
) -> None:
    """Annotated tags peel to their commit; the checkout is clean and on its own branch."""
    wt = worktree(upstream_url, tag)
    assert wt.commit == repo_store.resolve(upstream_url, tag)
    assert git(wt, "rev-parse", "HEAD") == wt.commit
    assert git(wt, "branch", "--show-current") == wt.branch
    assert git(wt, "status", "--porcelain") == ""
    assert git(wt, "describe", "--tags") == tag
    kind = git(wt, "cat-file", "-t", f"refs/tags/{tag}")
    assert kind == ("commit" if tag in LIGHTWEIGHT_TAGS else "tag")


def test_any_object_name_form_gives_the_same_checkout(
    worktree: WorktreeFactory, upstream_url: str
) -> None:
    """A tag, the full object name and a 10-digit abbreviation all name one commit."""
    by_tag = worktree(upstream_url, "v0.2.1")
    by_sha = worktree(upstream_url, by_tag.commit)
    by_abbrev = worktree(upstream_url, by_tag.commit[:10])
    assert by_tag.commit == by_sha.commit == by_abbrev.commit
    assert len({by_tag.path, by_sha.path, by_abbrev.path}) == 3
    assert len({by_tag.branch, by_sha.branch, by_abbrev.branch}) == 3
    changelog = (by_tag / "CHANGELOG.md").read_text()
    assert (by_abbrev / "CHANGELOG.md").read_text() == changelog
