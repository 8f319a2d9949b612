"""Objects missing from (or corrupt in) a cached repository, noticed when git trips over them.

The cheap health check on first use only looks at ref tips. An object deeper in history (the
blob of an old tagged commit, the tree of an old commit, a commit no ref points at) can go
missing without it noticing; git then fails on it mid-operation. The store must recognise git's
words for that, rebuild the entry once and retry, or say clearly what to delete; and it must
never mistake a remote that is really gone for a damaged cache.

Upstreams here have few objects, so the cache keeps them loose and one file is one object.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.messages import message_of
from upstream import Upstream, git, upload_packs

from pytest_repoclones import CacheCorruptError, RemoteError, RepoStore

VICTIMS = ["blob-of-tagged-commit", "tree-of-old-commit", "commit-without-ref"]


def _history(make_upstream: Callable[..., Upstream]) -> tuple[Upstream, dict[str, str]]:
    up = make_upstream("small")
    c1 = up.commit({"a.txt": "only in c1\n", "keep": "k\n"}, "c1")
    up.tag("v1", c1)
    c2 = up.commit({"a.txt": "only in c2\n"}, "c2")
    c3 = up.commit({"a.txt": "only in c3\n"}, "c3")
    return up, {"c1": c1, "c2": c2, "c3": c3}


def _victim(up: Upstream, commits: dict[str, str], kind: str) -> tuple[str, str, str]:
    """(object to delete, what to ask the store for, content of a.txt expected there)."""
    if kind == "blob-of-tagged-commit":
        return up.rev(f"{commits['c1']}:a.txt"), "v1", "only in c1\n"
    if kind == "tree-of-old-commit":
        return up.rev(f"{commits['c2']}^{{tree}}"), commits["c2"], "only in c2\n"
    assert kind == "commit-without-ref"
    return commits["c2"], commits["c2"], "only in c2\n"


def _delete_loose(git_dir: Path, sha: str) -> None:
    path = git_dir / "objects" / sha[:2] / sha[2:]
    path.chmod(0o644)
    path.unlink()


def _warm(cache_dir: Path, up: Upstream) -> Path:
    """Session 1: clone (loose objects) and return the entry's git dir."""
    first = RepoStore(cache_dir, session_id="s1", timeout=60, lock_timeout=60)
    first.clone(up.url)
    git_dir = first.git_dir(up.url)
    assert not list((git_dir / "objects" / "pack").glob("*.pack")), "expected loose objects"
    return git_dir


def _session(cache_dir: Path, name: str, **options: object) -> RepoStore:
    return RepoStore(cache_dir, session_id=name, timeout=60, lock_timeout=60, **options)  # type: ignore[arg-type]


def _clones(store: RepoStore) -> int:
    return sum(stats.clones for stats in store.stats.values())


def _fsck_ok(git_dir: Path) -> bool:
    result = subprocess.run(
        ["git", f"--git-dir={git_dir}", "fsck", "--connectivity-only", "--no-dangling"],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


# Network contacts of session 2 besides the re-clone: a branch/tag refresh for a name, the
# failed fetch of a commit the cache lost (the remote thought we had it).
EXTRA_UPLOADS = {"blob-of-tagged-commit": 1, "tree-of-old-commit": 0, "commit-without-ref": 1}


@pytest.mark.parametrize("kind", VICTIMS)
def test_next_session_rebuilds_the_entry_once(
    make_upstream: Callable[..., Upstream],
    cache_dir: Path,
    tmp_path: Path,
    trace_file: Path,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    sha, asked, content = _victim(up, commits, kind)
    _delete_loose(git_dir, sha)
    uploads = upload_packs(trace_file, up.path)

    second = _session(cache_dir, "s2")
    with caplog.at_level(logging.WARNING, logger="pytest_repoclones"):
        wt = second.add_worktree(up.url, asked, tmp_path / "wt")

    assert (wt.path / "a.txt").read_text() == content
    assert git("status", "--porcelain", cwd=wt.path) == ""
    assert wt.commit == up.rev(f"{asked}^{{commit}}")
    assert _fsck_ok(git_dir)
    assert _clones(second) == 1
    assert upload_packs(trace_file, up.path) == uploads + 1 + EXTRA_UPLOADS[kind]
    assert any(
        "rebuilt" in r.getMessage() and str(git_dir) in r.getMessage() for r in caplog.records
    )
    # The test's worktree lives on in the new entry and goes away cleanly.
    second.remove_worktree(wt)
    assert not wt.path.exists()
    # The next session finds a sound entry: no clone, no failure.
    third = _session(cache_dir, "s3")
    again = third.add_worktree(up.url, asked, tmp_path / "wt3")
    assert (again.path / "a.txt").read_text() == content
    assert _clones(third) == 0


def test_resolve_rebuilds_a_commit_the_cache_lost(
    make_upstream: Callable[..., Upstream], cache_dir: Path
) -> None:
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    _delete_loose(git_dir, commits["c2"])
    second = _session(cache_dir, "s2")
    assert second.resolve(up.url, commits["c2"]) == commits["c2"]
    assert _clones(second) == 1
    assert _fsck_ok(git_dir)


def test_corrupt_object_in_a_pack(
    big_upstream: Upstream, cache_dir: Path, tmp_path: Path, trace_file: Path
) -> None:
    """A damaged object inside a pack whose trailer still matches its index."""
    first = _session(cache_dir, "s1")
    first.clone(big_upstream.url)
    git_dir = first.git_dir(big_upstream.url)
    (pack,) = (git_dir / "objects" / "pack").glob("*.pack")
    blob = big_upstream.rev("main~1:dir/file077.txt")
    offsets = {
        line.split()[1]: int(line.split()[0])
        for line in git("show-index", input=pack.with_suffix(".idx").read_bytes()).splitlines()
    }
    pack.chmod(0o644)
    with open(pack, "r+b") as handle:
        handle.seek(offsets[blob] + 2)
        handle.write(b"\xff" * 8)
    uploads = upload_packs(trace_file, big_upstream.path)

    second = _session(cache_dir, "s2")
    wt = second.add_worktree(big_upstream.url, "main", tmp_path / "wt")
    assert (wt.path / "dir" / "file077.txt").read_text() == "content 77\n" * 20
    assert git("status", "--porcelain", cwd=wt.path) == ""
    assert _clones(second) == 1
    assert upload_packs(trace_file, big_upstream.path) == uploads + 2  # refresh, re-clone
    assert _fsck_ok(git_dir)


def test_garbled_loose_commit(
    make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    """Not missing but unreadable: git says 'loose object ... is corrupt'."""
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    path = git_dir / "objects" / commits["c2"][:2] / commits["c2"][2:]
    path.chmod(0o644)
    path.write_bytes(b"garbage, not zlib")
    second = _session(cache_dir, "s2")
    wt = second.add_worktree(up.url, commits["c2"], tmp_path / "wt")
    assert (wt.path / "a.txt").read_text() == "only in c2\n"
    assert _clones(second) == 1
    assert _fsck_ok(git_dir)


def test_isolated_worktree_from_a_damaged_entry(
    make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    """isolate=True fetches out of the cache: upload-pack there trips over the lost blob."""
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    _delete_loose(git_dir, up.rev(f"{commits['c1']}:a.txt"))
    second = _session(cache_dir, "s2")
    wt = second.add_worktree(up.url, commits["c1"], tmp_path / "wt", isolate=True)
    assert (wt.path / "a.txt").read_text() == "only in c1\n"
    assert git("status", "--porcelain", cwd=wt.path) == ""
    assert _clones(second) == 1
    assert _fsck_ok(git_dir)


def test_reused_worktree_moved_onto_a_missing_tree(
    make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    """`git checkout` exits 0 after "Could not read <tree>", leaving a broken tree behind."""
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    second = _session(cache_dir, "s2", reuse=True)
    parked = second.add_worktree(up.url, commits["c3"], tmp_path / "wt1")
    second.remove_worktree(parked)  # parked, not removed
    _delete_loose(git_dir, up.rev(f"{commits['c2']}^{{tree}}"))
    wt = second.add_worktree(up.url, commits["c2"], tmp_path / "wt2")
    assert (wt.path / "a.txt").read_text() == "only in c2\n"
    assert git("status", "--porcelain", cwd=wt.path) == ""
    assert _clones(second) == 1
    assert _fsck_ok(git_dir)
    second.remove_worktree(wt)
    second.close()


def test_live_worktree_blocks_the_rebuild(
    make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    holder = _session(cache_dir, "holder")
    live = holder.add_worktree(up.url, commits["c3"], tmp_path / "live")
    _delete_loose(git_dir, up.rev(f"{commits['c1']}:a.txt"))

    second = _session(cache_dir, "s2")
    with pytest.raises(CacheCorruptError) as info:
        second.add_worktree(up.url, "v1", tmp_path / "wt")
    message = str(info.value)
    assert str(git_dir) in message
    assert "small" in message  # the repository
    assert "'v1'" in message_of(info.value)  # the commit asked for
    assert "verify --full" in message_of(info.value)
    assert _clones(second) == 0
    assert not (tmp_path / "wt").exists()  # the half-made worktree is gone
    # The live worktree is untouched and still a working checkout of the entry.
    assert (live.path / "a.txt").read_text() == "only in c3\n"
    assert git("status", "--porcelain", cwd=live.path) == ""
    assert (git_dir / "worktrees").is_dir()
    holder.remove_worktree(live)
    # Once nobody uses it, the next request rebuilds it.
    wt = second.add_worktree(up.url, "v1", tmp_path / "wt")
    assert (wt.path / "a.txt").read_text() == "only in c1\n"
    assert _clones(second) == 1


# Offline, a commit the cache lost is indistinguishable (without a full fsck) from one it never
# had: that stays CommitNotFoundError with its "warm the cache" hint; a later online session
# finds the damage when its fetch fails.
@pytest.mark.parametrize("kind", ["blob-of-tagged-commit", "tree-of-old-commit"])
def test_offline_cannot_rebuild(
    make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path, kind: str
) -> None:
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    sha, asked, _ = _victim(up, commits, kind)
    _delete_loose(git_dir, sha)
    offline = _session(cache_dir, "s2", offline=True)
    with pytest.raises(CacheCorruptError) as info:
        offline.add_worktree(up.url, asked, tmp_path / "wt")
    assert str(git_dir) in str(info.value)
    assert "offline" in message_of(info.value)  # this test's paths say "offline" too
    assert (git_dir / "repoclones.json").is_file()  # left as it was
    assert not (tmp_path / "wt").exists()


def test_vanished_remote_is_not_corruption(
    make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    """A commit the cache never had, from a remote that is gone: the remote's fault."""
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    newer = up.commit({"a.txt": "c4\n"}, "c4")
    shutil.rmtree(up.path)
    second = _session(cache_dir, "s2")
    with pytest.raises(RemoteError) as info:
        second.add_worktree(up.url, newer, tmp_path / "wt")
    assert not isinstance(info.value, CacheCorruptError)
    assert _clones(second) == 0
    marker = (git_dir / "repoclones.json").read_text()
    wt = second.add_worktree(up.url, commits["c3"], tmp_path / "wt")  # the cache still serves
    assert (wt.path / "a.txt").read_text() == "only in c3\n"
    assert (git_dir / "repoclones.json").read_text() == marker


def test_damaged_entry_is_kept_when_the_remote_is_gone(
    make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    """The cache lost a blob and the remote is gone: say so, and keep what still works."""
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    marker = (git_dir / "repoclones.json").read_text()
    _delete_loose(git_dir, up.rev(f"{commits['c1']}:a.txt"))
    shutil.rmtree(up.path)
    second = _session(cache_dir, "s2", offline=False)
    with pytest.raises(CacheCorruptError) as info:
        second.add_worktree(up.url, commits["c1"], tmp_path / "wt")
    assert str(git_dir) in str(info.value)
    assert "Could not clone" in message_of(info.value)
    assert (git_dir / "repoclones.json").read_text() == marker  # not discarded
    wt = second.add_worktree(up.url, commits["c3"], tmp_path / "wt")
    assert (wt.path / "a.txt").read_text() == "only in c3\n"


def test_commit_lost_and_remote_gone_is_a_remote_error(
    make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    """Nothing local says the commit is damaged: git only failed to reach the remote."""
    up, commits = _history(make_upstream)
    git_dir = _warm(cache_dir, up)
    marker = (git_dir / "repoclones.json").read_text()
    _delete_loose(git_dir, commits["c2"])
    shutil.rmtree(up.path)
    second = _session(cache_dir, "s2")
    with pytest.raises(RemoteError):
        second.add_worktree(up.url, commits["c2"], tmp_path / "wt")
    assert (git_dir / "repoclones.json").read_text() == marker
    assert _clones(second) == 0
