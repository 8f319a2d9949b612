"""Concurrency stress: many processes making worktrees of one repository at once.

Usage: ``python tests/stress/concurrency_stress.py [--procs 16] [--worktrees 25] [--seed 1]``

An upstream with 10 commits, 4 of them only reachable from ``refs/pull/*`` (so missing from the
first clone and fetched by full object name). All processes are released together; each adds,
verifies and removes its worktrees in a random order. Counting git processes through
GIT_TRACE2_EVENT, there must be exactly one clone and one fetch per missing commit: upload-pack
runs == 1 + missing commits. Exit status 1 on any failure or deviation.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from common import child_requested, isolate_git, run_child  # noqa: E402
from helpers.children import LineChild  # noqa: E402
from upstream import Upstream, count_git_commands, trace_events  # noqa: E402

TIMEOUT = 600.0
N_MAIN = 6
N_PULL = 4


# -- child side ------------------------------------------------------------------------------


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def child(args: dict[str, Any]) -> None:
    from pytest_repoclones import RepoClonesError, RepoStore

    store = RepoStore(args["cache"], timeout=120, lock_timeout=300)
    url, root = args["url"], Path(args["root"])
    commits = [tuple(item) for item in args["commits"]]
    rng = random.Random(args["seed"])
    order = [commits[n % len(commits)] for n in range(args["worktrees"])]
    rng.shuffle(order)
    say("ready")
    if not sys.stdin.readline():
        raise SystemExit("stdin closed before go")
    errors: list[str] = []
    for number, (sha, marker) in enumerate(order):
        try:
            wt = store.add_worktree(url, sha, root / f"wt{number}")
            if wt.commit != sha:
                errors.append(f"{sha}: worktree commit {wt.commit}")
            if (wt.path / "marker.txt").read_text() != marker:
                errors.append(f"{sha}: wrong marker.txt in {wt.path}")
            head = subprocess.run(
                ["git", "-C", str(wt.path), "rev-parse", "HEAD"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if head.stdout.strip() != sha:
                errors.append(f"{sha}: HEAD is {head.stdout.strip()!r} {head.stderr.strip()}")
            store.remove_worktree(wt)
            if wt.path.exists():
                errors.append(f"{wt.path} still exists after removal")
        except (RepoClonesError, OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{sha}: {type(exc).__name__}: {exc}")
    stats = {key: value.as_dict() for key, value in store.stats.items()}
    say(
        "result "
        + json.dumps(
            {"errors": errors, "stats": stats, "count": len(order), "shas": [c[0] for c in order]}
        )
    )


# -- parent side -----------------------------------------------------------------------------


def Proc(args: dict[str, Any], env: dict[str, str], log: Path) -> LineChild:
    """One child process of this script."""
    return LineChild([sys.executable, __file__, "--child", json.dumps(args)], log, env)


def left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)


def build_upstream(path: Path, rng: random.Random) -> tuple[Upstream, list[tuple[str, str]]]:
    """Main: 6 commits over ~400 files; 4 commits only under refs/pull/<n>/head."""
    up = Upstream(path)

    def text(size: int) -> str:
        return base64.b64encode(rng.randbytes(size)).decode()

    files = {f"src/d{n % 20}/f{n}.txt": text(1000) for n in range(400)}
    files["marker.txt"] = "main-0"
    commits = [(up.commit(files, "base"), "main-0")]
    for n in range(1, N_MAIN):
        change = {f"src/d{n}/f{n}.txt": text(1500), "marker.txt": f"main-{n}"}
        commits.append((up.commit(change, f"main {n}"), f"main-{n}"))
    for n in range(N_PULL):
        parent = commits[rng.randrange(N_MAIN)][0]
        change = {f"pull/p{n}.txt": text(5000), "marker.txt": f"pull-{n}"}
        sha = up.commit(change, f"pull {n}", parent=parent, ref=f"refs/pull/{n + 1}/head")
        commits.append((sha, f"pull-{n}"))
    return up, commits


def fetches_of(trace: Path, sha: str) -> int:
    """git fetch processes whose arguments ask for ``sha``, according to the trace."""
    return sum(
        1
        for event in trace_events(trace)
        if event.get("event") == "start"
        and "fetch" in (argv := event.get("argv") or [])
        and any(sha in a for a in argv)
    )


def main() -> int:
    if child_requested():
        return run_child(child, sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=16)
    parser.add_argument("--worktrees", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    options = parser.parse_args()
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="repoclones-concurrency-"))
    isolate_git(work)
    up, commits = build_upstream(work / "upstream.git", rng)
    trace = work / "trace2.json"
    env = {**os.environ, "GIT_TRACE2_EVENT": str(trace)}
    cache = work / "cache"
    procs: list[Proc] = []
    problems: list[str] = []
    results: list[dict[str, Any]] = []
    wall = float("nan")
    try:
        for index in range(options.procs):
            root = work / f"p{index}"
            root.mkdir()
            args = {
                "cache": str(cache),
                "url": up.url,
                "root": str(root),
                "commits": [list(c) for c in commits],
                "worktrees": options.worktrees,
                "seed": rng.randrange(2**32),
            }
            procs.append(Proc(args, env, work / f"p{index}.stderr"))
        deadline = time.monotonic() + 120
        for proc in procs:
            if proc.read_line(left(deadline)) != "ready":
                raise RuntimeError(f"child not ready: {proc.describe()}")
        started = time.monotonic()
        for proc in procs:
            proc.send("go")
        deadline = started + TIMEOUT
        for proc in procs:
            try:
                results.append(proc.finish(left(deadline)))
            except AssertionError as exc:
                problems.append(str(exc))
        wall = time.monotonic() - started
    finally:
        for proc in procs:
            proc.kill()
    failures = [error for result in results for error in result["errors"]]
    made = sum(result["count"] for result in results)
    all_stats = [stats for result in results for stats in result["stats"].values()]
    clones = sum(s["clones"] for s in all_stats)
    fetches = sum(s["fetches"] for s in all_stats)
    upload_packs = count_git_commands(trace, "upload-pack")
    # Missing commits some process asked for (all of them with the default sizes).
    asked = {sha for result in results for sha in result["shas"]}
    missing = [(sha, marker) for sha, marker in commits[N_MAIN:] if sha in asked]
    expected = 1 + len(missing)
    per_missing = {sha[:12]: fetches_of(trace, sha) for sha, _ in missing}
    print(
        f"processes: {options.procs}, worktrees each: {options.worktrees}, commits: "
        f"{len(commits)} ({N_PULL} only under refs/pull/*, {len(missing)} of them used)"
    )
    print(f"worktrees made and removed: {made} of {options.procs * options.worktrees}")
    print(f"failures: {len(failures) + len(problems)}")
    for failure in [*problems, *failures][:30]:
        print(f"    {failure}")
    print(f"clones (store stats): {clones}")
    print(f"fetches (store stats, besides the clone): {fetches}")
    print(f"upload-pack processes (trace2): {upload_packs}, expected {expected}")
    print(f"fetches per missing commit (trace2): {per_missing}")
    print(f"wall time: {wall:.1f} s")
    deviations = []
    if failures or problems:
        deviations.append("failures")
    if made != options.procs * options.worktrees:
        deviations.append("worktree count")
    if clones != 1:
        deviations.append("clones != 1")
    if fetches != expected - 1:
        deviations.append(f"fetches != {expected - 1}")
    if upload_packs != expected:
        deviations.append(f"upload-pack != {expected}")
    if any(count != 1 for count in per_missing.values()):
        deviations.append("a missing commit not fetched exactly once")
    print("result: " + ("OK" if not deviations else "DEVIATION: " + ", ".join(deviations)))
    if deviations or options.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if deviations else 0


if __name__ == "__main__":
    sys.exit(main())
