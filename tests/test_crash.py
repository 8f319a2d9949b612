"""Processes killed with SIGKILL at known points, and what the next user of the cache finds.

Kill points are made deterministic with ``uploadpack.packObjectsHook``: the serving side stops
before sending the pack and tells the test, so the victim is provably mid-clone or mid-fetch
(and holding the repository lock) when it is killed. No timing guesses, no mocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers.children import (
    Child,
    ChildGroup,
    child_env,
    cmdline,
    descendants,
    is_running,
    pack_objects_hook,
    processes_using,
    wait_until,
)
from upstream import Upstream, count_git_commands, git

from pytest_repoclones import RepoStore

if TYPE_CHECKING:
    from conftest import Fifo

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def held_upload(directory: Path) -> Iterator[Path]:
    """A GIT_CONFIG_GLOBAL whose uploads stop until released; released on exit no matter what,
    so the serving upload-pack of a killed client finishes (on a broken pipe) instead of
    lingering for the hook's 60 s limit."""
    config = pack_objects_hook(directory, hold=True)
    try:
        yield config
    finally:
        (directory / "release").touch()


def wait_for_upload(directory: Path, victim: Child) -> None:
    """Block until the victim's upload is parked in the hook (the victim is then mid-transfer)."""
    wait_until(
        lambda: (directory / "started").exists() or victim.proc.poll() is not None,
        timeout=30,
        what="the upload to reach the pack-objects hook",
    )
    assert (directory / "started").exists(), victim.describe()


def lock_is_free(lock_path: Path) -> bool:
    """Try the per-repository flock without waiting (another open file description)."""
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in root.rglob("*")
    }


def branches(git_dir: Path) -> set[str]:
    refs = git(f"--git-dir={git_dir}", "for-each-ref", "--format=%(refname)", "refs/heads/")
    return set(refs.splitlines())


def registered_worktrees(git_dir: Path) -> list[str]:
    listing = git(f"--git-dir={git_dir}", "worktree", "list", "--porcelain")
    prefix = "worktree "
    return [line[len(prefix) :] for line in listing.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("recovered_by", ["waiting process", "next run"])
def test_killed_mid_clone_then_recovers(
    upstream: Upstream, cache_dir: Path, trace_file: Path, tmp_path: Path, recovered_by: str
) -> None:
    """SIGKILL during the clone's transfer: git dies with it, and whoever comes next (a process
    already waiting on the lock, or a later run) clones afresh and leaves no tmp/ leftovers."""
    hook_dir = tmp_path / "hook"
    git_dir = RepoStore(cache_dir).git_dir(upstream.url)
    args = {"cache": str(cache_dir), "url": upstream.url, "name": "main", "barrier": False}
    with ChildGroup(tmp_path / "logs") as group, held_upload(hook_dir) as config:
        victim = group.start("resolve", args, child_env(config))
        wait_for_upload(hook_dir, victim)
        [in_progress] = list((cache_dir / "tmp").iterdir())
        assert in_progress.name.startswith(git_dir.name[: -len(".git")] + ".")
        # The victim's own git, fetching into the tmp dir, is waiting for the pack right now.
        victim_git = [
            pid
            for pid, argv in processes_using(in_progress)
            if pid in descendants(victim.pid) and str(in_progress) in " ".join(argv)
        ]
        assert victim_git, "no git process of the victim works on the tmp dir"
        assert not lock_is_free(cache_dir / "locks" / f"{git_dir.name[: -len('.git')]}.lock")
        # Marks the half-made clone, to prove below that it is never published or reused.
        (in_progress / "HALF-MADE").write_text("killed before publishing\n")

        waiter = None
        if recovered_by == "waiting process":
            waiter = group.start("resolve", args)  # no hook: its own upload runs freely
            waiter.wait_ready()
            time.sleep(0.3)
            assert waiter.proc.poll() is None  # blocked on the repository lock

        victim.kill()
        # PR_SET_PDEATHSIG: the victim's git dies with it. Checked while the upload is still
        # parked, since a surviving git would just sit there waiting for the pack.
        wait_until(
            lambda: not any(is_running(pid) for pid in victim_git),
            timeout=10,
            what=f"the victim's git processes {victim_git} to die",
        )
        # Now let the server send the pack: nobody is left to receive it. (Its upload-pack dies
        # on the broken pipe, and with it the shell that file:// transport ran it from, whose
        # cwd is the tmp dir.)
        (hook_dir / "release").touch()
        wait_until(
            lambda: not processes_using(in_progress),
            timeout=10,
            what="no process left working in the tmp dir",
        )
        if waiter is None:
            before = snapshot(in_progress)
            time.sleep(0.3)
            assert snapshot(in_progress) == before, "the killed clone is still being written"
            assert not (cache_dir / "repos" / git_dir.name).exists()
            # The killed clone never got its refs: nothing finished the transfer behind our back.
            assert git(f"--git-dir={in_progress}", "for-each-ref") == ""
            fresh = RepoStore(cache_dir, lock_timeout=20)
            assert fresh.resolve(upstream.url, "main") == upstream.rev("main")
            assert sum(stats.clones for stats in fresh.stats.values()) == 1
        else:
            result = waiter.finish(timeout=60)
            assert result["sha"] == upstream.rev("main")
            assert sum(stats["clones"] for stats in result["stats"].values()) == 1

    assert (git_dir / "repoclones.json").is_file()
    assert not (git_dir / "HALF-MADE").exists()
    assert list((cache_dir / "tmp").iterdir()) == []
    assert [path.name for path in (cache_dir / "repos").iterdir()] == [git_dir.name]
    assert count_git_commands(trace_file, "upload-pack") == 2  # the killed one and the new one
    wait_until(lambda: not processes_using(upstream.path), 10, "the parked upload-pack to end")


def _partial_objects(git_dir: Path, upstream: Upstream) -> None:
    git("init", "--quiet", "--bare", str(git_dir))
    git(f"--git-dir={git_dir}", "hash-object", "-w", "--stdin", input=b"some blob\n")
    pack_dir = git_dir / "objects" / "pack"
    (pack_dir / "tmp_pack_Ab12Cd").write_bytes(b"PACK\x00\x00\x00\x02 truncated")


def _complete_but_unmarked(git_dir: Path, upstream: Upstream) -> None:
    git("clone", "--quiet", "--bare", upstream.url, str(git_dir))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda git_dir, upstream: git_dir.mkdir(parents=True), id="empty-dir"),
        pytest.param(_partial_objects, id="partial-objects"),
        pytest.param(_complete_but_unmarked, id="complete-without-marker"),
    ],
)
def test_entry_without_marker_is_replaced(
    upstream: Upstream,
    cache_dir: Path,
    trace_file: Path,
    build: Callable[[Path, Upstream], object],
) -> None:
    """A repos/ entry without repoclones.json (killed between building and publishing, or left
    half-made) is never trusted: it is replaced by a fresh clone."""
    store = RepoStore(cache_dir, timeout=60, lock_timeout=20)
    git_dir = store.git_dir(upstream.url)
    build(git_dir, upstream)
    (git_dir / "NOT-PUBLISHED").write_text("made without the completion marker\n")
    before = count_git_commands(trace_file, "upload-pack")

    assert store.clone(upstream.url) == git_dir
    assert (git_dir / "repoclones.json").is_file()
    assert not (git_dir / "NOT-PUBLISHED").exists()
    assert sum(stats.clones for stats in store.stats.values()) == 1
    assert count_git_commands(trace_file, "upload-pack") == before + 1
    assert store.resolve(upstream.url, "v1.1") == upstream.rev("v1.1")
    assert [path.name for path in (cache_dir / "repos").iterdir()] == [git_dir.name]
    assert list((cache_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize("victim_mode", ["holding the lock", "mid-fetch"])
def test_killed_lock_holder_does_not_block(
    upstream: Upstream,
    store: RepoStore,
    cache_dir: Path,
    trace_file: Path,
    tmp_path: Path,
    victim_mode: str,
) -> None:
    """A process SIGKILLed while it holds the repository lock (idle, or fetching a commit) does
    not block the next one: the OS drops the flock, the fetch is simply redone."""
    git_dir = store.clone(upstream.url)
    lock_path = cache_dir / "locks" / f"{git_dir.name[: -len('.git')]}.lock"
    pr = upstream.rev("refs/pull/7/head")
    args = {"cache": str(cache_dir), "url": upstream.url, "barrier": False}
    hook_dir = tmp_path / "hook"
    with ChildGroup(tmp_path / "logs") as group, held_upload(hook_dir) as config:
        if victim_mode == "holding the lock":
            victim = group.start("hold-lock", args)
            victim.wait_ready()
        else:
            victim = group.start("resolve", {**args, "name": pr}, child_env(config))
            victim.wait_ready()
            wait_for_upload(hook_dir, victim)
        assert not lock_is_free(lock_path)
        victim.kill()
        assert lock_is_free(lock_path)

    fresh = RepoStore(cache_dir, timeout=60, lock_timeout=20)
    started = time.monotonic()
    wt = fresh.add_worktree(upstream.url, pr, tmp_path / "wt")
    assert time.monotonic() - started < 10
    assert (wt / "pr.txt").read_text() == "pull request\n"
    fresh.remove_worktree(wt)
    assert git(f"--git-dir={git_dir}", "rev-parse", f"refs/repoclones/pins/{pr}") == pr
    killed_uploads = 1 if victim_mode == "mid-fetch" else 0
    assert count_git_commands(trace_file, "upload-pack") == 2 + killed_uploads
    assert registered_worktrees(git_dir) == [str(git_dir)]
    wait_until(lambda: not processes_using(upstream.path), 10, "the parked upload-pack to end")


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_killed_worktree_owner_is_pruned_live_one_kept(
    upstream: Upstream, cache_dir: Path, tmp_path: Path, reaped: bool
) -> None:
    """A process killed after `worktree add`, before teardown: the next new RepoStore to use
    the repository prunes its registration and branch, and leaves alone the worktree of a
    process that is still alive. A killed process not yet reaped (a zombie) counts as dead."""
    c1, c2 = upstream.rev("v1.0^{commit}"), upstream.rev("v1.1")
    args = {"cache": str(cache_dir), "url": upstream.url}
    with ChildGroup(tmp_path / "logs") as group:
        victim = group.start("hold-worktree", {**args, "commit": c1, "path": str(tmp_path / "v")})
        dead = json.loads(victim.wait_ready())
        alive = group.start("hold-worktree", {**args, "commit": c2, "path": str(tmp_path / "a")})
        live = json.loads(alive.wait_ready())
        victim.kill(reap=reaped)

        fresh = RepoStore(cache_dir, timeout=60, lock_timeout=20)
        git_dir = fresh.git_dir(upstream.url)
        # Before the next use, the dead process's registration is still there.
        assert Path(dead["admin"]).is_dir()
        assert f"refs/heads/{dead['branch']}" in branches(git_dir)

        wt = fresh.add_worktree(upstream.url, "main", tmp_path / "new")
        assert not (Path(dead["admin"]) / "gitdir").exists()  # withdrawn: git no longer lists it
        assert branches(git_dir) == {f"refs/heads/{live['branch']}", f"refs/heads/{wt.branch}"}
        assert sorted(registered_worktrees(git_dir)) == sorted(
            [str(git_dir), str(tmp_path / "a"), str(wt.path)]
        )
        # The live process's worktree is intact: registration, branch, files, clean status.
        assert Path(live["admin"]).is_dir()
        assert (tmp_path / "a" / "src" / "app.py").read_text() == "VERSION = 2\n"
        assert git("-C", str(tmp_path / "a"), "rev-parse", "HEAD") == c2
        assert git("-C", str(tmp_path / "a"), "status", "--porcelain") == ""

        fresh.remove_worktree(wt)
        alive.send("remove")
        alive.finish(timeout=30)

    assert registered_worktrees(git_dir) == [str(git_dir)]
    assert branches(git_dir) == set()


def test_killed_mid_branch_deletion_does_not_break_teardown(
    upstream: Upstream,
    store: RepoStore,
    cache_dir: Path,
    tmp_path: Path,
    make_fifo: Callable[[Path], Fifo],
) -> None:
    """SIGKILL while the teardown's `update-ref -d` holds packed-refs.lock: that git dies with
    its owner (git cannot clean up on SIGKILL), the next process can still remove its
    worktrees, and the dead one's branch is pruned."""
    c1 = upstream.rev("v1.0^{commit}")
    git_dir = store.clone(upstream.url)
    assert not (git_dir / "packed-refs").exists()  # the store fetches: all refs are loose
    args = {"cache": str(cache_dir), "url": upstream.url, "commit": c1, "path": str(tmp_path / "v")}
    with ChildGroup(tmp_path / "logs") as group:
        victim = group.start("hold-worktree", args)
        dead = json.loads(victim.wait_ready())
        # A deletion takes packed-refs.lock, then opens packed-refs: a FIFO there blocks it on
        # open() with the lock held, a deterministic kill point.
        fifo = make_fifo(git_dir / "packed-refs")
        victim.send("remove")
        wait_until(lambda: (git_dir / "packed-refs.lock").exists(), 10, "packed-refs.lock")
        blocked = [pid for pid in descendants(victim.pid) if "update-ref" in cmdline(pid)]
        assert blocked, "no git of the victim is deleting the branch"
        victim.kill()
        # Once its owner is gone, the git it started must not live on: this one would wait
        # for the FIFO forever (it used to, and piled up run after run).
        wait_until(
            lambda: not any(is_running(pid) for pid in blocked),
            timeout=10,
            what=f"the victim's git {blocked} to die with it",
        )
        # Released, then removed, only now: had git survived, it would finish the deletion
        # and take packed-refs.lock away, hiding what a killed git leaves behind.
        fifo.remove()
    assert (git_dir / "packed-refs.lock").exists()  # what the killed git left behind

    fresh = RepoStore(cache_dir, timeout=60, lock_timeout=20)
    wt = fresh.add_worktree(upstream.url, c1, tmp_path / "wt")
    fresh.remove_worktree(wt)  # today: WorktreeError "Could not delete branch"
    assert branches(git_dir) == set(), f"{dead['branch']} of the dead process was not pruned"
