"""Reuse at git's floor (issue 14): moving a parked worktree runs what git itself needs to move
a worktree in place (one forced checkout, one clean) plus one listing, and nothing that walks
the tree twice; what it skips is still undone (the index, flags, modes, stray attributes, the
old branch)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from upstream import Upstream, git, trace_events

from pytest_repoclones import RepoStore


def git_commands(trace: Path) -> Counter[str]:
    return Counter(str(e.get("name")) for e in trace_events(trace) if e.get("event") == "cmd_name")


def test_a_move_runs_one_checkout_one_clean_and_one_listing(
    upstream: Upstream, store: RepoStore, tmp_path: Path, trace_file: Path
) -> None:
    reusing = RepoStore(store.cache_dir, reuse=True)
    first = reusing.add_worktree(upstream.url, "v1.0", tmp_path / "a")
    (first / "scratch.txt").write_text("left by the test\n")
    git("update-index", "--assume-unchanged", "README.md", cwd=first)
    reusing.remove_worktree(first)  # parked
    # By full name: a tag would be resolved first (one more git, not the move's).
    sha = upstream.rev("v1.1^{commit}")
    trace_file.unlink(missing_ok=True)
    moved = reusing.add_worktree(upstream.url, sha, tmp_path / "b")
    assert not first.path.exists(), "not reused"
    commands = git_commands(trace_file)
    # The old branch, a loose ref, goes without a git process.
    assert commands == Counter({"checkout": 1, "clean": 1, "ls-files": 1})
    assert git("status", "--porcelain", "--ignored", cwd=moved) == ""
    assert "h README.md" not in git("ls-files", "-v", cwd=moved)
    reusing.close()


def test_the_index_put_back_is_the_one_our_checkout_wrote(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    """Whatever the test did to the index (staged a file, removed every entry), the move
    starts from ours: staged files are gone, every tracked file is back."""
    reusing = RepoStore(store.cache_dir, reuse=True)
    first = reusing.add_worktree(upstream.url, "v1.1", tmp_path / "a")
    (first / "staged.txt").write_text("staged\n")
    git("add", "staged.txt", cwd=first)
    git("rm", "--quiet", "--cached", "-r", ".", cwd=first)
    reusing.remove_worktree(first)
    moved = reusing.add_worktree(upstream.url, "v1.0", tmp_path / "b")
    assert not first.path.exists(), "not reused"
    assert not (moved / "staged.txt").exists()
    assert git("status", "--porcelain", "--ignored", cwd=moved) == ""
    assert sorted(git("ls-files", cwd=moved).splitlines()) == ["README.md", "src/app.py"]
    reusing.close()


def test_modes_changed_in_the_same_second_git_wrote_the_file_are_undone(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    """git sees a chmod through the ctime, to the second only: a test that chmods at once
    escapes it, and the mode survey must catch it."""
    reusing = RepoStore(store.cache_dir, reuse=True)
    first = reusing.add_worktree(upstream.url, "v1.1", tmp_path / "a")
    os.chmod(first / "README.md", 0o400)  # same in v1.0 and v1.1: git writes it no more
    os.chmod(first / "src", 0o500)
    reusing.remove_worktree(first)
    moved = reusing.add_worktree(upstream.url, "v1.0", tmp_path / "b")
    assert not first.path.exists(), "not reused"
    umask = os.umask(0)
    os.umask(umask)
    assert (moved / "README.md").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (moved / "src").stat().st_mode & 0o777 == 0o777 & ~umask
    reusing.close()


def test_a_branch_a_test_packed_is_still_deleted(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    """Our branches are deleted without git where they are loose files only; one that a test
    packed (`git pack-refs`, `gc`) is deleted by git, packed copy and all."""
    wt = store.add_worktree(upstream.url, "v1.0", tmp_path / "a")
    git("pack-refs", "--all", cwd=wt)
    packed_branch = wt.branch
    store.remove_worktree(wt)
    loose = store.add_worktree(upstream.url, "v1.1", tmp_path / "b")
    loose_branch = loose.branch
    store.remove_worktree(loose)
    git_dir = store.git_dir(upstream.url)
    for branch in (packed_branch, loose_branch):
        assert git(f"--git-dir={git_dir}", "branch", "--list", branch) == ""
        assert not (git_dir / "logs" / "refs" / "heads" / branch).exists()
    assert not (git_dir / "refs" / "heads" / "repoclones").exists(), "empty directories left"
