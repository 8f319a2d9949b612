"""Filesystem chores of the store: deleting trees a test may have locked down, writing small
files atomically, making a reused worktree's permissions those of a fresh checkout."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "INDEX_SNAPSHOT",
    "clear_worktree_state",
    "leave_directory",
    "make_deletable",
    "read_json",
    "read_stripped",
    "rmtree",
    "write_atomically",
]


#: The functions whose failure means a directory could not be entered (opened, listed, or
#: its entries looked at): shutil.rmtree then skips it, leaving its parent undeletable.
_ENTERING = (os.open, os.scandir, os.listdir, os.lstat, os.stat)


def _add_mode(path: str, bits: int) -> None:
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    if mode & bits != bits:
        os.chmod(path, mode | bits)


def _rmtree_error_handler(
    retried: set[str],
) -> Callable[[Callable[..., Any], str, BaseException], None]:
    """What shutil.rmtree calls when it fails on ``path``: make the path deletable (a test may
    have chmod-ed it, or its directory, read-only or unreadable), then remove it."""

    def handle(func: Callable[..., Any], path: str, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError):
            return  # gone already
        try:
            # Deleting an entry needs write and search permission on its directory; entering
            # a directory needs read and search permission on it.
            _add_mode(os.path.dirname(path), stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(path) and not os.path.islink(path):
                _add_mode(path, stat.S_IRWXU)
        except FileNotFoundError:
            return
        except OSError:
            raise exc from None  # not ours to change: the first error says what failed
        if func not in _ENTERING:
            with contextlib.suppress(FileNotFoundError):
                func(path)  # unlink or rmdir, once more
        elif path in retried:
            raise exc  # entering it fails whatever its permissions: give up
        else:
            # rmtree skipped it: remove it whole now that it can be entered.
            retried.add(path)
            _remove(path, retried)

    return handle


def _remove(path: str, retried: set[str]) -> None:
    if os.path.islink(path) or not os.path.isdir(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    handle = _rmtree_error_handler(retried)
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=handle)
    else:
        shutil.rmtree(path, onerror=lambda func, p, info: handle(func, p, info[1]))


def rmtree(path: Path) -> None:
    """Delete ``path`` (a file, a symlink or a directory tree), whatever permissions a test gave
    what is inside, as long as this user owns it. Nothing there is not an error."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        _remove(str(path), set())


def make_deletable(root: Path) -> None:
    """Give this user read, write and search permission on every directory under ``root``
    (and ``root``), so that anything in it can be deleted, also by git.

    A test may chmod a directory read-only: ``git clean`` then cannot delete what is in it (as
    root it can, which hides the problem). Files keep their modes: deleting a file needs only
    its directory's permission. Symbolic links are not followed.
    """
    _chmod_if(str(root), lambda mode: mode | stat.S_IRWXU)
    # Top-down: a directory is made enterable before os.walk enters it.
    for top, dirs, _ in os.walk(root):
        for name in dirs:
            _chmod_if(os.path.join(top, name), lambda mode: mode | stat.S_IRWXU)


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


# The index as a checkout of ours wrote it, kept beside git's for worktree reuse.
INDEX_SNAPSHOT = "repoclones-index"
# Per-worktree state a test may leave in its admin dir (merges, rebases, bisects, its HEAD
# reflog, worktree config, sparse patterns, refs/worktree/*): a reused worktree gets none.
_KEPT_ADMIN_FILES = frozenset({"HEAD", "commondir", "gitdir", "locked", "index", INDEX_SNAPSHOT})


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
