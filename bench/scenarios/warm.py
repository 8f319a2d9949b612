"""Scenario 1, warm: add + remove a worktree of a cached commit, ours against raw git on the
same bare clone; where our time goes, and what starting one git process costs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    Context,
    GitProcess,
    Samples,
    describe_processes,
    git,
    interleave,
    log,
    perf,
    read_trace,
    rmtree,
    timed_add_remove,
    trace_to,
)
from probe import Probe
from report import COMPARE_HEADERS, compare_rows, fmt_s, table

from pytest_repoclones import RepoStore
from pytest_repoclones import _git as git_module

BY_HAND = (
    "worktree add --no-checkout",
    "reset --hard (checkout.workers=0)",
    "add total",
    "rmtree",
    "worktree prune + update-ref -d",
    "remove total",
)


class WarmSides:
    """The interleaved sides of the warm scenario and their samples."""

    def __init__(self, ctx: Context, store: RepoStore, git_dir: Path) -> None:
        self.ctx, self.store, self.git_dir = ctx, store, git_dir
        self.url, self.sha = ctx.up.url, ctx.up.head
        self.samples = {
            k: Samples()
            for k in ("ours add", "ours remove", "ours both", "raw add", "raw remove", "raw both")
        }
        self.raw_parts = {k: Samples() for k in ("worktree add", "worktree remove", "branch -D")}
        self.same = {k: Samples() for k in BY_HAND}

    def ours(self, i: int) -> None:
        path = self.ctx.dir(f"warm-ours-{i}")
        add, remove = timed_add_remove(self.store, self.url, self.sha, path)
        if i >= 0:
            self.samples["ours add"].add(add)
            self.samples["ours remove"].add(remove)
            self.samples["ours both"].add(add + remove)

    def raw(self, i: int) -> None:
        git_dir, path = self.git_dir, self.ctx.dir(f"warm-raw-{i}")
        branch = f"bench-raw-{i + 100}"
        t0 = perf()
        git("-C", git_dir, "worktree", "add", "-q", "-b", branch, path, self.sha)
        t1 = perf()
        git("-C", git_dir, "worktree", "remove", "--force", path)
        t2 = perf()
        git("-C", git_dir, "branch", "-q", "-D", branch)
        t3 = perf()
        if i >= 0:
            self.samples["raw add"].add(t1 - t0)
            self.samples["raw remove"].add(t3 - t1)
            self.samples["raw both"].add(t3 - t0)
            self.raw_parts["worktree add"].add(t1 - t0)
            self.raw_parts["worktree remove"].add(t2 - t1)
            self.raw_parts["branch -D"].add(t3 - t2)

    def same_commands(self, i: int) -> None:
        # The plugin's own git commands, typed by hand: isolates what the plugin adds around them.
        git_dir, path = self.git_dir, self.ctx.dir(f"warm-same-{i}")
        branch = f"bench-same-{i + 100}"
        t0 = perf()
        git("-C", git_dir, "worktree", "add", "-q", "--no-checkout", "-b", branch, path, self.sha)
        t1 = perf()
        git("-c", "checkout.workers=0", "-C", path, "reset", "-q", "--hard")
        t2 = perf()
        rmtree(path)
        t3 = perf()
        git("-C", git_dir, "worktree", "prune")
        git("-C", git_dir, "update-ref", "-d", f"refs/heads/{branch}")
        t4 = perf()
        if i >= 0:
            for key, seconds in zip(
                BY_HAND, (t1 - t0, t2 - t1, t2 - t0, t3 - t2, t4 - t3, t4 - t2), strict=True
            ):
                self.same[key].add(seconds)


def traced_processes(ctx: Context, sides: WarmSides) -> tuple[list[GitProcess], list[GitProcess]]:
    """Git processes on the hot path, from one traced add+remove per side (ours, raw)."""
    store, url, sha = sides.store, sides.url, sides.sha
    trace_ours = ctx.scratch / "trace-warm-ours.json"
    with trace_to(trace_ours):
        store.remove_worktree(store.add_worktree(url, sha, ctx.dir("warm-trace-ours")))
    trace_raw = ctx.scratch / "trace-warm-raw.json"
    with trace_to(trace_raw):
        sides.raw(-1)
    return read_trace(trace_ours), read_trace(trace_raw)


def probe_phases(ctx: Context, store: RepoStore) -> tuple[dict[str, Samples], Samples]:
    """Where our time goes: the same add+remove, instrumented; per phase, and the totals."""
    url, sha = ctx.up.url, ctx.up.head
    probe_samples: dict[str, Samples] = {}
    totals = Samples()
    with Probe(ctx.scratch / "probe") as probe:
        for i in range(ctx.warmup + ctx.probe_reps):
            probe.reset()
            t0 = perf()
            store.remove_worktree(store.add_worktree(url, sha, ctx.dir(f"warm-probe-{i}")))
            total = perf() - t0
            if i < ctx.warmup:
                continue
            totals.add(total)
            accounted = 0.0
            for label, seconds in probe.phases.items():
                probe_samples.setdefault(label, Samples()).add(seconds)
                if not label.startswith("("):
                    accounted += seconds
            probe_samples.setdefault("other Python in the plugin", Samples()).add(total - accounted)
    return probe_samples, totals


def scenario_warm(ctx: Context) -> str:
    store = RepoStore(ctx.dir("warm-cache"))
    sides = WarmSides(ctx, store, store.clone(ctx.up.url))
    log(f"warm: {ctx.warmup} warm-up + {ctx.reps} repetitions per side")
    interleave(ctx.reps, ctx.warmup, [sides.ours, sides.raw, sides.same_commands])
    ctx.results["warm"] = sides.samples
    procs_ours, procs_raw = traced_processes(ctx, sides)
    top_ours = sum(p.top_level for p in procs_ours)
    top_raw = sum(p.top_level for p in procs_raw)
    ctx.results["warm processes"] = (top_ours, len(procs_ours), top_raw, len(procs_raw))
    probe_samples, totals = probe_phases(ctx, store)
    spawn = spawn_cost(ctx)
    samples = sides.samples
    return "\n".join(
        [
            f"### 1. Warm: add + remove a worktree of a cached commit ({ctx.up.files} files)",
            "",
            "Ours: `RepoStore.add_worktree(url, sha, path)` + `remove_worktree(wt)`. Raw, on the "
            "same bare clone: `git worktree add -b B P SHA` + `git worktree remove --force P` + "
            "`git branch -D B`.",
            "",
            table(
                COMPARE_HEADERS,
                compare_rows(
                    [
                        ("add (checkout)", samples["ours add"], samples["raw add"]),
                        ("remove", samples["ours remove"], samples["raw remove"]),
                        ("**add + remove**", samples["ours both"], samples["raw both"]),
                    ]
                ),
            ),
            "",
            f"Git processes per add+remove: ours {top_ours} started by the plugin "
            f"({len(procs_ours)} with git's own children: {describe_processes(procs_ours)}); "
            f"raw {top_raw} ({len(procs_raw)} with children: {describe_processes(procs_raw)}).",
            "",
            phases_table(sides, probe_samples, totals),
            "",
            spawn,
        ]
    )


def phases_table(sides: WarmSides, probe_samples: dict[str, Samples], totals: Samples) -> str:
    rows = (
        [[label, fmt_s(s.median), fmt_s(s.min)] for label, s in probe_samples.items()]
        + [[f"raw: git {k}", fmt_s(s.median), fmt_s(s.min)] for k, s in sides.raw_parts.items()]
        + [[f"by hand: {k}", fmt_s(s.median), fmt_s(s.min)] for k, s in sides.same.items()]
    )
    return "\n".join(
        [
            "Where our add+remove time goes (median per operation, instrumented run; "
            f"total median {fmt_s(totals.median)}):",
            "",
            table(("phase", "median", "min"), rows),
            "",
            "`(process start/wait overhead)` is the wall time of the plugin's git calls minus "
            "git's own run time (trace2 `t_abs`): fork/exec and pipes. It is already inside the "
            "`git ...` rows. `by hand` rows: the plugin's git commands typed directly (`worktree "
            "add --no-checkout -b`, `-c checkout.workers=0 reset --hard`; `shutil.rmtree`, "
            "`worktree prune`, `update-ref -d`), interleaved with the timed runs: ours minus "
            "these is what the plugin adds (Python, locks, the hardened process start).",
        ]
    )


# -- the cost of starting one git process ------------------------------------------------------


def _ignore(_: object) -> None:
    return None


def _spawn(argv: list[str], **kwargs: Any) -> None:
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )
    process.communicate()


def spawn_variants() -> dict[str, Callable[[], None]]:
    """``git --version`` started plainly, then with each of the plugin's spawn options."""
    env = git_module.git_environment()
    preexec = git_module._PREEXEC
    config_args = list(git_module._CONFIG_ARGS)
    git_path = shutil.which("git") or "git"
    return {
        "`subprocess.Popen(['git', '--version'])` (plain)": lambda: _spawn([git_path, "--version"]),
        "+ `start_new_session=True`": lambda: _spawn(
            [git_path, "--version"], start_new_session=True
        ),
        "+ `preexec_fn` (PDEATHSIG)": lambda: _spawn([git_path, "--version"], preexec_fn=preexec),
        "+ both": lambda: _spawn(
            [git_path, "--version"], start_new_session=True, preexec_fn=preexec
        ),
        f"+ both + the {len(config_args) // 2} `-c` settings + env": lambda: _spawn(
            [git_path, *config_args, "--version"],
            start_new_session=True,
            preexec_fn=preexec,
            env=env,
        ),
        "`run_git(['--version'])` (the plugin)": lambda: _ignore(
            git_module.run_git(["--version"], env=env)
        ),
    }


def spawn_cost(ctx: Context) -> str:
    """What starting one git process costs the plugin's way, and why (``git --version``)."""
    variants = spawn_variants()
    n = 5 if ctx.quick else max(20, ctx.reps * 2)
    rows = []
    ballast: bytearray | None = None
    for heap in ("this process", "with 500 MB more heap"):
        if ballast is None and heap != "this process":
            ballast = bytearray(500 * 1024 * 1024)
            for offset in range(0, len(ballast), 4096):
                ballast[offset] = 1  # touch every page so fork has to copy its page tables
        samples = {name: Samples() for name in variants}
        for i in range(n + 2):
            for name, variant in variants.items():
                t0 = perf()
                variant()
                if i >= 2:
                    samples[name].add(perf() - t0)
        for name, sample in samples.items():
            rows.append([heap, name, fmt_s(sample.median), fmt_s(sample.min)])
        ctx.results[f"spawn {heap}"] = samples
    del ballast
    return "\n".join(
        [
            f"Cost of starting one git process (`git --version`, median of {n}):",
            "",
            table(("process", "how", "median", "min"), rows),
        ]
    )
