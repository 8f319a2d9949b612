"""The per-repository cross-process lock, and who holds it.

One ``flock`` per cached repository serialises what git cannot do concurrently on one repository
(see store.py). The OS drops the lock when its holder dies, so a killed worker never blocks the
next one; a sidecar ``.owner`` file lets a waiter say whom it is waiting for.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from .errors import LockTimeoutError

__all__ = ["RepoLock"]

log = logging.getLogger("pytest_repoclones")


#: Say who we are waiting for after this many seconds, then again at this interval.
NOTICE_AFTER = 5.0


_SHARED: dict[str, tuple[filelock.FileLock, threading.local]] = {}
_SHARED_MUTEX = threading.Lock()


def _shared_flock(path: Path) -> tuple[filelock.FileLock, threading.local]:
    with _SHARED_MUTEX:
        shared = _SHARED.get(str(path))
        if shared is None:
            shared = _SHARED[str(path)] = (filelock.FileLock(str(path)), threading.local())
        return shared


class RepoLock:
    """A reentrant (per thread) lock on one cached repository, shared by all processes."""

    def __init__(
        self,
        path: Path,
        *,
        timeout: float,
        shown_url: str,
        notice: Callable[[str], None] | None = None,
        enabled: bool = True,
    ) -> None:
        self.path = path
        #: False for a read-only cache: nothing in it can change, so there is nothing to
        #: serialise (and no lock file could be made there anyway).
        self.enabled = enabled
        self.owner_path = path.with_suffix(".owner")
        self.timeout = timeout
        self.shown_url = shown_url
        self._notice = notice or log.warning
        # One FileLock per lock file and process, whoever asks (a store, the cache CLI): a
        # second one would open a second descriptor, and flock() on it would deadlock against
        # our own first one. Shared, the lock is reentrant across all of them.
        self._lock, self._depth = _shared_flock(path)

    def read_owner(self) -> dict[str, object] | None:
        """The last recorded holder (pid, host, purpose, since), if any."""
        try:
            data = json.loads(self.owner_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def describe_owner(self) -> str:
        owner = self.read_owner()
        if not owner:
            return "an unknown process"
        since = owner.get("since")
        held = f", for {time.time() - since:.0f} s" if isinstance(since, (int, float)) else ""
        return (
            f"pid {owner.get('pid')} on {owner.get('host')} "
            f"({owner.get('purpose', 'unknown work')}{held})"
        )

    @property
    def held(self) -> bool:
        """Whether this thread holds the lock (always, for a disabled one)."""
        return not self.enabled or getattr(self._depth, "value", 0) > 0

    def assert_held(self) -> None:
        """What a ``*_locked`` step checks first: a promise the caller cannot forget."""
        if not self.held:
            raise AssertionError(f"the lock {self.path} must be held here")

    @contextmanager
    def hold(self, purpose: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        depth = getattr(self._depth, "value", 0)
        if depth == 0:
            self._acquire(purpose)
        self._depth.value = depth + 1
        try:
            yield
        finally:
            self._depth.value = depth
            if depth == 0:
                self._lock.release()

    def _acquire(self, purpose: str) -> None:
        deadline = time.monotonic() + self.timeout
        wait = min(NOTICE_AFTER, self.timeout)
        while True:
            try:
                self._lock.acquire(timeout=max(wait, 0.0), poll_interval=0.02)
                break
            except filelock.Timeout:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeoutError(
                        f"Gave up after {self.timeout:g} s waiting for the lock {self.path} "
                        f"held by {self.describe_owner()}",
                        url=self.shown_url,
                        hint="raise --repo-lock-timeout, or stop the process holding it",
                    ) from None
                self._notice(
                    f"repoclones: waiting for {self.shown_url}: lock held by "
                    f"{self.describe_owner()}"
                )
                wait = min(NOTICE_AFTER * 2, remaining)
        self._write_owner(purpose)

    def _write_owner(self, purpose: str) -> None:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": purpose,
            "since": time.time(),
        }
        tmp = self.owner_path.with_name(f"{self.owner_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.owner_path)
        except OSError:
            tmp.unlink(missing_ok=True)  # only informative; a full disk leaves nothing behind
