"""A cheap integrity check of a cached repository, run on its first use in each session.

``git fsck`` takes seconds to minutes on a large repository, so this checks what breaks in
practice (a disk filling up, a killed process, a hand edit) in milliseconds: the files every
repository has, each pack's trailer against its index, and that every ref's tree is present.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["find_problem"]

_REQUIRED = ("HEAD", "config", "objects", "refs")


def find_problem(git_dir: Path, tips_with_trees: Callable[[], list[str] | None]) -> str | None:
    """Describe what is wrong with ``git_dir``, or return None if it looks sound.

    ``tips_with_trees`` runs git to list the refs whose tree is missing (None if git failed).
    """
    for name in _REQUIRED:
        if not (git_dir / name).exists():
            return f"{name} is missing"
    pack_dir = git_dir / "objects" / "pack"
    for pack in sorted(pack_dir.glob("*.pack")) if pack_dir.is_dir() else []:
        problem = _pack_problem(pack)
        if problem:
            return problem
    missing = tips_with_trees()
    if missing is None:
        return "git cannot read its refs"
    if missing:
        return f"objects are missing (e.g. the tree of {missing[0]})"
    return None


def _pack_problem(pack: Path) -> str | None:
    index = pack.with_suffix(".idx")
    if not index.is_file():
        return f"pack {pack.name} has no index"
    try:
        with open(pack, "rb") as handle:
            handle.seek(0, 2)
            if handle.tell() < 32:
                return f"pack {pack.name} is truncated"
            handle.seek(-20, 2)
            pack_checksum = handle.read(20)
        with open(index, "rb") as handle:
            handle.seek(0, 2)
            if handle.tell() < 40:
                return f"index {index.name} is truncated"
            # An index ends with the pack's checksum, then its own: a truncated or rewritten
            # pack no longer ends with the checksum its index recorded.
            handle.seek(-40, 2)
            recorded = handle.read(20)
    except OSError as exc:
        return f"pack {pack.name} is unreadable: {exc}"
    if pack_checksum != recorded:
        return f"pack {pack.name} is truncated or damaged (checksum does not match its index)"
    return None
