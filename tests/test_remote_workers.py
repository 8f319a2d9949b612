"""xdist workers that run elsewhere (``--tx socket=…``, ``--tx ssh=…``): nothing shared with the
controller but xdist's own channels.

A real execnet socket server (``execnet/script/socketserver.py``, as a user would start one on
another machine) runs on 127.0.0.1 with its own working directory, ``HOME`` and ``TMPDIR``, and
the tests' source checked out in its own directory; a second worker is an ordinary local one.
The worker it serves either uses a cache of its own (another machine's) or, given the
controller's ``--repo-cache-dir``, the controller's cache. Either way: every declared commit is
in a worker's cache before its first test, the summary counts every worker's worktrees, the
controller writes nothing to its temporary directory, and a stalled remote costs one time
limit for the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import execnet
import pytest
from helpers.servers import BlackHole
from upstream import Upstream, upload_packs

from pytest_repoclones._xdist import cache_identity, same_cache

SERVER_SCRIPT = Path(execnet.__file__).parent / "script" / "socketserver.py"
INNER_FLAGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

INNER_TESTS = """
import json
import os
import subprocess

import pytest


@pytest.fixture(autouse=True)
def before_the_test(repo_store, tmp_path):
    # Runs before repo_worktree: what this process's cache holds before the test needs it.
    git_dir = repo_store.git_dir(URL)
    missing = [
        sha
        for sha in DECLARED
        if subprocess.run(
            ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{sha}^{{commit}}"],
            capture_output=True,
        ).returncode
    ]
    row = {
        "worker": os.environ["PYTEST_XDIST_WORKER"],
        "cwd": os.getcwd(),
        "tmpdir": os.environ.get("TMPDIR"),
        "tmp_path": str(tmp_path),
        "cache": str(repo_store.cache_dir),
        "missing": missing,
        "clones": sum(stats.clones for stats in repo_store.stats.values()),
    }
    with open(LOG, "a") as log:
        log.write(json.dumps(row) + "\\n")


@pytest.mark.worktree(URL, COMMITS)
@pytest.mark.parametrize("n", range(4))
def test_remote(repo_worktree, n):
    assert (repo_worktree / "README.md").read_text() == "# project\\n"
"""


@dataclass
class SocketServer:
    """An execnet socket server on 127.0.0.1 and the directories of its 'machine'."""

    port: int
    root: Path  # its working directory
    home: Path
    tmp: Path
    checkout: Path  # where the tests' source is, as on a remote machine

    @property
    def own_cache(self) -> Path:
        return self.home / ".cache" / "pytest-repoclones"

    def tx(self) -> str:
        return f"--tx=socket=127.0.0.1:{self.port}//chdir={self.checkout}"


@pytest.fixture
def socket_server(tmp_path: Path) -> Iterator[SocketServer]:
    """Started with the environment of a machine of its own: no cache setting, its own HOME
    and TMPDIR (git's config and trace file stay those of the test, to count its fetches)."""
    root = tmp_path / "remote"
    home, tmp, checkout = root / "home", root / "tmp", root / "checkout"
    for path in (home, tmp, checkout):
        path.mkdir(parents=True)
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTEST_REPO_CACHE_DIR", "XDG_CACHE_HOME", "PYTEST_DEBUG_TEMPROOT")
        and not name.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))
    }
    env.update(HOME=str(home), TMPDIR=str(tmp))
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        # Port 0: the server picks a free one and prints it ("Entering Accept loop").
        process = subprocess.Popen(
            [sys.executable, "-u", str(SERVER_SCRIPT), "127.0.0.1:0"],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = _wait_for_port(process, log_path)
        if port is None:
            pytest.skip(
                f"execnet's socket server did not start here: {log_path.read_text()[-500:]!r}"
            )
        yield SocketServer(port, root, home, tmp, checkout)
    finally:
        # It serves one worker at a time, in its own process, then waits for the next.
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_for_port(process: subprocess.Popen[bytes], log: Path) -> int | None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(rb"Entering Accept loop \('127\.0\.0\.1', (\d+)\)", log.read_bytes())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    return None


def write_suite(pytester: pytest.Pytester, server: SocketServer, source: str) -> None:
    """The test module in pytester's directory (the controller's and the local worker's) and
    in the server's checkout (the remote worker's), with the same node ids."""
    pytester.makepyfile(test_remote=source)
    (server.checkout / "test_remote.py").write_text((pytester.path / "test_remote.py").read_text())


def run_with_remote(
    pytester: pytest.Pytester, server: SocketServer, *args: str
) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--dist=load", "--tx=popen", server.tx(), *INNER_FLAGS, *args, timeout=180
    )


def records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    log = pytester.path / "records.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def controller_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The controller's (and its local worker's) TMPDIR: it must stay empty."""
    path = tmp_path / "controller-tmp"
    path.mkdir()
    monkeypatch.setenv("TMPDIR", str(path))
    return path


@pytest.mark.parametrize("cache", ["own", "shared"])
def test_a_remote_worker_gets_its_commits_prefetched_and_counted(
    pytester: pytest.Pytester,
    trace_file: Path,  # before the server: it inherits the variable, to count its git too
    socket_server: SocketServer,
    upstream: Upstream,
    cache_dir: Path,
    controller_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    cache: str,
) -> None:
    """``own``: the remote worker's cache is its machine's default one (the controller's is set
    in an environment variable the server does not have); ``shared``: the controller passes
    --repo-cache-dir, which names the same directory for the worker on this machine."""
    server = socket_server
    declared = [upstream.rev("v1.0^{commit}"), upstream.rev("refs/pull/7/head")]
    constants = {
        "URL": upstream.url,
        "COMMITS": [*declared, "main"],
        "DECLARED": [*declared, upstream.rev("main")],
        "LOG": str(pytester.path / "records.jsonl"),
    }
    header = "\n".join(f"{name} = {value!r}" for name, value in constants.items())
    write_suite(pytester, server, header + "\n" + INNER_TESTS)
    args: list[str] = ["-rfE"]
    if cache == "own":
        monkeypatch.setenv("PYTEST_REPO_CACHE_DIR", str(cache_dir))
    else:
        args.append(f"--repo-cache-dir={cache_dir}")

    result = run_with_remote(pytester, server, *args)
    result.assert_outcomes(passed=12)

    rows = records(pytester)
    remote = [r for r in rows if r["cwd"] == str(server.checkout)]
    local = [r for r in rows if r["cwd"] != str(server.checkout)]
    assert remote, f"the remote worker ran no test: {rows}"
    assert local, f"the local worker ran no test: {rows}"
    # The remote worker lives in its own directories, not the controller's.
    assert {r["tmpdir"] for r in remote} == {str(server.tmp)}
    assert all(Path(r["tmp_path"]).is_relative_to(server.tmp) for r in remote)
    # Every declared commit was in each worker's cache before its first test.
    assert [r for r in rows if r["missing"]] == []
    assert {r["cache"] for r in local} == {str(cache_dir)}
    if cache == "own":
        assert {r["cache"] for r in remote} == {str(server.own_cache)}
        # Warmed by the remote worker itself before it reported its collection: one clone
        # and one fetch of the pull-request commit, as for the controller's cache.
        assert {r["clones"] for r in remote} == {1}
        assert upload_packs(trace_file, upstream.path) == 4
    else:
        assert {r["cache"] for r in remote} == {str(cache_dir)}
        assert {r["clones"] for r in remote} == {0}, "the controller prefetched for it"
        assert not server.own_cache.exists()
        assert upload_packs(trace_file, upstream.path) == 2
    assert {r["clones"] for r in local} == {0}, "the controller prefetched for it"

    # The summary counts the worktrees of both workers, and names the remote's own cache.
    result.stdout.fnmatch_lines(["*repoclones*", "12 worktrees from 1 repository: *"])
    own_line = [line for line in result.outlines if line.startswith("(own cache of ")]
    if cache == "own":
        assert len(own_line) == 1, result.outlines
        assert f" in {server.own_cache} on " in own_line[0]
        assert f"{len(remote)} worktree" in own_line[0]
    else:
        assert own_line == []
    # Nothing crossed through the controller's temporary directory.
    assert list(controller_tmp.iterdir()) == []


def test_a_stalled_remote_costs_one_timeout_with_a_remote_worker(
    pytester: pytest.Pytester,
    socket_server: SocketServer,
    cache_dir: Path,
    controller_tmp: Path,
) -> None:
    """The controller's prefetch meets the stall once; the remote worker and the local one
    are told over their channels, and none of their tests tries the remote again."""
    stalled = BlackHole()
    try:
        url = f"http://127.0.0.1:{stalled.port}/project.git"
        commits = [f"{n:040x}" for n in range(1, 7)]
        source = f"""
            import pytest

            @pytest.mark.worktree({url!r}, {commits!r})
            def test_commit(repo_worktree):
                pass
            """
        write_suite(pytester, socket_server, source)
        started = time.monotonic()
        result = run_with_remote(
            pytester, socket_server, f"--repo-cache-dir={cache_dir}", "--repo-timeout=2", "-v"
        )
        elapsed = time.monotonic() - started
        result.assert_outcomes(errors=6)
        # gw1 is the socket server's worker (--tx=popen comes first): it had tests too.
        remote_errors = [line for line in result.outlines if re.match(r"\[gw1\] .*ERROR", line)]
        assert remote_errors, result.outlines
        assert len(stalled.accepted) == 1, "the remote was asked more than once in one run"
        assert elapsed < 20, f"{elapsed:.1f} s: the time limit was paid more than once"
        errors = [line for line in result.outlines if line.startswith("E ")]
        earlier = "RemoteError: Remote did not answer earlier in this session"
        assert sum(earlier in line for line in errors) == 6, result.outlines
        assert list(controller_tmp.iterdir()) == []
    finally:
        stalled.close()


# -- whether a worker's cache is the controller's -------------------------------------------------


def test_a_cache_is_recognised_even_if_made_after_its_identity_was_taken(tmp_path: Path) -> None:
    """The controller takes its cache's identity without making the directory; a worker that
    uses the same path, or a symlink to it, recognises it later, made or not."""
    cache = tmp_path / "parent" / "cache"
    identity = cache_identity(cache)  # neither parent nor cache exists yet
    assert identity is not None
    assert same_cache(cache, identity)
    cache.mkdir(parents=True)
    assert same_cache(cache, identity)
    (tmp_path / "link").symlink_to(tmp_path / "parent")
    assert same_cache(tmp_path / "link" / "cache", cache_identity(cache))
    # Reached by another path before it existed: taken for another cache (that worker then
    # warms it itself: lock waits, no second clone).
    assert not same_cache(tmp_path / "link" / "cache", identity)


def test_a_cache_elsewhere_is_not_the_controllers(tmp_path: Path) -> None:
    cache = tmp_path / "a" / "cache"
    cache.mkdir(parents=True)
    identity = cache_identity(cache)
    assert identity is not None
    (tmp_path / "b" / "cache").mkdir(parents=True)
    assert not same_cache(tmp_path / "b" / "cache", identity)  # same name, another directory
    assert not same_cache(tmp_path / "a" / "other", identity)
    assert not same_cache(cache, ["another kernel", *identity[1:]])  # same path elsewhere
    assert not same_cache(cache, None)
    assert not same_cache(None, identity)
