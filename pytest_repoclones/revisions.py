"""What a user may pass as ``commit``, checked before git sees it.

A string from a test parameter reaches git's argument vector; one that starts with ``-`` or holds
revision syntax could be read as an option or expression, so only two shapes are accepted: a hex
object name (full, or abbreviated to at least 7 digits) and a name valid for
``git check-ref-format --allow-onelevel`` (a branch, a tag, or a full ``refs/...`` name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidInputError

__all__ = ["Revision", "check_branch_name", "parse_revision"]

MAX_REVISION_LENGTH = 255
_HEX_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")
_BAD_REF_CHARS_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")

Kind = Literal["default", "full", "abbrev", "name"]


@dataclass(frozen=True)
class Revision:
    """A classified ``commit`` argument."""

    text: str | None
    kind: Kind


def ref_format_problem(name: str) -> str | None:
    """Why ``name`` fails ``git check-ref-format --allow-onelevel``, or None if it passes."""
    if not name:
        return "it is empty"
    if name.startswith("-"):
        return "it starts with '-', which git would read as an option"
    if name == "@":
        return "'@' alone is not a ref name"
    if _BAD_REF_CHARS_RE.search(name):
        return "it contains a space, a control character or one of ~ ^ : ? * [ \\"
    if ".." in name or "@{" in name:
        return "it contains '..' or '@{'"
    if name.endswith(("/", ".")):
        return "it ends with '/' or '.'"
    for component in name.split("/"):
        if not component:
            return "it contains an empty path component ('//' or a leading '/')"
        if component.startswith("."):
            return "a path component starts with '.'"
        if component.endswith(".lock"):
            return "a path component ends with '.lock'"
    return None


def parse_revision(commit: object) -> Revision:
    """Classify ``commit``; raise InvalidInputError for anything git could misread."""
    if commit is None:
        return Revision(None, "default")
    if not isinstance(commit, str):
        raise InvalidInputError(
            f"commit must be a string or None, not {type(commit).__name__}", commit=repr(commit)
        )
    if len(commit) > MAX_REVISION_LENGTH:
        raise InvalidInputError(
            f"commit is {len(commit)} characters long (at most {MAX_REVISION_LENGTH})",
            commit=commit[:40] + "...",
        )
    if _HEX_RE.match(commit):
        # All-hex strings are object names, as for git; a branch literally named like one is
        # still found, by the name fallback when no object matches.
        return Revision(commit.lower(), "full" if len(commit) in (40, 64) else "abbrev")
    problem = ref_format_problem(commit)
    if problem is not None:
        raise InvalidInputError(
            "commit is neither an object name (7 to 64 hex digits) nor a valid ref name: "
            + problem,
            commit=commit,
        )
    return Revision(commit, "name")


def check_branch_name(branch: str) -> str:
    """Return ``branch`` if git accepts it as a new branch name, else raise."""
    if not isinstance(branch, str):
        raise InvalidInputError(f"Invalid branch name {branch!r}: not a string")
    problem = ref_format_problem(branch)
    if problem is None and branch in ("HEAD",):
        problem = "'HEAD' is reserved"
    if problem is not None:
        raise InvalidInputError(f"Invalid branch name {branch!r}: {problem}")
    return branch
