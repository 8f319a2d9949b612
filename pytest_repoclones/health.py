"""A cheap integrity check of a cached repository, run on its first use in each session.

``git fsck`` takes seconds to minutes on a large repository, so this checks what breaks in
practice (a disk filling up, a killed process, a hand edit) in milliseconds: the files every
repository has, each pack's trailer against its index, and that every ref's tree is present.

What it cannot see (an object deeper in history gone missing or damaged) is caught when git trips
over it: :func:`damaged_object_line` recognises git's words for that.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._runner import GitRunner

__all__ = ["damaged_object_line", "find_problem", "names_damaged_file", "tips_without_trees"]

_REQUIRED = ("HEAD", "config", "objects", "refs")


def tips_without_trees(git_dir: Path, runner: GitRunner) -> list[str] | None:
    """Refs whose tree is missing (None if git could not list the refs): two git processes."""
    refs = runner.run(["for-each-ref", "--format=%(objectname) %(refname)"], git_dir=git_dir)
    if not refs.ok:
        return None
    tips = [line.split(" ", 1) for line in refs.stdout.splitlines() if " " in line]
    if not tips:
        return ["(no refs at all)"]
    found = runner.run(
        ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
        git_dir=git_dir,
        stdin="".join(f"{sha}^{{tree}}\n" for sha, _ in tips),
    )
    kinds = [line.partition(" ")[2] for line in found.stdout.splitlines()]
    kinds.extend([""] * (len(tips) - len(kinds)))
    return [ref for (_, ref), kind in zip(tips, kinds, strict=True) if kind != "tree"]


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


_HEX = r"[0-9a-f]{40}(?:[0-9a-f]{24})?"
# What git 2.39 prints when an object of the repository it reads is missing or unreadable, each
# reproduced against a cache entry that lost (or has a garbled) blob, tree or commit. Every
# pattern is anchored on a whole 'error:'/'fatal:' line and names a full object name or an
# object file: nothing a network failure ("Could not read from remote repository", "unable to
# access", "early EOF") or a bad request ("not a valid object name", "not our ref") prints.
_DAMAGE_RE = re.compile(
    rf"""(?:error|fatal):\ (?:
        unable\ to\ read\ sha1\ file\ of\ .+\ \({_HEX}\)   # checkout/reset: a blob
      | cannot\ read\ object\ {_HEX}\ '.*'                 # parallel checkout: a blob
      | invalid\ object\ [0-7]{{6}}\ {_HEX}\ for\ '.*'     # checkout: a blob
      | unable\ to\ read\ tree\ {_HEX}                     # reset: a tree (names the commit)
      | (?:loose|packed)\ object\ {_HEX}\ \(stored\ in\ .+\)\ is\ corrupt   # garbled object
      | Could\ not\ read\ {_HEX}                           # rev walk, checkout: a commit or tree
      | bad\ (?:tree\ )?object\ {_HEX}                     # connectivity check, pack-objects
      | unable\ to\ read\ {_HEX}                           # pack-objects: a blob
      | missing\ (?:blob|tree|commit|tag)\ object\ '{_HEX}'   # rev-list --objects
      | Failed\ to\ traverse\ parents\ of\ commit\ {_HEX}   # a parent commit
    )""",
    re.VERBOSE,
)
# Unambiguous even in a fetch: git read a damaged file of the repository itself.
_CORRUPT_FILE_RE = re.compile(rf"(?:error|fatal): (?:loose|packed) object {_HEX} \(stored in ")
# upload-pack serving a fetch from a repository that lacks objects it should have.
_SERVER_SIDE = "aborting due to possible repository corruption on the remote side"
_REMOTE_PREFIX = "remote: "


def damaged_object_line(stderr: str, *, serving: bool = False) -> str | None:
    """The first line of git's ``stderr`` saying an object of the repository is missing or
    damaged, or None.

    Lines the other end of a fetch sent (``remote: ...``) are about *its* repository and are
    ignored, unless ``serving``: the other end is the cache entry itself (a local fetch out of
    it), and its complaints are the entry's damage.
    """
    for raw in stderr.splitlines():
        line = raw.strip()
        if line.startswith(_REMOTE_PREFIX):
            if not serving:
                continue
            line = line[len(_REMOTE_PREFIX) :].strip()
        if _DAMAGE_RE.fullmatch(line) or (serving and _SERVER_SIDE in line):
            return line
    return None


def names_damaged_file(line: str) -> bool:
    """Whether ``line`` (from :func:`damaged_object_line`) is git failing to decode an object
    file of the repository it reads, which a fetch's connectivity check never says about
    objects the remote failed to send."""
    return _CORRUPT_FILE_RE.match(line) is not None
