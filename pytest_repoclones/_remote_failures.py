"""Remotes that did not answer in this session: later operations on them fail at once.

A stalled or dead remote costs the whole time limit on every operation that touches it: once per
declared commit in prefetch, again in every test (10 commits at ``--repo-timeout=2``: 42 s; at
the default 600 s, hours). After the first such failure the session remembers it, and every
later network operation on that repository raises at once, naming the first error. Under
pytest-xdist the controller and its workers tell each other through their execnet channels
(``on_record`` publishes, ``learn`` takes what another process saw; see _xdist.py), so nothing
is shared through a filesystem. The next session tries the remote again.

Only "nobody answered" counts: a time limit hit, a refused or unreachable connection, a host
that does not resolve. A remote that answers, even with "not found" or "authentication
failed", is asked again: the next commit or ref may well exist.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from .errors import GitTimeoutError, RemoteError, RepoClonesError

__all__ = ["FailureRecord", "RemoteFailures", "did_not_answer"]

# Lines git, curl (http, https) and ssh print when nobody answered. Checked against git 2.39:
#   git://  refused      "fatal: unable to connect to 127.0.0.1:" + "...: errno=Connection refused"
#   http:// refused      "fatal: unable to access '...': Failed to connect to 127.0.0.1 port N
#                         after 0 ms: Couldn't connect to server"
#   ssh://  refused      "ssh: connect to host 127.0.0.1 port N: Connection refused", then only
#                        "fatal: Could not read from remote repository." (which ssh also prints
#                        after an authentication failure: not a sign by itself)
#   timeouts: curl "Connection timed out" / "Operation timed out after N milliseconds",
#             ssh "Connection timed out (during banner exchange)", curl's "Operation too slow"
#             (http.lowSpeedLimit)
#   unreachable: "No route to host", "Network is unreachable", "Host is unreachable"
#   unknown host: curl "Could not resolve host|proxy", ssh "Could not resolve hostname",
#             git:// "unable to look up HOST (port 9418) (Name or service not known)"
_NO_ANSWER_RE = re.compile(
    r"connection refused|couldn't connect to server|failed to connect to|unable to connect to"
    r"|timed out|timeout was reached|operation too slow"
    r"|no route to host|network is unreachable|host is unreachable|host is down"
    r"|could not resolve (?:host|proxy)|unable to look up|name or service not known"
    r"|temporary failure in name resolution",
    re.IGNORECASE,
)
# Lines that mean the remote did answer, whatever else the text holds (a URL that happens to
# contain "timed out", say): not found, not exported, authentication, HTTP status, ref missing.
_ANSWERED_RE = re.compile(
    r"not found|remote error|not exported|returned error: \d"
    r"|authentication failed|could not read (?:username|password)"
    r"|permission denied|host key verification failed"
    r"|not our ref|couldn't find remote ref|no such remote ref",
    re.IGNORECASE,
)


def did_not_answer(error: RepoClonesError, stderr: str = "") -> bool:
    """Whether ``error`` (with git's whole ``stderr``, if known) says nobody answered.

    git's one-line summary is not enough: for ssh it is "Could not read from remote
    repository." whether the connection was refused or the key was; the line that tells
    them apart comes before it.
    """
    if isinstance(error, GitTimeoutError):
        return True  # run_git killed it: the remote never finished answering in time
    if not isinstance(error, RemoteError):
        return False
    text = f"{error.git_error or ''}\n{stderr}"
    return not _ANSWERED_RE.search(text) and bool(_NO_ANSWER_RE.search(text))


def _telling_lines(stderr: str) -> str | None:
    """The lines of ``stderr`` that say why nobody answered, as one line."""
    lines = [line.strip() for line in stderr.splitlines() if _NO_ANSWER_RE.search(line)]
    return " ".join(lines) or None


#: A failure as it crosses between processes: ``problem``, ``git_error`` and ``hint``.
FailureRecord = dict[str, str | None]


@dataclass(frozen=True)
class _Failure:
    problem: str
    git_error: str | None
    hint: str | None

    @classmethod
    def from_record(cls, record: object) -> _Failure | None:
        """The failure another process sent, or None if ``record`` is not one."""
        if not isinstance(record, dict) or not isinstance(record.get("problem"), str):
            return None

        def text(name: str) -> str | None:
            value = record.get(name)
            return value if isinstance(value, str) else None

        return cls(record["problem"], text("git_error"), text("hint"))


class RemoteFailures:
    """The first no-answer error of each repository (cache key) in this session.

    Thread-safe (prefetch runs repositories in parallel, and under xdist failures told by other
    processes arrive in execnet's receiver thread).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._seen: dict[str, _Failure] = {}
        #: Told of each failure this process records (not those it learns), outside the lock,
        #: in the thread that recorded it: the xdist link publishes it to the run.
        self.on_record: Callable[[str, FailureRecord], None] | None = None

    def __len__(self) -> int:
        with self._mutex:
            return len(self._seen)

    def __iter__(self) -> Iterator[str]:
        """Cache keys of the remotes that did not answer (seen by this process or told)."""
        with self._mutex:
            return iter(list(self._seen))

    def __contains__(self, key: object) -> bool:
        with self._mutex:
            return key in self._seen

    def check(self, key: str, url: str) -> None:
        """Raise RemoteError if ``key``'s remote already failed to answer in this session.

        ``url`` is the redacted URL; callers up the stack add the commit.
        """
        with self._mutex:
            first = self._seen.get(key)
        if first is None:
            return
        hint = "it is tried again in the next session"
        raise RemoteError(
            f"Remote did not answer earlier in this session ({first.problem}); not trying again",
            url=url,
            git_error=first.git_error,
            hint=f"{hint}; {first.hint}" if first.hint else hint,
        )

    def record(self, key: str, error: RepoClonesError, stderr: str = "") -> None:
        """Remember ``error`` if it says nobody answered (the first one wins).

        ``stderr`` is git's whole error output, with secrets already scrubbed: it is sent to
        the run's other processes and shown in later errors.
        """
        if not did_not_answer(error, stderr):
            return
        failure = _Failure(error.problem, _telling_lines(stderr) or error.git_error, error.hint)
        with self._mutex:
            if key in self._seen:
                return
            self._seen[key] = failure
        publish = self.on_record
        if publish is not None:
            publish(key, asdict(failure))

    def learn(self, key: str, record: object) -> bool:
        """Take a failure another process of the run recorded (as ``on_record`` gave it).

        False if ``record`` is malformed or ``key`` is known already: the first error this
        process met, or was told, stays the one it names.
        """
        failure = _Failure.from_record(record)
        if failure is None:
            return False
        with self._mutex:
            if key in self._seen:
                return False
            self._seen[key] = failure
        return True
