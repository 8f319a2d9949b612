"""Benchmark of submodules from the cache (issue 13): a superproject with three submodules,
one test after another, each checking out the superproject at one of its commits with every
submodule at the commit it records.

    python bench/submodules.py [--files 400] [--size-mb 2] [--commits 10] [--reps 10]

Three ways to give each test that checkout, measured interleaved in one run on the same
upstreams (served as file:// URLs, so git transfers as it would from a remote):

* ours: ``store.add_worktree(url, commit, path, submodules=True)`` + ``remove_worktree``;
* clone: a fresh clone per test at that commit, with its submodules (``git clone
  --no-checkout``, ``checkout``, ``submodule update --init --recursive``: what ``git clone
  --recurse-submodules`` does, at a commit other than the default branch's tip);
* plain worktree + update: the plugin's worktree without submodules, then
  ``git submodule update --init --recursive`` in it (what a test must do today): the
  superproject from the cache, every submodule cloned again from its remote.

Per test: time (median, min) and network requests, counted as the ``git upload-pack``
processes that served an upstream (GIT_TRACE2_EVENT, as tests/upstream.py's upload_packs).
The first test (a cold cache: every repository cloned once) is reported on its own.
Prints a markdown table on stdout (progress on stderr). The .gitmodules URLs are absolute:
git resolves relative ones against the superproject's remote, which a worktree of the cache
does not have (the plugin resolves them itself), so the third way would fail with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import make_repo  # noqa: E402
from common import (  # noqa: E402
    WORK_DIR,
    git,
    isolate_environment,
    log,
    read_trace,
    rmtree,
    spread_inodes,
    trace_to,
)

from pytest_repoclones import RepoStore  # noqa: E402

SUBMODULES = ("alpha", "beta", "gamma")
FILE_ALLOW = ("-c", "protocol.file.allow=always")  # git >= 2.38.1 refuses file:// submodules


@dataclass
class Side:
    """One way of making a test's checkout: its samples and its network requests."""

    label: str
    run: Callable[[str, Path], None]
    seconds: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)


def build_upstreams(root: Path, spec: make_repo.Spec, commits: int) -> tuple[str, list[str]]:
    """Three submodule repositories and a superproject whose ``commits`` last commits each
    record a later commit of every submodule; the superproject's URL and those commits."""
    chains = {}
    for number, name in enumerate(SUBMODULES):
        repo = make_repo.make_repo(
            root / f"{name}.git",
            make_repo.Spec(spec.files, spec.size_mb, commits, 0, spec.seed + number + 1),
        )
        chain = git(f"--git-dir={repo}", "rev-list", "--first-parent", "--reverse", "main")
        chains[name] = chain.split()
    superproject = make_repo.make_repo(
        root / "super.git", make_repo.Spec(spec.files, spec.size_mb, 1, 0, spec.seed)
    )
    modules = "".join(
        f'[submodule "{name}"]\n\tpath = deps/{name}\n\turl = {(root / f"{name}.git").as_uri()}\n'
        for name in SUBMODULES
    )
    stream = []
    for index in range(commits):
        stream.append(b"commit refs/heads/main\n")
        stream.append(f"committer C <c@example.com> {1_700_000_000 + index} +0000\n".encode())
        stream.append(b"data 12\nsubmodules!\n")
        if index == 0:
            stream.append(b"from refs/heads/main^0\n")
            data = modules.encode()
            stream.append(f"M 100644 inline .gitmodules\ndata {len(data)}\n".encode() + data)
        for name in SUBMODULES:
            stream.append(f"M 160000 {chains[name][index]} deps/{name}\n".encode())
    subprocess.run(
        ["git", f"--git-dir={superproject}", "fast-import", "--quiet", "--force"],
        input=b"".join(stream),
        check=True,
    )
    shas = git(f"--git-dir={superproject}", "rev-list", f"-n{commits}", "--reverse", "main")
    return superproject.as_uri(), shas.split()


def upload_packs(trace: Path) -> int:
    return sum(1 for process in read_trace(trace) if process.name == "upload-pack")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400, help="files per repository")
    parser.add_argument("--size-mb", type=float, default=2.0, help="tree size per repository")
    parser.add_argument("--commits", type=int, default=10, help="superproject commits tested")
    parser.add_argument("--reps", type=int, default=10, help="tests per way (after the first)")
    parser.add_argument("--scratch", type=Path, help="where to work (default: bench/.work)")
    args = parser.parse_args(argv)
    scratch = args.scratch or WORK_DIR
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="submodules-", dir=scratch))
    spread_inodes(work)  # as every benchmark here: see common.spread_inodes
    isolate_environment(work)
    spec = make_repo.Spec(args.files, args.size_mb, args.commits, 0, 20261130)
    log(f"building upstreams in {work}")
    url, shas = build_upstreams(work / "upstreams", spec, args.commits)
    store = RepoStore(work / "cache", timeout=600)
    plain = RepoStore(work / "cache-plain", timeout=600)
    checkouts = work / "checkouts"

    def ours(sha: str, path: Path) -> None:
        store.remove_worktree(store.add_worktree(url, sha, path, submodules=True))

    def clone(sha: str, path: Path) -> None:
        git("clone", "-q", "--no-checkout", url, path)
        git("-C", path, "checkout", "-q", sha)
        git("-C", path, *FILE_ALLOW, "submodule", "update", "-q", "--init", "--recursive")
        rmtree(path)

    def plain_update(sha: str, path: Path) -> None:
        wt = plain.add_worktree(url, sha, path)
        git("-C", path, *FILE_ALLOW, "submodule", "update", "-q", "--init", "--recursive")
        plain.remove_worktree(wt)

    sides = [
        Side("ours: `add_worktree(..., submodules=True)` + remove", ours),
        Side("clone + `submodule update --init --recursive` per test", clone),
        Side("plain worktree + `git submodule update --init --recursive`", plain_update),
    ]
    first: dict[str, tuple[float, int]] = {}
    for index in range(args.reps + 1):
        sha = shas[index % len(shas)]
        order = sides if index % 2 == 0 else list(reversed(sides))
        for number, side in enumerate(order):
            path = checkouts / f"test{index}-{number}"
            with trace_to(work / "trace.jsonl") as trace:
                start = time.perf_counter()
                side.run(sha, path)
                seconds = time.perf_counter() - start
            requests = upload_packs(trace)
            if index == 0:
                first[side.label] = (seconds, requests)  # the cold cache: reported apart
            else:
                side.seconds.append(seconds)
                side.requests.append(requests)
        log(f"test {index} done")
    base = statistics.median(sides[0].seconds)
    print(
        f"Superproject with {len(SUBMODULES)} submodules, {args.files} files / "
        f"{args.size_mb:g} MB each, tests over {args.commits} superproject commits; "
        f"{args.reps} tests per way after the first; git {git('--version').split()[-1]}.\n"
    )
    print("| per test | median | min | x ours | network requests | first test (cold) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for side in sides:
        median = statistics.median(side.seconds)
        cold_seconds, cold_requests = first[side.label]
        print(
            f"| {side.label} | {median * 1000:.0f} ms | {min(side.seconds) * 1000:.0f} ms | "
            f"{median / base:.2f}x | {statistics.mean(side.requests):.1f} | "
            f"{cold_seconds * 1000:.0f} ms, {cold_requests} requests |"
        )
    if os.environ.get("BENCH_KEEP") is None:
        rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
