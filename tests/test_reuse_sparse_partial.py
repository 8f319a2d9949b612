"""Worktree reuse (``reuse=True`` / ``--repo-reuse``), sparse worktrees and partial clones.

Reuse: a worktree parked at teardown and moved to another commit must be indistinguishable from
a fresh worktree of that commit, whatever the previous test did to it. Each case below dirties a
worktree one way (or every way at once), parks it, moves it on, and compares it with a fresh
worktree of the same commit made by a second store without reuse.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.messages import message_of, raises_saying, without_paths
from inner import records, run
from upstream import Upstream, count_git_commands, git

from pytest_repoclones import InvalidInputError, RepoStore, Worktree, WorktreeError, _modes


@dataclass
class Project:
    """An upstream with a .gitignore, executables, a symlink, a side branch and a PR ref."""

    up: Upstream
    c0: str
    c1: str  # where dirtied worktrees start
    c2: str  # where reused worktrees move to
    side: str  # conflicts with any change to README.md made on top of c1
    pr: str  # only reachable from refs/pull/1/head

    @property
    def url(self) -> str:
        return self.up.url


@pytest.fixture
def project(make_upstream: Callable[..., Upstream]) -> Project:
    up = make_upstream("project")
    c0 = up.commit(
        {
            ".gitignore": "*.log\nbuild/\n",
            "README.md": "# project\n",
            "same.txt": "never changes\n",
            "src/app.py": "V = 0\n",
            "src/util.py": "def util():\n    return 1\n",
            "run.sh": ("#!/bin/sh\necho 0\n", "100755"),
            "tool": ("#!/bin/sh\necho tool\n", "100755"),
            "docs/index.md": "index\n",
            "docs/other.md": "other\n",
            "link": ("README.md", "120000"),
        },
        "c0",
    )
    c1 = up.commit({"src/app.py": "V = 1\n"}, "c1")
    side = up.commit({"README.md": "# side\n"}, "side", branch="side", parent=c1)
    c2 = up.commit(
        {
            "src/app.py": "V = 2\n",
            "docs/other.md": None,
            "new/file.txt": "new\n",
            "run.sh": ("#!/bin/sh\necho 2\n", "100755"),
            "tool": ("#!/bin/sh\necho tool\n", "100644"),
            "link": ("same.txt", "120000"),
        },
        "c2",
    )
    pr = up.commit({"pr.txt": "pr\n"}, "pr", parent=c2, ref="refs/pull/1/head")
    return Project(up, c0, c1, c2, side, pr)


SENTINEL_MTIME = 1_000_000_000  # 2001


def make_store(cache_dir: Path, **kwargs: Any) -> RepoStore:
    return RepoStore(cache_dir, timeout=60, lock_timeout=60, **kwargs)


def run_git(cwd: Path, *args: str) -> tuple[int, str]:
    """git in ``cwd``, for outcomes that may be failures: (returncode, stdout+stderr)."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return result.returncode, (result.stdout + result.stderr).strip()


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` except the top ``.git`` file: type, file mode and content."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel == ".git":
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", oct(info.st_mode & 0o777))
            else:
                found[rel] = ("file", oct(info.st_mode & 0o777), path.read_bytes())
    return found


def branches(store: RepoStore, url: str) -> list[str]:
    return sorted(store.test_branches(url))


def worktree_entries(store: RepoStore, url: str) -> list[str]:
    listing = git(f"--git-dir={store.git_dir(url)}", "worktree", "list", "--porcelain")
    return [line for line in listing.splitlines() if line.startswith("worktree ")]


def mark_for_reuse(wt: Worktree) -> None:
    """Give the worktree's ``.git`` file an mtime no checkout writes: the plugin moves a parked
    worktree without rewriting it, so seeing the mark again proves the worktree was reused (a
    fresh worktree may well get the same admin directory name)."""
    os.utime(wt / ".git", (SENTINEL_MTIME, SENTINEL_MTIME))


def was_reused(wt: Worktree) -> bool:
    return os.stat(wt / ".git").st_mtime == SENTINEL_MTIME


def assert_store_empty(store: RepoStore, url: str) -> None:
    assert store.live_worktrees(url) == []
    assert store.test_branches(url) == []
    assert len(worktree_entries(store, url)) == 1  # the bare repository itself


STATE_FILES = (
    "MERGE_HEAD", "MERGE_MSG", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge",
    "rebase-apply", "BISECT_LOG", "BISECT_START", "sequencer",
    "info/sparse-checkout", "refs/worktree", "refs/bisect", "index.lock",
)  # fmt: skip


def assert_like_fresh(reused: Worktree, fresh: Worktree, commit: str) -> None:
    """Everything a test can observe of ``reused`` equals ``fresh`` (same commit)."""
    assert snapshot(reused.path) == snapshot(fresh.path)
    for wt in (reused, fresh):
        assert git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=wt) == ""
        assert git("rev-parse", "HEAD", cwd=wt) == commit
        assert git("symbolic-ref", "HEAD", cwd=wt) == f"refs/heads/{wt.branch}"
        assert git("diff", "HEAD", cwd=wt) == ""
    assert reused.commit == commit
    # The index: same entries, stages, modes, and flags (assume-unchanged 'h', skip-worktree 'S').
    for args in (("ls-files", "--stage"), ("ls-files", "-v"), ("ls-files", "--others")):
        assert git(*args, cwd=reused) == git(*args, cwd=fresh), args
    # No worktree-specific config (when git allows any: extensions.worktreeConfig).
    code, out = run_git(reused.path, "config", "--worktree", "--list")
    assert code != 0 or out == "", out
    for args in (
        ("sparse-checkout", "list"),
        ("config", "--get", "core.sparseCheckout"),
        ("config", "--get", "core.fileMode"),
        ("config", "--get", "core.autocrlf"),
        ("for-each-ref", "refs/worktree/", "refs/bisect/"),
    ):
        assert run_git(reused.path, *args) == run_git(fresh.path, *args), args
    for name in STATE_FILES:
        where = Path(git("rev-parse", "--path-format=absolute", "--git-path", name, cwd=reused))
        assert not where.exists(), f"{name} left over: {where}"
    # `git worktree add` leaves an empty config.worktree (extensions.worktreeConfig is on).
    where = Path(
        git("rev-parse", "--path-format=absolute", "--git-path", "config.worktree", cwd=reused)
    )
    assert not where.exists() or where.read_text().strip() == "", where.read_text()
    # A fresh worktree's ORIG_HEAD (from its `reset --hard`) is its own commit; a reused one's
    # must not name the previous test's commits.
    code, orig = run_git(reused.path, "rev-parse", "-q", "--verify", "ORIG_HEAD")
    assert code != 0 or orig == commit
    # Nothing in progress as far as git itself is concerned.
    assert "progress" not in git("status", cwd=reused)
    assert run_git(reused.path, "rev-parse", "--verify", "-q", "MERGE_HEAD")[0] != 0


# -- ways a test can dirty its worktree ----------------------------------------------------


def modify_tracked(wt: Path, project: Project) -> None:
    (wt / "README.md").write_text("edited\n")
    (wt / "src" / "app.py").write_text("V = 'edited'\n")
    (wt / "same.txt").write_bytes(b"\x00binary\xff")
    with open(wt / "src" / "util.py", "a") as handle:
        handle.write("# appended\n")


def delete_tracked(wt: Path, project: Project) -> None:
    (wt / "same.txt").unlink()
    (wt / "link").unlink()
    shutil.rmtree(wt / "docs")
    (wt / ".gitignore").unlink()


def chmod_exec(wt: Path, project: Project) -> None:
    (wt / "same.txt").chmod(0o755)  # +x on a plain file
    (wt / "run.sh").chmod(0o644)  # -x on an executable
    (wt / "tool").chmod(0o700)  # -x for others only: git sees no change


def chmod_permissions(wt: Path, project: Project) -> None:
    # git records only the executable bit: it sees no change in any of these.
    (wt / "README.md").chmod(0o444)  # read-only
    (wt / "src" / "util.py").chmod(0o600)  # private
    (wt / "same.txt").chmod(0o666)  # world-writable


def chmod_directory(wt: Path, project: Project) -> None:
    (wt / "src").chmod(0o700)
    (wt / "docs").chmod(0o555)


def untracked(wt: Path, project: Project) -> None:
    (wt / "notes.txt").write_text("untracked\n")
    (wt / "src" / "scratch.py").write_text("x = 1\n")
    deep = wt / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("deep\n")
    (wt / "empty-dir").mkdir()
    (wt / "weird name\nwith newline").write_text("odd\n")
    (wt / "ünïcødé.txt").write_text("u\n")
    readonly = wt / "readonly"
    readonly.mkdir()
    (readonly / "locked.txt").write_text("r\n")
    (readonly / "locked.txt").chmod(0o400)
    readonly.chmod(0o500)


def ignored(wt: Path, project: Project) -> None:
    (wt / "debug.log").write_text("log\n")
    (wt / "src" / "trace.log").write_text("log\n")
    (wt / "build" / "obj").mkdir(parents=True)
    (wt / "build" / "obj" / "app.o").write_bytes(b"\x7fELF")


def nested_repos(wt: Path, project: Project) -> None:
    for nested in (wt / "nested", wt / "build" / "inner", wt / "src" / "vendored"):
        nested.mkdir(parents=True)
        git("init", "--quiet", str(nested))
        (nested / "file.txt").write_text("nested\n")
        git("add", "file.txt", cwd=nested)
        git("commit", "--quiet", "-m", "nested", cwd=nested)
    bare = wt / "bare.git"
    git("init", "--quiet", "--bare", str(bare))


def staged(wt: Path, project: Project) -> None:
    (wt / "README.md").write_text("staged\n")
    (wt / "added.txt").write_text("added\n")
    git("add", "README.md", "added.txt", cwd=wt)
    git("rm", "--quiet", "--cached", "same.txt", cwd=wt)
    git("update-index", "--chmod=+x", "src/util.py", cwd=wt)
    git("mv", "docs/index.md", "docs/moved.md", cwd=wt)


def commits(wt: Path, project: Project) -> None:
    (wt / "committed.txt").write_text("c\n")
    (wt / "src" / "app.py").write_text("V = 'committed'\n")
    git("add", "-A", cwd=wt)
    git("commit", "--quiet", "-m", "a test's commit", cwd=wt)
    git("rm", "--quiet", "same.txt", cwd=wt)
    git("commit", "--quiet", "-m", "another", cwd=wt)


def other_branch(wt: Path, project: Project) -> None:
    git("checkout", "--quiet", "-b", "test-made-branch", cwd=wt)
    (wt / "on-other.txt").write_text("o\n")
    git("add", "on-other.txt", cwd=wt)
    git("commit", "--quiet", "-m", "on other branch", cwd=wt)


def detached_head(wt: Path, project: Project) -> None:
    git("checkout", "--quiet", "--detach", project.c0, cwd=wt)
    (wt / "src" / "app.py").write_text("detached\n")


def merge_conflict(wt: Path, project: Project) -> None:
    (wt / "README.md").write_text("# mine\n")
    git("commit", "--quiet", "-am", "mine", cwd=wt)
    code, out = run_git(wt, "merge", "--no-edit", "origin/side")
    assert code != 0, out
    assert "CONFLICT" in out
    assert "<<<<<<<" in (wt / "README.md").read_text()


def rebase_conflict(wt: Path, project: Project) -> None:
    (wt / "README.md").write_text("# rebased\n")
    git("commit", "--quiet", "-am", "to rebase", cwd=wt)
    code, out = run_git(wt, "rebase", "origin/side")
    assert code != 0, out
    assert "CONFLICT" in out


def cherry_pick_conflict(wt: Path, project: Project) -> None:
    (wt / "README.md").write_text("# picked\n")
    git("commit", "--quiet", "-am", "to conflict", cwd=wt)
    code, out = run_git(wt, "cherry-pick", project.side)
    assert code != 0, out
    assert "CONFLICT" in out


def bisect(wt: Path, project: Project) -> None:
    git("bisect", "start", project.c1, project.c0, cwd=wt)


def worktree_config(wt: Path, project: Project) -> None:
    git("sparse-checkout", "disable", cwd=wt)  # enables extensions.worktreeConfig properly
    git("config", "--worktree", "user.name", "Test In Worktree", cwd=wt)
    git("config", "--worktree", "core.fileMode", "false", cwd=wt)
    git("config", "--worktree", "core.autocrlf", "true", cwd=wt)
    (wt / "run.sh").chmod(0o644)  # unnoticed while fileMode is false


def worktree_refs(wt: Path, project: Project) -> None:
    git("update-ref", "refs/worktree/mine", "HEAD", cwd=wt)
    git("update-ref", "refs/bisect/bad", "HEAD", cwd=wt)


def stale_index_lock(wt: Path, project: Project) -> None:
    lock = git("rev-parse", "--path-format=absolute", "--git-path", "index.lock", cwd=wt)
    Path(lock).write_text("left by a killed git\n")


def symlinks(wt: Path, project: Project) -> None:
    outside = wt.parent / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("must survive\n")
    os.symlink(outside, wt / "to-outside")  # untracked symlink to a directory elsewhere
    (wt / "same.txt").unlink()
    os.symlink("README.md", wt / "same.txt")  # tracked file replaced by a symlink
    shutil.rmtree(wt / "docs")
    os.symlink(outside, wt / "docs")  # tracked directory replaced by a symlink elsewhere
    (wt / "link").unlink()
    (wt / "link").write_text("tracked symlink replaced by a file\n")
    os.symlink("/nonexistent/target", wt / "dangling")


def file_directory_swaps(wt: Path, project: Project) -> None:
    (wt / "src" / "app.py").unlink()
    (wt / "src" / "app.py").mkdir()  # tracked file replaced by a directory
    (wt / "src" / "app.py" / "inside.txt").write_text("untracked inside\n")
    shutil.rmtree(wt / "docs")
    (wt / "docs").write_text("tracked directory replaced by a file\n")


def sparse_set_by_the_test(wt: Path, project: Project) -> None:
    git("sparse-checkout", "set", "src", cwd=wt)
    assert not (wt / "docs").exists()


def skip_worktree_flag(wt: Path, project: Project) -> None:
    git("update-index", "--skip-worktree", "same.txt", cwd=wt)
    (wt / "same.txt").unlink()


def assume_unchanged_flag(wt: Path, project: Project) -> None:
    git("update-index", "--assume-unchanged", "same.txt", cwd=wt)
    (wt / "same.txt").write_text("changed behind git's back\n")


def both_index_flags(wt: Path, project: Project) -> None:
    git("update-index", "--skip-worktree", "same.txt", cwd=wt)
    git("update-index", "--assume-unchanged", "same.txt", cwd=wt)
    assert "s same.txt" in git("ls-files", "-v", cwd=wt).splitlines()
    (wt / "same.txt").unlink()
    git("update-index", "--assume-unchanged", "README.md", cwd=wt)
    git("update-index", "--skip-worktree", "README.md", cwd=wt)
    (wt / "README.md").write_text("changed behind git's back\n")


def untracked_gitattributes(wt: Path, project: Project) -> None:
    # Read by git while it checks out the next commit, before `clean` removes it.
    (wt / ".gitattributes").write_text("* text eol=crlf\n")
    (wt / "src" / ".gitattributes").write_text("*.py ident\n")


def stash(wt: Path, project: Project) -> None:
    (wt / "README.md").write_text("stashed\n")
    git("stash", "push", "--quiet", "-m", "a test's stash", cwd=wt)
    (wt / "README.md").write_text("edited after stashing\n")


COMPATIBLE = [
    commits, other_branch, worktree_config, worktree_refs, stash, merge_conflict,
    modify_tracked, chmod_exec, untracked, ignored, nested_repos, symlinks,
]  # fmt: skip


def everything(wt: Path, project: Project) -> None:
    """Every compatible kind of dirt at once, in an order git allows."""
    for dirty in COMPATIBLE:
        dirty(wt, project)
    (wt / "staged-last.txt").write_text("s\n")
    git("add", "staged-last.txt", cwd=wt)
    stale_index_lock(wt, project)


DIRT = [
    pytest.param(modify_tracked, id="modify-tracked"),
    pytest.param(delete_tracked, id="delete-tracked"),
    pytest.param(chmod_exec, id="chmod-exec"),
    pytest.param(untracked, id="untracked"),
    pytest.param(ignored, id="ignored"),
    pytest.param(nested_repos, id="nested-repos"),
    pytest.param(staged, id="staged"),
    pytest.param(commits, id="commits"),
    pytest.param(other_branch, id="other-branch"),
    pytest.param(detached_head, id="detached-head"),
    pytest.param(merge_conflict, id="merge-conflict"),
    pytest.param(rebase_conflict, id="rebase-conflict"),
    pytest.param(cherry_pick_conflict, id="cherry-pick-conflict"),
    pytest.param(bisect, id="bisect"),
    pytest.param(worktree_config, id="worktree-config"),
    pytest.param(worktree_refs, id="worktree-refs"),
    pytest.param(stale_index_lock, id="stale-index-lock"),
    pytest.param(symlinks, id="symlinks"),
    pytest.param(file_directory_swaps, id="file-directory-swaps"),
    pytest.param(stash, id="stash"),
    pytest.param(everything, id="everything"),
    pytest.param(sparse_set_by_the_test, id="sparse-set-by-the-test"),
    pytest.param(skip_worktree_flag, id="skip-worktree-flag"),
    pytest.param(assume_unchanged_flag, id="assume-unchanged-flag"),
    pytest.param(
        both_index_flags,
        id="both-index-flags",
    ),
    pytest.param(untracked_gitattributes, id="untracked-gitattributes"),
    pytest.param(chmod_permissions, id="chmod-permissions"),
    pytest.param(chmod_directory, id="chmod-directory"),
]


# -- reuse at the store level ----------------------------------------------------------------


@pytest.mark.parametrize("dirty", DIRT)
def test_reused_worktree_is_indistinguishable_from_a_fresh_one(
    project: Project, cache_dir: Path, tmp_path: Path, dirty: Callable[[Path, Project], None]
) -> None:
    store = make_store(cache_dir, reuse=True)
    url = project.url
    first = store.add_worktree(url, project.c1, tmp_path / "first")
    dirty(first.path, project)
    mark_for_reuse(first)
    store.remove_worktree(first)
    # Parked, not removed: still registered, still on disk.
    assert first.path.exists()
    assert first.path in store.live_worktrees(url)

    reused = store.add_worktree(url, project.c2, tmp_path / "second")
    assert was_reused(reused), "the parked worktree was not reused"
    assert not first.path.exists()
    assert reused.path == tmp_path / "second"
    assert reused.branch != first.branch

    fresh_store = make_store(tmp_path / "fresh-cache")
    fresh = fresh_store.add_worktree(url, project.c2, tmp_path / "fresh")
    assert_like_fresh(reused, fresh, project.c2)

    # Branches: the new one only; the parked one is gone (and its reflog with it).
    assert branches(store, url) == [reused.branch]
    git_dir = store.git_dir(url)
    assert run_git(git_dir, "rev-parse", "--verify", "-q", f"refs/heads/{first.branch}")[0] != 0
    assert not (git_dir / "logs" / "refs" / "heads" / first.branch).exists()
    assert store.live_worktrees(url) == [reused.path]
    assert len(worktree_entries(store, url)) == 2
    # Anything the previous test had outside the worktree survives (symlink targets).
    outside = tmp_path / "outside"
    if outside.exists():
        assert [p.name for p in outside.iterdir()] == ["precious.txt"]
    # refs/stash and branches outside repoclones/ live in the shared repository (documented):
    # every worktree of the store sees them, a fresh one as much as a reused one.
    stashes = ("reflog", "show", "--format=%gs", "refs/stash")
    assert run_git(reused.path, *stashes) == run_git(git_dir, *stashes)
    if dirty in (stash, everything):
        assert "a test's stash" in git("stash", "list", cwd=reused)
    if dirty in (other_branch, everything):
        assert git("rev-parse", "--verify", "refs/heads/test-made-branch", cwd=reused)

    store.remove_worktree(reused)
    store.close()
    assert_store_empty(store, url)
    assert not reused.path.exists()


def test_reuse_writes_only_the_files_that_changed(
    project: Project, cache_dir: Path, tmp_path: Path
) -> None:
    store = make_store(cache_dir, reuse=True)
    first = store.add_worktree(project.url, project.c1, tmp_path / "a")
    before = {name: os.stat(first / name) for name in ("same.txt", "src/util.py", "src/app.py")}
    time.sleep(0.05)  # a rewritten file would get a later mtime
    store.remove_worktree(first)
    reused = store.add_worktree(project.url, project.c2, tmp_path / "b")
    for name in ("same.txt", "src/util.py"):  # the same in c1 and c2: not written again
        after = os.stat(reused / name)
        assert after.st_ino == before[name].st_ino, name
        assert after.st_mtime_ns == before[name].st_mtime_ns, name
    # Changed between the commits: written.
    assert (reused / "src" / "app.py").read_text() == "V = 2\n"
    assert os.stat(reused / "src" / "app.py").st_mtime_ns > before["src/app.py"].st_mtime_ns
    assert (reused / "new" / "file.txt").read_text() == "new\n"
    assert not (reused / "docs" / "other.md").exists()
    assert not os.access(reused / "tool", os.X_OK)
    assert os.readlink(reused / "link") == "same.txt"
    assert git("status", "--porcelain", "--ignored", cwd=reused) == ""
    store.remove_worktree(reused)
    store.close()
    assert_store_empty(store, project.url)


def test_reuse_moves_through_many_commits_and_back(
    project: Project, cache_dir: Path, tmp_path: Path
) -> None:
    """One parked worktree serves every request in turn, also for a commit that must be fetched
    (only under refs/pull/*) and for names resolved against the cache."""
    store = make_store(cache_dir, reuse=True)
    fresh_store = make_store(tmp_path / "fresh-cache")
    wanted = [project.c2, project.c0, project.pr, "side", project.c1, "main", project.c0]
    for n, rev in enumerate(wanted):
        wt = store.add_worktree(project.url, rev, tmp_path / f"wt{n}")
        assert was_reused(wt) == (n > 0), rev
        fresh = fresh_store.add_worktree(project.url, rev, tmp_path / f"fresh{n}")
        assert_like_fresh(wt, fresh, fresh.commit)
        modify_tracked(wt.path, project)
        untracked(wt.path, project)
        mark_for_reuse(wt)
        store.remove_worktree(wt)
        fresh_store.remove_worktree(fresh)
    store.close()
    assert_store_empty(store, project.url)


def test_parked_worktrees_serve_their_own_repository_only(
    project: Project, make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    other = make_upstream("other")
    other_sha = other.commit({"other.txt": "other\n"})
    store = make_store(cache_dir, reuse=True)
    parked = store.add_worktree(project.url, project.c1, tmp_path / "a")
    mark_for_reuse(parked)
    store.remove_worktree(parked)
    wt = store.add_worktree(other.url, other_sha, tmp_path / "b")
    assert sorted(p.name for p in wt.path.iterdir()) == [".git", "other.txt"]
    assert parked.path.exists(), "another repository's request must not take the parked worktree"
    # Two at once: one parked worktree, so the second request gets a fresh one. A variant of the
    # URL names the same repository, and the worktree carries the URL as given.
    variant = project.url + "/"
    a = store.add_worktree(variant, project.c2, tmp_path / "c")
    assert a.url == variant
    b = store.add_worktree(project.url, project.c2, tmp_path / "d")
    assert was_reused(a)
    assert not was_reused(b)
    for done in (wt, a, b):
        store.remove_worktree(done)
    assert len(store.live_worktrees(project.url)) == 2  # both parked
    store.close()
    assert_store_empty(store, project.url)
    assert_store_empty(store, other.url)


def test_close_removes_parked_worktrees_and_their_branches(
    project: Project, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(cache_dir, reuse=True)
    made = [store.add_worktree(project.url, project.c1, tmp_path / f"wt{n}") for n in range(3)]
    monkeypatch.chdir(made[0] / "src")  # a test that chdir'ed into its worktree
    for wt in made:
        store.remove_worktree(wt)
    assert Path.cwd() == made[0].path.parent  # parking stepped out of the worktree
    assert all(wt.path.exists() for wt in made)
    assert branches(store, project.url) == sorted(wt.branch for wt in made)
    assert len(worktree_entries(store, project.url)) == 4
    store.close()
    assert not any(wt.path.exists() for wt in made)
    assert_store_empty(store, project.url)
    store.close()  # twice is fine
    # Still usable after close.
    again = store.add_worktree(project.url, project.c2, tmp_path / "again")
    assert (again / "src" / "app.py").read_text() == "V = 2\n"
    store.remove_worktree(again)
    store.close()
    assert_store_empty(store, project.url)


def test_broken_worktree_is_removed_instead_of_parked(
    project: Project, cache_dir: Path, tmp_path: Path
) -> None:
    store = make_store(cache_dir, reuse=True)
    wt = store.add_worktree(project.url, project.c1, tmp_path / "a")
    (wt / ".git").unlink()  # no longer a worktree of the cache
    store.remove_worktree(wt)
    assert not wt.path.exists()
    assert_store_empty(store, project.url)
    nxt = store.add_worktree(project.url, project.c2, tmp_path / "b")
    assert git("status", "--porcelain", "--ignored", cwd=nxt) == ""
    store.remove_worktree(nxt)
    store.close()
    assert_store_empty(store, project.url)


def test_reuse_works_when_the_new_path_has_no_parent_yet(
    project: Project, cache_dir: Path, tmp_path: Path
) -> None:
    store = make_store(cache_dir, reuse=True)
    first = store.add_worktree(project.url, project.c1, tmp_path / "a")
    mark_for_reuse(first)
    store.remove_worktree(first)
    second = store.add_worktree(project.url, project.c2, tmp_path / "new" / "parent" / "b")
    assert (second / "src" / "app.py").read_text() == "V = 2\n"
    assert was_reused(second)


def test_reuse_refuses_an_existing_explicit_branch_like_a_fresh_worktree(
    project: Project, cache_dir: Path, tmp_path: Path
) -> None:
    store = make_store(cache_dir, reuse=True)
    first = store.add_worktree(project.url, project.c1, tmp_path / "a")
    git("branch", "users-branch", project.c0, cwd=first)
    store.remove_worktree(first)
    with pytest.raises(WorktreeError):
        store.add_worktree(project.url, project.c2, tmp_path / "b", branch="users-branch")
    git_dir = store.git_dir(project.url)
    assert git(f"--git-dir={git_dir}", "rev-parse", "refs/heads/users-branch") == project.c0


def test_a_failed_reuse_after_the_checkout_falls_back_to_a_fresh_worktree(
    project: Project, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, failed = _modes.fix_modes, []

    def fail_once(suspects: Any) -> None:
        if not failed:
            failed.append(list(suspects))
            raise PermissionError("simulated failure after the checkout and the clean")
        real(suspects)

    store = make_store(cache_dir, reuse=True)
    first = store.add_worktree(project.url, project.c1, tmp_path / "a")
    mark_for_reuse(first)
    store.remove_worktree(first)
    # Patched wherever the package calls it from (code may move between its modules).
    users = [
        module
        for name, module in sorted(sys.modules.items())
        if name.startswith("pytest_repoclones") and getattr(module, "fix_modes", None) is real
    ]
    assert users, "nothing imports fix_modes any more: this test injects nothing"
    for module in users:
        monkeypatch.setattr(module, "fix_modes", fail_once)
    branch = store.new_branch_name("explicit")  # as the worktree fixture passes it
    second = store.add_worktree(project.url, project.c2, tmp_path / "b", branch=branch)
    # The fault fired, in the parked worktree moved to the new path, after its checkout...
    assert len(failed) == 1, "the injected failure never happened"
    # ...and the worktree handed out is a fresh one, at the path asked for.
    assert not was_reused(second)
    assert second.path == tmp_path / "b"
    assert not first.path.exists()
    assert git("rev-parse", "HEAD", cwd=second) == project.c2
    assert second.branch == branch
    assert git("status", "--porcelain", "--ignored", cwd=second) == ""
    assert branches(store, project.url) == [branch]
    store.remove_worktree(second)
    store.close()
    assert_store_empty(store, project.url)


def test_without_reuse_worktrees_are_removed_at_once(
    project: Project, cache_dir: Path, tmp_path: Path
) -> None:
    store = make_store(cache_dir)
    wt = store.add_worktree(project.url, project.c1, tmp_path / "a")
    store.remove_worktree(wt)
    assert not wt.path.exists()
    assert_store_empty(store, project.url)


def test_sparse_and_isolated_worktrees_are_not_parked(
    project: Project, cache_dir: Path, tmp_path: Path
) -> None:
    store = make_store(cache_dir, reuse=True)
    sparse = store.add_worktree(project.url, project.c1, tmp_path / "s", sparse=["src/"])
    isolated = store.add_worktree(project.url, project.c1, tmp_path / "i", isolate=True)
    store.remove_worktree(sparse)
    store.remove_worktree(isolated)
    assert not sparse.path.exists()
    assert not isolated.path.exists()
    assert_store_empty(store, project.url)
    # A parked full worktree is not handed to a sparse request either.
    full = store.add_worktree(project.url, project.c1, tmp_path / "f")
    mark_for_reuse(full)
    store.remove_worktree(full)
    sparse2 = store.add_worktree(project.url, project.c2, tmp_path / "s2", sparse=["docs/"])
    assert not was_reused(sparse2)
    assert full.path.exists()  # still parked
    assert not (sparse2 / "src").exists()
    store.remove_worktree(sparse2)
    store.close()
    assert_store_empty(store, project.url)


# -- reuse through the plugin ------------------------------------------------------------------

INNER_REUSE = """
import json
import os
import pathlib
import shutil
import subprocess

import pytest


def git(*args, cwd):
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def tree(root):
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = pathlib.Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel == ".git":
                continue
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            else:
                found[rel] = (path.read_text(), oct(path.stat().st_mode & 0o777))
    return found


@pytest.mark.parametrize("n", range(12))
def test_reuse(worktree, n):
    commit = COMMITS[n % len(COMMITS)]
    wt = worktree(URL, commit)
    # The plugin never rewrites .git when it reuses a worktree: a sentinel mtime proves reuse.
    reused = os.stat(wt / ".git").st_mtime == 1_000_000_000
    assert wt.commit == commit
    assert git("rev-parse", "HEAD", cwd=wt) == commit
    assert git("symbolic-ref", "--short", "HEAD", cwd=wt) == wt.branch
    assert git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=wt) == ""
    assert tree(wt.path) == {k: tuple(v) if isinstance(v, list) else v
                             for k, v in EXPECTED[commit].items()}
    with open(LOG, "a") as handle:
        handle.write(json.dumps({"n": n, "reused": reused, "path": str(wt.path),
                                 "branch": wt.branch,
                                 "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}) + "\\n")
    # Dirty it for whoever gets it next.
    os.utime(wt / ".git", (1_000_000_000, 1_000_000_000))
    (wt / "README.md").write_text("dirty")
    (wt / "run.sh").chmod(0o644)
    (wt / "debug.log").write_text("ignored")
    (wt / "untracked").mkdir()
    (wt / "untracked" / "x").write_text("x")
    shutil.rmtree(wt / "docs")
    if n % 3 == 0:
        git("checkout", "-q", "-b", f"test-branch-{n}", cwd=wt)
        git("commit", "-q", "-am", "commit", cwd=wt)
    elif n % 3 == 1:
        git("add", "-A", cwd=wt)
    else:
        git("update-index", "--skip-worktree", "same.txt", cwd=wt)
        (wt / "same.txt").unlink()
        git("update-index", "--assume-unchanged", "src/app.py", cwd=wt)
        (wt / "src" / "app.py").write_text("hidden from git")
        git("checkout", "-q", "--detach", "HEAD", cwd=wt)
"""


def expected_tree(up: Upstream, commit: str) -> dict[str, Any]:
    listing = up.git("ls-tree", "-r", "--full-tree", commit)
    expected: dict[str, Any] = {}
    for line in listing.splitlines():
        meta, name = line.split("\t", 1)
        mode, _, sha = meta.split()
        content = up.git("cat-file", "blob", sha)
        content += "\n" if mode != "120000" else ""  # git() strips the trailing newline
        if mode == "120000":
            expected[name] = f"-> {content}"
        else:
            expected[name] = (content, "0o755" if mode == "100755" else "0o644")
    return expected


def write_inner(pytester: pytest.Pytester, body: str, **constants: Any) -> None:
    constants.setdefault("LOG", str(pytester.path / "records.jsonl"))
    header = "\n".join(f"{name} = {value!r}" for name, value in constants.items())
    pytester.makepyfile(test_inner=f"{header}\n{textwrap.dedent(body)}")


@pytest.mark.parametrize("how", ["option", "ini"])
def test_plugin_reuse_under_xdist_passes_and_leaves_nothing(
    pytester: pytest.Pytester, project: Project, cache_dir: Path, how: str
) -> None:
    commits = [project.c1, project.c2, project.c0, project.side]
    write_inner(
        pytester,
        INNER_REUSE,
        URL=project.url,
        COMMITS=commits,
        EXPECTED={c: expected_tree(project.up, c) for c in commits},
    )
    if how == "ini":
        pytester.makeini("[pytest]\nrepo_reuse = true\n")
        args: tuple[str, ...] = ("-n", "2")
    else:
        args = ("--repo-reuse", "-n", "2")
    result = run(pytester, cache_dir, *args)
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["*repoclones: reuse*"])
    rows = records(pytester)
    assert len(rows) == 12
    workers = {row["worker"] for row in rows}
    # Every request but each worker's first was served by a parked worktree.
    assert sum(row["reused"] for row in rows) == 12 - len(workers)
    assert len({row["branch"] for row in rows}) == 12
    assert not any(Path(row["path"]).exists() for row in rows)
    store = make_store(cache_dir)
    assert_store_empty(store, project.url)
    # Branches tests made outside repoclones/ stay in the shared repository (documented).
    git_dir = store.git_dir(project.url)
    made = git(f"--git-dir={git_dir}", "for-each-ref", "--format=%(refname)", "refs/heads/")
    assert sorted(made.splitlines()) == sorted(f"refs/heads/test-branch-{n}" for n in (0, 3, 6, 9))


def test_plugin_without_reuse_makes_every_worktree_fresh(
    pytester: pytest.Pytester, project: Project, cache_dir: Path
) -> None:
    commits = [project.c1, project.c2]
    write_inner(
        pytester,
        INNER_REUSE.replace("range(12)", "range(4)"),
        URL=project.url,
        COMMITS=commits,
        EXPECTED={c: expected_tree(project.up, c) for c in commits},
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=4)
    assert "repoclones: reuse" not in result.stdout.str()
    assert not any(row["reused"] for row in records(pytester))
    assert_store_empty(make_store(cache_dir), project.url)


# -- sparse worktrees ------------------------------------------------------------------------


def checked_out(wt: Path) -> list[str]:
    return sorted(
        path.relative_to(wt).as_posix()
        for path in wt.rglob("*")
        if not path.is_dir() and ".git" not in path.relative_to(wt).parts[:1]
    )


def test_sparse_mixed_paths_use_anchored_patterns(
    store: RepoStore, project: Project, tmp_path: Path
) -> None:
    wt = store.add_worktree(
        project.url, project.c2, tmp_path / "wt", sparse=["src/", "docs/index.md"]
    )
    assert checked_out(wt.path) == ["docs/index.md", "src/app.py", "src/util.py"]
    assert wt.commit == project.c2
    assert git("rev-parse", "HEAD", cwd=wt) == project.c2
    assert git("status", "--porcelain", "--ignored", cwd=wt) == ""
    assert git("config", "--get", "core.sparseCheckout", cwd=wt) == "true"
    assert run_git(wt.path, "config", "--get", "core.sparseCheckoutCone") != (0, "true")
    assert git("sparse-checkout", "list", cwd=wt).splitlines() == ["/src/", "/docs/index.md"]
    # The whole commit is still in the index, only marked skip-worktree.
    flags = dict(line.split(" ", 1)[::-1] for line in git("ls-files", "-v", cwd=wt).splitlines())
    assert flags["src/app.py"] == "H"
    assert flags["README.md"] == "S"
    # Sparse patterns are the worktree's own: the shared config is untouched.
    git_dir = store.git_dir(project.url)
    assert run_git(git_dir, "config", "--get", "core.sparseCheckout")[0] != 0
    store.remove_worktree(wt)
    assert_store_empty(store, project.url)


def test_sparse_directories_only_use_cone_mode(
    store: RepoStore, project: Project, tmp_path: Path
) -> None:
    wt = store.add_worktree(project.url, project.c2, tmp_path / "wt", sparse=["docs/", "/new/"])
    # Cone mode always includes the files at the top.
    assert checked_out(wt.path) == [
        ".gitignore", "README.md", "docs/index.md", "link", "new/file.txt", "run.sh", "same.txt",
        "tool",
    ]  # fmt: skip
    assert git("config", "--get", "core.sparseCheckoutCone", cwd=wt) == "true"
    assert git("sparse-checkout", "list", cwd=wt).splitlines() == ["docs", "new"]
    assert git("status", "--porcelain", "--ignored", cwd=wt) == ""
    # Another worktree of the same repository is not sparse.
    full = store.add_worktree(project.url, project.c2, tmp_path / "full")
    assert "src/app.py" in checked_out(full.path)
    assert run_git(full.path, "config", "--get", "core.sparseCheckout") != (0, "true")
    store.remove_worktree(wt)
    store.remove_worktree(full)
    assert_store_empty(store, project.url)


def test_sparse_worktree_at_a_fetched_commit(
    store: RepoStore, project: Project, tmp_path: Path
) -> None:
    wt = store.add_worktree(project.url, project.pr, tmp_path / "wt", sparse=["pr.txt"])
    assert checked_out(wt.path) == ["pr.txt"]
    assert git("status", "--porcelain", "--ignored", cwd=wt) == ""
    store.remove_worktree(wt)


def test_sparse_worktree_leaves_the_shared_config_alone(
    store: RepoStore, project: Project, tmp_path: Path
) -> None:
    full = store.add_worktree(project.url, project.c1, tmp_path / "full")
    git_dir = store.git_dir(project.url)
    before = (git_dir / "config").read_text()
    # core.bare lives in the bare repository's own config.worktree from the clone on, so that
    # `git sparse-checkout` has nothing to move out of the shared config.
    main_worktree_config = (git_dir / "config.worktree").read_text()
    assert "bare = true" in main_worktree_config
    assert "bare" not in before
    sparse = store.add_worktree(project.url, project.c1, tmp_path / "sparse", sparse=["src/"])
    assert (git_dir / "config").read_text() == before
    assert (git_dir / "config.worktree").read_text() == main_worktree_config
    assert git("rev-parse", "--is-bare-repository", cwd=full) == "false"
    for wt in (full, sparse):
        store.remove_worktree(wt)


@pytest.mark.parametrize(
    "sparse",
    [
        "src/",
        [],
        (),
        ["../x"],
        ["src/../../x"],
        ["-x"],
        ["--cone"],
        [""],
        ["/"],
        ["src\n/"],
        [None],
        [b"src/"],
        {"src/": 1},
        42,
    ],
    ids=repr,
)
def test_invalid_sparse_arguments_are_rejected(
    store: RepoStore, project: Project, tmp_path: Path, sparse: Any
) -> None:
    target = tmp_path / "wt"
    with raises_saying(InvalidInputError, "sparse"):  # this test's paths say "sparse" too
        store.add_worktree(project.url, project.c1, target, sparse=sparse)
    assert not target.exists()
    assert not store.git_dir(project.url).exists(), "rejected before any git command"


# -- partial clones ----------------------------------------------------------------------------


def object_counts(git_dir: Path) -> dict[str, int]:
    listing = git(f"--git-dir={git_dir}", "cat-file", "--batch-all-objects", "--batch-check")
    counts: dict[str, int] = {}
    for line in listing.splitlines():
        kind = line.split()[1]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def test_partial_clone_has_no_blobs_until_checked_out(
    project: Project, tmp_path: Path, trace_file: Path
) -> None:
    full = make_store(tmp_path / "full-cache")
    partial = make_store(tmp_path / "partial-cache", clone_filter="blob:none")
    full_dir, partial_dir = full.clone(project.url), partial.clone(project.url)
    config = partial_dir / "config"
    assert git("config", "-f", str(config), "remote.origin.promisor") == "true"
    assert git("config", "-f", str(config), "remote.origin.partialclonefilter") == "blob:none"
    assert git("config", "-f", str(config), "extensions.partialclone") == "origin"
    assert json.loads((partial_dir / "repoclones.json").read_text())["filter"] == "blob:none"
    assert run_git(full_dir, "config", "--get", "remote.origin.promisor")[0] != 0
    full_counts, partial_counts = object_counts(full_dir), object_counts(partial_dir)
    assert full_counts["blob"] >= 10
    assert partial_counts.get("blob", 0) == 0
    assert partial_counts["commit"] == full_counts["commit"]
    assert partial_counts["tree"] == full_counts["tree"]
    # No credentials or anything else unexpected in the URL kept for fetching blobs later.
    assert git("config", "-f", str(config), "remote.origin.url") == project.url

    fresh = full.add_worktree(project.url, project.c1, tmp_path / "full-wt")
    wt = partial.add_worktree(project.url, project.c1, tmp_path / "partial-wt")
    assert snapshot(wt.path) == snapshot(fresh.path)  # contents and modes, blobs fetched
    assert git("status", "--porcelain", "--ignored", cwd=wt) == ""
    after_one = object_counts(partial_dir).get("blob", 0)
    assert 0 < after_one < full_counts["blob"]
    # A second commit fetches what it lacks; a pull-request commit by name too.
    for n, commit in enumerate((project.c2, project.pr)):
        other = partial.add_worktree(project.url, commit, tmp_path / f"partial-{n}")
        reference = full.add_worktree(project.url, commit, tmp_path / f"full-{n}")
        assert snapshot(other.path) == snapshot(reference.path)
        assert git("status", "--porcelain", "--ignored", cwd=other) == ""
        assert git("rev-parse", "HEAD", cwd=other) == commit
    assert object_counts(partial_dir).get("blob", 0) < full_counts["blob"]  # c0's docs/other.md
    git("fsck", "--connectivity-only", cwd=partial_dir)


def test_partial_clone_with_reuse(project: Project, tmp_path: Path) -> None:
    store = make_store(tmp_path / "cache", clone_filter="blob:none", reuse=True)
    fresh_store = make_store(tmp_path / "fresh-cache")
    first = store.add_worktree(project.url, project.c1, tmp_path / "a")
    modify_tracked(first.path, project)
    mark_for_reuse(first)
    store.remove_worktree(first)
    reused = store.add_worktree(project.url, project.c2, tmp_path / "b")
    assert was_reused(reused)
    fresh = fresh_store.add_worktree(project.url, project.c2, tmp_path / "f")
    assert_like_fresh(reused, fresh, project.c2)
    store.remove_worktree(reused)
    store.close()
    assert_store_empty(store, project.url)


def test_partial_clone_with_sparse_fetches_only_the_sparse_blobs(
    project: Project, tmp_path: Path
) -> None:
    store = make_store(tmp_path / "cache", clone_filter="blob:none")
    wt = store.add_worktree(project.url, project.c2, tmp_path / "wt", sparse=["src/"])
    assert (wt / "src" / "app.py").read_text() == "V = 2\n"
    assert not (wt / "docs").exists()
    assert git("status", "--porcelain", "--ignored", cwd=wt) == ""
    # Cone mode: the top-level files and src/; never docs/ or new/.
    top_and_src = {
        line.split()[2]
        for line in project.up.git("ls-tree", "-r", project.c2).splitlines()
        if "/" not in line.split("\t")[1] or line.split("\t")[1].startswith("src/")
    }
    present = {
        line.split()[0]
        for line in git(
            f"--git-dir={store.git_dir(project.url)}", "cat-file", "--batch-all-objects",
            "--batch-check",
        ).splitlines()
        if line.split()[1] == "blob"
    }  # fmt: skip
    assert present == top_and_src


def test_partial_clone_refuses_isolate_clearly(project: Project, tmp_path: Path) -> None:
    """A partial cache lacks the blobs a local fetch would copy: isolate=True is refused with
    a message saying why and what to do, and nothing is left behind."""
    store = make_store(tmp_path / "cache", clone_filter="blob:none")
    target = tmp_path / "iso"
    with raises_saying(InvalidInputError, "isolate=True needs a full clone") as info:
        store.add_worktree(project.url, project.c1, target, isolate=True)
    assert "clone-filter" in message_of(info.value)
    assert not target.exists()
    assert_store_empty(store, project.url)


def test_clone_filters_per_url(
    project: Project, make_upstream: Callable[..., Upstream], tmp_path: Path
) -> None:
    other = make_upstream("other")
    other.commit({"a.txt": "a\n", "b.txt": "b\n"})
    # Keys are canonical URLs: a trailing ".git/" variant names the same repository.
    store = make_store(
        tmp_path / "cache", clone_filters={project.url.rstrip("/") + "/": "blob:limit=1k"}
    )
    partial_dir, full_dir = store.clone(project.url), store.clone(other.url)
    assert git("config", "-f", str(partial_dir / "config"), "remote.origin.promisor") == "true"
    assert run_git(full_dir, "config", "--get", "remote.origin.promisor")[0] != 0
    # A per-URL filter beats the store-wide one.
    both = make_store(
        tmp_path / "cache2", clone_filter="blob:none", clone_filters={other.url: "tree:0"}
    )
    other_dir = both.clone(other.url)
    assert git("config", "-f", str(other_dir / "config"), "remote.origin.partialclonefilter") == (
        "tree:0"
    )
    wt = both.add_worktree(other.url, None, tmp_path / "wt")
    assert (wt / "b.txt").read_text() == "b\n"


@pytest.mark.parametrize(
    "spec",
    [
        "bogus",
        "blob:nothing",
        "blob:limit=abc",
        "blob:none --upload-pack=touch /tmp/pwned",
        "blob:none\n",
        "sparse:oid=HEAD:x",
        "-x",
        "combine:blob:none+tree:0",
        42,
    ],
    ids=repr,
)
def test_invalid_clone_filter_is_rejected(spec: Any, project: Project, tmp_path: Path) -> None:
    with raises_saying(InvalidInputError, "filter"):
        make_store(tmp_path / "cache", clone_filter=spec)
    with raises_saying(InvalidInputError, "filter"):
        make_store(tmp_path / "cache", clone_filters={project.url: spec})
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("spec", [None, "", "none"])
def test_no_clone_filter_means_a_full_clone(
    spec: str | None, project: Project, tmp_path: Path
) -> None:
    store = make_store(tmp_path / "cache", clone_filter=spec)
    git_dir = store.clone(project.url)
    assert run_git(git_dir, "config", "--get", "remote.origin.promisor")[0] != 0
    assert object_counts(git_dir)["blob"] >= 10


INNER_PARTIAL = """
import subprocess


def test_partial(worktree, repo_store):
    wt = worktree(URL, COMMIT)
    assert (wt / "src" / "app.py").read_text() == "V = 1\\n"
    git_dir = repo_store.git_dir(URL)
    promisor = subprocess.run(
        ["git", f"--git-dir={git_dir}", "config", "--get", "remote.origin.promisor"],
        capture_output=True, text=True,
    ).stdout.strip()
    assert promisor == EXPECT_PROMISOR
    assert subprocess.run(["git", "status", "--porcelain"], cwd=wt, capture_output=True,
                          text=True, check=True).stdout == ""
"""


def test_clone_filter_option_makes_a_partial_clone(
    pytester: pytest.Pytester, project: Project, cache_dir: Path
) -> None:
    write_inner(pytester, INNER_PARTIAL, URL=project.url, COMMIT=project.c1, EXPECT_PROMISOR="true")
    result = run(pytester, cache_dir, "--repo-clone-filter=blob:none")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["repoclones: *clone filter blob:none*"])
    upstream_blobs = object_counts(project.up.path)["blob"]
    assert object_counts(make_store(cache_dir).git_dir(project.url))["blob"] < upstream_blobs


def test_clone_filters_ini_applies_per_url(
    pytester: pytest.Pytester,
    project: Project,
    make_upstream: Callable[..., Upstream],
    cache_dir: Path,
) -> None:
    other = make_upstream("other")
    other_sha = other.commit({"x.txt": "x\n"})
    pytester.makeini(
        f"""
        [pytest]
        repo_clone_filters =
            {project.url} blob:none
        """
    )
    write_inner(
        pytester,
        INNER_PARTIAL
        + """

def test_full(worktree, repo_store):
    wt = worktree(OTHER, OTHER_SHA)
    assert (wt / "x.txt").read_text() == "x\\n"
    git_dir = repo_store.git_dir(OTHER)
    assert subprocess.run(
        ["git", f"--git-dir={git_dir}", "config", "--get", "remote.origin.promisor"],
    ).returncode != 0
""",
        URL=project.url,
        COMMIT=project.c1,
        EXPECT_PROMISOR="true",
        OTHER=other.url,
        OTHER_SHA=other_sha,
    )
    run(pytester, cache_dir).assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("args", "ini"),
    [
        (["--repo-clone-filter=bogus"], ""),
        ([], "repo_clone_filter = blob:limit=lots\n"),
        ([], "repo_clone_filters =\n    file:///x tree:abc\n"),
        ([], "repo_clone_filters =\n    only-a-url\n"),
    ],
    ids=["option", "ini", "ini-per-url", "ini-per-url-malformed"],
)
def test_invalid_clone_filter_is_a_usage_error(
    pytester: pytest.Pytester, cache_dir: Path, args: list[str], ini: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}")
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, cache_dir, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "filter" in without_paths(result.stderr.str())  # the paths say "filter" too
    assert "Traceback" not in result.stderr.str()


def test_partial_clone_checkout_counts_no_extra_upload_pack_when_blobs_are_cached(
    project: Project, tmp_path: Path, trace_file: Path
) -> None:
    """Blobs fetched once are not fetched again: a second worktree of the same commit is local."""
    store = make_store(tmp_path / "cache", clone_filter="blob:none")
    store.add_worktree(project.url, project.c1, tmp_path / "a")
    before = count_git_commands(trace_file, "upload-pack")
    again = store.add_worktree(project.url, project.c1, tmp_path / "b")
    assert count_git_commands(trace_file, "upload-pack") == before
    assert (again / "src" / "util.py").read_text() == "def util():\n    return 1\n"
