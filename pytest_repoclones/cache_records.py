"""What the cache CLI finds and does, as records: an entry on disk, a removal (or why not), a
gc report, a verification result. Plain data, printed by cli.py, built by cache_admin.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Entry", "GcReport", "Prefetched", "Removal", "VerifyResult"]


@dataclass(frozen=True)
class Entry:
    """One cached repository, as found on disk."""

    key: str
    git_dir: Path
    #: Redacted (again: a marker is a file anyone may have edited).
    url: str | None
    canonical: str | None
    clone_filter: str | None
    created: float | None
    #: Unix time of the last use (the marker's mtime; the directory's if there is no marker).
    last_used: float
    size: int
    #: Commits fetched by object name (None if the refs could not be read).
    pins: int | None
    #: Registered worktrees whose directory exists (live, kept or left by a killed process):
    #: a kept one deleted by hand is a husk the next session prunes, not a worktree.
    worktrees: int
    #: Has a readable completion marker; otherwise the next session discards and re-clones it.
    complete: bool
    #: The (redacted) superproject this entry was first cloned for as a submodule, if any.
    submodule_of: str | None = None

    @property
    def shown_url(self) -> str:
        return self.url or f"(incomplete entry {self.git_dir.name})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "canonical": self.canonical,
            "path": str(self.git_dir),
            "size": self.size,
            "last_used": self.last_used,
            "last_used_iso": _iso(self.last_used),
            "created": self.created,
            "pinned": self.pins,
            "worktrees": self.worktrees,
            "filter": self.clone_filter,
            "complete": self.complete,
            "submodule_of": self.submodule_of,
        }


@dataclass(frozen=True)
class Removal:
    """What happened to one entry gc or clear chose: removed (or would be), or why not."""

    entry: Entry
    why: str
    skipped: str | None = None
    #: Kept worktrees (``--repo-keep``) removed with the entry, as ``--force`` asked.
    kept: tuple[Path, ...] = ()

    @property
    def removed(self) -> bool:
        return self.skipped is None


@dataclass
class GcReport:
    removals: list[Removal] = field(default_factory=list)
    #: tmp/ leftovers of killed processes: path and size.
    leftovers: list[tuple[Path, int]] = field(default_factory=list)
    #: Size of the entries left afterwards (as it will be, in a dry run).
    remaining_size: int = 0
    remaining_count: int = 0

    @property
    def freed(self) -> int:
        removed = sum(r.entry.size for r in self.removals if r.removed)
        return removed + sum(size for _, size in self.leftovers)


@dataclass(frozen=True)
class VerifyResult:
    """``ok``, ``repaired``, ``removed`` (incomplete), ``damaged`` (left as is) or ``busy``."""

    entry: Entry
    status: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "damaged"


@dataclass(frozen=True)
class Prefetched:
    """One step of a prefetch: getting a repository (``commit`` None), or one commit of it.

    ``status``: ``fetched`` (the remote was contacted for it: cloned, or fetched), ``cached``
    (the cache already had it), ``failed`` (``detail`` says why; the next steps still run).
    """

    url: str  # redacted
    commit: str | None
    status: str
    sha: str | None = None
    detail: str = ""
    git_dir: Path | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))
