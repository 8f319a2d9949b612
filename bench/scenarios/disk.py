"""Scenario 5, disk: allocated bytes of the cache plus N live worktrees of one commit against N
independent clones, N = 1, 2, 5, 10, 100 (rows above ``--disk-max`` extrapolated)."""

from __future__ import annotations

import os
from pathlib import Path

from common import Context, git, log, rmtree
from report import fmt_mib, table

from pytest_repoclones import RepoStore, Worktree

DISK_COUNTS = (1, 2, 5, 10, 100)


def disk_usage(*paths: Path) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) under ``paths``, each inode once, like ``du``."""
    seen: set[tuple[int, int]] = set()
    blocks = apparent = 0
    for root in paths:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames, "."):
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                blocks += st.st_blocks * 512
                apparent += st.st_size
    return blocks, apparent


def measure(ctx: Context, counts: list[int]) -> dict[int, tuple[int, int, int]]:
    """Per N: allocated bytes of the cache, of the N worktrees and of the N clones."""
    url, sha = ctx.up.url, ctx.up.head
    cache = ctx.dir("disk-cache")
    store = RepoStore(cache)
    worktrees: list[Worktree] = []
    clones: list[Path] = []
    measured: dict[int, tuple[int, int, int]] = {}
    for n in counts:
        while len(worktrees) < n:
            worktrees.append(store.add_worktree(url, sha, ctx.dir(f"disk-wt-{len(worktrees)}")))
        while len(clones) < n:
            path = ctx.dir(f"disk-clone-{len(clones)}")
            git("clone", "-q", url, path)
            git("-C", path, "checkout", "-q", "--detach", sha)
            clones.append(path)
        cache_bytes = disk_usage(cache)[0]
        tree_bytes = disk_usage(*(wt.path for wt in worktrees))[0]
        clone_bytes = disk_usage(*clones)[0]
        measured[n] = (cache_bytes, tree_bytes, clone_bytes)
    for worktree in worktrees:
        store.remove_worktree(worktree)
    for path in clones:
        rmtree(path)
    rmtree(cache)
    return measured


def last_two(counts: list[int]) -> tuple[int, int]:
    """The two largest N measured (0 for the first if only one was), to extrapolate from."""
    return (counts[-2] if len(counts) > 1 else 0), counts[-1]


def disk_rows(measured: dict[int, tuple[int, int, int]], counts: list[int]) -> list[list[str]]:
    # Beyond what was measured, every column grows by a fixed amount per copy (the cache too:
    # each worktree's index lives in its admin entry there): extrapolate from the last two.
    prev, last = last_two(counts)
    base = measured[prev] if prev else (measured[last][0], 0, 0)
    slopes = [(measured[last][i] - base[i]) / (last - prev) for i in range(3)]
    rows = []
    for n in DISK_COUNTS:
        if n in measured:
            c, t, k = measured[n]
            mark = ""
        else:
            c, t, k = (int(measured[last][i] + slopes[i] * (n - last)) for i in range(3))
            mark = "≈ "
        rows.append(
            [
                str(n),
                mark + fmt_mib(c),
                mark + fmt_mib(t),
                mark + fmt_mib(c + t),
                mark + fmt_mib(k),
                f"{(c + t) / k:.2f}",
            ]
        )
    return rows


def scenario_disk(ctx: Context) -> str:
    counts = [n for n in DISK_COUNTS if n <= ctx.disk_max]
    if not counts:
        counts = [1]
    log(f"disk: up to {counts[-1]} worktrees and as many clones (N = {counts})")
    measured = measure(ctx, counts)
    rows = disk_rows(measured, counts)
    ctx.results["disk"] = measured
    prev, last = last_two(counts)
    note = (
        f"Rows marked ≈ are extrapolated linearly from N = {prev or 1} and {last} (every column "
        f"grows by a fixed amount per copy); raise `--disk-max` to measure them."
        if last < DISK_COUNTS[-1]
        else "All rows measured."
    )
    return "\n".join(
        [
            "### 5. Disk: cache + N live worktrees vs N independent clones",
            "",
            "Allocated bytes (`du`-style: st_blocks, each inode once). Ours: the cache (bare "
            "clone, no checkout) + N worktrees of one commit (files + index, whose admin entries "
            "live in the cache). Clones: N x (`git clone URL` + checkout of the same commit).",
            "",
            table(("N", "cache", "N worktrees", "ours total", "N clones", "ours/clones"), rows),
            "",
            note,
        ]
    )
