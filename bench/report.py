"""The report of ``python bench/run.py``: number formats, markdown tables, the header (what was
measured, on what) and the footer, and appending a run's tables to a results file."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from common import SNAPSHOT_ENV, Context, Samples, git

import pytest_repoclones

COMPARE_HEADERS = (
    "operation",
    "ours median",
    "ours min",
    "raw median",
    "raw min",
    "ours/raw (medians)",
    "ours/raw (mins)",
)


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "-"
    if seconds < 10:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "-"


def fmt_mib(size: float) -> str:
    return f"{size / 1048576:.1f} MiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def compare_rows(pairs: Sequence[tuple[str, Samples, Samples]]) -> list[list[str]]:
    return [
        [
            what,
            fmt_s(ours.median),
            fmt_s(ours.min),
            fmt_s(raw.median),
            fmt_s(raw.min),
            fmt_ratio(ours.median, raw.median),
            fmt_ratio(ours.min, raw.min),
        ]
        for what, ours, raw in pairs
    ]


# -- header and footer -------------------------------------------------------------------------


def plugin_digest() -> str:
    """Hash of the plugin's sources: tells whether they changed while the benchmark ran."""
    package = Path(pytest_repoclones.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def plugin_revision() -> str:
    snapshot = os.environ.get(SNAPSHOT_ENV)
    if snapshot:
        return f"{snapshot} (sources {plugin_digest()})"
    root = Path(pytest_repoclones.__file__).resolve().parent.parent
    try:
        head = git("-C", root, "rev-parse", "--short", "HEAD").strip()
        dirty = git("-C", root, "status", "--porcelain", "--", "pytest_repoclones").strip()
    except RuntimeError:
        return "unknown"
    changes = " + uncommitted changes in pytest_repoclones/" if dirty else ""
    return f"{head}{changes} (sources {plugin_digest()})"


def filesystem(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=False
        ).stdout.split()
    except OSError:
        return "?"
    kind = out[-1] if out else "?"
    if kind == "ext4" and not any(Path("/proc/fs/jbd2").glob("*")):
        kind += " without a journal"
    return kind


def header(ctx: Context, args: argparse.Namespace, scenarios: list[str]) -> str:
    up = ctx.up
    return "\n".join(
        [
            f"## {up.label}: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
            + (" (quick)" if ctx.quick else ""),
            "",
            f"- Command: `{' '.join(['python', 'bench/run.py', *args.argv])}`",
            f"- Repository: {up.files} files, {fmt_mib(up.tree_bytes)} checked out, "
            f"{len(up.mainline)} commits on HEAD, {len(up.unadvertised)} commits only on other "
            f"refs, {fmt_mib(up.pack_bytes)} packed; served as `{up.url}`",
            f"- Plugin {plugin_revision()}; {git('--version').strip()}; Python "
            f"{platform.python_version()}; {os.cpu_count()} CPUs; {platform.system()} "
            f"{platform.release()}",
            f"- Medians of {ctx.reps} repetitions after {ctx.warmup} warm-up ({ctx.heavy_warmup} "
            f"for naive; parallel: {ctx.parallel_reps} run(s) per -n"
            + ("" if ctx.quick else " after a 1-test warm-up")
            + "); "
            f"scenarios: {', '.join(scenarios)}",
            f"- Scratch dir {ctx.scratch.parent} on {filesystem(ctx.scratch)}, "
            + ("`chattr +T` applied (see `spread_inodes`)" if ctx.spread else "no `chattr +T`"),
        ]
    )


def footer(seconds: float, digest: str) -> str:
    """The total time, and a warning if the plugin's sources changed since ``digest``."""
    text = f"_Total: {seconds:.0f} s._"
    if plugin_digest() != digest:
        text += (
            f"\n\n**Warning: the plugin's sources changed during this run** ({digest} -> "
            f"{plugin_digest()}): the scenarios may have measured different code."
        )
    return text


def append_results(path: Path, sections: list[str]) -> None:
    """Append a run's header, tables and footer to a results file (``--append``)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n\n".join(sections) + "\n\n")
