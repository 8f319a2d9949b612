from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.children import cmdline, is_running
from upstream import IDENTITY, Upstream

from pytest_repoclones import RepoStore


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the developer's git config or writes to the real user cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg-cache"))
    monkeypatch.delenv("PYTEST_REPO_CACHE_DIR", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_TRACE2_EVENT"):
        monkeypatch.delenv(name, raising=False)
    for key, value in IDENTITY.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def make_upstream(tmp_path: Path) -> Callable[..., Upstream]:
    """Factory of bare upstream repositories under the test's tmp dir."""
    root = tmp_path / "upstreams"

    def make(name: str = "project", default_branch: str = "main") -> Upstream:
        return Upstream(root / f"{name}.git", default_branch)

    return make


@pytest.fixture
def upstream(make_upstream: Callable[..., Upstream]) -> Upstream:
    """A small project: main with three commits, tags v1.0 (annotated) and v1.1, a feature branch
    and a commit reachable only from a pull-request ref."""
    up = make_upstream("project")
    c1 = up.commit({"README.md": "# project\n", "src/app.py": "VERSION = 1\n"}, "initial")
    up.tag("v1.0", c1, message="release 1.0")
    c2 = up.commit({"src/app.py": "VERSION = 2\n", "run.sh": ("#!/bin/sh\necho hi\n", "100755")})
    up.tag("v1.1", c2)
    up.commit({"CHANGES": "3\n"}, "third")
    up.commit({"feature.txt": "wip\n"}, "feature work", branch="feature", parent=c1)
    up.commit({"pr.txt": "pull request\n"}, "pr", parent=c2, ref="refs/pull/7/head")
    return up


@pytest.fixture
def big_upstream(make_upstream: Callable[..., Upstream]) -> Upstream:
    """More than 100 objects, so the cached clone keeps a pack instead of loose objects."""
    up = make_upstream("big")
    up.commit({f"dir/file{i:03}.txt": f"content {i}\n" * 20 for i in range(150)}, "150 files")
    up.commit({"README.md": "big\n"}, "readme")
    return up


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(cache_dir: Path) -> RepoStore:
    return RepoStore(cache_dir, timeout=60, lock_timeout=60)


#: What the ``run`` fixture returns: (exit status, stdout, stderr).
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the cache command in this process against ``cache_dir``: (status, stdout, stderr)."""
    from pytest_repoclones import cli

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = cli.main(["--cache-dir", str(cache_dir), *args])
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


@pytest.fixture
def trace_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every git process started from now on (in any process) logs its argv here."""
    path = tmp_path / "trace2.jsonl"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(path))
    return path


class Fifo:
    """A named pipe a git process blocks on when it opens it: a deterministic stopping point."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.removed = False
        os.mkfifo(path)

    def release(self) -> None:
        """Let every process blocked opening the FIFO go on; it then reads end-of-file.

        An open with O_RDWR never blocks on Linux and wakes the blocked readers even if it is
        closed at once. Without this, removing the FIFO would leave them blocked forever: an
        unlinked FIFO can never be opened for writing again.
        """
        if not self.removed:
            with contextlib.suppress(FileNotFoundError):
                os.close(os.open(self.path, os.O_RDWR | os.O_NONBLOCK))

    def remove(self) -> None:
        """Release, then unlink; once only (git may put a file of its own there afterwards)."""
        if not self.removed:
            self.release()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.removed = True


@pytest.fixture
def make_fifo() -> Iterator[Callable[[Path], Fifo]]:
    """FIFOs that are released and removed at teardown, whatever the test did."""
    made: list[Fifo] = []

    def make(path: Path) -> Fifo:
        made.append(Fifo(path))
        return made[-1]

    yield make
    for fifo in made:
        fifo.remove()


# -- the suite leaves no process of its own running --------------------------------------------
#
# Every process a run starts (xdist workers, pytester and store_worker children, every git the
# plugin or a test runs, what those start) inherits RUN_TOKEN_VAR from the controller's
# environment. When the run is over, anything still running with the token is a leftover: it
# is listed, killed, and the run fails. Processes started with an environment built from
# scratch escape this net; everything here derives its environment from os.environ.

RUN_TOKEN_VAR = "REPOCLONES_TEST_RUN"
# A process may still be exiting when the run ends (a killed child being reaped, an xdist
# worker shutting down): leftovers are judged only after this long.
LEFTOVER_GRACE = 2.0

_RUN_TOKEN = pytest.StashKey[str]()
_INHERITED_TOKENS = pytest.StashKey[str | None]()
_SESSION = pytest.StashKey[pytest.Session]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # an xdist worker: it inherited the controller's token
    # A run started inside another run (the tests of this check) appends its own token: each
    # run checks the processes it started, and the outer run still sees the inner run's.
    inherited = os.environ.get(RUN_TOKEN_VAR)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:16]}"
    os.environ[RUN_TOKEN_VAR] = f"{inherited}:{token}" if inherited else token
    config.stash[_RUN_TOKEN] = token
    config.stash[_INHERITED_TOKENS] = inherited


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)  # after xdist's workers and every other plugin are done
def pytest_unconfigure(config: pytest.Config) -> None:
    token = config.stash.get(_RUN_TOKEN, None)
    if token is None:
        return
    inherited = config.stash[_INHERITED_TOKENS]
    if inherited is None:
        os.environ.pop(RUN_TOKEN_VAR, None)
    else:
        os.environ[RUN_TOKEN_VAR] = inherited
    leftovers = _leftover_processes(token)
    if not leftovers:
        return
    # The working directory usually names the test (pytest's tmp_path): printed after the
    # command line, so that the line starts with what the process is.
    lines = [
        f"pid {pid}: {' '.join(argv) or '(no command line)'}  (cwd {_cwd(pid)})"
        for pid, argv in leftovers
    ]
    for pid, _ in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    title = f"{len(leftovers)} process(es) started by this run still running at its end; killed"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("!", title, red=True, bold=True)
        for line in lines:
            reporter.write_line(line)
    else:
        sys.stderr.write("\n".join([title, *lines]) + "\n")
    # wrap_session() returns session.exitstatus after unconfigure: a run that passed fails now.
    session = config.stash.get(_SESSION, None)
    if session is not None and session.exitstatus in (
        pytest.ExitCode.OK,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _leftover_processes(token: str) -> list[tuple[int, list[str]]]:
    """Live processes carrying ``token``, other than this one and its ancestors, once those
    that end within LEFTOVER_GRACE have ended."""
    deadline = time.monotonic() + LEFTOVER_GRACE
    mine = _ancestors(os.getpid())
    while True:
        found = [
            (pid, cmdline(pid))
            for pid in _processes_with_token(token)
            if pid not in mine and is_running(pid)
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "?"


def _ancestors(pid: int) -> set[int]:
    """``pid`` and its parent, grandparent... up to the first process."""
    found = {pid}
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                pid = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        found.add(pid)
    return found


def _processes_with_token(token: str) -> list[int]:
    """Processes whose environment (as it was at their exec) names ``token``."""
    if not os.path.isdir("/proc"):
        return []  # not Linux: the check is off
    prefix = f"{RUN_TOKEN_VAR}=".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:  # gone, or another user's (not ours, then)
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(prefix):
                if token in variable[len(prefix) :].decode(errors="replace").split(":"):
                    found.append(int(entry))
                break
    return found
