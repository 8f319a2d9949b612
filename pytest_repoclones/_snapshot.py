"""The files a patch is about to write, saved so that a failed patch leaves no trace.

``Worktree.apply`` promises all or nothing: if a patch fails, every file it names is as it was,
byte for byte, with its mode and times. git keeps that promise only for plain ``git apply``
(it checks every hunk before writing); a 3-way merge writes its conflicts, and any write can
fail half way. A ``Snapshot`` taken before git runs puts back what git left.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Snapshot", "link_on_the_way"]


class Snapshot:
    """The touched paths as they were before a patch, to put back if it fails.

    ``git apply`` checks every hunk before writing anything, but a 3-way merge writes its
    conflicts, and a write can fail half way (a full disk, a read-only directory).
    """

    def __init__(self, root: Path, paths: Iterable[str]) -> None:
        self.root = root
        # path -> None (absent), or (identity, mode, content or link target, times)
        self.saved: dict[str, tuple[tuple[int, ...], int, bytes, tuple[int, int]] | None] = {}
        self.missing_dirs: set[Path] = set()
        for path in paths:
            full = root / path
            parts = path.split("/")
            if os.path.isabs(path) or ".." in parts or link_on_the_way(root, parts):
                continue  # git refuses to write there: nothing of ours to look at either
            try:
                info = os.lstat(full)
            except FileNotFoundError:
                self.saved[path] = None
            else:
                if stat.S_ISLNK(info.st_mode):
                    content = os.fsencode(os.readlink(full))
                elif stat.S_ISREG(info.st_mode):
                    content = full.read_bytes()
                else:
                    continue  # a directory where the patch wants a file: git refuses it
                self.saved[path] = (
                    _identity(info),
                    info.st_mode,
                    content,
                    (info.st_atime_ns, info.st_mtime_ns),
                )
            parent = full.parent
            while parent != root and root in parent.parents and not os.path.lexists(parent):
                self.missing_dirs.add(parent)  # git makes them for a new file
                parent = parent.parent

    def restore(self) -> None:
        for path, saved in self.saved.items():
            full = self.root / path
            try:
                now = os.lstat(full)
            except FileNotFoundError:
                now = None
            if saved is None:
                if now is not None and not stat.S_ISDIR(now.st_mode):
                    full.unlink()
                continue
            identity, mode, content, times = saved
            if now is not None and _identity(now) == identity:
                continue  # untouched: rewriting it would make git look at it again
            if now is not None and not stat.S_ISDIR(now.st_mode):
                full.unlink()
            full.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                os.symlink(os.fsdecode(content), full)
                continue
            full.write_bytes(content)
            os.chmod(full, stat.S_IMODE(mode))
            os.utime(full, ns=times)
        for directory in sorted(self.missing_dirs, key=lambda d: len(d.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()


def link_on_the_way(root: Path, parts: list[str]) -> Path | None:
    """The first directory of ``parts`` (a path below ``root``) that is a symbolic link."""
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            return current
    return None


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
