"""Sizes and durations as people write and read them (``5G``, ``30d``; ``1.5 KiB``, ``3 days
ago``), and the size of a directory tree: for the cache CLI and the session summary alike."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "format_age",
    "format_size",
    "format_span",
    "parse_duration",
    "parse_size",
    "tree_size",
]

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``5G``, ``1.5G``, ``500M``, ``10K``, ``1024``: bytes, in binary units (K = 1024)."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"invalid size {text!r}: use e.g. 5G, 1.5G, 500M, 10K or bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s``: seconds. A unit is required."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit, e.g. 30d, 12h, 90m, 2w"
        )
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def format_size(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``12.3 MiB``: what ``du -h`` users expect, in binary units."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_span(seconds: float) -> str:
    """``3 days``, ``5 hours``, ``1 minute``, ``12 seconds`` (rounded down)."""
    count, unit = int(max(seconds, 0.0)), "second"
    for name, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count, unit = int(seconds // length), name
            break
    return f"{count} {unit}{'' if count == 1 else 's'}"


def format_age(seconds: float) -> str:
    """``3 days ago``, ``5 hours ago``, ``just now``: how long ago an entry was last used."""
    return "just now" if seconds < 60 else f"{format_span(seconds)} ago"


def tree_size(path: Path) -> int:
    """Sum of the sizes of the files below ``path`` (not following symlinks)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return os.lstat(path).st_size
    except OSError:
        return 0
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as items:
                for item in items:
                    try:
                        if item.is_dir(follow_symlinks=False):
                            stack.append(item.path)
                        else:
                            total += item.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # deleted while we looked
        except OSError:
            continue
    return total
