"""What every scenario of ``python bench/run.py`` shares: the environment, raw git, timing,
samples, git traces, the upstream repository and the run's context.

Every side of every comparison runs in this process's environment: no user or system git config,
fixed identity. Scratch data goes to bench/.work/ (gitignored).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import make_repo

if TYPE_CHECKING:
    from pytest_repoclones import RepoStore

BENCH_DIR = Path(__file__).resolve().parent
#: Set by run.py when it benchmarks a committed revision of the plugin (--plugin-rev).
SNAPSHOT_ENV = "BENCH_PLUGIN_SNAPSHOT"
WORK_DIR = BENCH_DIR / ".work"
PARALLEL_WORKERS = (0, 2, 4)
PARALLEL_COMMITS = 20

perf = time.perf_counter


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- environment and raw git ------------------------------------------------------------------


def isolate_environment(work: Path) -> None:
    """Every git this process and its children run: no user/system config, fixed identity."""
    empty = work / "gitconfig-empty"
    empty.write_text("")
    for name in (
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
        "GIT_TRACE",
        "GIT_TRACE2",
        "GIT_TRACE2_EVENT",
        "GIT_TRACE2_PERF",
        "PYTEST_ADDOPTS",
        "PYTEST_REPO_CACHE_DIR",
        "PYTEST_XDIST_WORKER",
    ):
        os.environ.pop(name, None)
    os.environ["GIT_CONFIG_GLOBAL"] = str(empty)
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    os.environ.update(make_repo.IDENTITY)


def git(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Plain git, as a user types it: default settings, output captured."""
    argv = ["git", *map(str, args)]
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def spread_inodes(directory: Path) -> bool:
    """Mark ``directory`` as the top of a hierarchy (``chattr +T``), so that ext4 puts each new
    subdirectory in a fresh block group instead of next to the previous one.

    Without it, on ext4 *without a journal* (this benchmark's usual VM), every inode allocation
    scans the inodes freed in the last 60-360 s (fs/ext4/ialloc.c ``recently_deleted``), so a
    loop that creates and deletes thousands of files slows down by 10x within a minute
    (``cp -a`` of the 6,000-file tree: 0.15 s, then 2-3 s). Journaled ext4 never does that
    check; with +T, this machine behaves like one. Both sides of every comparison get it.
    """
    result = subprocess.run(["chattr", "+T", str(directory)], capture_output=True, check=False)
    return result.returncode == 0


# -- git traces (GIT_TRACE2_EVENT) ------------------------------------------------------------


@contextmanager
def trace_to(path: Path) -> Iterator[Path]:
    """GIT_TRACE2_EVENT for every git started meanwhile (the plugin reads os.environ per call)."""
    path.unlink(missing_ok=True)
    os.environ["GIT_TRACE2_EVENT"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("GIT_TRACE2_EVENT", None)


@dataclass
class GitProcess:
    sid: str
    argv: list[str]
    name: str = ""
    seconds: float = 0.0

    @property
    def top_level(self) -> bool:
        return "/" not in self.sid


def read_trace(path: Path) -> list[GitProcess]:
    """Git processes in a GIT_TRACE2_EVENT log, in start order, with their own run time."""
    processes: dict[str, GitProcess] = {}
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        sid = event.get("sid", "")
        kind = event.get("event")
        if kind == "start":
            processes[sid] = GitProcess(sid, list(event.get("argv", [])))
        elif sid in processes and kind == "cmd_name":
            processes[sid].name = event.get("name", "")
        elif sid in processes and kind == "exit":
            processes[sid].seconds = float(event.get("t_abs", 0.0))
    return list(processes.values())


def describe_processes(processes: list[GitProcess]) -> str:
    counts: dict[str, int] = {}
    for process in processes:
        label = process.name or (process.argv[1] if len(process.argv) > 1 else "?")
        if not process.top_level:
            label = f"({label})"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.items())


# -- the upstream ------------------------------------------------------------------------------


@dataclass
class Upstream:
    label: str
    path: Path
    url: str
    head: str
    mainline: list[str]  # first-parent history of HEAD, oldest first
    unadvertised: list[str]  # tips of refs outside branches and tags, not reachable from them
    files: int
    tree_bytes: int
    pack_bytes: int

    def spread(self, count: int) -> list[str]:
        """``count`` commits spread evenly over the mainline, newest included."""
        line = self.mainline
        if count >= len(line):
            return list(line)
        if count == 1:
            return [line[-1]]
        return [line[round(i * (len(line) - 1) / (count - 1))] for i in range(count)]


def locate_upstream(choice: str) -> tuple[Path, str]:
    """The repository's path (a synthetic one is generated once, then cached) and its label."""
    if choice not in ("synthetic", "small"):
        path = Path(choice).expanduser().resolve()
        if not path.exists():
            raise SystemExit(f"--repo: {path} does not exist")
        return path, f"local repository {path}"
    spec = make_repo.SMALL if choice == "small" else make_repo.DEFAULT
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:10]
    path = WORK_DIR / "repos" / f"{choice}-{digest}.git"
    if not (path / "packed-refs").exists():
        log(f"generating the {choice} repository at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        make_repo.make_repo(path, spec)
    label = (
        f"synthetic ({spec.files} files, {spec.size_mb:g} MB, {spec.commits} commits)"
        if choice == "synthetic"
        else f"small synthetic ({spec.files} files, {spec.commits} commits)"
    )
    return path, label


def unadvertised_commits(gd: list[str]) -> list[str]:
    """Up to ``PARALLEL_COMMITS // 5`` tips of refs that no branch or tag contains."""
    refs = git(*gd, "for-each-ref", "--format=%(objectname) %(objecttype) %(refname)")
    candidates = [
        sha
        for sha, kind, ref in (line.split(" ", 2) for line in refs.splitlines() if line)
        if kind == "commit" and not ref.startswith(("refs/heads/", "refs/tags/", "refs/remotes/"))
    ]
    unadvertised: list[str] = []
    for sha in candidates[:50]:
        if len(unadvertised) >= PARALLEL_COMMITS // 5:
            break
        contained = git(
            *gd, "for-each-ref", "--count=1", "--contains", sha, "refs/heads", "refs/tags"
        )
        if not contained.strip() and sha not in unadvertised:
            unadvertised.append(sha)
    return unadvertised


def prepare_upstream(choice: str) -> Upstream:
    path, label = locate_upstream(choice)
    gd = ["--git-dir", str(path)] if (path / "objects").is_dir() else ["-C", str(path)]
    head = git(*gd, "rev-parse", "--verify", "HEAD^{commit}").strip()
    mainline = git(*gd, "rev-list", "--first-parent", "--reverse", "HEAD").split()
    unadvertised = unadvertised_commits(gd)
    listing = git(*gd, "ls-tree", "-r", "-l", "HEAD").splitlines()
    sizes = [
        int(parts[3]) for parts in (line.split(None, 4) for line in listing) if parts[3] != "-"
    ]
    objects = git(*gd, "count-objects", "-v").splitlines()
    pack_kib = sum(
        int(line.split()[1]) for line in objects if line.startswith(("size:", "size-pack:"))
    )
    return Upstream(
        label=label,
        path=path,
        url=path.as_uri(),
        head=head,
        mainline=mainline,
        unadvertised=unadvertised,
        files=len(listing),
        tree_bytes=sum(sizes),
        pack_bytes=pack_kib * 1024,
    )


# -- samples and repetitions -------------------------------------------------------------------


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def min(self) -> float:
        return min(self.values) if self.values else float("nan")


def timed_add_remove(store: RepoStore, url: str, sha: str, path: Path) -> tuple[float, float]:
    """Seconds of ``store.add_worktree`` and of the ``remove_worktree`` that follows it."""
    t0 = perf()
    worktree = store.add_worktree(url, sha, path)
    t1 = perf()
    store.remove_worktree(worktree)
    t2 = perf()
    return t1 - t0, t2 - t1


def interleave(reps: int, warmup: int, sides: Sequence[Callable[[int], None]]) -> None:
    """Run every side once per repetition, rotating the order; the first ``warmup`` are run
    but their samples are discarded by the sides themselves (they get a negative index)."""
    for i in range(warmup + reps):
        index = i - warmup
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for side in order:
            side(index)


# -- context -----------------------------------------------------------------------------------


@dataclass
class Context:
    up: Upstream
    reps: int
    warmup: int
    quick: bool
    scratch: Path
    parallel_reps: int
    parallel_tests: int
    disk_max: int
    naive_tests: int
    probe_reps: int
    heavy_warmup: int
    parallel_workers: tuple[int, ...] = PARALLEL_WORKERS
    spread: bool = False
    results: dict[str, Any] = field(default_factory=dict)

    def dir(self, name: str) -> Path:
        path = self.scratch / name
        rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
