"""Filesystem chores of the store: deleting trees a test may have locked down, writing small
files atomically, making a reused worktree's permissions those of a fresh checkout."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "clear_worktree_state",
    "leave_directory",
    "normalize_modes",
    "read_json",
    "read_stripped",
    "rmtree",
    "write_atomically",
]


def _on_rmtree_error(func: Callable[..., Any], path: str, exc: BaseException) -> None:
    """Make read-only files and directories (a test may chmod them) deletable, then retry."""
    if isinstance(exc, FileNotFoundError):
        return
    try:
        parent = os.path.dirname(path)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, os.stat(path).st_mode | stat.S_IRWXU)
        func(path)
    except FileNotFoundError:
        pass


def rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=lambda func, p, info: _on_rmtree_error(func, p, info[1]))


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


def normalize_modes(root: Path) -> None:
    """Give files and directories the permission bits a fresh checkout would have.

    git records only the executable bit; a test's chmod 0444 on an unchanged file, or on a
    directory, survives checkout and clean, and a fresh worktree would not have it.
    """
    umask = _umask()
    want_dir, want_exec, want_file = 0o777 & ~umask, 0o777 & ~umask, 0o666 & ~umask
    for top, dirs, files in os.walk(root):
        if top == str(root) and ".git" in files:
            files.remove(".git")
        for name in dirs:
            _chmod_if(os.path.join(top, name), lambda mode: want_dir)
        for name in files:
            path = os.path.join(top, name)
            _chmod_if(path, lambda mode: want_exec if mode & stat.S_IXUSR else want_file)


def _chmod_if(path: str, wanted: Callable[[int], int]) -> None:
    try:
        info = os.lstat(path)
    except OSError:
        return
    if stat.S_ISLNK(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    if mode != wanted(mode):
        os.chmod(path, wanted(mode))


def write_atomically(path: Path, text: str) -> None:
    """Whole or absent: a reader never sees half a file (nor one of a killed writer)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        # A full disk fails the write: leave no half-written temporary file in the cache.
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# Per-worktree state a test may leave in its admin dir (merges, rebases, bisects, its HEAD
# reflog, worktree config, sparse patterns, refs/worktree/*): a reused worktree gets none.
_KEPT_ADMIN_FILES = frozenset({"HEAD", "commondir", "gitdir", "locked", "index"})


def clear_worktree_state(admin_dir: Path) -> None:
    for entry in admin_dir.iterdir():
        if entry.name not in _KEPT_ADMIN_FILES and not entry.name.endswith(".tmp"):
            rmtree(entry)


def read_stripped(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def leave_directory(path: Path) -> None:
    """If the process sits inside ``path`` (a test did chdir), step out before deleting it."""
    try:
        cwd = Path.cwd()
    except FileNotFoundError:
        os.chdir(path.parent if path.parent.exists() else Path.home())
        return
    if cwd == path or path in cwd.parents:
        os.chdir(path.parent)
