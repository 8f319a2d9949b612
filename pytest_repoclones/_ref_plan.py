"""Which refs move when a bundle is imported, and under which names they travel.

A cache entry keeps the upstream's branches at ``refs/remotes/origin/*`` and the remote's
default branch at ``refs/repoclones/remote-head``; a bundle has the upstream's shape
(``refs/heads/*``, ``HEAD``). This module is the one place that translates between the two and
decides, ref by ref, what an import may change in an entry sessions may be using: nothing here
runs git (ancestry is asked of the caller), so the policy can be read, and tested, on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ._remote import NAMED_PREFIX, PIN_PREFIX, REMOTE_HEAD

__all__ = [
    "HEADS",
    "RefChange",
    "bundle_ref",
    "cache_ref",
    "plan_refs",
    "update_script",
]

HEADS = "refs/heads/"
_ORIGIN = "refs/remotes/origin/"
_TAGS = "refs/tags/"
# A ref name as git allows it (check-ref-format), and nothing update-ref's stdin could misread.
_REF_RE = re.compile(r"refs/[^\x00-\x20\x7f~^:?*\[\\]+")


def bundle_ref(ref: str) -> str | None:
    """The name a ref of a cache entry has in a bundle (None: not exported)."""
    if ref == REMOTE_HEAD:
        return "HEAD"
    if ref.startswith(_ORIGIN):
        return HEADS + ref[len(_ORIGIN) :]
    if ref.startswith((_TAGS, PIN_PREFIX, NAMED_PREFIX)):
        return ref
    return None  # worktree branches: they belong to the sessions of this machine


def cache_ref(ref: str) -> str | None:
    """Where a ref of a bundle goes in a cache entry (None: ignored).

    Also for bundles not made by us (``git bundle create x --all`` of an upstream mirror): a
    pull-request ref goes where a session that asked for it by name would keep it; another
    clone's remote-tracking refs name nothing of this upstream.
    """
    if ref in ("HEAD", REMOTE_HEAD):
        return REMOTE_HEAD
    if not _valid_ref(ref):
        return None
    if ref.startswith(HEADS):
        return _ORIGIN + ref[len(HEADS) :]
    if ref.startswith((_TAGS, PIN_PREFIX, NAMED_PREFIX)):
        return ref
    if ref.startswith(("refs/remotes/", "refs/repoclones/")):
        return None
    return NAMED_PREFIX + ref[len("refs/") :]


def _valid_ref(ref: str) -> bool:
    parts = ref.split("/")
    return (
        _REF_RE.fullmatch(ref) is not None
        and "" not in parts
        and not any(part.startswith(".") or part.endswith(".lock") for part in parts)
        and ".." not in ref
        and "@{" not in ref
        and not ref.endswith(".")
    )


@dataclass(frozen=True)
class RefChange:
    """One ref of a bundle against the entry: ``added``, ``advanced``, ``same``, ``kept``."""

    ref: str
    new: str
    old: str | None
    verdict: str


def plan_refs(
    wanted: Mapping[str, str], current: Mapping[str, str], descends: Callable[[str, str], bool]
) -> list[RefChange]:
    """What import does to each ref (``descends(old, new)``: new is old or a descendant).

    Nothing a session has seen moves backwards or sideways: a new ref is added; a pin (named by
    its own commit) is only ever added; a tag the entry has keeps its commit (no ancestry says
    which of two is newer, and sessions may have checked the entry's out); a branch, the
    default branch or a named ref moves only forward, as a fetch would move it. Nothing is
    deleted: the next online refresh prunes branches deleted upstream, as it always does.
    """
    taken = {part for ref in current for part in _prefixes(ref)}
    changes = []
    for ref, new in sorted(wanted.items()):
        old = current.get(ref)
        if old is None:
            # A ref cannot be made where a directory of refs is, or below a ref: such a clash
            # (a tag deleted upstream and replaced by tags below its name) keeps the entry's.
            clash = ref in taken or any(part in current for part in _prefixes(ref))
            verdict = "kept" if clash else "added"
        elif old == new:
            verdict = "same"
        elif ref.startswith((PIN_PREFIX, _TAGS)):
            verdict = "kept"
        else:
            verdict = "advanced" if descends(old, new) else "kept"
        changes.append(RefChange(ref, new, old, verdict))
    return changes


def _prefixes(ref: str) -> list[str]:
    """``refs/tags/a/b`` -> ``refs/tags``, ``refs/tags/a`` (every directory above it)."""
    parts = ref.split("/")
    return ["/".join(parts[:n]) for n in range(2, len(parts))]


def update_script(changes: Iterable[RefChange]) -> str:
    """update-ref --stdin: one transaction, each update checked against the old value."""
    lines = []
    for change in changes:
        if change.verdict == "added":
            lines.append(f"create {change.ref} {change.new}\n")
        elif change.verdict == "advanced":
            lines.append(f"update {change.ref} {change.new} {change.old}\n")
    return "".join(lines)
