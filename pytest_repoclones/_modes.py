"""Permission bits a fresh checkout would give, restored in a reused worktree.

git records only a file's executable bit and nothing of a directory's mode: a test's
``chmod 0444`` on an unchanged file, or a chmod of a directory, survives git's checkout and
clean (git notices a chmod only through the ctime, and only to the second). A reused worktree
must look fresh, so every tracked file and directory is looked at once per move: that is
thousands of ``lstat`` calls, which is why the survey is built to run while git works (see
``_reuse``) and only its few suspects are looked at again afterwards.
"""

from __future__ import annotations

import itertools
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["fix_modes", "odd_modes", "tracked_directories"]


def _umask() -> int:
    # os.umask() can only be read by setting it, which races with other threads.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fresh_mode(mode: int, umask: int) -> int | None:
    """The permission bits git would create this kind of entry with; None: not ours to set."""
    if stat.S_ISDIR(mode):
        return 0o777 & ~umask
    if stat.S_ISREG(mode):
        return (0o777 if mode & stat.S_IXUSR else 0o666) & ~umask
    return None  # symbolic links have no mode of their own


def tracked_directories(paths: Iterable[str]) -> set[str]:
    """Every directory holding one of ``paths`` (relative, ``/``-separated), relative."""
    found: set[str] = set()
    for path in paths:
        parent = path.rpartition("/")[0]
        while parent and parent not in found:
            found.add(parent)
            parent = parent.rpartition("/")[0]
    return found


def odd_modes(root: Path, tracked: Iterable[str]) -> list[str]:
    """The paths among ``root``, the ``tracked`` files and their directories whose permission
    bits differ from a fresh checkout's.

    Safe to run while git rewrites the worktree: a path caught mid-change is only a suspect,
    and :func:`fix_modes` looks at each suspect again once git is done. One ``lstat`` per
    path and no call per path beyond it: this is the loop that costs.
    """
    umask = _umask()
    want_dir, want_exec, want_file = 0o777 & ~umask, 0o777 & ~umask, 0o666 & ~umask
    base = os.fspath(root)
    files = [path for path in tracked if path]
    directories = (f"{base}/{path}" for path in tracked_directories(files))
    suspects = []
    paths = itertools.chain((base,), directories, (f"{base}/{path}" for path in files))
    for count, path in enumerate(paths):
        if not count % 64:
            # Runs beside git in a thread: let the thread waiting on git have the GIL at once
            # when git is done, not after the interpreter's switch interval (5 ms).
            time.sleep(0)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            suspects.append(path)  # replaced this very moment, perhaps: look again later
            continue
        if stat.S_ISREG(mode):
            fresh = want_exec if mode & stat.S_IXUSR else want_file
        elif stat.S_ISDIR(mode):
            fresh = want_dir
        else:
            continue  # a symbolic link has no mode of its own
        if stat.S_IMODE(mode) != fresh:
            suspects.append(path)
    return suspects


def fix_modes(suspects: Iterable[str]) -> None:
    """Give each suspect that is still odd a fresh checkout's permission bits."""
    umask = _umask()
    for path in suspects:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue  # deleted by git since: nothing of the new commit
        fresh = _fresh_mode(mode, umask)
        if fresh is not None and stat.S_IMODE(mode) != fresh:
            os.chmod(path, fresh)
