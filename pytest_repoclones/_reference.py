"""A seed cache (``--repo-reference-dir``): another machine's cache, possibly read-only,
whose objects new clones borrow (git alternates) so that they fetch only what is missing.

Nothing is ever written into it: git writes only into the borrowing repository. The entry
records which reference it borrowed from (its path and the reference entry's creation stamp);
a reference that vanishes, moves or is replaced (by an older copy, say) is found at the
entry's first use in a session, and the entry is then cloned again (borrowing from the
reference as it now is, if it serves), with a warning: never a broken entry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._layout import MARKER, CacheLayout, read_marker
from ._remote import PIN_PREFIX, REMOTE_HEAD
from ._standalone import shared_refs
from .errors import RepoClonesError
from .urls import RepoURL

__all__ = ["ReferenceCache", "reference_problem"]

#: The key of the record in an entry's marker.
RECORD = "reference"


class ReferenceCache:
    """The seed cache of one store, if any."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = None if directory is None else Path(directory).expanduser().absolute()

    def entry(self, repo: RepoURL, clone_filter: str | None) -> Path | None:
        """The reference's complete entry of ``repo`` that a clone with ``clone_filter`` can
        borrow from, or None: absent, unfinished, of a newer format, or missing objects a
        full clone needs (a partial entry)."""
        if self.directory is None:
            return None
        git_dir = CacheLayout(self.directory).git_dir(repo.key)
        try:
            marker = read_marker(git_dir)
        except RepoClonesError:
            return None  # a newer plugin's layout: not ours to read
        if marker is None or not (git_dir / "objects").is_dir():
            return None
        if marker.get("filter") and marker.get("filter") != clone_filter:
            return None
        return git_dir

    def borrow(self, clone: Path, entry: Path) -> dict[str, Any]:
        """Make the unpublished ``clone`` borrow ``entry``'s objects and start from its refs
        (so that the fetch that follows asks the remote only for what is new); the record to
        keep in the clone's marker."""
        objects = Path(os.path.realpath(entry / "objects"))
        info = clone / "objects" / "info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "alternates").write_text(f"{objects}\n")
        prefixes = ("refs/remotes/origin/", "refs/tags/", PIN_PREFIX, REMOTE_HEAD)
        (clone / "packed-refs").write_text(shared_refs(entry, prefixes))
        return identity(entry)


def identity(entry: Path) -> dict[str, Any]:
    """What tells this reference entry from another at the same path: its creation stamp
    (another clone, or an older copy put there, has another; a copy of this very entry, which
    holds the same objects, has the same)."""
    marker = read_marker(entry, check=False) or {}
    return {"path": os.path.realpath(entry), "created": marker.get("created")}


def reference_problem(git_dir: Path) -> str | None:
    """Why an entry cannot trust the reference it borrows from any more; None if it can (or
    borrows from none)."""
    marker = read_marker(git_dir, check=False) or {}
    record = marker.get(RECORD)
    if not isinstance(record, dict):
        return None
    path = Path(str(record.get("path")))
    if not (path / MARKER).is_file() or not (path / "objects").is_dir():
        return f"its reference cache entry {path} is gone"
    if identity(path) != record:
        return f"its reference cache entry {path} was replaced"
    return None
