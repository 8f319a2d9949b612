"""Where things live in a cache directory, and the completion marker that publishes an entry.

Cache layout (``cache_dir``)::

    CACHEDIR.TAG              tells backup tools to skip the cache
    repos/<name>-<hash>.git/  one bare repository per canonical URL
        repoclones.json       completion marker and metadata, written before publishing
        repoclones-refreshed  ids of the latest sessions that refreshed branches and tags
        repoclones-staging/   worktree entries being built or withdrawn (see _checkouts.py)
    locks/<name>-<hash>.lock  the per-repository flock; .owner names its holder
    owners/<id>.lock          one per live process with worktrees (see _ownership.py)
    tmp/                      clones being built, renamed into repos/ when complete; trash

The store and the cache CLI both go through :class:`CacheLayout`: one trash path, one marker
reader and writer, one rule for what a leftover in ``tmp/`` is.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import rmtree
from ._processes import pid_alive
from .errors import CacheCorruptError, CacheWriteError, RepoClonesError

if TYPE_CHECKING:
    from ._lock import RepoLock

__all__ = [
    "CACHE_FORMAT",
    "MARKER",
    "REFRESH_MARKER",
    "CacheLayout",
    "key_of",
    "read_marker",
    "read_only_error",
    "write_marker",
]

MARKER = "repoclones.json"
REFRESH_MARKER = "repoclones-refreshed"
#: The layout an entry's marker records. 1: the first release. 2: the remote's HEAD kept at
#: refs/repoclones/remote-head; worktrees registered by owner lock and renamed into place.
#: Entries of format 1 are read as they are (what changed is found either way) and their
#: marker is brought to 2 the next time the entry is prepared.
CACHE_FORMAT = 2

_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This directory is a cache made by pytest-repoclones.\n"
)


class CacheLayout:
    """The paths of one cache directory and the chores of keeping them (no git involved)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.repos = cache_dir / "repos"
        self.locks = cache_dir / "locks"
        self.tmp = cache_dir / "tmp"
        self._ready = False
        self._read_only: bool | None = None

    def git_dir(self, key: str) -> Path:
        return self.repos / f"{key}.git"

    def lock_path(self, key: str) -> Path:
        return self.locks / f"{key}.lock"

    def build_dir(self, key: str) -> Path:
        """Where a clone of ``key`` is built; only the holder of ``key``'s lock builds there."""
        return self.tmp / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"

    def trash_path(self) -> Path:
        """Where to move something before deleting it; named after this process, so that
        :meth:`remove_dead_trash` finishes the job if it dies."""
        return self.tmp / f"trash.{os.getpid()}.{secrets.token_hex(4)}"

    @property
    def read_only(self) -> bool:
        """Whether the cache cannot be written (a read-only mount, a CI image's baked cache,
        another user's directory): then it is served as it is, nothing written."""
        if self._read_only is None:
            probe = self.repos if self.repos.is_dir() else self.cache_dir
            self._read_only = probe.is_dir() and not os.access(probe, os.W_OK)
        return self._read_only

    def ensure(self) -> None:
        """Make the directories (once per process) and clear a dead process's trash."""
        if self._ready:
            return
        try:
            for path in (self.repos, self.locks, self.tmp):
                path.mkdir(parents=True, exist_ok=True)
            tag = self.cache_dir / "CACHEDIR.TAG"
            if not tag.exists():
                tag.write_text(_TAG)
            self.remove_dead_trash()
        except OSError as exc:
            raise RepoClonesError(
                f"Cannot use {self.cache_dir} as the repository cache: {exc.strerror or exc}",
                hint=(
                    "point the cache (--repo-cache-dir, the CLI's --cache-dir, or "
                    "PYTEST_REPO_CACHE_DIR) at a writable directory"
                ),
            ) from None
        self._ready = True

    def ensure_for_clone(self) -> None:
        """The directories a clone needs, made again if the cache was removed meanwhile."""
        for path in (self.repos, self.tmp):
            path.mkdir(parents=True, exist_ok=True)
        tag = self.cache_dir / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text(_TAG)

    def discard(self, path: Path) -> None:
        """Move ``path`` out of the way atomically, then delete it."""
        trash = self.trash_path()
        try:
            os.rename(path, trash)
        except OSError:
            trash = path
        rmtree(trash)

    def publish(self, build: Path, git_dir: Path, lock: RepoLock) -> None:
        """Publish the entry built in ``build`` (complete, its marker written) at ``git_dir``.

        The rename is the publication: ``build`` is in ``tmp/``, on the filesystem of
        ``repos/``, so a reader (a session, gc, the CLI) sees the whole entry with its marker
        or no entry at all, never one half-built. What is already at ``git_dir`` has no marker
        (or the caller would not be building): left by a process killed mid-publish, or
        damaged. It goes first, as a rename does not replace a directory with anything in it;
        ``lock`` (``git_dir``'s, checked here) keeps any other process from putting something
        there between the two steps.
        """
        lock.assert_held()
        if git_dir.exists():
            self.discard(git_dir)
        os.rename(build, git_dir)

    def remove_dead_trash(self) -> list[Path]:
        """Finish deleting what processes killed inside :meth:`discard` left in ``tmp/``."""
        removed = []
        for trash in self.tmp.glob("trash.*"):
            pid = trash.name.split(".")[1]
            if pid.isdigit() and not pid_alive(int(pid)):
                rmtree(trash)
                removed.append(trash)
        return removed

    def remove_stale_builds(self, key: str) -> None:
        """Clones of ``key`` left half-built; the caller holds ``key``'s lock, so none is live."""
        for leftover in self.tmp.glob(f"{key}.*"):
            rmtree(leftover)


def key_of(git_dir: Path | None) -> str:
    """The cache key of a published (``<key>.git``) or in-progress (``<key>.<pid>.<rand>``) dir."""
    if git_dir is None:
        return ""
    name = git_dir.name
    return name[: -len(".git")] if name.endswith(".git") else name.rsplit(".", 2)[0]


def write_marker(git_dir: Path, **metadata: Any) -> None:
    """The completion marker: written into a clone before it is published by a rename."""
    record = {**metadata, "created": time.time(), "format": CACHE_FORMAT}
    (git_dir / MARKER).write_text(json.dumps(record, indent=1) + "\n")


def read_marker(git_dir: Path, *, check: bool = True) -> dict[str, Any] | None:
    """The marker's metadata, or None if the entry has none (incomplete) or it is unreadable.

    An entry written by a newer layout than this version knows is refused (unless ``check``
    is off, to list it): guessing at it could corrupt what a newer plugin relies on.
    """
    try:
        data = json.loads((git_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if check:
        check_format(git_dir, data)
    return data


def check_format(git_dir: Path, data: dict[str, Any]) -> None:
    found = data.get("format", 1)
    if isinstance(found, int) and found > CACHE_FORMAT:
        raise CacheCorruptError(
            f"Cache entry {git_dir} was written by a newer pytest-repoclones (cache format "
            f"{found}; this version reads format {CACHE_FORMAT} and older)",
            url=data.get("url") if isinstance(data.get("url"), str) else None,
            hint="upgrade pytest-repoclones, or use another --repo-cache-dir",
        )


def upgrade_marker(git_dir: Path, data: dict[str, Any]) -> None:
    """Bring an older entry's marker to CACHE_FORMAT (caller holds the entry's lock).

    Format 1 needs no change on disk: its remote HEAD ref is read as a fallback until the next
    refresh writes the new one, and its old registrations are judged by the legacy rule.
    """
    if data.get("format", 1) >= CACHE_FORMAT:
        return
    record = {**data, "format": CACHE_FORMAT, "upgraded": time.time()}
    tmp = git_dir / f".{MARKER}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.utime(tmp, (time.time(), (git_dir / MARKER).stat().st_mtime))  # keep "last used"
        os.replace(tmp, git_dir / MARKER)
    finally:
        tmp.unlink(missing_ok=True)


def read_only_error(cache_dir: Path, url: str, what: str, commit: str | None) -> CacheWriteError:
    """What a read-only cache says when it was asked for something it does not hold."""
    return CacheWriteError(
        f"The cache {cache_dir} is read-only and {what}",
        url=url,
        commit=commit,
        hint="warm it where it is writable (`pytest-repoclones prefetch URL COMMIT...`), "
        "or point --repo-cache-dir at a writable directory (a copy of it works)",
    )
