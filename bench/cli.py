"""The command behind ``python bench/run.py`` (see run.py and README.md): its options, the run's
context, and the loop that runs the scenarios and prints (and appends) their tables."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import (
    PARALLEL_WORKERS,
    WORK_DIR,
    Context,
    Upstream,
    isolate_environment,
    perf,
    prepare_upstream,
    rmtree,
    spread_inodes,
)
from report import append_results, footer, header, plugin_digest
from scenarios import ALL_SCENARIOS, SCENARIOS

NAIVE_TESTS = 10


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description="Benchmarks of pytest-repoclones vs raw git."
    )
    parser.add_argument(
        "--repo",
        default="synthetic",
        help="synthetic (~6,000 files, default), small (~100 files) or a local repository path",
    )
    parser.add_argument("--reps", type=int, help="repetitions per measurement (default 10)")
    parser.add_argument(
        "--warmup", type=int, help="discarded warm-up repetitions (default 2; 0 with --quick)"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (< 1 min): 3 reps, no warm-up, 1 naive test, 5 parallel tests (-n 0, 2), "
        "disk N <= 2",
    )
    parser.add_argument(
        "--parallel-reps",
        type=int,
        help="pytest runs per -n value (default 3; 1 on repos of > 1,000 files)",
    )
    parser.add_argument(
        "--parallel-tests", type=int, help="tests in the parallel scenario (default 200)"
    )
    parser.add_argument(
        "--disk-max",
        type=int,
        help="largest N measured in the disk scenario (default 100; 10 on repos of > 1,000 files)",
    )
    parser.add_argument(
        "--no-spread",
        action="store_true",
        help="do not chattr +T the scratch dir (see spread_inodes in common.py)",
    )
    parser.add_argument(
        "--plugin-rev",
        metavar="REV",
        help="benchmark the plugin as committed at REV (e.g. HEAD) instead of the working tree",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        metavar="DIR",
        help="where worktrees, clones and caches are made (default bench/.work); e.g. a tmpfs "
        "or a journaled ext4 to avoid this VM's unjournaled ext4 (see spread_inodes)",
    )
    parser.add_argument("--append", type=Path, help="also append the tables to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def make_context(args: argparse.Namespace, up: Upstream, scratch: Path) -> Context:
    """The run's settings: the options, or defaults that depend on --quick and the repo's size."""
    big = up.files > 1000
    return Context(
        up=up,
        reps=args.reps or (3 if args.quick else 10),
        warmup=args.warmup if args.warmup is not None else (0 if args.quick else 2),
        quick=args.quick,
        scratch=scratch,
        # A pytest run of 200 tests on the 6,000-file repo takes 1-2 minutes per -n value.
        parallel_reps=args.parallel_reps or (1 if args.quick or big else 3),
        parallel_tests=args.parallel_tests or (5 if args.quick else 200),
        parallel_workers=(0, 2) if args.quick else PARALLEL_WORKERS,
        disk_max=args.disk_max or (2 if args.quick else 10 if big else 100),
        naive_tests=1 if args.quick else NAIVE_TESTS,
        probe_reps=1 if args.quick else args.reps or 10,
        heavy_warmup=0 if args.quick else 1,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    isolate_environment(WORK_DIR)
    up = prepare_upstream(args.repo)
    scratch = (args.scratch or WORK_DIR).absolute() / f"run-{os.getpid()}"
    ctx = make_context(args, up, scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    ctx.spread = not args.no_spread and spread_inodes(scratch)
    started = perf()
    digest = plugin_digest()
    sections = [header(ctx, args, scenarios)]
    print(sections[0] + "\n", flush=True)
    try:
        for name in scenarios:
            t0 = perf()
            section = SCENARIOS[name](ctx)
            section += f"\n\n_{name}: {perf() - t0:.0f} s_"
            print(section + "\n", flush=True)
            sections.append(section)
    finally:
        if not args.keep:
            rmtree(scratch)
    sections.append(footer(perf() - started, digest))
    print(sections[-1], flush=True)
    if args.append:
        append_results(args.append, sections)
    return 0
