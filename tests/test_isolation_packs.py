"""Isolated worktrees from packs made once per commit (issue 12): as strict as ever, made every
way (the first at a commit, a repeated one sharing its pack, history-free, from a read-only
cache), and the shared pack safe from what a test does to its own repository."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.mounts import read_only_bind
from inner import run
from upstream import Upstream, git

from pytest_repoclones import InvalidInputError, RepoStore, Worktree, _packs

WAYS = ["first", "repeated", "history-free", "read-only-cache"]


def all_objects(git_dir: Path) -> set[str]:
    listing = git(
        f"--git-dir={git_dir}", "cat-file", "--batch-all-objects", "--batch-check=%(objectname)"
    )
    return set(listing.splitlines())


def pack_dirs(store: RepoStore, url: str) -> list[Path]:
    home = store.git_dir(url) / _packs.PACKS_DIR
    return sorted(home.iterdir()) if home.is_dir() else []


def pack_inodes(git_dir: Path) -> set[int]:
    return {p.stat().st_ino for p in (git_dir / "objects" / "pack").glob("pack-*.pack")}


@pytest.fixture
def read_only_store(upstream: Upstream, tmp_path: Path) -> Iterator[RepoStore]:
    source = tmp_path / "cache-rw"
    RepoStore(source).clone(upstream.url)
    with read_only_bind(source, tmp_path / "cache-ro") as mount_point:
        yield RepoStore(mount_point)


def make_isolated(way: str, store: RepoStore, url: str, commit: str, tmp_path: Path) -> Worktree:
    if way == "repeated":  # a first one made the pack; the one under test only links it
        store.add_worktree(url, commit, tmp_path / "earlier", isolate=True)
    history = way != "history-free"
    return store.add_worktree(url, commit, tmp_path / "iso", isolate=True, history=history)


@pytest.mark.parametrize("way", WAYS)
def test_isolated_worktree_leaks_nothing_after_its_commit(
    way: str, upstream: Upstream, store: RepoStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = upstream.url
    base = upstream.rev("v1.1^{commit}")
    if way == "read-only-cache":
        store = request.getfixturevalue("read_only_store")
    else:
        store.resolve(url, upstream.rev("refs/pull/7/head"))  # the cache holds the future
    iso = make_isolated(way, store, url, base, tmp_path)
    git_dir = iso.path / ".git"

    if way == "history-free":
        commits = [iso.commit]
        expected = {iso.commit} | tree_objects(upstream, base)
        shown = git("cat-file", "-p", "HEAD", cwd=iso)
        assert "parent " not in shown
        assert git("rev-parse", "HEAD^{tree}", cwd=iso) == upstream.rev(f"{base}^{{tree}}")
        fmt = "--format=%an <%ae> %at%n%cn <%ce> %ct%n%B"
        assert git("log", "-1", fmt, cwd=iso) == upstream.git("log", "-1", fmt, base)
    else:
        assert iso.commit == base
        commits = upstream.git("rev-list", base).splitlines()
        listing = upstream.git("rev-list", "--objects", base).splitlines()
        expected = {line.split()[0] for line in listing}

    assert git("rev-parse", "HEAD", cwd=iso) == iso.commit
    assert git("status", "--porcelain", "--ignored", cwd=iso) == ""
    assert git("log", "--all", "--format=%H", cwd=iso).splitlines() == commits
    assert git("rev-list", "--all", "--reflog", cwd=iso).splitlines() == commits
    assert all_objects(git_dir) == expected
    assert git("for-each-ref", "--format=%(refname)", cwd=iso) == f"refs/heads/{iso.branch}"
    assert git("remote", cwd=iso) == ""
    assert git("reflog", "show", "--all", cwd=iso) == ""
    for name in ("ORIG_HEAD", "FETCH_HEAD", "packed-refs", "logs", "shallow"):
        assert not (git_dir / name).exists(), name
    assert not (git_dir / "objects" / "info" / "alternates").exists()
    assert "remote." not in git("config", "--list", "--local", cwd=iso)
    # No later commit named anywhere under .git, as text or as the raw bytes a pack index holds.
    future = {upstream.rev(r) for r in ("main", "feature", "refs/pull/7/head")} - set(commits)
    if way == "history-free":
        future |= set(upstream.git("rev-list", base).splitlines())  # its history, too
    assert future
    for path in git_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for sha in future:
                assert sha.encode() not in data, (path, sha)
                assert bytes.fromhex(sha) not in data, (path, sha)
    assert git("fsck", "--strict", "--no-progress", cwd=iso) == ""
    store.remove_worktree(iso)
    assert not iso.path.exists()


def tree_objects(upstream: Upstream, commit: str) -> set[str]:
    tree = upstream.rev(f"{commit}^{{tree}}")
    listing = upstream.git("ls-tree", "-r", "-t", tree).splitlines()
    return {tree} | {line.split()[2] for line in listing}


def test_repeated_isolated_worktrees_share_one_pack_on_disk(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    first = store.add_worktree(upstream.url, "v1.1", tmp_path / "a", isolate=True)
    second = store.add_worktree(upstream.url, "v1.1", tmp_path / "b", isolate=True)
    (home,) = pack_dirs(store, upstream.url)
    shared = {p.stat().st_ino for p in home.glob("pack-*.pack")}
    assert pack_inodes(first.git_dir) == pack_inodes(second.git_dir) == shared
    # Another commit: a pack of its own; history-free: another again.
    store.add_worktree(upstream.url, "v1.0", tmp_path / "c", isolate=True)
    store.add_worktree(upstream.url, "v1.1", tmp_path / "d", isolate=True, history=False)
    assert len(pack_dirs(store, upstream.url)) == 3


def test_a_test_writing_through_its_hard_link_spoils_nothing(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    first = store.add_worktree(upstream.url, "v1.1", tmp_path / "a", isolate=True)
    (pack,) = (first.git_dir / "objects" / "pack").glob("pack-*.pack")
    pack.chmod(0o644)
    with open(pack, "r+b") as spoiled:  # the same inode as the cache's copy
        spoiled.seek(-20, 2)
        spoiled.write(b"\0" * 20)  # its checksum, as a rewrite or a torn copy changes it
    second = store.add_worktree(upstream.url, "v1.1", tmp_path / "b", isolate=True)
    assert pack_inodes(second.git_dir) != pack_inodes(first.git_dir), "the spoiled pack reused"
    assert git("fsck", "--strict", "--no-progress", cwd=second) == ""
    assert git("rev-parse", "HEAD", cwd=second) == upstream.rev("v1.1^{commit}")


def test_gc_in_an_isolated_repository_leaves_the_shared_pack_whole(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    first = store.add_worktree(upstream.url, "v1.1", tmp_path / "a", isolate=True)
    git("gc", "--quiet", "--prune=now", "--aggressive", cwd=first)
    git("repack", "-a", "-d", "-f", "--quiet", cwd=first)
    second = store.add_worktree(upstream.url, "v1.1", tmp_path / "b", isolate=True)
    assert git("fsck", "--strict", "--no-progress", cwd=second) == ""
    (home,) = pack_dirs(store, upstream.url)
    assert pack_inodes(second.git_dir) == {p.stat().st_ino for p in home.glob("pack-*.pack")}


def test_concurrent_isolated_worktrees_at_one_commit_build_one_pack(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    RepoStore(cache_dir).clone(upstream.url)
    made: list[Worktree] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def one(n: int) -> None:
        store = RepoStore(cache_dir)  # a store each, as xdist workers have
        start.wait()
        try:
            made.append(store.add_worktree(upstream.url, "v1.1", tmp_path / f"w{n}", isolate=True))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(made) == 4
    store = RepoStore(cache_dir)
    (home,) = pack_dirs(store, upstream.url)  # one published, no staging left behind
    assert not home.name.startswith(".")
    for wt in made:
        assert git("fsck", "--no-progress", cwd=wt) == ""


def test_only_the_most_recently_used_packs_are_kept(
    make_upstream: Callable[..., Upstream],
    store: RepoStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    up = make_upstream("many")
    commits = [up.commit({"n.txt": f"{n}\n"}, f"c{n}") for n in range(5)]
    monkeypatch.setattr(_packs, "KEPT", 2)
    for n, commit in enumerate(commits):
        store.add_worktree(up.url, commit, tmp_path / f"w{n}", isolate=True)
        time.sleep(0.01)  # distinct mtimes for the least-recently-used order
    assert [p.name for p in pack_dirs(store, up.url)] == sorted(commits[-2:])
    # A worktree made from an evicted pack keeps working: its hard link holds the data.
    assert git("fsck", "--no-progress", cwd=tmp_path / "w0") == ""


def test_a_killed_build_leaves_nothing_for_long(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    store.add_worktree(upstream.url, "v1.0", tmp_path / "a", isolate=True)
    packs = store.git_dir(upstream.url) / _packs.PACKS_DIR
    stale, fresh = packs / ".abc.123.dead.tmp", packs / ".abc.456.live.tmp"
    for leftover in (stale, fresh):
        leftover.mkdir()
        (leftover / "pack-x.pack").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    store.add_worktree(upstream.url, "v1.1", tmp_path / "b", isolate=True)
    assert not stale.exists()
    assert fresh.exists(), "a build in progress elsewhere must not be pulled away"


def test_history_false_needs_isolate(upstream: Upstream, store: RepoStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="history=False needs isolate=True"):
        store.add_worktree(upstream.url, "v1.1", tmp_path / "wt", history=False)
    assert not (tmp_path / "wt").exists()


def test_marker_and_factory_pass_history_through_under_xdist(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    pytester.makepyfile(
        f"""
        import subprocess

        import pytest

        URL = {upstream.url!r}
        BASE = {upstream.rev("v1.1^{commit}")!r}


        def git(*args, cwd):
            return subprocess.run(
                ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
            ).stdout.strip()


        @pytest.mark.worktree(URL, "v1.1", isolate=True, history=False)
        def test_marker(repo_worktree):
            assert git("rev-list", "--all", cwd=repo_worktree) == repo_worktree.commit
            assert repo_worktree.commit != BASE


        @pytest.mark.parametrize("attempt", range(4))
        def test_factory(worktree, attempt):
            wt = worktree(URL, "v1.1", isolate=True)
            assert git("rev-parse", "HEAD", cwd=wt) == BASE
            assert git("rev-list", "--count", "--all", cwd=wt) == "2"
            plain = worktree(URL, "v1.1", isolate=True, history=False)
            assert git("rev-list", "--count", "--all", cwd=plain) == "1"
        """
    )
    run(pytester, cache_dir, "-n", "2").assert_outcomes(passed=5)
    # One pack per commit and kind, shared by every worker and attempt.
    packs = RepoStore(cache_dir).git_dir(upstream.url) / _packs.PACKS_DIR
    assert sorted(p.name for p in packs.iterdir()) == sorted(
        [upstream.rev("v1.1^{commit}"), upstream.rev("v1.1^{commit}") + "-tree"]
    )


def test_git_freshening_a_shared_pack_does_not_make_it_again(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    """`git add` of content the pack holds touches the pack's mtime (git "freshens" it), through
    the hard link: that is no damage, and the next isolated worktree links the same pack."""
    first = store.add_worktree(upstream.url, "v1.1", tmp_path / "a", isolate=True)
    (pack,) = (first.git_dir / "objects" / "pack").glob("pack-*.pack")
    os.utime(pack, (time.time() + 60, time.time() + 60))  # what freshening does
    (first / "copy.md").write_text((first / "README.md").read_text())
    git("add", "-A", cwd=first)
    second = store.add_worktree(upstream.url, "v1.1", tmp_path / "b", isolate=True)
    assert pack_inodes(second.git_dir) == pack_inodes(first.git_dir)
