"""Random-kill stress: SIGKILL a RepoStore process mid-operation, then check the cache recovers.

Usage: ``python tests/stress/kill_trials.py [--trials 50] [--seed 1]``

Each trial starts 1-3 child processes on one cache. One of them (the victim) enters a phase
(clone, publish, fetch, worktree add, teardown) and is SIGKILLed 0-300 ms later; the others
(survivors) clone, hold a worktree and add/verify/remove worktrees (fetching missing commits)
meanwhile. Then: a fresh store process must clone, add and remove worktrees of several commits
within a deadline; survivors must finish without error with their held worktree intact; once
all are done (orphaned git processes included) a fresh store's first use must leave no stale
worktree registration, no ``refs/heads/repoclones/*`` branch and nothing in ``tmp/``.
Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from common import child_requested, isolate_git, run_child  # noqa: E402
from helpers.children import (  # noqa: E402
    LineChild,
    descendants,
    is_running,
)
from upstream import Upstream  # noqa: E402

PHASES = ("clone", "publish", "fetch", "add", "teardown")
CHILD_TIMEOUT = 120.0
RECOVER_TIMEOUT = 120.0


# -- child side ------------------------------------------------------------------------------


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def verify(path: Path, sha: str, marker: str) -> str | None:
    """None if the worktree at ``path`` is intact at ``sha``, else what is wrong."""
    try:
        if (path / "marker.txt").read_text() != marker:
            return f"{path}: marker.txt differs"
    except OSError as exc:
        return f"{path}: {exc}"
    head = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=60
    )
    if head.stdout.strip() != sha:
        return f"{path}: HEAD {head.stdout.strip()!r} != {sha} ({head.stderr.strip()})"
    status = subprocess.run(
        ["git", "-C", str(path), "status", "--porcelain"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if status.returncode != 0 or status.stdout.strip():
        return f"{path}: status {status.returncode}: {(status.stdout + status.stderr)[:500]}"
    return None


def child_victim(args: dict[str, Any]) -> None:
    from pytest_repoclones import RepoStore

    store = RepoStore(args["cache"], timeout=60, lock_timeout=60)
    url, phase, root = args["url"], args["phase"], Path(args["root"])
    sha = args["commit"][0]
    if phase == "publish":
        # Hold the moment between a complete clone and its rename into repos/ open for 0.5 s.
        import pytest_repoclones.store as store_module

        real_rename = os.rename

        def slow_rename(src: Any, dst: Any) -> None:
            if Path(dst).parent.name == "repos":
                say("phase")
                time.sleep(0.5)
            real_rename(src, dst)

        store_module.os.rename = slow_rename  # type: ignore[attr-defined]
        say("ready")
        store.clone(url)
    elif phase == "clone":
        say("ready")
        say("phase")
        store.clone(url)
    else:
        store.clone(url)
        say("ready")
        if phase == "fetch":
            sha = args["missing"][0]
            say("phase")
            wt = store.add_worktree(url, sha, root / "victim-wt")
        elif phase == "add":
            say("phase")
            wt = store.add_worktree(url, sha, root / "victim-wt")
        else:
            wt = store.add_worktree(url, sha, root / "victim-wt")
            say("phase")
            store.remove_worktree(wt)
    say("opdone")
    time.sleep(CHILD_TIMEOUT)


def child_survivor(args: dict[str, Any]) -> None:
    from pytest_repoclones import RepoClonesError, RepoStore

    store = RepoStore(args["cache"], timeout=60, lock_timeout=60)
    url, root = args["url"], Path(args["root"])
    rng = random.Random(args["seed"])
    commits = [tuple(item) for item in args["commits"]]
    say("ready")
    if not sys.stdin.readline():
        raise SystemExit("stdin closed before go")
    errors: list[str] = []
    held_sha, held_marker = rng.choice(commits)
    held = store.add_worktree(url, held_sha, root / "held")
    problem = verify(held.path, held_sha, held_marker)
    if problem:
        errors.append("held right after add: " + problem)
    for number in range(args["iterations"]):
        sha, marker = rng.choice(commits)
        try:
            wt = store.add_worktree(url, sha, root / f"wt{number}")
            problem = verify(wt.path, sha, marker)
            if problem:
                errors.append(problem)
            store.remove_worktree(wt)
            if wt.path.exists():
                errors.append(f"{wt.path} still exists after removal")
        except (RepoClonesError, OSError) as exc:
            errors.append(f"{sha}: {type(exc).__name__}: {exc}")
        problem = verify(held.path, held_sha, held_marker)
        if problem:
            errors.append("held worktree damaged: " + problem)
    store.remove_worktree(held)
    say("result " + json.dumps({"errors": errors}))


def child_recover(args: dict[str, Any]) -> None:
    from pytest_repoclones import RepoStore

    store = RepoStore(args["cache"], timeout=60, lock_timeout=60)
    url, root = args["url"], Path(args["root"])
    errors: list[str] = []
    store.clone(url)
    for number, (sha, marker) in enumerate(args["commits"]):
        wt = store.add_worktree(url, sha, root / f"recover{number}")
        problem = verify(wt.path, sha, marker)
        if problem:
            errors.append(problem)
        store.remove_worktree(wt)
        if wt.path.exists():
            errors.append(f"{wt.path} still exists after removal")
    say("result " + json.dumps({"errors": errors}))


def child_first_use(args: dict[str, Any]) -> None:
    from pytest_repoclones import RepoStore

    store = RepoStore(args["cache"], timeout=60, lock_timeout=60)
    store.clone(args["url"])
    say("result " + json.dumps({"errors": []}))


CHILD_MODES = {
    "victim": child_victim,
    "survivor": child_survivor,
    "recover": child_recover,
    "first-use": child_first_use,
}


# -- parent side -----------------------------------------------------------------------------


def Proc(mode: str, args: dict[str, Any], env: dict[str, str], log: Path) -> LineChild:
    """One child process of this script, in ``mode``."""
    argv = [sys.executable, __file__, "--child", mode, json.dumps(args)]
    return LineChild(argv, log, env, mode)


def random_text(rng: random.Random, size: int) -> str:
    return base64.b64encode(rng.randbytes(size)).decode()


def build_upstream(path: Path, rng: random.Random) -> tuple[Upstream, list[tuple[str, str]]]:
    """About 3,000 files / 6 MB, then four small commits on main; returns (sha, marker)s."""
    up = Upstream(path)
    files: dict[str, str] = {f"src/d{n % 40}/f{n}.txt": random_text(rng, 1500) for n in range(3000)}
    files["marker.txt"] = "main-0"
    commits = [(up.commit(files, "base"), "main-0")]
    for n in range(1, 5):
        change = {f"src/d{n}/f{n}.txt": random_text(rng, 2000), "marker.txt": f"main-{n}"}
        commits.append((up.commit(change, f"main {n}"), f"main-{n}"))
    return up, commits


def add_pull(up: Upstream, base: str, number: int, rng: random.Random) -> tuple[str, str]:
    """A commit only reachable from refs/pull/<number>/head, with about 1 MB of new data."""
    marker = f"pull-{number}"
    files = {f"pull/p{n}.txt": random_text(rng, 3000) for n in range(300)}
    files["marker.txt"] = marker
    return up.commit(files, marker, parent=base, ref=f"refs/pull/{number}/head"), marker


def cache_problems(cache: Path, env: dict[str, str]) -> list[str]:
    """Stale registrations, plugin branches, leftovers in tmp/ (after a fresh first use)."""
    problems = []
    for git_dir in sorted((cache / "repos").glob("*.git")):
        listing = subprocess.run(
            ["git", f"--git-dir={git_dir}", "worktree", "list", "--porcelain"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        entries = [line for line in listing.stdout.splitlines() if line.startswith("worktree ")]
        if listing.returncode != 0 or len(entries) != 1:
            problems.append(f"worktree list: {listing.stdout.strip()} {listing.stderr.strip()}")
        admin = git_dir / "worktrees"
        # Withdrawn entries (gitdir unlinked) wait out a grace before deletion: not registered.
        registered = (
            sorted(p.name for p in admin.iterdir() if (p / "gitdir").exists())
            if (admin.is_dir())
            else []
        )
        if registered:
            problems.append(f"admin entries left: {registered}")
        staging = git_dir / "repoclones-staging"
        half_made = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
        if half_made:
            problems.append(f"staged entries left: {half_made}")
        refs = subprocess.run(
            ["git", f"--git-dir={git_dir}", "for-each-ref", "refs/heads/repoclones/"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        if refs.returncode != 0 or refs.stdout.strip():
            problems.append(f"plugin branches left: {refs.stdout.strip()} {refs.stderr.strip()}")
    tmp = cache / "tmp"
    if tmp.is_dir() and any(tmp.iterdir()):
        problems.append(f"tmp/ not empty: {sorted(p.name for p in tmp.iterdir())}")
    return problems


def wait_gone(pids: set[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if is_running(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if is_running(pid)]


def run_trial(
    number: int,
    phase: str,
    rng: random.Random,
    up: Upstream,
    commits: list[tuple[str, str]],
    work: Path,
    shared_cache: Path,
    env: dict[str, str],
) -> tuple[list[str], str]:
    """One trial; (problems, how the kill landed)."""
    trial_dir = work / f"trial{number}"
    trial_dir.mkdir()
    # Clone and publish need an empty cache; the other phases reuse one long-lived cache.
    cache = trial_dir / "cache" if phase in ("clone", "publish") else shared_cache
    missing = add_pull(up, commits[rng.randrange(len(commits))][0], number, rng)
    n_children = rng.randint(1, 3)
    delay = rng.uniform(0.0, 0.3)
    procs: list[Proc] = []
    problems: list[str] = []
    landed = "?"
    orphans: set[int] = set()
    try:
        (trial_dir / "victim").mkdir()
        victim_args = {
            "cache": str(cache),
            "url": up.url,
            "phase": phase,
            "root": str(trial_dir / "victim"),
            "commit": list(rng.choice(commits)),
            "missing": list(missing),
        }
        victim = Proc("victim", victim_args, env, trial_dir / "victim.stderr")
        procs.append(victim)
        survivors = []
        for index in range(n_children - 1):
            root = trial_dir / f"survivor{index}"
            root.mkdir()
            pool = [*commits, missing]
            survivor_args = {
                "cache": str(cache),
                "url": up.url,
                "root": str(root),
                "seed": rng.randrange(2**32),
                "commits": [list(c) for c in pool],
                "iterations": 3,
            }
            log = trial_dir / f"survivor{index}.stderr"
            survivors.append(Proc("survivor", survivor_args, env, log))
        procs.extend(survivors)
        victim.expect("ready", CHILD_TIMEOUT)
        for survivor in survivors:
            survivor.expect("ready", CHILD_TIMEOUT)
        # The victim is in its phase (holding the lock for clone and publish) before the
        # survivors start, so they queue behind it rather than doing its work.
        victim.expect("phase", CHILD_TIMEOUT)
        for survivor in survivors:
            survivor.send("go")
        time.sleep(delay)
        orphans = descendants(victim.proc.pid)
        victim.proc.kill()  # SIGKILL; its pipes stay open to read what it wrote
        victim.proc.wait(10)
        # Did the operation finish before the kill? (Read what the victim wrote, no waiting.)
        with contextlib.suppress(AssertionError):
            while victim.read_line(0.05) is not None:
                pass
        landed = "after-op" if "opdone" in victim.lines else "mid-op"

        recover_root = trial_dir / "recover"
        recover_root.mkdir()
        recover_commits = [commits[0], commits[-1], missing, rng.choice(commits)]
        recover = Proc(
            "recover",
            {"cache": str(cache), "url": up.url, "root": str(recover_root),
             "commits": [list(c) for c in recover_commits]},
            env, trial_dir / "recover.stderr",
        )  # fmt: skip
        procs.append(recover)
        try:
            result = recover.finish(RECOVER_TIMEOUT)
            problems += [f"recover: {p}" for p in result["errors"]]
        except AssertionError as exc:
            problems.append(f"recover: {exc}")
        for survivor in survivors:
            try:
                result = survivor.finish(CHILD_TIMEOUT)
                problems += [f"survivor: {p}" for p in result["errors"]]
            except AssertionError as exc:
                problems.append(f"survivor: {exc}")
        left = wait_gone(orphans, 60)
        if left:
            problems.append(f"git processes of the killed child still running after 60 s: {left}")
        first_use = Proc(
            "first-use", {"cache": str(cache), "url": up.url}, env, trial_dir / "first.stderr"
        )
        procs.append(first_use)
        try:
            first_use.finish(RECOVER_TIMEOUT)
        except AssertionError as exc:
            problems.append(f"first use: {exc}")
        problems += cache_problems(cache, env)
    finally:
        for proc in procs:
            proc.kill()
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                if is_running(pid):
                    os.kill(pid, signal.SIGKILL)
    if not problems:
        shutil.rmtree(trial_dir, ignore_errors=True)
    return problems, landed


def main() -> int:
    if child_requested():
        return run_child(CHILD_MODES[sys.argv[2]], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    options = parser.parse_args()
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="repoclones-kill-"))
    isolate_git(work)
    env = dict(os.environ)
    started = time.monotonic()
    up, commits = build_upstream(work / "upstream.git", rng)
    print(f"upstream: {len(commits)} commits on main, built in {time.monotonic() - started:.1f} s")
    shared_cache = work / "shared-cache"
    per_phase: dict[str, Counter[str]] = {phase: Counter() for phase in PHASES}
    failures: list[tuple[int, str, list[str]]] = []
    try:
        for number in range(options.trials):
            phase = PHASES[number % len(PHASES)]
            t0 = time.monotonic()
            problems, landed = run_trial(number, phase, rng, up, commits, work, shared_cache, env)
            per_phase[phase]["trials"] += 1
            per_phase[phase][landed] += 1
            per_phase[phase]["recovered" if not problems else "failed"] += 1
            status = "ok" if not problems else "FAILED"
            print(
                f"trial {number:3d} {phase:9s} kill {landed:8s} {status} "
                f"({time.monotonic() - t0:.1f} s)",
                flush=True,
            )
            if problems:
                failures.append((number, phase, problems))
                for problem in problems:
                    print(f"    {problem}", flush=True)
    finally:
        if not options.keep and not failures:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    print()
    print(f"{'phase':10s} trials  mid-op  after-op  recovered  failed")
    for phase, counts in per_phase.items():
        print(
            f"{phase:10s} {counts['trials']:6d} {counts['mid-op']:7d} {counts['after-op']:9d} "
            f"{counts['recovered']:10d} {counts['failed']:7d}"
        )
    recovered = sum(c["recovered"] for c in per_phase.values())
    print(f"wall time: {time.monotonic() - started:.1f} s")
    print(f"kill trials: {options.trials}, recovered: {recovered}, failed: {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
