"""Running git for the store: one environment, one time limit, time counted per repository,
and recovery from the lock files a killed git leaves in a cached repository.

_git.run_git hardens a single process; GitRunner adds what the store needs around every call,
so that no caller can forget the counters or the stale-lock retry.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import _git
from ._git import GitResult
from ._layout import key_of
from .stats import RepoStats

__all__ = ["GIT_LOCK_PATIENCE", "GitRunner"]

log = logging.getLogger("pytest_repoclones")

#: When a git call fails on a lock file, how long it must sit idle before we call it stale.
GIT_LOCK_PATIENCE = 2.0
_GIT_LOCK_FILE_RE = re.compile(r"Unable to create '([^']+\.lock)': File exists")


class GitRunner:
    """Runs git with the store's protocols and time limit; adds the time to ``stats``."""

    def __init__(
        self,
        protocols: Sequence[str],
        timeout: float,
        stats: dict[str, RepoStats] | None = None,
        mutex: threading.Lock | None = None,
    ) -> None:
        self.protocols = tuple(protocols)
        self.timeout = timeout
        self._stats = {} if stats is None else stats
        self._mutex = threading.Lock() if mutex is None else mutex

    def environment(self) -> dict[str, str]:
        # Rebuilt per call (microseconds): a user may set proxies or GIT_SSH_COMMAND later.
        return _git.git_environment(self.protocols)

    def run(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        key: str | None = None,
        stdin: str | None = None,
        cwd: Path | None = None,
        pre_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        url: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> GitResult:
        """Run git (in ``git_dir``, or in ``cwd``); time counts for repository ``key``
        (default: ``git_dir``'s)."""
        # Once per process (cached): an older git gets one clear error, not an obscure one.
        _git.check_git_version()
        start = time.perf_counter()
        try:
            return self._recovering_stale_git_locks(
                git_dir,
                lambda: _git.run_git(
                    args,
                    env=self.environment(),
                    git_dir=git_dir,
                    cwd=cwd,
                    timeout=self.timeout,
                    extra_env=extra_env,
                    pre_args=pre_args,
                    url=url,
                    stdin=stdin,
                    progress=progress,
                ),
            )
        finally:
            with self._mutex:
                stats = self._stats.get(key or key_of(git_dir))
            if stats is not None:
                stats.git_seconds += time.perf_counter() - start

    def _recovering_stale_git_locks(
        self, git_dir: Path | None, call: Callable[[], GitResult]
    ) -> GitResult:
        """Run git; if it failed on a lock file a killed git left behind, remove it and retry.

        Repository-level git calls run under our per-repository lock, so no other plugin
        process holds a git lock there; a lock file that stays untouched for a moment was
        left by a git that died with its (SIGKILLed) parent. A test running git inside its
        worktree can hold such a lock for milliseconds, hence the short patience.
        """
        deadline: float | None = None
        while True:
            result = call()
            if result.ok or git_dir is None:
                return result
            match = _GIT_LOCK_FILE_RE.search(result.stderr)
            if match is None:
                return result
            lock_file = Path(match.group(1))
            try:
                lock_file.relative_to(git_dir)
            except ValueError:
                return result
            if deadline is None:
                deadline = time.monotonic() + GIT_LOCK_PATIENCE * 3
            if not wait_out_git_lock(lock_file, deadline):
                return result


def wait_out_git_lock(lock_file: Path, deadline: float) -> bool:
    """Wait for a git lock file to go away, deleting it once idle; False if it stayed busy.

    Idle means untouched for GIT_LOCK_PATIENCE: by its mtime, or, since a clock stepped back
    or an NFS server ahead can date it in the future (then it would never look old), by
    watching it unchanged for that long on our own monotonic clock.
    """
    first_seen: tuple[float, tuple[int, int, int]] | None = None
    while time.monotonic() < deadline:
        try:
            info = lock_file.stat()
        except FileNotFoundError:
            return True
        identity = (info.st_ino, info.st_size, info.st_mtime_ns)
        if first_seen is None or first_seen[1] != identity:
            first_seen = (time.monotonic(), identity)
        watched = time.monotonic() - first_seen[0]
        if time.time() - info.st_mtime > GIT_LOCK_PATIENCE or watched > GIT_LOCK_PATIENCE:
            lock_file.unlink(missing_ok=True)
            log.warning("repoclones: removed git lock file left by a killed process: %s", lock_file)
            return True
        time.sleep(0.1)
    return False
