"""Upstreams and git lock files that used to break an entry for good (issue 9)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from upstream import Upstream, git

from pytest_repoclones import RepoStore


def test_tag_replaced_by_tags_below_its_name_does_not_break_refresh(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """`nightly` deleted upstream and `nightly/2024-06-01` made: every later refresh failed,
    for every name including main, and the error blamed the remote."""
    c1 = upstream.rev("v1.0^{commit}")
    upstream.tag("nightly", c1)
    upstream.tag("stable/1", c1)
    assert RepoStore(cache_dir, session_id="one").resolve(upstream.url, "nightly") == c1
    upstream.delete_ref("refs/tags/nightly")
    upstream.tag("nightly/2024-06-01", upstream.rev("main"))
    upstream.delete_ref("refs/tags/stable/1")
    upstream.tag("stable", c1)  # and the other way round: a directory becomes a tag

    second = RepoStore(cache_dir, session_id="two")
    assert second.resolve(upstream.url, "main") == upstream.rev("main")
    assert second.resolve(upstream.url, "nightly/2024-06-01") == upstream.rev("main")
    assert second.resolve(upstream.url, "stable") == c1
    wt = second.add_worktree(upstream.url, "nightly/2024-06-01", tmp_path / "wt")
    assert wt.commit == upstream.rev("main")
    second.remove_worktree(wt)


def test_upstream_branch_named_head_can_be_cloned(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """A branch called HEAD upstream (git allows it through update-ref; plain `git clone`
    copes) made the repository impossible to clone: two sources for refs/remotes/origin/HEAD."""
    upstream.set_ref("refs/heads/HEAD", upstream.rev("v1.0^{commit}"))
    store = RepoStore(cache_dir)
    assert store.resolve(upstream.url, None) == upstream.rev("main")  # the default branch
    assert store.resolve(upstream.url, "feature") == upstream.rev("feature")
    wt = store.add_worktree(upstream.url, None, tmp_path / "wt")
    assert wt.commit == upstream.rev("main")
    store.remove_worktree(wt)


def test_git_lock_file_dated_in_the_future_is_cleared(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    """A stale lock file with an mtime in the future (clock stepped back, NFS server ahead)
    never looked old: every add and remove failed and branches leaked."""
    wt = store.add_worktree(upstream.url, "main", tmp_path / "one")
    lock = wt.git_dir / "packed-refs.lock"
    lock.write_text("")
    future = time.time() + 3600
    os.utime(lock, (future, future))
    store.remove_worktree(wt)  # `update-ref -d` takes packed-refs.lock
    assert not lock.exists()
    refs = git(f"--git-dir={wt.git_dir}", "for-each-ref", "refs/heads/")
    assert wt.branch not in refs
