"""Faults outside the plugin's control: remotes that vanish, rewrite history, stall, ask for
credentials; locks held by other processes; cache entries damaged on disk.

Everything runs for real on 127.0.0.1: a "black hole" TCP server that accepts and never answers,
an HTTP server running ``git http-backend`` (optionally behind Basic auth), child processes
holding the repository lock. Each test is bounded: the store's timeouts are seconds, children
and servers are stopped at teardown whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.messages import message_of, raises_saying
from helpers.servers import BlackHole, GitHTTPServer
from upstream import Upstream, git, truncate_pack

from pytest_repoclones import (
    CacheCorruptError,
    CommitNotFoundError,
    GitTimeoutError,
    LockTimeoutError,
    RemoteError,
    RepoClonesError,
    RepoStore,
)

TIMEOUT = 2.0  # the store's --repo-timeout in the timeout tests
SLACK = 5.0  # what the issue allows on top of it


# -- servers on loopback ------------------------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    server = BlackHole()
    yield server
    server.close()


@pytest.fixture
def serve_http() -> Iterator[Callable[[Path, str | None], GitHTTPServer]]:
    """Start git http-backend servers for repositories under a root; stopped at teardown."""
    servers: list[GitHTTPServer] = []

    def start(root: Path, credentials: str | None = None) -> GitHTTPServer:
        server = GitHTTPServer(root, credentials)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# -- helpers ---------------------------------------------------------------------------------


def processes_mentioning(text: str) -> list[str]:
    """Running git/ssh processes (not zombies) whose arguments contain ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                args = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
        except (OSError, IndexError):
            continue
        if state in (b"Z", b"X") or not args:
            continue
        program = os.path.basename(args[0])
        if program.startswith(("git", "ssh")) and any(text in arg for arg in args):
            found.append(f"{entry}: {' '.join(args)}")
    return found


def wait_for_no_processes(text: str, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def add_config(text: str) -> None:
    with open(os.environ["GIT_CONFIG_GLOBAL"], "a", encoding="utf-8") as handle:
        handle.write(text)


def assert_no_leftovers(cache_dir: Path, git_dir: Path | None = None) -> None:
    """Nothing half-made in tmp/, and no published entry unless ``git_dir`` (kept intact)."""
    assert list((cache_dir / "tmp").iterdir()) == []
    entries = sorted((cache_dir / "repos").iterdir())
    assert entries == ([git_dir] if git_dir else [])
    if git_dir is not None:
        assert (git_dir / "repoclones.json").is_file()
        assert git(f"--git-dir={git_dir}", "for-each-ref", "refs/repoclones/pins/") == ""


# -- the remote disappears, or rewrites its history ------------------------------------------


def test_remote_deleted_after_warm_cache(
    cache_dir: Path, upstream: Upstream, tmp_path: Path
) -> None:
    """Commits already in the cache keep working in later sessions; anything that needs the
    remote fails at once with an error naming the repository and git's reason."""
    v10 = upstream.rev("v1.0^{commit}")
    v11 = upstream.rev("v1.1^{commit}")
    tag_object = upstream.rev("refs/tags/v1.0")
    RepoStore(cache_dir).clone(upstream.url)
    uncached = upstream.commit({"late.txt": "pushed after the cache was warmed\n"}, "late")
    shutil.rmtree(upstream.path)

    store = RepoStore(cache_dir, timeout=30)
    wt = store.add_worktree(upstream.url, v11, tmp_path / "wt-full")
    assert wt.commit == v11
    store.remove_worktree(wt)
    assert store.resolve(upstream.url, v11[:10]) == v11  # an abbreviation found locally
    assert store.resolve(upstream.url, tag_object) == v10  # a tag object peeled locally

    for commit in (uncached, "main", "v1.1"):
        started = time.monotonic()
        with pytest.raises(RemoteError) as info:
            store.add_worktree(upstream.url, commit, tmp_path / "wt-fail")
        assert time.monotonic() - started < 10
        message = str(info.value)
        assert upstream.url in message
        assert "does not appear to be a git repository" in message_of(info.value)
        assert not (tmp_path / "wt-fail").exists()
    assert store.test_branches(upstream.url) == []
    assert store.live_worktrees(upstream.url) == []


def test_force_pushed_remote_still_serves_commits_by_name(
    cache_dir: Path, make_upstream: Callable[..., Upstream], tmp_path: Path
) -> None:
    up = make_upstream("rewritten")
    old_base = up.commit({"a.txt": "1\n"}, "old 1")
    old_tip = up.commit({"a.txt": "2\n"}, "old 2")
    assert RepoStore(cache_dir).resolve(up.url, "main") == old_tip
    never_cached = up.commit({"a.txt": "3\n"}, "pushed, never cached, then rewritten away")
    # The force-push: main now holds an unrelated history; the old commits are unreachable.
    up.commit({"a.txt": "new 1\n"}, "new root", branch="rewrite")
    new_tip = up.commit({"a.txt": "new 2\n"}, "new 2", branch="rewrite")
    up.set_ref("refs/heads/main", new_tip)
    up.delete_ref("refs/heads/rewrite")

    store = RepoStore(cache_dir)  # a new session takes the forced update
    assert store.resolve(up.url, "main") == new_tip
    for commit in (old_base, old_tip, never_cached):  # cached, cached, fetched by name
        wt = store.add_worktree(up.url, commit, tmp_path / f"wt-{commit[:7]}")
        assert wt.commit == commit
        assert git("rev-parse", "HEAD", cwd=wt.path) == commit
        store.remove_worktree(wt)
    # Once the upstream really drops an object, the error names it and what was tried.
    dropped = up.commit({"d.txt": "gone\n"}, "dropped", branch="doomed")
    up.delete_ref("refs/heads/doomed")
    up.git("gc", "--quiet", "--prune=now")
    with pytest.raises(CommitNotFoundError) as info:
        store.add_worktree(up.url, dropped, tmp_path / "wt-dropped")
    message = str(info.value)
    assert dropped in message
    assert up.url in message
    assert "tried:" in message_of(info.value)
    assert not (tmp_path / "wt-dropped").exists()


# -- timeouts: a stalled server ------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "git", "ssh"])
def test_stalled_server_times_out_and_cleans_up(
    scheme: str, black_hole: BlackHole, cache_dir: Path, tmp_path: Path
) -> None:
    if scheme == "ssh" and shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    url = f"{scheme}://127.0.0.1:{black_hole.port}/x.git"
    store = RepoStore(cache_dir, timeout=TIMEOUT, lock_timeout=30)
    started = time.monotonic()
    with pytest.raises(GitTimeoutError) as info:
        store.add_worktree(url, "main", tmp_path / "wt")
    elapsed = time.monotonic() - started

    assert isinstance(info.value, TimeoutError)
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    message = str(info.value)
    assert "timed out" in message_of(info.value)
    assert url in message
    assert black_hole.accepted, "git never reached the server"
    assert not (tmp_path / "wt").exists()
    assert_no_leftovers(cache_dir)
    assert wait_for_no_processes(str(black_hole.port)) == []


def test_stalled_server_after_warm_cache(
    black_hole: BlackHole, cache_dir: Path, upstream: Upstream, tmp_path: Path
) -> None:
    """The host stops answering after the cache was filled: cached commits never touch it;
    a commit that needs a fetch times out cleanly and leaves the entry intact."""
    url = f"http://127.0.0.1:{black_hole.port}/project.git"
    add_config(f'[url "{upstream.url}"]\n\tinsteadOf = {url}\n')  # warm through the real one
    v10 = upstream.rev("v1.0^{commit}")
    RepoStore(cache_dir).clone(url)
    open(os.environ["GIT_CONFIG_GLOBAL"], "w").close()  # now the URL reaches the black hole
    missing = upstream.rev("refs/pull/7/head")

    store = RepoStore(cache_dir, timeout=TIMEOUT)
    wt = store.add_worktree(url, v10, tmp_path / "wt-cached")
    assert wt.commit == v10
    started = time.monotonic()
    with raises_saying(GitTimeoutError, "timed out") as info:
        store.add_worktree(url, missing, tmp_path / "wt-missing")
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert url in str(info.value)
    assert not (tmp_path / "wt-missing").exists()
    assert_no_leftovers(cache_dir, store.git_dir(url))
    assert wait_for_no_processes(str(black_hole.port)) == []
    assert store.live_worktrees(url) == [wt.path]
    store.remove_worktree(wt)
    assert store.test_branches(url) == []
    again = store.add_worktree(url, v10, tmp_path / "wt-again")  # the entry still works
    store.remove_worktree(again)


# -- no prompt may ever wait ---------------------------------------------------------------------


@pytest.fixture
def quick_store(cache_dir: Path) -> RepoStore:
    """Should a prompt ever wait, the store's own timeout ends the test within seconds."""
    return RepoStore(cache_dir, timeout=10, lock_timeout=10)


@pytest.fixture
def http_project(
    tmp_path: Path,
    serve_http: Callable[[Path, str | None], GitHTTPServer],
) -> Callable[[str | None], tuple[GitHTTPServer, Upstream]]:
    def make(credentials: str | None) -> tuple[GitHTTPServer, Upstream]:
        root = tmp_path / "served"
        up = Upstream(root / "project.git")
        up.commit({"README.md": "served over http\n"})
        return serve_http(root, credentials), up

    return make


# A session leader without a controlling terminal that opens a terminal acquires it: from here
# on, /dev/tty in this process and its children is the test's pseudo-terminal.
_ON_TERMINAL = r"""
import json, os, subprocess, sys, time
os.dup2(os.open(sys.argv[1], os.O_RDWR), 0)
"""

_PLUGIN_ON_TERMINAL = (
    _ON_TERMINAL
    + r"""
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
    has_terminal = True
except OSError:
    has_terminal = False
from pytest_repoclones import RepoClonesError, RepoStore
started = time.monotonic()
result = {"error": None, "message": ""}
try:
    RepoStore(sys.argv[2], timeout=120).clone(sys.argv[3])
except RepoClonesError as exc:
    result = {"error": type(exc).__name__, "message": str(exc)}
result.update(elapsed=time.monotonic() - started, has_terminal=has_terminal)
print(json.dumps(result), flush=True)
"""
)

_PLAIN_GIT_ON_TERMINAL = _ON_TERMINAL + 'subprocess.run(["git", "ls-remote", sys.argv[2]])\n'


class Terminal:
    """A pseudo-terminal, and children that have it as their controlling terminal."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        self.name = os.ttyname(self._slave)
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-c", code, self.name, *args],
            stdin=self._slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.children.append(child)
        return child

    def read_until(self, needle: bytes, timeout: float) -> bytes:
        """What was written to the terminal, up to ``needle`` or ``timeout``."""
        data = b""
        deadline = time.monotonic() + timeout
        while needle not in data and (left := deadline - time.monotonic()) > 0:
            if select.select([self.master], [], [], left)[0]:
                try:
                    data += os.read(self.master, 4096)
                except OSError:  # EIO: nobody has the terminal open any more
                    break
        return data

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
            child.communicate(timeout=10)
        os.close(self._slave)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal()
    yield term
    term.close()


def test_auth_required_fails_fast_even_with_a_terminal(
    http_project: Callable[[str | None], tuple[GitHTTPServer, Upstream]],
    terminal: Terminal,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    """A 401 and no credential: a clear error at once, although the process has a controlling
    terminal git could prompt on, GIT_TERMINAL_PROMPT=1 and askpass programs are set."""
    server, _ = http_project("alice:s3cret")
    url = server.url("project.git")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "1"}
    env.pop("GIT_ASKPASS", None)
    env.pop("SSH_ASKPASS", None)
    control = terminal.start(_PLAIN_GIT_ON_TERMINAL, url, env=env)
    assert b"Username for" in terminal.read_until(b"Username for", 10), "control: no prompt"
    assert control.poll() is None, "control: plain git should be waiting for an answer"
    os.killpg(control.pid, signal.SIGKILL)
    control.communicate(timeout=10)
    terminal.read_until(b"never", 0.2)  # discard the control's echo

    marker = tmp_path / "askpass-ran"
    askpass = script(tmp_path / "askpass", f"touch '{marker}'\nsleep 60\necho secret")
    add_config(f"[core]\n\taskPass = {askpass}\n")
    env.update(GIT_ASKPASS=str(askpass), SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force")
    child = terminal.start(_PLUGIN_ON_TERMINAL, str(cache_dir), url, env=env)
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the clone waited (for a prompt?) with a terminal attached")
    written = terminal.read_until(b"Username for", 0.2)
    assert child.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["has_terminal"], "test setup: the child had no controlling terminal"
    assert result["error"] == "RemoteError"
    assert result["elapsed"] < 10
    assert url in result["message"]
    assert "terminal prompts disabled" in result["message"]
    assert not marker.exists(), "an askpass program ran"
    assert b"Username" not in written, written
    assert b"Password" not in written, written


def test_missing_credential_is_an_error_naming_the_url(
    http_project: Callable[[str | None], tuple[GitHTTPServer, Upstream]],
    quick_store: RepoStore,
    tmp_path: Path,
) -> None:
    server, _ = http_project("alice:s3cret")
    for url, says in (
        (server.url("project.git"), "terminal prompts disabled"),
        (server.url("project.git", "alice:wrong"), "Authentication failed"),
    ):
        started = time.monotonic()
        with pytest.raises(RemoteError) as info:
            quick_store.add_worktree(url, None, tmp_path / "wt")
        assert time.monotonic() - started < 10
        message = str(info.value)
        assert f"127.0.0.1:{server.port}/project.git" in message
        assert says in message_of(info.value)
        assert "wrong" not in message
    assert_no_leftovers(quick_store.cache_dir)


def test_credential_helper_is_honoured(
    http_project: Callable[[str | None], tuple[GitHTTPServer, Upstream]],
    quick_store: RepoStore,
    tmp_path: Path,
) -> None:
    server, up = http_project("alice:s3cret")
    add_config(
        '[credential]\n\thelper = "!f() { test \\"$1\\" = get && '
        "printf 'username=alice\\npassword=s3cret\\n'; }; f\"\n"
    )
    url = server.url("project.git")
    wt = quick_store.add_worktree(url, None, tmp_path / "wt")
    assert wt.commit == up.rev("refs/heads/main")
    assert (wt.path / "README.md").read_text() == "served over http\n"
    quick_store.remove_worktree(wt)


def test_password_in_url_is_used_but_never_stored(
    http_project: Callable[[str | None], tuple[GitHTTPServer, Upstream]],
    quick_store: RepoStore,
    tmp_path: Path,
    trace_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "pw-" + os.urandom(8).hex()
    server, up = http_project(f"alice:{password}")
    caplog.set_level(logging.DEBUG)
    url = server.url("project.git", f"alice:{password}")
    wt = quick_store.add_worktree(url, "main", tmp_path / "wt")
    assert wt.commit == up.rev("refs/heads/main")
    quick_store.remove_worktree(wt)
    assert quick_store.resolve(url, "main") == wt.commit
    for directory, dirs, files in os.walk(quick_store.cache_dir):
        for name in dirs + files:
            assert password not in name
        for name in files:
            assert password.encode() not in Path(directory, name).read_bytes(), name
    assert password not in trace_file.read_text()  # never in any git process's argv
    assert password not in caplog.text


@pytest.mark.parametrize(
    "special",
    [
        pytest.param("", id="plain-token"),
        pytest.param(
            "%40",
            id="percent-encoded-token",
        ),
    ],
)
def test_token_as_user_name_never_appears_in_the_error(
    special: str,
    http_project: Callable[[str | None], tuple[GitHTTPServer, Upstream]],
    quick_store: RepoStore,
) -> None:
    secret = os.urandom(8).hex()
    server, _ = http_project("alice:s3cret")
    with pytest.raises(RemoteError) as info:
        quick_store.clone(server.url("project.git", f"tok{special}{secret}"))
    assert "***@" in str(info.value)
    assert secret not in str(info.value)


def _plain_git_can_list(url: str) -> subprocess.CompletedProcess[str]:
    """The control: git itself, given the same URL, authenticates."""
    return subprocess.run(
        ["git", "ls-remote", url],
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )


def test_token_as_user_name_authenticates_like_plain_git(
    http_project: Callable[[str | None], tuple[GitHTTPServer, Upstream]],
    quick_store: RepoStore,
) -> None:
    token = "tok" + os.urandom(8).hex()
    server, up = http_project(f"{token}:")  # the server takes the token with an empty password
    url = server.url("project.git", token)
    control = _plain_git_can_list(url)
    assert control.returncode == 0, f"control: {control.stderr}"
    assert quick_store.resolve(url, "main") == up.rev("refs/heads/main")


def test_percent_encoded_credentials_are_decoded_like_plain_git(
    http_project: Callable[[str | None], tuple[GitHTTPServer, Upstream]],
    quick_store: RepoStore,
) -> None:
    from urllib.parse import quote

    user, password = "al ice", "p@ss/w#rd:1%"
    server, up = http_project(f"{user}:{password}")
    url = server.url("project.git", f"{quote(user, safe='')}:{quote(password, safe='')}")
    control = _plain_git_can_list(url)
    assert control.returncode == 0, f"control: {control.stderr}"
    assert quick_store.resolve(url, "main") == up.rev("refs/heads/main")


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``ssh`` first on PATH that records its arguments and whether stdin is a terminal."""
    log = tmp_path / "ssh.log"
    script(
        tmp_path / "bin" / "ssh",
        f"echo \"args: $*\" >> '{log}'\n"
        f"if [ -t 0 ]; then echo 'stdin: tty'; else echo 'stdin: no tty'; fi >> '{log}'\n"
        "echo 'ssh: connect to host: Connection refused' >&2\nexit 255",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("GIT_SSH_COMMAND", raising=False)
    monkeypatch.delenv("GIT_SSH", raising=False)
    return log


def test_ssh_runs_in_batch_mode_without_a_terminal(
    fake_ssh: Path, quick_store: RepoStore, tmp_path: Path
) -> None:
    url = "ssh://git@127.0.0.1:2222/org/repo.git"
    with pytest.raises(RemoteError) as info:
        quick_store.add_worktree(url, None, tmp_path / "wt")
    assert url in str(info.value)
    log = fake_ssh.read_text()
    assert "-o BatchMode=yes" in log
    assert "stdin: no tty" in log
    assert "git@127.0.0.1" in log


def test_users_own_ssh_command_is_honoured(
    fake_ssh: Path, quick_store: RepoStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = script(tmp_path / "my-ssh", f"echo \"mine: $*\" >> '{fake_ssh}'\nexit 255")
    monkeypatch.setenv("GIT_SSH_COMMAND", f"{mine} -i /nonexistent/key")
    with pytest.raises(RemoteError):
        quick_store.clone("git@127.0.0.1:org/repo.git")
    log = fake_ssh.read_text()
    assert "mine: -i /nonexistent/key" in log
    assert "BatchMode" not in log


# -- the repository lock ---------------------------------------------------------------------

_LOCK_HOLDER = r"""
import sys
from pathlib import Path
from pytest_repoclones._lock import RepoLock
lock = RepoLock(Path(sys.argv[1]), timeout=10, shown_url=sys.argv[2])
with lock.hold("test: holding the lock"):
    print("ready", flush=True)
    sys.stdin.readline()
"""


class LockHolder:
    """A child process holding a repository's lock the way RepoStore does."""

    def __init__(self, lock_file: Path, url: str) -> None:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LOCK_HOLDER, str(lock_file), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.stop()
            raise AssertionError(f"lock holder did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def hold_lock(store: RepoStore) -> Iterator[Callable[[str], LockHolder]]:
    holders: list[LockHolder] = []

    def start(url: str) -> LockHolder:
        key = store.git_dir(url).name[: -len(".git")]
        holder = LockHolder(store.cache_dir / "locks" / f"{key}.lock", url)
        holders.append(holder)
        return holder

    yield start
    for holder in holders:
        holder.stop()


def test_lock_held_by_a_live_process_times_out_naming_it(
    hold_lock: Callable[[str], LockHolder], store: RepoStore, upstream: Upstream
) -> None:
    holder = hold_lock(upstream.url)
    lock_file = store.cache_dir / "locks" / f"{store.git_dir(upstream.url).name[:-4]}.lock"
    impatient = RepoStore(store.cache_dir, timeout=30, lock_timeout=1)
    started = time.monotonic()
    with pytest.raises(LockTimeoutError) as info:
        impatient.clone(upstream.url)
    elapsed = time.monotonic() - started
    assert isinstance(info.value, TimeoutError)
    assert 1 <= elapsed < 6
    message = str(info.value)
    assert upstream.url in message
    assert str(lock_file) in message
    assert f"pid {holder.pid}" in message_of(info.value)
    assert "test: holding the lock" in message_of(info.value)  # what the holder is doing
    assert not (store.cache_dir / "repos" / store.git_dir(upstream.url).name).exists()


def test_sigkilled_lock_holder_does_not_block(
    hold_lock: Callable[[str], LockHolder], store: RepoStore, upstream: Upstream
) -> None:
    holder = hold_lock(upstream.url)
    # The fault is real: the lock is held (a short wait gives up)...
    with raises_saying(LockTimeoutError, "waiting for the lock"):
        RepoStore(store.cache_dir, timeout=30, lock_timeout=0.5).clone(upstream.url)
    holder.kill()
    assert holder.process.returncode == -signal.SIGKILL  # ...and its holder died holding it.
    started = time.monotonic()
    git_dir = RepoStore(store.cache_dir, timeout=30, lock_timeout=10).clone(upstream.url)
    assert time.monotonic() - started < 5
    # Not just quick: the entry was really made, and holds the upstream's history.
    assert git_dir == store.git_dir(upstream.url)
    assert (git_dir / "repoclones.json").is_file()
    main = upstream.rev("main")
    assert git("--git-dir", str(git_dir), "rev-parse", "--verify", f"{main}^{{commit}}") == main
    assert git("--git-dir", str(git_dir), "rev-parse", "--is-bare-repository") == "true"
    assert list((store.cache_dir / "tmp").iterdir()) == []


# -- damaged cache entries ---------------------------------------------------------------------


def _only_marker_left(git_dir: Path) -> None:
    for child in git_dir.iterdir():
        if child.name != "repoclones.json":
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def _no_refs(git_dir: Path) -> None:
    shutil.rmtree(git_dir / "refs")
    (git_dir / "refs").mkdir()
    (git_dir / "packed-refs").write_text("")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated-pack": truncate_pack,
    "deleted-HEAD": lambda g: (g / "HEAD").unlink(),
    "deleted-objects": lambda g: shutil.rmtree(g / "objects"),
    "deleted-pack": lambda g: shutil.rmtree(g / "objects" / "pack"),
    "marker-without-repository": _only_marker_left,
    "no-refs-at-all": _no_refs,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_rebuilt_by_the_next_session(
    damage: str,
    cache_dir: Path,
    big_upstream: Upstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tip = big_upstream.rev("refs/heads/main")
    git_dir = RepoStore(cache_dir).clone(big_upstream.url)
    assert list((git_dir / "objects" / "pack").glob("*.pack")), "test setup: expected a pack"
    DAMAGE[damage](git_dir)

    store = RepoStore(cache_dir, timeout=60)  # a new session checks the entry on first use
    wt = store.add_worktree(big_upstream.url, tip, tmp_path / "wt")
    assert len(os.listdir(wt.path / "dir")) == 150
    assert git("rev-parse", "HEAD", cwd=wt.path) == tip
    store.remove_worktree(wt)
    assert (
        git(f"--git-dir={git_dir}", "fsck", "--no-progress", "--no-dangling", "--connectivity-only")
        == ""
    )
    assert any(str(git_dir) in record.getMessage() for record in caplog.records)
    assert list((cache_dir / "tmp").iterdir()) == []


def test_stale_git_lock_files_are_removed(
    cache_dir: Path, upstream: Upstream, tmp_path: Path
) -> None:
    git_dir = RepoStore(cache_dir).clone(upstream.url)
    ten_minutes_ago = time.time() - 600
    stale = [git_dir / "packed-refs.lock", git_dir / "refs" / "heads" / "x.lock"]
    for lock in stale:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text("")
        os.utime(lock, (ten_minutes_ago, ten_minutes_ago))
    fresh = git_dir / "refs" / "heads" / "busy.lock"  # a test's own git, working right now
    fresh.write_text("")

    store = RepoStore(cache_dir)
    wt = store.add_worktree(upstream.url, "v1.1", tmp_path / "wt")
    store.remove_worktree(wt)  # deleting the branch needs packed-refs.lock
    assert store.test_branches(upstream.url) == []
    assert [lock for lock in stale if lock.exists()] == []
    assert fresh.exists(), "a recent lock may belong to a live git and must stay"


def test_damaged_entry_in_use_by_a_live_process_names_the_path_to_delete(
    cache_dir: Path, big_upstream: Upstream, tmp_path: Path
) -> None:
    tip = big_upstream.rev("refs/heads/main")
    owner = RepoStore(cache_dir)  # this process is the live owner of the worktree
    wt = owner.add_worktree(big_upstream.url, tip, tmp_path / "wt")
    git_dir = owner.git_dir(big_upstream.url)
    truncate_pack(git_dir)

    with pytest.raises(CacheCorruptError) as info:
        RepoStore(cache_dir).add_worktree(big_upstream.url, tip, tmp_path / "wt2")
    message = str(info.value)
    assert isinstance(info.value, RepoClonesError)
    assert f"delete {git_dir}" in message
    assert "truncated" in message_of(info.value)
    assert big_upstream.url in message
    assert git_dir.is_dir(), "nothing in use may be deleted"
    assert (wt.path / "README.md").is_file()
    assert not (tmp_path / "wt2").exists()


# -- the same, end to end through the pytest options ------------------------------------------


def test_timeout_options_bound_a_whole_pytest_run(
    pytester: pytest.Pytester,
    black_hole: BlackHole,
    upstream: Upstream,
    cache_dir: Path,
) -> None:
    """``--repo-timeout`` and ``--repo-lock-timeout`` reach every git call and lock wait: a
    stalled server and a held lock each fail their test quickly with a clear report."""
    stalled = f"http://127.0.0.1:{black_hole.port}/x.git"
    store = RepoStore(cache_dir)
    key = store.git_dir(upstream.url).name[: -len(".git")]
    holder = LockHolder(cache_dir / "locks" / f"{key}.lock", upstream.url)
    try:
        pytester.makepyfile(
            f"""
            def test_stalled_server(worktree):
                worktree({stalled!r})

            def test_locked_repository(worktree):
                worktree({upstream.url!r})
            """
        )
        started = time.monotonic()
        result = pytester.runpytest_subprocess(
            "--repo-cache-dir",
            str(cache_dir),
            "--repo-timeout",
            "2",
            "--repo-lock-timeout",
            "1",
            "-p",
            "no:cacheprovider",
            timeout=60,
        )
        elapsed = time.monotonic() - started
    finally:
        holder.stop()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            f"*GitTimeoutError: git fetch timed out after 2 s*{stalled}*",
            f"*LockTimeoutError: Gave up after 1 s waiting for the lock*pid {holder.pid}*",
        ],
    )
    assert elapsed < 2 + 1 + SLACK + 5  # both limits, plus a pytest start-up
    assert wait_for_no_processes(str(black_hole.port)) == []
