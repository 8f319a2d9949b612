"""Beyond one machine (issue 11): cold starts with a seed cache, with shallow entries, and
caches carried between machines, each against what git alone does, measured in one run.

    python bench/fleet.py [--repo PATH.git] [--reps 5]

The upstream (default: the synthetic repository of bench/make_repo.py; the README's figures use
a bare copy of psf/requests) is served by ``git daemon`` on 127.0.0.1, as a remote is. Each
side starts from an empty cache every repetition (a cold CI runner); sides are interleaved.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import Samples, git, interleave, isolate_environment, perf, rmtree  # noqa: E402
from report import fmt_ratio, fmt_s, table  # noqa: E402

from pytest_repoclones import RepoStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def git_daemon(root: Path) -> Iterator[str]:
    """``git daemon`` serving every repository under ``root``; yields its base URL."""
    port = free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1", f"--port={port}",
         f"--base-path={root}", "--enable=upload-pack", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(10)


def own_bytes(git_dir: Path) -> int:
    """Bytes of objects the repository holds itself (what it received), not its alternates'."""
    objects = git_dir / "objects"
    return sum(
        p.stat().st_size
        for p in objects.rglob("*")
        if p.is_file() and "info" not in p.relative_to(objects).parts
    )


def raw_depth_one(url: str, sha: str, target: Path) -> None:
    """What a careful script does on a cold runner: fetch one commit, depth 1, check it out."""
    git("init", "--quiet", target)
    git("-C", target, "fetch", "--quiet", "--depth", "1", "--no-tags", url, sha)
    git("-C", target, "-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD")


def bench_shallow(url: str, sha: str, work: Path, reps: int) -> str:
    samples = {name: Samples() for name in ("full", "shallow", "raw")}

    def ours(name: str, **options: bool) -> Callable[[int], None]:
        def side(i: int) -> None:
            cache = work / f"{name}-cache-{i}"
            t0 = perf()
            RepoStore(cache, **options).add_worktree(url, sha, work / f"{name}-wt-{i}")
            if i >= 0:
                samples[name].add(perf() - t0)
            rmtree(cache)
            rmtree(work / f"{name}-wt-{i}")

        return side

    def raw(i: int) -> None:
        t0 = perf()
        raw_depth_one(url, sha, work / f"raw-{i}")
        if i >= 0:
            samples["raw"].add(perf() - t0)
        rmtree(work / f"raw-{i}")

    interleave(reps, 1, [ours("full"), ours("shallow", shallow=True), raw])
    raw_s = samples["raw"]
    rows = [
        [
            "`git fetch --depth 1 URL SHA` + checkout",
            fmt_s(raw_s.median),
            fmt_s(raw_s.min),
            "1.00x",
        ],
    ]
    for name, label in (("shallow", "ours, `--repo-shallow`"), ("full", "ours, full clone")):
        s = samples[name]
        rows.append([label, fmt_s(s.median), fmt_s(s.min), fmt_ratio(s.median, raw_s.median)])
    return table(["cold first worktree", "median", "min", "vs depth-1 fetch"], rows)


def bench_reference(up: Path, daemon_root: Path, base_url: str, work: Path, reps: int) -> str:
    """A seed cache one commit behind the upstream, against no seed."""
    seed = work / "seed"
    url = f"{base_url}/{up.relative_to(daemon_root)}"
    RepoStore(seed).clone(url)
    newer = _commit_one_file(up, "after the seed")  # a CI image baked yesterday
    samples = {name: Samples() for name in ("seeded", "cold")}
    stored = {name: 0 for name in samples}

    def side(name: str, reference: Path | None) -> Callable[[int], None]:
        def run(i: int) -> None:
            cache = work / f"{name}-{i}"
            store = RepoStore(cache, reference_dir=reference)
            t0 = perf()
            wt = store.add_worktree(url, newer, work / f"{name}-wt-{i}")
            if i >= 0:
                samples[name].add(perf() - t0)
                stored[name] = own_bytes(store.git_dir(url))
            store.remove_worktree(wt)
            rmtree(cache)

        return run

    interleave(reps, 1, [side("seeded", seed), side("cold", None)])
    cold, seeded = samples["cold"], samples["seeded"]
    return table(
        ["first worktree on an empty cache", "median", "min", "bytes received and stored"],
        [
            ["no seed (a full clone)", fmt_s(cold.median), fmt_s(cold.min), f"{stored['cold']:,}"],
            [
                "`--repo-reference-dir` one commit behind",
                fmt_s(seeded.median),
                fmt_s(seeded.min),
                f"{stored['seeded']:,} ({stored['seeded'] / stored['cold']:.2%})",
            ],
        ],
    )


def _commit_one_file(up: Path, message: str) -> str:
    """A new commit on the bare repository's HEAD changing one file, as a day's work might."""
    env = {**os.environ, "GIT_INDEX_FILE": str(up / "bench-index")}
    head = git("--git-dir", up, "rev-parse", "HEAD").strip()
    git("--git-dir", up, "read-tree", head, env=env)
    blob = subprocess.run(
        ["git", "--git-dir", str(up), "hash-object", "-w", "--stdin"],
        input=f"{message}\n" * 200, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    git(
        "--git-dir", up, "update-index", "--add", "--cacheinfo", f"100644,{blob},BENCH.txt", env=env
    )
    tree = git("--git-dir", up, "write-tree", env=env).strip()
    newer = git("--git-dir", up, "commit-tree", tree, "-p", head, "-m", message).strip()
    git("--git-dir", up, "update-ref", "HEAD", newer)
    (up / "bench-index").unlink()
    return newer


def cli(*args: str | Path) -> None:
    """The cache command as a CI step runs it (its own Python process)."""
    subprocess.run(
        [sys.executable, "-m", "pytest_repoclones", *map(str, args)],
        check=True, capture_output=True,
    )  # fmt: skip


def bench_shards(url: str, sha: str, work: Path, reps: int, shards: int = 4) -> str:
    """A sharded matrix: every shard restores one export and makes its first worktree, against
    every shard cloning cold; the shards run at once, as CI runners do."""
    warm = work / "warm"
    RepoStore(warm).add_worktree(url, sha, work / "warm-wt")
    export = work / "repoclones.tar"
    t0 = perf()
    cli("--cache-dir", warm, "export", export)
    export_s = perf() - t0
    cache_bytes = sum(p.stat().st_size for p in (warm / "repos").rglob("*") if p.is_file())
    samples = {name: Samples() for name in ("restored", "cold", "import")}

    def shard(name: str, n: int, i: int) -> Callable[[], None]:
        def run() -> None:
            cache = work / f"{name}-{i}-{n}"
            if name == "restored":
                t = perf()
                cli("--cache-dir", cache, "import", export)
                if i >= 0:
                    samples["import"].add(perf() - t)
            RepoStore(cache, offline=name == "restored").add_worktree(
                url, sha, work / f"{name}-wt-{i}-{n}"
            )

        return run

    def side(name: str) -> Callable[[int], None]:
        def run(i: int) -> None:
            threads = [threading.Thread(target=shard(name, n, i)) for n in range(shards)]
            t0 = perf()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if i >= 0:
                samples[name].add(perf() - t0)
            for n in range(shards):
                rmtree(work / f"{name}-{i}-{n}")
                rmtree(work / f"{name}-wt-{i}-{n}")

        return run

    interleave(reps, 1, [side("restored"), side("cold")])
    restored, cold = samples["restored"], samples["cold"]
    size = export.stat().st_size
    return table(
        ["measure", "median", "min", "note"],
        [
            ["cache entry -> export file", f"{cache_bytes:,} -> {size:,} B", "",
             f"{size / cache_bytes:.2f}x the cache"],
            ["`pytest-repoclones export`", fmt_s(export_s), "", "once, with Python start-up"],
            ["`pytest-repoclones import` into an empty cache", fmt_s(samples["import"].median),
             fmt_s(samples["import"].min), f"per shard, {shards} at once"],
            [f"{shards} shards: import + first worktree (offline)", fmt_s(restored.median),
             fmt_s(restored.min), fmt_ratio(restored.median, cold.median) + " of cold clones"],
            [f"{shards} shards: cold clone + first worktree", fmt_s(cold.median), fmt_s(cold.min),
             "1.00x"],
        ],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", help="a bare repository to serve (default: synthetic)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--behind", type=int, default=50, help="commits behind the tip")
    options = parser.parse_args()
    scratch = HERE / ".work"
    scratch.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fleet-", dir=scratch))
    isolate_environment(work)
    try:
        source = Path(options.repo) if options.repo else _synthetic()
        root = work / "served"
        up = root / "up.git"
        shutil.copytree(source, up, symlinks=True)
        git("--git-dir", up, "config", "uploadpack.allowAnySHA1InWant", "true")
        with git_daemon(root) as base_url:
            url = f"{base_url}/up.git"
            sha = git("--git-dir", up, "rev-parse", f"HEAD~{options.behind}").strip()
            print(f"## Fleet: {source.name}, {options.reps} repetitions, git daemon on loopback\n")
            print(f"### Cold start at a commit {options.behind} behind the tip\n")
            print(bench_shallow(url, sha, work, options.reps) + "\n")
            print("### A sharded matrix restoring one export (`export` / `import`)\n")
            print(bench_shards(url, sha, work, options.reps) + "\n")
            print("### Seed cache (`--repo-reference-dir`)\n")
            print(bench_reference(up, root, base_url, work, options.reps) + "\n")
    finally:
        rmtree(work)


def _synthetic() -> Path:
    found = sorted((HERE / ".work" / "repos").glob("synthetic-*.git"))
    if not found:
        subprocess.run([sys.executable, str(HERE / "make_repo.py")], check=True)
        found = sorted((HERE / ".work" / "repos").glob("synthetic-*.git"))
    return found[-1]


if __name__ == "__main__":
    os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    main()
