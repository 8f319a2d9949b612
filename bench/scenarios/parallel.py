"""Scenario 4, parallel: the generated suite (parallel_suite.py) run by ``pytest -n N`` on an
empty cache, N = 0, 2, 4: wall time, the git processes and fetches from trace2, CPU time and
the per-repository lock."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import Context, Samples, git, log, perf, read_trace, rmtree
from report import fmt_s, table

from scenarios.parallel_suite import parallel_commits, write_suite


@dataclass
class ParallelRun:
    workers: int
    wall: float
    passed: bool
    clones: int
    cache_entries: int
    clone_fetches: int
    commit_fetches: int
    refresh_fetches: int
    upload_packs: int
    git_processes: int
    pins: int
    output: str
    cpu_user: float
    cpu_sys: float
    load: str
    lock_n: int
    lock_wait: float
    lock_max_wait: float
    lock_held: float


# Where the plugin pins commits fetched by name (a cache format fact, the same in every
# revision benchmarked with --plugin-rev; importing it would tie the bench to one layout).
PIN_PREFIX = "refs/repoclones/pins/"


def pytest_argv(workers: int, cache: Path, basetemp: Path, target: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:benchmark",
        "-p",
        "no:randomly",
        "-n",
        str(workers),
        "--repo-cache-dir",
        str(cache),
        "--basetemp",
        str(basetemp),
        target,
    ]


def git_counts(trace: Path, cache: Path) -> dict[str, Any]:
    """What a run's git did, from its GIT_TRACE2_EVENT log and the cache it left."""
    processes = read_trace(trace)
    top = [p for p in processes if p.top_level]
    fetch_args = [" ".join(p.argv) for p in top if p.name == "fetch"]
    tmp_dir = f"--git-dir={cache / 'tmp'}/"
    clone_fetches = sum(tmp_dir in a for a in fetch_args)
    commit_fetches = sum(PIN_PREFIX in a for a in fetch_args)
    repos = list((cache / "repos").glob("*.git"))
    pins = 0
    for repo in repos:
        pins += len(git("--git-dir", repo, "for-each-ref", PIN_PREFIX).splitlines())
    return {
        # The store writes a new repository's skeleton itself (no `git init`): a clone is
        # its fetch into tmp/.
        "clones": clone_fetches,
        "cache_entries": len(repos),
        "clone_fetches": clone_fetches,
        "commit_fetches": commit_fetches,
        "refresh_fetches": len(fetch_args) - commit_fetches - clone_fetches,
        "upload_packs": sum(p.name == "upload-pack" for p in processes),
        "git_processes": len(top),
        "pins": pins,
    }


def lock_totals(locks: Path) -> dict[str, Any]:
    """The lock timings the generated conftest wrote (one record per process), summed."""
    records = (
        [json.loads(line) for line in locks.read_text().splitlines()] if locks.exists() else []
    )
    locks.unlink(missing_ok=True)
    return {
        "lock_n": sum(r["n"] for r in records),
        "lock_wait": sum(r["wait"] for r in records),
        "lock_max_wait": max((r["max_wait"] for r in records), default=0.0),
        "lock_held": sum(r["held"] for r in records),
    }


def run_parallel_once(
    ctx: Context,
    workers: int,
    test_dir: Path,
    rep: int,
    select: str = "",
    suite: str = "test_parallel_bench.py",
) -> ParallelRun:
    cache = ctx.dir(f"parallel-cache-{workers}-{rep}")
    basetemp = ctx.dir(f"parallel-tmp-{workers}-{rep}")
    trace = ctx.scratch / f"parallel-trace-{workers}-{rep}.json"
    trace.unlink(missing_ok=True)
    locks = ctx.scratch / f"parallel-locks-{workers}-{rep}.jsonl"
    locks.unlink(missing_ok=True)
    env = dict(os.environ, GIT_TRACE2_EVENT=str(trace), BENCH_LOCK_LOG=str(locks))
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = pytest_argv(workers, cache, basetemp, str(test_dir / suite) + select)
    t0 = perf()
    result = subprocess.run(
        argv, cwd=test_dir, env=env, capture_output=True, text=True, check=False
    )
    wall = perf() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = ParallelRun(
        workers=workers,
        wall=wall,
        passed=result.returncode == 0,
        output=(result.stdout + result.stderr)[-3000:],
        cpu_user=after.ru_utime - usage.ru_utime,
        cpu_sys=after.ru_stime - usage.ru_stime,
        load=load,
        **lock_totals(locks),
        **git_counts(trace, cache),
    )
    trace.unlink(missing_ok=True)
    rmtree(cache)
    rmtree(basetemp)
    return run


def run_all(
    ctx: Context, test_dir: Path
) -> tuple[dict[int, list[ParallelRun]], dict[int, list[float]]]:
    """Every -n value, alternating the order per repetition, each followed by the empty suite.

    Returns the runs and the wall times of the empty suite, per -n value.
    """
    runs: dict[int, list[ParallelRun]] = {n: [] for n in ctx.parallel_workers}
    empty: dict[int, list[float]] = {n: [] for n in ctx.parallel_workers}
    log(
        f"parallel: {ctx.parallel_reps} repetitions of {ctx.parallel_tests} tests with "
        f"-n {', '.join(map(str, ctx.parallel_workers))}"
    )
    # Warm-up: one test on 2 workers (imports, the upstream in the page cache).
    if not ctx.quick:
        warm = run_parallel_once(ctx, 2, test_dir, -1, select="::test_checkout[0]")
        if not warm.passed:
            log(f"parallel warm-up failed:\n{warm.output}")
    for rep in range(ctx.parallel_reps):
        order = ctx.parallel_workers[:: 1 if rep % 2 == 0 else -1]
        for workers in order:
            run = run_parallel_once(ctx, workers, test_dir, rep)
            log(f"  -n {workers}: {run.wall:.1f} s, passed={run.passed}")
            runs[workers].append(run)
            baseline = run_parallel_once(ctx, workers, test_dir, rep, suite="test_empty_bench.py")
            empty[workers].append(baseline.wall)
    return runs, empty


def count_rows(ctx: Context, runs: dict[int, list[ParallelRun]]) -> list[list[str]]:
    """Wall time, throughput, speed-up and git counts per -n value."""
    base = statistics.median(r.wall for r in runs[0])
    rows = []
    for workers, done in runs.items():
        walls = Samples([r.wall for r in done])
        rows.append(
            [
                f"-n {workers}",
                fmt_s(walls.median),
                fmt_s(walls.min),
                f"{ctx.parallel_tests / walls.median:.1f}",
                f"{base / walls.median:.2f}x",
                "/".join(str(r.clones) for r in done),
                "/".join(str(r.commit_fetches) for r in done),
                "/".join(str(r.refresh_fetches) for r in done),
                "/".join(str(r.upload_packs) for r in done),
                "/".join(str(r.git_processes) for r in done),
                "yes" if all(r.passed for r in done) else "**NO**",
            ]
        )
    return rows


def detail_rows(
    runs: dict[int, list[ParallelRun]], empty: dict[int, list[float]]
) -> list[list[str]]:
    """Where the time goes per -n value: pytest alone, CPU, cores busy, the lock, the load."""
    med = statistics.median
    rows = []
    for workers, done in runs.items():
        rows.append(
            [
                f"-n {workers}",
                fmt_s(med(empty[workers])),
                f"{med([r.cpu_user for r in done]):.1f} + {med([r.cpu_sys for r in done]):.1f}",
                f"{med([(r.cpu_user + r.cpu_sys) / r.wall for r in done]):.2f}",
                str(int(med([r.lock_n for r in done]))),
                fmt_s(med([r.lock_wait for r in done])),
                fmt_s(med([r.lock_max_wait for r in done])),
                fmt_s(med([r.lock_held for r in done])),
                "/".join(r.load for r in done),
            ]
        )
    return rows


def counts_section(
    ctx: Context, runs: dict[int, list[ParallelRun]], used: set[str], missing: int
) -> list[str]:
    clones_ok = all(
        r.clones == 1 and r.clone_fetches == 1 and r.cache_entries == 1
        for rs in runs.values()
        for r in rs
    )
    fetches_ok = all(r.commit_fetches <= missing for rs in runs.values() for r in rs)
    return [
        f"### 4. Parallel: `pytest -n N`, {ctx.parallel_tests} tests over {len(used)} commits, "
        "empty cache",
        "",
        f"{len(used) - missing} commits on the default branch, {missing} reachable only from "
        "`refs/pull/*` (not in the first clone: each needs one fetch by name). "
        "Counts are per run (`a/b/c` = repetitions), from GIT_TRACE2_EVENT: clones = "
        "fetches into a new entry in tmp/; commit fetches = fetches of one commit by name; refresh "
        "fetches = fetches of all branches and tags after the clone; upload-pack = server-side "
        "processes (every network round trip, the clone's included); git processes = all the "
        "plugin started.",
        "",
        table(
            (
                "workers",
                "wall median",
                "wall min",
                "tests/s",
                "vs -n 0",
                "clones",
                "commit fetches",
                "refresh fetches",
                "upload-pack",
                "git processes",
                "passed",
            ),
            count_rows(ctx, runs),
        ),
        "",
        f"Clones: {'1 per URL in every run' if clones_ok else '**not 1 per URL**'}. "
        f"Commit fetches: {'at most' if fetches_ok else '**more than**'} one per commit missing "
        f"from the first clone ({missing}).",
    ]


def time_section(
    ctx: Context, runs: dict[int, list[ParallelRun]], empty: dict[int, list[float]]
) -> list[str]:
    return [
        "",
        "Where the time goes (medians over the runs): the wall time of the same pytest command "
        f"on {ctx.parallel_tests} empty tests (pytest and pytest-xdist alone), CPU seconds of "
        "pytest and everything it started (user + system), CPU cores kept busy (CPU / wall; "
        f"the machine has {os.cpu_count()}), and the per-repository lock summed over all "
        "workers (timed by a wrapper around `RepoLock.hold` in the generated conftest). "
        "Load = the machine's 1-minute load average when each run started (other sessions "
        "share it).",
        "",
        table(
            (
                "workers",
                "same pytest, empty tests",
                "CPU s (user + sys)",
                "cores busy",
                "lock acquisitions",
                "lock wait, total",
                "longest wait",
                "lock held, total",
                "load at start",
            ),
            detail_rows(runs, empty),
        ),
    ]


def scenario_parallel(ctx: Context) -> str:
    commits, extra = parallel_commits(ctx.up)
    test_dir = write_suite(ctx, commits)
    runs, empty = run_all(ctx, test_dir)
    ctx.results["parallel"] = runs
    used = {commits[n % len(commits)] for n in range(ctx.parallel_tests)}
    missing = len(used & set(extra))
    out = counts_section(ctx, runs, used, missing) + time_section(ctx, runs, empty)
    failures = [r for done in runs.values() for r in done if not r.passed]
    for run in failures[:1]:
        out += ["", f"First failing run (-n {run.workers}):", "", "```", run.output, "```"]
    return "\n".join(out)
