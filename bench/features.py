"""Benchmarks of what goes past raw git: worktree reuse, sparse checkouts, partial clones.

    python bench/features.py [--repo synthetic|small|PATH] [--reps 10]

Prints markdown tables; medians (and mins) of --reps repetitions after one warm-up, ours
against ours (reuse against a fresh worktree, sparse against full, partial against full clone),
measured in one run on the same upstream, served as a file:// URL.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pytest_repoclones import RepoStore  # noqa: E402

T = TypeVar("T")


def _upstream(choice: str) -> Path:
    if choice in ("synthetic", "small"):
        found = sorted((HERE / ".work" / "repos").glob(f"{choice}-*.git"))
        if not found:
            preset = ["--small"] if choice == "small" else []
            subprocess.run([sys.executable, str(HERE / "make_repo.py"), *preset], check=True)
            found = sorted((HERE / ".work" / "repos").glob(f"{choice}-*.git"))
        return found[-1]
    return Path(choice).resolve()


def _commits(repo: Path, count: int) -> list[str]:
    out = subprocess.run(
        ["git", f"--git-dir={repo}", "rev-list", "--first-parent", f"-n{count}", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return list(reversed(out))  # oldest first: each next commit is a nearby one


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _timed(func: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def _row(label: str, ours: list[float], base: list[float], *, slowdown: bool = False) -> str:
    """Medians and mins; the last column is base/ours (a speed-up), or ours/base."""
    med, low = statistics.median(ours), min(ours)
    bmed, blow = statistics.median(base), min(base)
    ratio = med / bmed if slowdown else bmed / med
    return (
        f"| {label} | {med * 1000:.1f} ms | {low * 1000:.1f} ms | "
        f"{bmed * 1000:.1f} ms | {blow * 1000:.1f} ms | {ratio:.2f}x |"
    )


def _git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


def bench_reuse(url: str, shas: list[str], work: Path, reps: int) -> list[str]:
    """A reused worktree moved to the next (nearby) commit, against a fresh worktree and
    against git's own floor: one worktree moved in place by ``checkout --force`` and
    ``clean -ffdx``, which keeps none of reuse's guarantees (index flags, modes, branches)."""
    cache = work / "cache-reuse"
    fresh, reuse = RepoStore(cache), RepoStore(cache, reuse=True)
    fresh.clone(url)
    floor = work / "floor"
    _git("clone", "--quiet", "--no-checkout", url, str(floor))
    times: dict[str, list[float]] = {"fresh": [], "reused": [], "cycle": [], "floor": []}
    for i in range(reps + 1):
        sha = shas[i % len(shas)]
        t, wt = _timed(fresh.add_worktree, url, sha, work / f"f{i}")
        fresh.remove_worktree(wt)
        r, wt = _timed(reuse.add_worktree, url, sha, work / f"r{i}")
        park, _ = _timed(reuse.remove_worktree, wt)
        g, _ = _timed(_floor_move, floor, sha)
        if i:  # the first reuse is a fresh worktree: nothing is parked yet
            for name, value in (("fresh", t), ("reused", r), ("cycle", r + park), ("floor", g)):
                times[name].append(value)
    reuse.close()
    return [
        "| add_worktree, next commit | ours median | ours min | baseline median "
        "| baseline min | ours/baseline |",
        "|---|---|---|---|---|---|",
        _row("reused, against a fresh worktree", times["reused"], times["fresh"], slowdown=True),
        _row(
            "reused, against git's in-place floor", times["reused"], times["floor"], slowdown=True
        ),
        _row(
            "reused + park (teardown), against the floor",
            times["cycle"],
            times["floor"],
            slowdown=True,
        ),
    ]


def _floor_move(repo: Path, sha: str) -> None:
    """What git itself needs to move a worktree: a forced checkout, then a clean."""
    _git("-C", str(repo), "checkout", "--quiet", "--force", sha)
    _git("-C", str(repo), "clean", "--quiet", "-ffdx")


def bench_sparse(url: str, sha: str, paths: list[str], work: Path, reps: int) -> list[str]:
    store = RepoStore(work / "cache-sparse")
    store.clone(url)
    full: list[float] = []
    sparse: list[float] = []
    files = 0
    for i in range(reps + 1):
        t, wt = _timed(store.add_worktree, url, sha, work / f"full{i}")
        store.remove_worktree(wt)
        s, wt = _timed(store.add_worktree, url, sha, work / f"sp{i}", sparse=paths)
        files = sum(1 for p in wt.path.rglob("*") if p.is_file()) - 1  # not .git
        store.remove_worktree(wt)
        if i:
            full.append(t)
            sparse.append(s)
    return [
        "| add_worktree | sparse median | sparse min | full median | full min | speed-up |",
        "|---|---|---|---|---|---|",
        _row(f"sparse={paths} ({files} files)", sparse, full),
    ]


def bench_partial(url: str, sha: str, work: Path, reps: int) -> list[str]:
    rows: dict[str, tuple[list[float], list[float]]] = {
        "clone": ([], []),
        "cache size": ([], []),
        "first worktree": ([], []),
    }
    for i in range(max(3, reps // 3)):
        for index, flt in enumerate((None, "blob:none")):
            cache = work / f"cache-partial-{i}-{index}"
            store = RepoStore(cache, clone_filter=flt)
            rows["clone"][index].append(_timed(store.clone, url)[0])
            rows["cache size"][index].append(_size(cache / "repos"))
            first, wt = _timed(store.add_worktree, url, sha, work / f"p{i}{index}")
            rows["first worktree"][index].append(first)
            store.remove_worktree(wt)
            shutil.rmtree(cache)
    lines = [
        "| measure | full clone (median) | partial `blob:none` (median) | partial/full |",
        "|---|---|---|---|",
    ]
    for name, (full, partial) in rows.items():
        fm, pm = statistics.median(full), statistics.median(partial)
        if name == "cache size":
            lines.append(
                f"| {name} | {fm / 2**20:.1f} MiB | {pm / 2**20:.1f} MiB | {pm / fm:.2f} |"
            )
        else:
            lines.append(f"| {name} | {fm * 1000:.0f} ms | {pm * 1000:.0f} ms | {pm / fm:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default="synthetic", help="synthetic, small or a path")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--sparse", default="src/pkg00/,README.md", help="comma-separated")
    parser.add_argument("--only", default="reuse,sparse,partial", help="comma-separated subset")
    options = parser.parse_args()
    os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    repo = _upstream(options.repo)
    # A filter needs the server's permission, as on GitHub.
    subprocess.run(["git", f"--git-dir={repo}", "config", "uploadpack.allowFilter", "true"])
    url = repo.as_uri()
    shas = _commits(repo, options.reps + 2)
    scratch = HERE / ".work"
    scratch.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="features-", dir=scratch))
    with tempfile.NamedTemporaryFile("w", suffix=".gitconfig") as empty:
        os.environ["GIT_CONFIG_GLOBAL"] = empty.name
        try:
            print(f"## Features: {repo.name}, {options.reps} repetitions\n")
            only = options.only.split(",")
            if "reuse" in only:
                print("### Worktree reuse (`--repo-reuse`), consecutive commits\n")
                print("\n".join(bench_reuse(url, shas, work, options.reps)) + "\n")
            if "sparse" in only:
                print("### Sparse checkout\n")
                paths = options.sparse.split(",")
                print("\n".join(bench_sparse(url, shas[-1], paths, work, options.reps)) + "\n")
            if "partial" in only:
                print("### Partial clone (`--repo-clone-filter=blob:none`)\n")
                print("\n".join(bench_partial(url, shas[-1], work, options.reps)) + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
