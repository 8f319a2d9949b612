"""Remotes that did not answer in this session: later operations on them fail at once.

A stalled or dead remote costs the whole time limit on every operation that touches it: once per
declared commit in prefetch, again in every test (10 commits at ``--repo-timeout=2``: 42 s; at
the default 600 s, hours). After the first such failure the session remembers it, in memory
and, under pytest-xdist, in the run's exchange directory that the controller and every worker
share, and every later network operation on that repository raises at once, naming the first
error. The next session tries the remote again.

Only "nobody answered" counts: a time limit hit, a refused or unreachable connection, a host
that does not resolve. A remote that answers, even with "not found" or "authentication
failed", is asked again: the next commit or ref may well exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import GitTimeoutError, RemoteError, RepoClonesError

__all__ = ["RemoteFailures", "did_not_answer"]

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


@dataclass(frozen=True)
class _Failure:
    problem: str
    git_error: str | None
    hint: str | None


class RemoteFailures:
    """The first no-answer error of each repository (cache key) in this session.

    Thread-safe (prefetch runs repositories in parallel). With ``directory`` set, shared by
    every process that sets the same one: the first to record a repository writes its file
    once, atomically; the others read it before their next network operation on it.
    """

    def __init__(self, directory: Path | None = None) -> None:
        #: Shared by the processes of one run (the xdist exchange directory), or None. Set it
        #: before the first network operation: failures recorded earlier stay in memory.
        self.directory = directory
        self._mutex = threading.Lock()
        self._seen: dict[str, _Failure] = {}

    def __len__(self) -> int:
        with self._mutex:
            return len(self._seen)

    def __iter__(self) -> Iterator[str]:
        """Cache keys of the remotes that did not answer (seen by this process)."""
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
        if first is None and self.directory is not None:
            shared = self._load(key)
            if shared is not None:
                with self._mutex:
                    first = self._seen.setdefault(key, shared)
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

        ``stderr`` is git's whole error output, with secrets already scrubbed: it is written
        to the shared directory and shown in later errors.
        """
        if not did_not_answer(error, stderr):
            return
        failure = _Failure(error.problem, _telling_lines(stderr) or error.git_error, error.hint)
        with self._mutex:
            if key in self._seen:
                return
            self._seen[key] = failure
        if self.directory is not None and not self._write(key, failure):
            # Another process of the run recorded this remote first: its error is the one
            # every process names from now on.
            shared = self._load(key)
            if shared is not None:
                with self._mutex:
                    self._seen[key] = shared

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.unanswered.json"

    def _load(self, key: str) -> _Failure | None:
        """The failure another process recorded for ``key``, if any."""
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # nobody recorded it (the usual case), or the run is ending
        if not isinstance(data, dict) or not isinstance(data.get("problem"), str):
            return None

        def text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) else None

        return _Failure(data["problem"], text("git_error"), text("hint"))

    def _write(self, key: str, failure: _Failure) -> bool:
        """Publish ``failure`` unless another process did first; False if it did."""
        text = json.dumps(
            {"problem": failure.problem, "git_error": failure.git_error, "hint": failure.hint}
        )
        target = self._path(key)
        # Written aside, then linked into place: readers in other processes see the whole
        # file or none, and a second process's link fails, so the first error stays.
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            except OSError:
                os.replace(tmp, target)  # no hard links here: last writer wins, still whole
        except OSError:
            pass  # only saves time: the others find out for themselves
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True
