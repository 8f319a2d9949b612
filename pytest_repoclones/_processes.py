"""Is the process that owns a worktree or a leftover still alive? (pid plus start time, so that
a reused pid is not mistaken for the owner.)"""

from __future__ import annotations

import os

__all__ = ["pid_alive", "process_start_time"]


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
