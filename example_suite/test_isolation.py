"""A test may change and commit in its worktree; no other test ever sees it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_repoclones import RepoStore, Worktree

from .helpers import IDENTITY, git

WorktreeFactory = Callable[..., Worktree]


@pytest.mark.parametrize("attempt", [1, 2])
def test_commit_in_worktree_stays_private(
    worktree: WorktreeFactory, repo_store: RepoStore, upstream_url: str, attempt: int
) -> None:
    """Run twice, in any order and on any xdist worker: each run starts from a clean tree.

    Whichever attempt runs second would fail its first assertions if the other's edits or
    commit had leaked into the shared clone or the tag.
    """
    wt = worktree(upstream_url, "v1.0.0")
    release = repo_store.resolve(upstream_url, "v1.0.0")
    assert wt.commit == release
    assert git(wt, "rev-parse", "HEAD") == release
    assert git(wt, "status", "--porcelain") == ""
    assert not (wt / "NOTES.md").exists()

    (wt / "NOTES.md").write_text(f"attempt {attempt}\n")
    init = wt / "semverkit" / "__init__.py"
    init.write_text(init.read_text().replace('"1.0.0"', '"1.0.1.dev0"'))
    git(wt, "add", "--all")
    git(wt, "-c", "commit.gpgSign=false", "commit", "--quiet", "-m", "local work", env=IDENTITY)

    head = git(wt, "rev-parse", "HEAD")
    assert head != wt.commit  # wt.commit is what was checked out, not the branch tip
    assert git(wt, "rev-parse", "HEAD^") == release
    assert git(wt, "log", "-1", "--format=%an") == IDENTITY["GIT_AUTHOR_NAME"]
    assert git(wt, "rev-parse", "v1.0.0^{commit}") == release  # the tag did not move
    assert git(wt, "status", "--porcelain") == ""
