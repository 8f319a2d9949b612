"""Scenario 6, floor: the physical floor, ``cp -a`` of an existing checkout then ``rm -rf``,
interleaved with ours, raw git, and a copy deleted by ``shutil.rmtree``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from common import Context, Samples, git, interleave, log, perf, timed_add_remove
from report import fmt_mib, fmt_ratio, fmt_s, table

from pytest_repoclones import RepoStore


class FloorSides:
    """The interleaved sides of the floor scenario and their samples."""

    def __init__(self, ctx: Context, store: RepoStore, git_dir: Path, source: Path) -> None:
        self.ctx, self.store, self.git_dir, self.source = ctx, store, git_dir, source
        self.url, self.sha = ctx.up.url, ctx.up.head
        self.s = {
            k: Samples()
            for k in ("cp", "rm", "py rm", "ours add", "ours remove", "raw add", "raw remove")
        }

    def copy(self, i: int) -> None:
        target = self.ctx.dir(f"floor-copy-{i}")
        t0 = perf()
        subprocess.run(["cp", "-a", str(self.source), str(target)], check=True)
        t1 = perf()
        subprocess.run(["rm", "-rf", str(target)], check=True)
        t2 = perf()
        if i >= 0:
            self.s["cp"].add(t1 - t0)
            self.s["rm"].add(t2 - t1)

    def copy_python_delete(self, i: int) -> None:
        # The same deletion through shutil.rmtree, which remove_worktree uses.
        target = self.ctx.dir(f"floor-copy-py-{i}")
        subprocess.run(["cp", "-a", str(self.source), str(target)], check=True)
        t0 = perf()
        shutil.rmtree(target)
        if i >= 0:
            self.s["py rm"].add(perf() - t0)

    def ours(self, i: int) -> None:
        path = self.ctx.dir(f"floor-ours-{i}")
        add, remove = timed_add_remove(self.store, self.url, self.sha, path)
        if i >= 0:
            self.s["ours add"].add(add)
            self.s["ours remove"].add(remove)

    def raw(self, i: int) -> None:
        git_dir = self.git_dir
        path, branch = self.ctx.dir(f"floor-raw-{i}"), f"bench-floor-{i + 100}"
        t0 = perf()
        git("-C", git_dir, "worktree", "add", "-q", "-b", branch, path, self.sha)
        t1 = perf()
        git("-C", git_dir, "worktree", "remove", "--force", path)
        git("-C", git_dir, "branch", "-q", "-D", branch)
        t2 = perf()
        if i >= 0:
            self.s["raw add"].add(t1 - t0)
            self.s["raw remove"].add(t2 - t1)


def floor_rows(s: dict[str, Samples]) -> list[list[str]]:
    rows = []
    for what, floor_key, ours_key, raw_key in (
        ("make the tree", "cp", "ours add", "raw add"),
        ("delete the tree", "rm", "ours remove", "raw remove"),
    ):
        f, o, r = s[floor_key], s[ours_key], s[raw_key]
        rows.append(
            [
                what,
                fmt_s(f.median),
                fmt_s(o.median),
                fmt_s(r.median),
                fmt_ratio(o.median, f.median),
                fmt_ratio(r.median, f.median),
            ]
        )
    both = [
        s["cp"].median + s["rm"].median,
        s["ours add"].median + s["ours remove"].median,
        s["raw add"].median + s["raw remove"].median,
    ]
    rows.append(
        ["**both**", *map(fmt_s, both), fmt_ratio(both[1], both[0]), fmt_ratio(both[2], both[0])]
    )
    py, rm = s["py rm"], s["rm"]
    rows.append(
        [
            "delete with `shutil.rmtree` (what ours uses) instead of `rm -rf`",
            fmt_s(rm.median),
            fmt_s(py.median),
            "",
            f"{fmt_ratio(py.median, rm.median)} (mins {fmt_ratio(py.min, rm.min)})",
            "",
        ]
    )
    return rows


def scenario_floor(ctx: Context) -> str:
    store = RepoStore(ctx.dir("floor-cache"))
    git_dir = store.clone(ctx.up.url)
    source = ctx.dir("floor-source")
    git("-C", git_dir, "worktree", "add", "-q", "--detach", source, ctx.up.head)
    sides = FloorSides(ctx, store, git_dir, source)
    log(f"floor: {ctx.warmup} warm-up + {ctx.reps} repetitions")
    interleave(ctx.reps, ctx.warmup, [sides.copy, sides.ours, sides.raw, sides.copy_python_delete])
    git("-C", git_dir, "worktree", "remove", "--force", source)
    ctx.results["floor"] = sides.s
    return "\n".join(
        [
            f"### 6. The physical floor: copying a checked-out tree ({ctx.up.files} files, "
            f"{fmt_mib(ctx.up.tree_bytes)})",
            "",
            "Floor: `cp -a` of an existing checkout of the same commit, then `rm -rf`. Same "
            "repetitions, interleaved with ours (`add_worktree`/`remove_worktree`) and raw git "
            "(`worktree add -b`/`worktree remove --force` + `branch -D`), and with a `cp -a` "
            "copy deleted by `shutil.rmtree` (last row). Medians.",
            "",
            table(
                ("operation", "cp -a / rm -rf", "ours", "raw git", "ours/floor", "raw/floor"),
                floor_rows(sides.s),
            ),
        ]
    )
