"""A remote that did not answer once in a session is not asked again until the session ends.

A stalled server cost the whole ``--repo-timeout`` once per declared commit in prefetch and
again in every test: 10 commits at 2 s took 42 s, and at the default 600 s a job died after
hours. Now the first no-answer error is remembered, and under xdist told to the controller and
the other workers over their execnet channels; later operations on that remote fail at once
naming it. A remote that answers, even "not found", is asked again.

Everything is real: git against servers on 127.0.0.1 (one that accepts connections and never
answers, one that answers with an HTTP status, a closed port), inner pytest runs in
subprocesses, with and without xdist.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers.messages import message_of, raises_saying
from helpers.servers import BlackHole
from inner import run
from upstream import Upstream

from pytest_repoclones import (
    CommitNotFoundError,
    GitTimeoutError,
    LockTimeoutError,
    RemoteError,
    RepoClonesError,
    RepoStore,
)
from pytest_repoclones._remote_failures import RemoteFailures, did_not_answer

TIMEOUT = 2  # --repo-timeout of the runs against the stalled server
COMMITS = [hashlib.sha1(f"commit {i}".encode()).hexdigest() for i in range(10)]
EARLIER = "Remote did not answer earlier in this session"


# -- servers on loopback ------------------------------------------------------------------------


class Stalled(BlackHole):
    """Accepts TCP connections on 127.0.0.1 and never sends a byte; counts the connections."""


@pytest.fixture
def stalled() -> Iterator[Stalled]:
    server = Stalled()
    yield server
    server.close()


class Answering:
    """An HTTP server that answers every request with one status (and counts requests)."""

    def __init__(self, status: int) -> None:
        requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="repoclones test"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/project.git"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def answering() -> Iterator[type[Answering]]:
    servers: list[Answering] = []

    class Tracked(Answering):
        def __init__(self, status: int) -> None:
            super().__init__(status)
            servers.append(self)

    yield Tracked
    for server in servers:
        server.close()


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


def fetch_stderr(url: str, tmp_path: Path) -> tuple[str, str]:
    """What git 2.39+ itself prints when fetching ``url``: (first error line, all of stderr),
    run the way the store runs it (no prompt, ssh in batch mode)."""
    git_dir = tmp_path / f"probe-{len(list(tmp_path.glob('probe-*')))}.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(git_dir)], check=True)
    result = subprocess.run(
        ["git", f"--git-dir={git_dir}", "fetch", "--quiet", "--", url, "+HEAD:refs/probe"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=no",
        },
    )
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1])
    return first, result.stderr


def as_remote_error(url: str, first: str) -> RemoteError:
    """What the store records for a failed fetch (before knowing whether anyone answered)."""
    return RemoteError("Could not reach the remote", url=url, git_error=first)


# -- which failures count as "did not answer" ---------------------------------------------------


@pytest.mark.parametrize("scheme", ["git", "http", "https", "ssh"])
def test_a_refused_connection_did_not_answer(scheme: str, tmp_path: Path) -> None:
    if scheme == "ssh" and shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    url = f"{scheme}://127.0.0.1:{closed_port()}/project.git"
    first, stderr = fetch_stderr(url, tmp_path)
    assert did_not_answer(as_remote_error(url, first), stderr), stderr
    if scheme == "ssh":
        # git's own summary line is the same as after a refused key: only the ssh line tells.
        assert first == "fatal: Could not read from remote repository."
        assert not did_not_answer(as_remote_error(url, first))


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_an_http_status_is_an_answer(
    status: int, answering: type[Answering], tmp_path: Path
) -> None:
    server = answering(status)
    first, stderr = fetch_stderr(server.url, tmp_path)
    assert server.requests, "git never reached the server"
    assert not did_not_answer(as_remote_error(server.url, first), stderr), stderr


def test_local_answers_are_answers(upstream: Upstream, tmp_path: Path) -> None:
    """A commit the remote does not have, a path that is not a repository."""
    for url in (upstream.url, (tmp_path / "nothing.git").as_uri()):
        missing = "0123456789abcdef0123456789abcdef01234567"
        git_dir = tmp_path / "answers.git"
        subprocess.run(["git", "init", "--quiet", "--bare", str(git_dir)], check=True)
        result = subprocess.run(
            ["git", f"--git-dir={git_dir}", "fetch", "--quiet", "--", url, missing],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        error = as_remote_error(url, result.stderr.strip().splitlines()[0])
        assert not did_not_answer(error, result.stderr), result.stderr
        shutil.rmtree(git_dir)


@pytest.mark.parametrize(
    "stderr",
    [
        # Not reproducible offline; as curl, ssh and git print them.
        "fatal: unable to access 'https://example.com/p.git/': Could not resolve host: example.com",
        "ssh: Could not resolve hostname example.com: Name or service not known\n"
        "fatal: Could not read from remote repository.",
        "fatal: unable to look up example.com (port 9418) (Name or service not known)",
        "fatal: unable to access 'https://10.0.0.1/p.git/': Failed to connect to 10.0.0.1 port "
        "443 after 130000 ms: Connection timed out",
        "fatal: unable to access 'https://h/p.git/': Operation timed out after 300000 "
        "milliseconds with 0 out of 0 bytes received",
        "ssh: connect to host 10.0.0.1 port 22: No route to host\n"
        "fatal: Could not read from remote repository.",
        "ssh: connect to host 10.0.0.1 port 22: Network is unreachable",
        "Connection timed out during banner exchange\n"
        "fatal: Could not read from remote repository.",
        "error: RPC failed; curl 28 Operation too slow. Less than 1000 bytes/sec transferred "
        "the last 30 seconds",
    ],
)
def test_no_answer_as_printed(stderr: str) -> None:
    lines = stderr.splitlines()
    first = next((line for line in lines if line.startswith(("fatal", "error"))), lines[-1])
    assert did_not_answer(as_remote_error("https://h/p.git", first), stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "git@github.com: Permission denied (publickey).\n"
        "fatal: Could not read from remote repository.",
        "ERROR: Repository not found.\nfatal: Could not read from remote repository.",
        "Host key verification failed.\nfatal: Could not read from remote repository.",
        "remote: Invalid username or password.\n"
        "fatal: Authentication failed for 'https://github.com/o/p.git/'",
        "fatal: remote error: access denied or repository not exported: /p.git",
        "fatal: remote error: upload-pack: not our ref 0123456789abcdef0123456789abcdef01234567",
        "fatal: couldn't find remote ref refs/heads/nope",
        # An answer wins over words in a URL that look like a failure.
        "fatal: repository 'https://h/connection refused.git/' not found",
        "fatal: the remote end hung up unexpectedly",  # it did answer, then went away
    ],
)
def test_answers_as_printed(stderr: str) -> None:
    first = next(line for line in stderr.splitlines() if line.startswith(("fatal", "error")))
    assert not did_not_answer(as_remote_error("https://h/p.git", first), stderr)


def test_only_remote_errors_and_git_timeouts_count() -> None:
    assert did_not_answer(GitTimeoutError("git fetch timed out after 2 s and was killed"))
    assert not did_not_answer(CommitNotFoundError("Commit not found", git_error="timed out"))
    assert not did_not_answer(LockTimeoutError("Gave up after 1 s waiting for the lock"))
    assert not did_not_answer(RepoClonesError("Connection refused"))


# -- remembering, and sharing between processes ---------------------------------------------------


def test_a_failure_told_by_another_process_is_raised_here() -> None:
    """Two processes' memories joined as the xdist channels join them: what one records, it
    publishes; the other learns it and raises it; each keeps the first error it met; a record
    names the telling line of git's output, not its summary."""
    url = "ssh://127.0.0.1:1/project.git"
    stderr = (
        "ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n"
        "fatal: Could not read from remote repository.\n\n"
        "Please make sure you have the correct access rights\nand the repository exists.\n"
    )
    first_error = as_remote_error(url, "fatal: Could not read from remote repository.")
    one, two = RemoteFailures(), RemoteFailures()
    published: list[tuple[str, object]] = []
    one.on_record = lambda key, record: published.append((key, record))
    two.check("key", url)  # nothing recorded: no error
    one.record("key", first_error, stderr)
    one.record("key", GitTimeoutError("git fetch timed out after 2 s and was killed"))
    assert len(published) == 1, "only the first failure is published"
    assert two.learn(*published[0])
    assert not two.learn(*published[0]), "known already: the first one stays"
    for failures in (one, two):
        with pytest.raises(RemoteError) as info:
            failures.check("key", url)
        assert info.value.url == url
        assert info.value.problem.startswith(f"{EARLIER} (Could not reach the remote)")
        assert info.value.git_error == "ssh: connect to host 127.0.0.1 port 1: Connection refused"
        assert "tried again in the next session" in message_of(info.value)
    two.check("other key", url)  # per repository


@pytest.mark.parametrize("record", [None, "text", {}, {"problem": 3}, ["problem"]])
def test_a_malformed_record_is_not_learned(record: object) -> None:
    failures = RemoteFailures()
    assert not failures.learn("key", record)
    failures.check("key", "https://h/p.git")


def test_an_answer_is_not_remembered() -> None:
    failures = RemoteFailures()
    published: list[str] = []
    failures.on_record = lambda key, record: published.append(key)
    failures.record("key", as_remote_error("https://h/p.git", "fatal: repository 'x' not found"))
    failures.check("key", "https://h/p.git")
    assert published == []


@pytest.mark.parametrize("scheme", ["git", "http", "ssh"])
def test_a_refused_remote_fails_fast_afterwards(
    scheme: str, cache_dir: Path, tmp_path: Path
) -> None:
    """Through the store: the first request gets git's error, the next ones (other commits,
    a clone, branch names) the first error again without starting git."""
    if scheme == "ssh" and shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    url = f"{scheme}://127.0.0.1:{closed_port()}/project.git"
    store = RepoStore(cache_dir, timeout=30)
    with pytest.raises(RemoteError) as info:
        store.add_worktree(url, COMMITS[0], tmp_path / "wt0")
    assert EARLIER not in str(info.value)
    for attempt in (
        lambda: store.add_worktree(url, COMMITS[1], tmp_path / "wt1"),
        lambda: store.resolve(url, "main"),
        lambda: store.clone(url),
    ):
        with raises_saying(RemoteError, EARLIER) as info:
            attempt()
        assert url in str(info.value)
        # The first error, by its telling line (curl says it its own way).
        message = str(info.value)
        assert "Connection refused" in message or "Couldn't connect to server" in message
    assert store.stats[store.git_dir(url).name[: -len(".git")]].clones == 0


def test_not_found_does_not_make_later_commits_fail(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """A remote that answers "no such commit" is asked again for the next one."""
    store = RepoStore(cache_dir, timeout=30)
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(CommitNotFoundError):
        store.add_worktree(upstream.url, missing, tmp_path / "wt-missing")
    pull = upstream.rev("refs/pull/7/head")  # only a fetch by name brings it
    wt = store.add_worktree(upstream.url, pull, tmp_path / "wt-pull")
    assert wt.commit == pull
    store.remove_worktree(wt)


def test_an_http_error_status_does_not_make_later_requests_fail_fast(
    answering: type[Answering], cache_dir: Path, tmp_path: Path
) -> None:
    server = answering(404)
    store = RepoStore(cache_dir, timeout=30)
    for n in range(2):
        with pytest.raises(RemoteError) as info:
            store.add_worktree(server.url, COMMITS[n], tmp_path / f"wt{n}")
        assert EARLIER not in str(info.value)
        assert "not found" in message_of(info.value)
        assert len(server.requests) == n + 1  # asked again


# -- what users see: a whole run against a stalled remote ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
@pytest.mark.parametrize("how", ["marker", "factory"])
def test_a_stalled_remote_costs_one_timeout_per_run(
    pytester: pytest.Pytester, stalled: Stalled, cache_dir: Path, xdist: list[str], how: str
) -> None:
    """10 tests, each on its own commit of a remote that accepts and never answers: one
    time limit for the whole run (prefetch, controller and workers), not one per commit."""
    url = f"http://127.0.0.1:{stalled.port}/project.git"
    if how == "marker":
        # Prefetched after collection (by the xdist controller with -n 2), then each test.
        source = f"""
            import pytest

            @pytest.mark.worktree({url!r}, {COMMITS!r})
            def test_commit(repo_worktree):
                pass
            """
    else:
        # No prefetch: the first test to ask meets the stall, in whichever worker.
        source = f"""
            import pytest

            @pytest.mark.parametrize("commit", {COMMITS!r})
            def test_commit(worktree, commit):
                worktree({url!r}, commit)
            """
    pytester.makepyfile(source)
    started = time.monotonic()
    result = run(pytester, cache_dir, f"--repo-timeout={TIMEOUT}", *xdist, "-rfE")
    elapsed = time.monotonic() - started

    # One time limit plus pytest's start-up (and the workers'); 40 s and more before.
    assert elapsed < 15, f"{elapsed:.1f} s: the time limit was paid more than once"
    assert len(stalled.accepted) == 1, "the remote was asked more than once in one run"
    # Markers fail in the setup of repo_worktree (errors), the factory in the test (failures).
    word = "ERROR" if how == "marker" else "FAILED"
    result.assert_outcomes(**({"errors": 10} if how == "marker" else {"failed": 10}))
    failures = [line for line in result.stdout.lines if line.startswith(f"{word} ")]
    assert len(failures) == 10
    assert sorted(c for c in COMMITS if any(f"[{c}]" in line for line in failures)) == sorted(
        COMMITS
    )
    # Each report (its "E" lines; the short summary is cut to the terminal's width) names the
    # repository; all but the one that met the stall, if a test did, say the remote did not
    # answer earlier, with the first error.
    errors = [line for line in result.stdout.lines if line.startswith("E ")]
    assert sum(f"(repository {url}, commit '" in line for line in errors) == 10
    earlier = f"RemoteError: {EARLIER} (git fetch timed out after {TIMEOUT} s"
    timed_out = f"GitTimeoutError: git fetch timed out after {TIMEOUT} s"
    counts = (sum(earlier in line for line in errors), sum(timed_out in line for line in errors))
    assert counts == ((10, 0) if how == "marker" else (9, 1)), result.stdout.str()
