"""Is the process that owns a worktree or a leftover still alive? (pid plus start time, so that
a reused pid is not mistaken for the owner.)"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["die_with_parent", "pid_alive", "process_start_time"]


def process_start_time(pid: int) -> str:
    """Kernel start time of ``pid``: with the pid, it tells a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
            return handle.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "0"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is running; a zombie, killed but not yet reaped, is dead.

    A SIGKILLed xdist worker stays a zombie until its parent (often a container's init, which
    may never reap) collects it: signal 0 still reaches it, so only its state tells.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust the signal
    return state not in (b"Z", b"X")


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent dies (Linux; False elsewhere).

    For pytest-xdist workers: a SIGKILLed controller otherwise leaves its workers running
    for seconds, making worktrees and starting git in the cache after the run was killed.
    Their git processes die with them (see _git.py), so the whole run stops at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return bool(prctl(1, signal.SIGKILL) == 0)  # 1: PR_SET_PDEATHSIG
