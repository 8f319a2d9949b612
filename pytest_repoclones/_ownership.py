"""Who owns a worktree registration, and whether that owner still lives: decided by a lock.

A pid, a host name and a start time only mean something inside one pid namespace of one host:
a container sharing the cache volume sees none of our pids (and would delete a live test's
worktree), another hostname cannot judge at all (and a killed container's registrations would
stay forever). Instead each live process holds an ``flock`` on a file of its own in the cache,
``owners/<id>.lock``, for as long as it lives, and every registration it writes names that id.
The kernel (on NFS, its lock manager) drops the lock when the process dies, whatever namespace
or host it lived in, so a registration is dead exactly when its owner's lock can be taken.
pid and host stay in the registration, for humans only.

This module is the one rule: the store's pruning, its damage repair and the cache CLI all ask
:func:`judge`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ._files import read_stripped
from ._processes import pid_alive, process_start_time

__all__ = [
    "REASON_PREFIX",
    "Owner",
    "Registration",
    "judge",
    "owner_alive",
    "points_back",
    "read_registration",
    "sweep_dead_owners",
]

#: Lock reasons the plugin writes start with this; any other reason is someone else's.
REASON_PREFIX = "repoclones "
OWNERS_DIR = "owners"


class Owner:
    """This process's claim on the cache: an flock held on ``owners/<id>.lock`` until exit.

    Taken on the first registration, not before: a session that never makes a worktree never
    writes into the cache. Never released explicitly while the process lives (worktrees of
    this process may outlive the store object); the kernel releases it at exit.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.id = secrets.token_hex(8)
        self._fd: int | None = None
        self._mutex = threading.Lock()

    @property
    def path(self) -> Path:
        return self.cache_dir / OWNERS_DIR / f"{self.id}.lock"

    def ensure(self) -> str:
        """Hold the lock (again, if the cache was removed meanwhile); return the owner id."""
        with self._mutex:
            if self._fd is not None and self.path.exists():
                return self.id
            first = self._fd is None
            if self._fd is not None:
                os.close(self._fd)  # our file was deleted with the cache: make a new one
                self._fd = None
            self._fd = _create_locked(self.path)
            if first:
                sweep_dead_owners(self.cache_dir)
            return self.id

    def close(self) -> None:
        """Give up the claim (tests and tools that end a store early; a process exit does it)."""
        with self._mutex:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                os.close(self._fd)
                self._fd = None

    def reason(self, branch: str, **extra: str) -> str:
        """The registration text for a worktree on ``branch`` owned by this process."""
        fields = {
            "owner": self.ensure(),
            "pid": str(os.getpid()),
            "host": socket.gethostname(),
            "branch": branch,
            **extra,
        }
        return REASON_PREFIX + " ".join(f"{key}={value}" for key, value in fields.items())


def _lock_now(fd: int) -> None:
    """Take an exclusive lock on ``fd`` without waiting; BlockingIOError if it is held.

    flock where there is one (Linux, macOS, and NFS through its lock manager); on Windows,
    msvcrt's byte-range lock on the first byte, which the system also drops when the
    holding process dies.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        except OSError as exc:
            raise BlockingIOError(errno.EAGAIN, str(exc)) from exc
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _create_locked(path: Path) -> int:
    """Create ``path`` already locked: built under a temporary name, locked, then renamed.

    A file that appeared first and was locked a moment later would look dead to a pruner in
    between; a rename keeps the inode, and with it the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.name == "nt":
        # Windows renames no open file; it deletes none either, so a pruner that finds it
        # unlocked in the moment before the lock cannot remove it (and it names no
        # registration yet).
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        _lock_now(fd)
        return fd
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # O_RDWR: on NFSv4 flock becomes a POSIX lock, which needs a file open for writing.
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _lock_now(fd)
        os.write(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode())
        os.rename(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return fd


#: A temporary owner file older than this was left by a process killed while creating it.
STALE_TMP_AGE = 60.0


def sweep_dead_owners(cache_dir: Path) -> int:
    """Delete the files of owners that are gone (a process ending normally leaves its file;
    so does a SIGKILL); their registrations, if any, then read as dead, which they are."""
    root = cache_dir / OWNERS_DIR
    removed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        path = root / name
        if name.startswith("."):
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > STALE_TMP_AGE:
                    path.unlink()
            continue
        if name.endswith(".lock") and not owner_alive(
            cache_dir, name[: -len(".lock")], forget_dead=True
        ):
            removed += 1
    return removed


def owner_alive(cache_dir: Path, owner_id: str, *, forget_dead: bool = False) -> bool:
    """Whether the process that holds ``owners/<owner_id>.lock`` still lives.

    A missing file is a dead owner: only someone who found it dead (holding its lock) deletes
    it, and an owner makes its file before it writes any registration. ``forget_dead`` deletes
    the file of a dead owner, once its registrations are gone.
    """
    if not owner_id or "/" in owner_id or owner_id.startswith("."):
        return False
    path = cache_dir / OWNERS_DIR / f"{owner_id}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            return True  # cannot tell: never judge a live owner dead
        try:
            fd = os.open(path, os.O_RDONLY)  # a read-only cache: flock works on local files
        except OSError:
            return True
    try:
        try:
            _lock_now(fd)
        except BlockingIOError:
            return True
        except OSError:
            return True  # cannot tell (a lock manager down): keep the registration
        if forget_dead:
            with contextlib.suppress(OSError):
                path.unlink()
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Registration:
    """What a worktree's admin entry says about who made it."""

    #: ``live``, ``dead``, ``kept`` (left for a human; counts while its directory exists) or
    #: ``foreign`` (not made by the plugin: never pruned, counts while its directory exists).
    state: str
    admin_dir: Path
    #: The checkout the entry points at (None if git's ``gitdir`` file is missing).
    tree: Path | None
    fields: dict[str, str]
    reason: str | None

    @property
    def ours(self) -> bool:
        return self.state in ("live", "dead")

    @property
    def in_use(self) -> bool:
        """Whether removing the cache entry would pull a checkout from under someone."""
        if self.state == "live":
            return True
        if self.state in ("kept", "foreign"):
            return self.tree is not None and self.tree.exists()
        return False

    def describe(self) -> str:
        tree = self.tree or self.admin_dir
        if self.state == "kept":
            return f"kept worktree {tree}"
        if self.state == "foreign":
            locked = f" (locked: {self.reason})" if self.reason else ""
            return f"worktree {tree}{locked}, not made by pytest-repoclones"
        return (
            f"worktree {tree} of pid {self.fields.get('pid')} on {self.fields.get('host')}"
            f" (owner {self.fields.get('owner', 'unknown')})"
        )


def reason_fields(reason: str | None) -> dict[str, str]:
    """``repoclones owner=o pid=1 host=h branch=b`` as a dict (empty if not ours)."""
    if not reason or not reason.startswith(REASON_PREFIX):
        return {}
    items = reason[len(REASON_PREFIX) :].split()
    return dict(item.split("=", 1) for item in items if "=" in item)


def read_registration(admin_dir: Path) -> tuple[str | None, Path | None]:
    """The lock reason and the checkout of one admin entry (``worktrees/<id>``)."""
    reason = read_stripped(admin_dir / "locked")
    gitdir_file = read_stripped(admin_dir / "gitdir")
    return reason, (Path(gitdir_file).parent if gitdir_file else None)


def judge(
    cache_dir: Path,
    admin_dir: Path,
    *,
    verdicts: dict[str, bool] | None = None,
    forget_dead: bool = False,
) -> Registration:
    """The one liveness rule, for the store, its pruning and the CLI alike.

    ``verdicts`` caches owner liveness across the entries of one pass (one probe per owner).
    """
    reason, tree = read_registration(admin_dir)
    fields = reason_fields(reason)
    if not fields:
        # Not ours: a hand-made worktree, or one a test is making right now with its own
        # `git worktree add` (locked "initializing" while it checks out). Never ours to prune.
        return Registration("foreign", admin_dir, tree, fields, reason)
    if fields.get("kept"):
        return Registration("kept", admin_dir, tree, fields, reason)
    if tree is None:
        # Withdrawn (its gitdir file unlinked first, see RepoStore._unregister): a husk.
        return Registration("dead", admin_dir, tree, fields, reason)
    owner = fields.get("owner")
    if owner is None:
        alive = _legacy_owner_alive(fields)
    elif verdicts is not None and owner in verdicts:
        alive = verdicts[owner]
    else:
        alive = owner_alive(cache_dir, owner, forget_dead=forget_dead)
        if verdicts is not None:
            verdicts[owner] = alive
    return Registration("live" if alive else "dead", admin_dir, tree, fields, reason)


def _legacy_owner_alive(fields: dict[str, str]) -> bool:
    """Registrations written before owner locks (``pid= start= host=``): the old rule, which
    can only judge a process of this host and pid namespace; anything else is kept."""
    if fields.get("host") != socket.gethostname():
        return True
    try:
        pid = int(fields.get("pid", ""))
    except ValueError:
        return False
    if not pid_alive(pid):
        return False
    return process_start_time(pid) == fields.get("start")


def points_back(tree: Path, admin_dir: Path) -> bool:
    """Whether the checkout ``tree`` is the one registered in ``admin_dir`` (its ``.git`` file
    names that very entry), comparing real paths: a cache reached through a symlink, or a
    checkout path written resolved, must still match. Never delete some other directory."""
    pointer = read_stripped(tree / ".git") or ""
    if not pointer.startswith("gitdir: "):
        return False
    return os.path.realpath(pointer[len("gitdir: ") :]) == os.path.realpath(admin_dir)
