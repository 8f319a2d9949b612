"""Who owns a worktree is decided by a lock the owner holds, not by pid/host/start time.

Real processes in real namespaces: an owner or a pruner in another pid namespace
(`unshare --pid --fork --mount-proc`), an owner with another hostname (`unshare --uts`), a
cache reached through a symlink, a worktree a test makes with its own `git worktree add`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.children import ChildGroup
from upstream import Upstream, git

from pytest_repoclones import RepoStore, cli
from pytest_repoclones._ownership import Owner, judge, owner_alive

pytestmark = pytest.mark.slow


def _can_unshare(*flags: str) -> str | None:
    """None if this machine lets us make the namespaces, else why not (the skip reason)."""
    if shutil.which("unshare") is None:
        return "util-linux unshare is not installed"
    probe = subprocess.run(
        ["unshare", *flags, "true"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        return f"this machine refuses `unshare {' '.join(flags)}`: {probe.stderr.strip()}"
    return None


PID_NS = ("--pid", "--fork", "--mount-proc", "--kill-child")
UTS_NS = ("--uts",)
needs_pid_ns = pytest.mark.skipif(
    _can_unshare(*PID_NS[:3]) is not None, reason=str(_can_unshare(*PID_NS[:3]))
)
needs_uts_ns = pytest.mark.skipif(
    _can_unshare(*UTS_NS) is not None, reason=str(_can_unshare(*UTS_NS))
)


def branches(git_dir: Path) -> set[str]:
    refs = git(f"--git-dir={git_dir}", "for-each-ref", "--format=%(refname)", "refs/heads/")
    return set(refs.splitlines())


@needs_pid_ns
def test_owner_in_another_pid_namespace_keeps_its_worktree(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """A container (own pid namespace) holds a worktree; the host's next session and the
    host's `clear`/`gc` see its pid as someone else's (pid 1 is the host's init): they used to
    delete its worktree and branch. The owner's lock says it lives."""
    c1 = upstream.rev("v1.0^{commit}")
    args = {"cache": str(cache_dir), "url": upstream.url, "commit": c1, "path": str(tmp_path / "c")}
    with ChildGroup(tmp_path / "logs") as group:
        container = group.start("hold-worktree", args, prefix=("unshare", *PID_NS))
        held = json.loads(container.wait_ready())
        reason = (Path(held["admin"]) / "locked").read_text()
        assert " pid=1 " in reason  # what the host cannot judge by pid

        host = RepoStore(cache_dir, timeout=60, lock_timeout=20)
        wt = host.add_worktree(upstream.url, "main", tmp_path / "host-wt")  # prunes the dead
        host.remove_worktree(wt)
        assert Path(held["admin"]).is_dir()
        assert f"refs/heads/{held['branch']}" in branches(host.git_dir(upstream.url))
        assert (tmp_path / "c" / "README.md").read_text() == "# project\n"

        for command in (["clear", "--all"], ["gc", "--max-size", "0"]):
            status = cli.main(["--cache-dir", str(cache_dir), *command])
            assert host.git_dir(upstream.url).is_dir(), command
            assert status in (0, 1), command
        assert Path(held["admin"]).is_dir()

        container.send("remove")
        container.finish(timeout=30)
    assert branches(host.git_dir(upstream.url)) == set()


@needs_pid_ns
def test_pruner_in_another_pid_namespace_keeps_live_worktree(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """The other way round: a session in a container cannot see the host owner's pid at all
    (it used to take it for dead and delete the live test's worktree)."""
    c1, c2 = upstream.rev("v1.0^{commit}"), upstream.rev("v1.1")
    host = RepoStore(cache_dir, timeout=60, lock_timeout=20)
    live = host.add_worktree(upstream.url, c1, tmp_path / "live")
    args = {
        "cache": str(cache_dir),
        "url": upstream.url,
        "commit": c2,
        "path": str(tmp_path / "ns-wt"),
        "file": "run.sh",
        "barrier": False,
    }
    with ChildGroup(tmp_path / "logs") as group:
        container = group.start("clone", args, prefix=("unshare", *PID_NS))
        container.wait_ready()
        result = container.finish(timeout=60)
    assert result["ok"]
    assert live.admin_dir.is_dir()
    assert (live.path / "src" / "app.py").read_text() == "VERSION = 1\n"
    assert git("-C", str(live.path), "status", "--porcelain") == ""
    assert f"refs/heads/{live.branch}" in branches(live.git_dir)
    host.remove_worktree(live)


@needs_uts_ns
def test_killed_owner_with_another_hostname_is_pruned(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """A SIGKILLed container with a hostname of its own: its registration and branch used to
    stay forever ("cannot tell" another host), and `clear --all` refused the entry for good."""
    c1 = upstream.rev("v1.0^{commit}")
    args = {
        "cache": str(cache_dir),
        "url": upstream.url,
        "commit": c1,
        "path": str(tmp_path / "c"),
        "hostname": "ci-job-1",
    }
    with ChildGroup(tmp_path / "logs") as group:
        container = group.start("hold-worktree", args, prefix=("unshare", *UTS_NS))
        held = json.loads(container.wait_ready())
        assert "host=ci-job-1" in (Path(held["admin"]) / "locked").read_text()
        container.kill()

    git_dir = RepoStore(cache_dir).git_dir(upstream.url)
    status = cli.main(["--cache-dir", str(cache_dir), "clear", "--all"])
    assert status == 0
    assert not git_dir.exists()
    assert not (tmp_path / "c").exists()  # its checkout went with the entry

    # And a session (not only the CLI) prunes such a registration too.
    with ChildGroup(tmp_path / "logs2") as group:
        args["path"] = str(tmp_path / "c2")
        container = group.start("hold-worktree", args, prefix=("unshare", *UTS_NS))
        held = json.loads(container.wait_ready())
        container.kill()
    host = RepoStore(cache_dir, timeout=60, lock_timeout=20)
    wt = host.add_worktree(upstream.url, "main", tmp_path / "host-wt")
    assert not (Path(held["admin"]) / "gitdir").exists()  # withdrawn: git no longer lists it
    assert not (tmp_path / "c2").exists()
    assert branches(git_dir) == {f"refs/heads/{wt.branch}"}
    host.remove_worktree(wt)


def test_worktree_made_by_a_test_itself_is_never_pruned(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """A test runs its own `git worktree add` in its worktree; while git checks out, the entry
    is locked "initializing", which used to count as a dead owner of ours: another session
    starting then deleted the half-made worktree under git's feet."""
    first = RepoStore(cache_dir, timeout=60)
    wt = first.add_worktree(upstream.url, "main", tmp_path / "wt")
    git("-C", str(wt.path), "worktree", "add", "-b", "mine", str(tmp_path / "own"), "HEAD~1")
    own_admin = Path(git("-C", str(tmp_path / "own"), "rev-parse", "--absolute-git-dir"))
    # Freeze it mid-`worktree add`, as git leaves it while it checks out.
    (own_admin / "locked").write_text("initializing")
    second = RepoStore(cache_dir, timeout=60)
    other = second.add_worktree(upstream.url, "v1.0", tmp_path / "other")  # first use: prunes
    assert own_admin.is_dir()
    assert (tmp_path / "own" / "README.md").is_file()
    assert "refs/heads/mine" in branches(wt.git_dir)
    # Even with its directory gone it stays: git's own `worktree prune` is the owner's tool.
    (own_admin / "locked").unlink()
    shutil.rmtree(tmp_path / "own")
    third = RepoStore(cache_dir, timeout=60)
    third.add_worktree(upstream.url, "v1.1", tmp_path / "third")
    assert own_admin.is_dir()
    second.remove_worktree(other)
    first.remove_worktree(wt)


def test_killed_owner_through_symlinked_cache_loses_its_checkout(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A cache reached through a symlink: pruning a killed owner removed its registration but
    left its checkout on disk (unresolved paths were compared with resolved ones)."""
    real = tmp_path / "real-cache"
    real.mkdir()
    link = tmp_path / "cache-link"
    link.symlink_to(real)
    c1 = upstream.rev("v1.0^{commit}")
    args = {"cache": str(link), "url": upstream.url, "commit": c1, "path": str(tmp_path / "v")}
    with ChildGroup(tmp_path / "logs") as group:
        victim = group.start("hold-worktree", args)
        held = json.loads(victim.wait_ready())
        victim.kill()
    assert (tmp_path / "v" / "README.md").is_file()
    fresh = RepoStore(link, timeout=60, lock_timeout=20)
    wt = fresh.add_worktree(upstream.url, "main", tmp_path / "new")
    assert not (Path(held["admin"]) / "gitdir").exists()  # withdrawn: git no longer lists it
    assert not (tmp_path / "v").exists()
    fresh.remove_worktree(wt)


def test_liveness_rule_units(cache_dir: Path, tmp_path: Path) -> None:
    """The rule itself: an owner lives exactly while it holds its lock; missing file = dead;
    foreign and kept entries are never judged by owner; a probe never releases our own lock."""
    owner = Owner(cache_dir)
    assert not owner.path.exists()  # nothing written before the first registration
    reason = owner.reason("repoclones/main/wt-1")
    assert owner.path.exists()
    assert owner_alive(cache_dir, owner.id)
    assert owner_alive(cache_dir, owner.id)  # probing twice does not drop our lock
    admin = tmp_path / "admin"
    admin.mkdir()
    (admin / "gitdir").write_text(f"{tmp_path / 'tree' / '.git'}\n")
    (admin / "locked").write_text(reason)
    assert judge(cache_dir, admin).state == "live"
    owner.close()
    assert judge(cache_dir, admin).state == "dead"
    assert not owner_alive(cache_dir, "0123456789abcdef")
    assert not owner_alive(cache_dir, "../../etc/passwd")
    (admin / "locked").write_text("initializing")
    assert judge(cache_dir, admin).state == "foreign"
    (admin / "locked").unlink()
    assert judge(cache_dir, admin).state == "foreign"
    (admin / "locked").write_text("repoclones kept=1 branch=x")
    assert judge(cache_dir, admin).state == "kept"
    assert not judge(cache_dir, admin).in_use  # its directory does not exist


def test_dead_owner_lock_is_released_by_the_kernel(cache_dir: Path, tmp_path: Path) -> None:
    """An owner in another process: alive while it runs, dead the moment it is SIGKILLed."""
    code = (
        "import sys, time; from pathlib import Path; "
        "from pytest_repoclones._ownership import Owner; "
        "o = Owner(Path(sys.argv[1])); o.ensure(); print(o.id, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(cache_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        owner_id = child.stdout.readline().strip()
        assert owner_alive(cache_dir, owner_id)
    finally:
        child.kill()
        child.communicate(timeout=10)
    assert not owner_alive(cache_dir, owner_id, forget_dead=True)
    assert not (cache_dir / "owners" / f"{owner_id}.lock").exists()


def test_owner_files_of_ended_processes_are_swept(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """Every process with worktrees makes an owner file; those of processes that ended (or
    were killed) are deleted by the next process's first worktree, so they never pile up."""
    args = {
        "cache": str(cache_dir),
        "url": upstream.url,
        "commit": upstream.rev("v1.1"),
        "file": "run.sh",
        "barrier": False,
    }
    with ChildGroup(tmp_path / "logs") as group:
        for n in range(3):
            child = group.start("clone", {**args, "path": str(tmp_path / f"wt{n}")})
            child.wait_ready()
            assert child.finish(timeout=60)["ok"]
        killed = group.start("hold-worktree", {**args, "path": str(tmp_path / "killed")})
        killed.wait_ready()
        killed.kill()
    # Each child's first worktree swept the files of those before it: the killed one's is left.
    assert len(list((cache_dir / "owners").glob("*.lock"))) == 1
    store = RepoStore(cache_dir, timeout=60)
    wt = store.add_worktree(upstream.url, "main", tmp_path / "mine")
    assert [p.name for p in (cache_dir / "owners").iterdir()] == [f"{store._owner.id}.lock"]
    store.remove_worktree(wt)
    store.close()
    assert list((cache_dir / "owners").iterdir()) == []
