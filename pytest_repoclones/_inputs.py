"""Validation of the store's own arguments (time limits, clone filters, sparse paths): each
reaches git's argv, so it is checked before git sees it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from .errors import InvalidInputError, WorktreeError

__all__ = [
    "check_filter",
    "check_seconds",
    "check_shallow",
    "check_worktree_path",
    "sparse_arguments",
]


def check_seconds(name: str, value: object) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds < 10**7:  # also rejects nan and inf
        raise InvalidInputError(f"{name} must be a positive, finite number of seconds: {value!r}")
    return seconds


_FILTER_RE = re.compile(r"(?:blob:none|blob:limit=\d+[kmg]?|tree:\d+)")


def check_filter(spec: str | None) -> str | None:
    """A partial-clone filter git understands (validated: it reaches git's argv)."""
    if spec is None or spec in ("", "none"):
        return None
    if not isinstance(spec, str) or not _FILTER_RE.fullmatch(spec):
        raise InvalidInputError(
            f"Unsupported clone filter {spec!r}: use blob:none, blob:limit=<n>[kmg] or tree:<n>"
        )
    return spec


def sparse_arguments(sparse: object) -> list[str] | None:
    """``git sparse-checkout set`` arguments: cone mode when every path is a directory."""
    if sparse is None:
        return None
    if isinstance(sparse, str) or not isinstance(sparse, (list, tuple)) or not sparse:
        raise InvalidInputError("sparse must be a non-empty list of paths, e.g. ['src/']")
    paths = []
    for item in sparse:
        if (
            not isinstance(item, str)
            or not item.strip("/")
            or item.startswith("-")
            or _CONTROL_CHARS_RE.search(item)
            or ".." in item.split("/")
        ):
            raise InvalidInputError(f"Invalid sparse path {item!r}: use relative paths like 'src/'")
        paths.append(item.strip("/") + ("/" if item.endswith("/") else ""))
    if all(path.endswith("/") for path in paths):
        return ["--cone", "--", *(path.rstrip("/") for path in paths)]
    # Files among them: plain patterns, anchored at the top so 'src/' is not any 'src/'.
    return ["--no-cone", "--", *(f"/{path}" for path in paths)]


_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")


def check_worktree_path(path: object, cache_dir: Path, url: str, commit: str | None) -> Path:
    """The absolute path a new worktree may take: empty or absent, and not in the cache."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text or any(ord(ch) < 32 for ch in text):
        raise InvalidInputError(
            "Worktree path must be a non-empty str or path without control characters",
            url=url,
            commit=commit,
        )
    target = Path(text).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise WorktreeError(
            f"Worktree path {target} exists and is not an empty directory",
            url=url,
            commit=commit,
        )
    # Compare real paths: '..' and symlinks must not smuggle a worktree into the cache.
    real_target = Path(os.path.realpath(target))
    real_cache = Path(os.path.realpath(cache_dir))
    if real_target == real_cache or real_cache in real_target.parents:
        raise InvalidInputError(
            f"Worktree path {target} is inside the cache", url=url, commit=commit
        )
    return target


def check_shallow(
    shallow: bool, keys: frozenset[str], clone_filter: str | None, filters: Mapping[str, object]
) -> None:
    """A shallow entry and a partial one are two answers to one question: pick one."""
    both = (shallow and (clone_filter is not None or any(filters.values()))) or any(
        key in filters and filters[key] is not None for key in keys
    )
    if both or (keys and clone_filter is not None):
        raise InvalidInputError(
            "A repository cannot be both shallow and cloned with a filter",
            hint="drop --repo-shallow (repo_shallow_urls) or --repo-clone-filter "
            "(repo_clone_filters) for it",
        )
