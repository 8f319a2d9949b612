"""Remotes that did not answer in this session: later operations on them fail at once.

A stalled or dead remote costs the whole time limit on every operation that touches it: once per
declared commit in prefetch, again in every test. After the first such failure the session
remembers it (in memory, and in a directory shared by the xdist workers of one run) and every
later network operation on that repository raises the first error again, without waiting.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

from .errors import GitTimeoutError, RemoteError, RepoClonesError

__all__ = ["RemoteFailures", "did_not_answer"]

# What git (and curl, ssh) print when nobody answered: the host is unknown, refused or
# unreachable, or the connection died. "Not found" and authentication failures are answers.
_NO_ANSWER_RE = re.compile(
    r"unable to connect|could not resolve|connection refused|connection timed out"
    r"|failed to connect|network is unreachable|no route to host|timed out"
    r"|could not read from remote repository|the remote end hung up unexpectedly"
    r"|connection reset|early eof|operation too slow",
    re.IGNORECASE,
)


def did_not_answer(error: RepoClonesError) -> bool:
    """Whether ``error`` says the remote gave no answer (worth failing fast on next time)."""
    if isinstance(error, GitTimeoutError):
        return True
    if not isinstance(error, RemoteError):
        return False
    return bool(_NO_ANSWER_RE.search(f"{error.problem}\n{error.git_error or ''}"))


class RemoteFailures:
    """The first no-answer error of each repository (cache key) in this session."""

    def __init__(self, directory: Path | None = None) -> None:
        #: Shared by the processes of one run (the xdist exchange directory), or None.
        self.directory = directory
        self._mutex = threading.Lock()
        self._seen: dict[str, tuple[str, str | None]] = {}

    def check(self, key: str, url: str) -> None:
        """Raise RemoteError if ``key``'s remote already failed to answer in this session."""
        with self._mutex:
            seen = self._seen.get(key)
        if seen is None and self.directory is not None:
            seen = self._read(key)
        if seen is None:
            return
        problem, git_error = seen
        raise RemoteError(
            f"Remote did not answer earlier in this session ({problem}); not trying again",
            url=url,
            git_error=git_error,
            hint="check the remote or the network, then run again",
        )

    def record(self, key: str, error: RepoClonesError) -> None:
        """Remember ``error`` if it says the remote did not answer (the first one wins)."""
        if not did_not_answer(error):
            return
        entry = (error.problem, error.git_error)
        with self._mutex:
            if key in self._seen:
                return
            self._seen[key] = entry
        if self.directory is not None:
            self._write(key, entry)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.unanswered.json"

    def _read(self, key: str) -> tuple[str, str | None] | None:
        try:
            data = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("problem"), str):
            return None
        git_error = data.get("git_error")
        entry = (data["problem"], git_error if isinstance(git_error, str) else None)
        with self._mutex:
            self._seen.setdefault(key, entry)
        return entry

    def _write(self, key: str, entry: tuple[str, str | None]) -> None:
        # Messages are redacted already: no secret reaches the file. O_EXCL: first one wins.
        text = json.dumps({"problem": entry[0], "git_error": entry[1]})
        tmp = self._path(key).with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(text)
            os.link(tmp, self._path(key))
        except OSError:
            pass  # only saves time; an existing file is another worker's first error
        finally:
            tmp.unlink(missing_ok=True)
