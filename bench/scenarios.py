"""The scenarios behind ``python bench/run.py`` (see run.py and README.md for the command).

Every side of every comparison runs in this process's environment: no user or system git config,
fixed identity. Scratch data goes to bench/.work/ (gitignored).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import make_repo

import pytest_repoclones
from pytest_repoclones import RepoStore, Worktree
from pytest_repoclones import _git as git_module
from pytest_repoclones import store as store_module
from pytest_repoclones._lock import RepoLock
from pytest_repoclones._remote import PIN_PREFIX

BENCH_DIR = Path(__file__).resolve().parent
#: Set by run.py when it benchmarks a committed revision of the plugin (--plugin-rev).
SNAPSHOT_ENV = "BENCH_PLUGIN_SNAPSHOT"
WORK_DIR = BENCH_DIR / ".work"
ALL_SCENARIOS = ("warm", "cold", "naive", "parallel", "disk", "floor")
DISK_COUNTS = (1, 2, 5, 10, 100)
PARALLEL_WORKERS = (0, 2, 4)
PARALLEL_COMMITS = 20
NAIVE_TESTS = 10

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


def prepare_upstream(choice: str) -> Upstream:
    if choice in ("synthetic", "small"):
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
    else:
        path = Path(choice).expanduser().resolve()
        if not path.exists():
            raise SystemExit(f"--repo: {path} does not exist")
        label = f"local repository {path}"
    gd = ["--git-dir", str(path)] if (path / "objects").is_dir() else ["-C", str(path)]
    head = git(*gd, "rev-parse", "--verify", "HEAD^{commit}").strip()
    mainline = git(*gd, "rev-list", "--first-parent", "--reverse", "HEAD").split()
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


# -- statistics and tables ---------------------------------------------------------------------


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


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "-"
    if seconds < 10:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "-"


def fmt_mib(size: float) -> str:
    return f"{size / 1048576:.1f} MiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def compare_rows(pairs: Sequence[tuple[str, Samples, Samples]]) -> list[list[str]]:
    return [
        [
            what,
            fmt_s(ours.median),
            fmt_s(ours.min),
            fmt_s(raw.median),
            fmt_s(raw.min),
            fmt_ratio(ours.median, raw.median),
            fmt_ratio(ours.min, raw.min),
        ]
        for what, ours, raw in pairs
    ]


COMPARE_HEADERS = (
    "operation",
    "ours median",
    "ours min",
    "raw median",
    "raw min",
    "ours/raw (medians)",
    "ours/raw (mins)",
)


def interleave(reps: int, warmup: int, sides: Sequence[Callable[[int], None]]) -> None:
    """Run every side once per repetition, rotating the order; the first ``warmup`` are run
    but their samples are discarded by the sides themselves (they get a negative index)."""
    for i in range(warmup + reps):
        index = i - warmup
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for side in order:
            side(index)


# -- instrumentation of the plugin (timing wrappers, nothing changed in behaviour) -------------


class Probe:
    """Times the plugin's git processes, file deletions and lock acquisitions per phase."""

    def __init__(self, trace_dir: Path) -> None:
        self.trace_dir = trace_dir
        self.phases: dict[str, float] = {}
        self.calls: list[tuple[str, float, float]] = []  # label, wall, git's own run time
        self._saved: list[tuple[Any, str, Any]] = []
        self._serial = 0

    def _add(self, label: str, seconds: float) -> None:
        self.phases[label] = self.phases.get(label, 0.0) + seconds

    def reset(self) -> None:
        self.phases = {}
        self.calls = []

    def __enter__(self) -> Probe:
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        run_git = git_module.run_git  # the one place every git call goes through
        rmtree_original = store_module.rmtree
        acquire = RepoLock._acquire
        probe = self

        def timed_run_git(args: Sequence[str], **kwargs: Any) -> Any:
            probe._serial += 1
            trace = probe.trace_dir / f"call-{probe._serial}.json"
            kwargs["extra_env"] = {
                **(kwargs.get("extra_env") or {}),
                "GIT_TRACE2_EVENT": str(trace),
            }
            start = perf()
            try:
                return run_git(args, **kwargs)
            finally:
                wall = perf() - start
                own = sum(p.seconds for p in read_trace(trace) if p.top_level)
                trace.unlink(missing_ok=True)
                label = f"git {args[0]}" + (f" {args[1]}" if args[0] == "worktree" else "")
                probe._add(label, wall)
                probe._add("(process start/wait overhead)", max(0.0, wall - own))
                probe.calls.append((label, wall, own))

        def timed_rmtree(path: Path) -> None:
            start = perf()
            try:
                rmtree_original(path)
            finally:
                inside = "worktrees" in path.parts and path.parent.name == "worktrees"
                probe._add(
                    "rmtree admin dir" if inside else "rmtree worktree files", perf() - start
                )

        def timed_acquire(lock: RepoLock, purpose: str) -> None:
            start = perf()
            try:
                acquire(lock, purpose)
            finally:
                probe._add("lock acquire (+ owner file)", perf() - start)

        # Every module that deletes trees imported rmtree by name: time each of them.
        rmtree_users = [
            module
            for module in vars(pytest_repoclones).values()
            if isinstance(module, types.ModuleType)
            and getattr(module, "rmtree", None) is not None
            and module.rmtree is rmtree_original
        ]
        for owner, name, value in (
            (git_module, "run_git", timed_run_git),
            *((module, "rmtree", timed_rmtree) for module in rmtree_users),
            (RepoLock, "_acquire", timed_acquire),
        ):
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)
        self._saved = []


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


# -- scenario 1: warm --------------------------------------------------------------------------


def scenario_warm(ctx: Context) -> str:
    url, sha = ctx.up.url, ctx.up.head
    store = RepoStore(ctx.dir("warm-cache"))
    git_dir = store.clone(url)
    samples = {
        k: Samples()
        for k in ("ours add", "ours remove", "ours both", "raw add", "raw remove", "raw both")
    }
    raw_parts = {k: Samples() for k in ("worktree add", "worktree remove", "branch -D")}

    def ours(i: int) -> None:
        path = ctx.dir(f"warm-ours-{i}")
        t0 = perf()
        worktree = store.add_worktree(url, sha, path)
        t1 = perf()
        store.remove_worktree(worktree)
        t2 = perf()
        if i >= 0:
            samples["ours add"].add(t1 - t0)
            samples["ours remove"].add(t2 - t1)
            samples["ours both"].add(t2 - t0)

    def raw(i: int) -> None:
        path = ctx.dir(f"warm-raw-{i}")
        branch = f"bench-raw-{i + 100}"
        t0 = perf()
        git("-C", git_dir, "worktree", "add", "-q", "-b", branch, path, sha)
        t1 = perf()
        git("-C", git_dir, "worktree", "remove", "--force", path)
        t2 = perf()
        git("-C", git_dir, "branch", "-q", "-D", branch)
        t3 = perf()
        if i >= 0:
            samples["raw add"].add(t1 - t0)
            samples["raw remove"].add(t3 - t1)
            samples["raw both"].add(t3 - t0)
            raw_parts["worktree add"].add(t1 - t0)
            raw_parts["worktree remove"].add(t2 - t1)
            raw_parts["branch -D"].add(t3 - t2)

    def same_commands(i: int) -> None:
        # The plugin's own git commands, typed by hand: isolates what the plugin adds around them.
        path = ctx.dir(f"warm-same-{i}")
        branch = f"bench-same-{i + 100}"
        t0 = perf()
        git("-C", git_dir, "worktree", "add", "-q", "--no-checkout", "-b", branch, path, sha)
        t1 = perf()
        git("-c", "checkout.workers=0", "-C", path, "reset", "-q", "--hard")
        t2 = perf()
        rmtree(path)
        t3 = perf()
        git("-C", git_dir, "worktree", "prune")
        git("-C", git_dir, "update-ref", "-d", f"refs/heads/{branch}")
        t4 = perf()
        if i >= 0:
            same["worktree add --no-checkout"].add(t1 - t0)
            same["reset --hard (checkout.workers=0)"].add(t2 - t1)
            same["add total"].add(t2 - t0)
            same["rmtree"].add(t3 - t2)
            same["worktree prune + update-ref -d"].add(t4 - t3)
            same["remove total"].add(t4 - t2)

    same = {
        k: Samples()
        for k in (
            "worktree add --no-checkout",
            "reset --hard (checkout.workers=0)",
            "add total",
            "rmtree",
            "worktree prune + update-ref -d",
            "remove total",
        )
    }
    log(f"warm: {ctx.warmup} warm-up + {ctx.reps} repetitions per side")
    interleave(ctx.reps, ctx.warmup, [ours, raw, same_commands])
    ctx.results["warm"] = samples

    # Git processes on the hot path, from one traced add+remove per side.
    trace_ours = ctx.scratch / "trace-warm-ours.json"
    with trace_to(trace_ours):
        store.remove_worktree(store.add_worktree(url, sha, ctx.dir("warm-trace-ours")))
    trace_raw = ctx.scratch / "trace-warm-raw.json"
    with trace_to(trace_raw):
        raw(-1)
    procs_ours, procs_raw = read_trace(trace_ours), read_trace(trace_raw)
    top_ours = sum(p.top_level for p in procs_ours)
    top_raw = sum(p.top_level for p in procs_raw)
    ctx.results["warm processes"] = (top_ours, len(procs_ours), top_raw, len(procs_raw))

    # Where our time goes: the same add+remove, instrumented.
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
    spawn = spawn_cost(ctx)

    out = [
        f"### 1. Warm: add + remove a worktree of a cached commit ({ctx.up.files} files)",
        "",
        "Ours: `RepoStore.add_worktree(url, sha, path)` + `remove_worktree(wt)`. Raw, on the same "
        "bare clone: `git worktree add -b B P SHA` + `git worktree remove --force P` + "
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
        "Where our add+remove time goes (median per operation, instrumented run; "
        f"total median {fmt_s(totals.median)}):",
        "",
        table(
            ("phase", "median", "min"),
            [[label, fmt_s(s.median), fmt_s(s.min)] for label, s in probe_samples.items()]
            + [[f"raw: git {k}", fmt_s(s.median), fmt_s(s.min)] for k, s in raw_parts.items()]
            + [[f"by hand: {k}", fmt_s(s.median), fmt_s(s.min)] for k, s in same.items()],
        ),
        "",
        "`(process start/wait overhead)` is the wall time of the plugin's git calls minus git's "
        "own run time (trace2 `t_abs`): fork/exec and pipes. It is already inside the `git ...` "
        "rows. `by hand` rows: the plugin's git commands typed directly (`worktree add "
        "--no-checkout -b`, `-c checkout.workers=0 reset --hard`; `shutil.rmtree`, `worktree "
        "prune`, `update-ref -d`), interleaved with the timed runs: ours minus these is what the "
        "plugin adds (Python, locks, the hardened process start).",
        "",
        spawn,
    ]
    return "\n".join(out)


def _ignore(_: object) -> None:
    return None


def _spawn(argv: list[str], **kwargs: Any) -> None:
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )
    process.communicate()


def spawn_cost(ctx: Context) -> str:
    """What starting one git process costs the plugin's way, and why (``git --version``)."""
    env = git_module.git_environment()
    preexec = git_module._PREEXEC
    config_args = list(git_module._CONFIG_ARGS)
    git_path = shutil.which("git") or "git"
    variants: dict[str, Callable[[], None]] = {
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


# -- scenario 2: cold --------------------------------------------------------------------------


def scenario_cold(ctx: Context) -> str:
    url, sha = ctx.up.url, ctx.up.head
    samples = {k: Samples() for k in ("ours", "raw", "ours clone", "raw clone")}

    def ours(i: int) -> None:
        cache, path = ctx.dir(f"cold-cache-{i}"), ctx.dir(f"cold-ours-{i}")
        store = RepoStore(cache)
        t0 = perf()
        worktree = store.add_worktree(url, sha, path)
        t1 = perf()
        store.remove_worktree(worktree)
        rmtree(cache)
        cache = ctx.dir(f"cold-cache-clone-{i}")
        t2 = perf()
        RepoStore(cache).clone(url)
        t3 = perf()
        rmtree(cache)
        if i >= 0:
            samples["ours"].add(t1 - t0)
            samples["ours clone"].add(t3 - t2)

    def raw(i: int) -> None:
        bare, path = ctx.dir(f"cold-raw-{i}.git"), ctx.dir(f"cold-raw-wt-{i}")
        t0 = perf()
        git("clone", "-q", "--bare", url, bare)
        git("-C", bare, "worktree", "add", "-q", "-b", "bench", path, sha)
        t1 = perf()
        rmtree(path)
        rmtree(bare)
        bare = ctx.dir(f"cold-raw-clone-{i}.git")
        t2 = perf()
        git("clone", "-q", "--bare", url, bare)
        t3 = perf()
        rmtree(bare)
        if i >= 0:
            samples["raw"].add(t1 - t0)
            samples["raw clone"].add(t3 - t2)

    log(f"cold: {ctx.warmup} warm-up + {ctx.reps} repetitions per side")
    interleave(ctx.reps, ctx.warmup, [ours, raw])
    ctx.results["cold"] = samples

    # Where the cold path's time goes.
    phases: dict[str, Samples] = {}
    counts: dict[str, int] = {}
    with Probe(ctx.scratch / "probe") as probe:
        for i in range(min(ctx.probe_reps, 5)):
            probe.reset()
            cache, path = ctx.dir("cold-probe-cache"), ctx.dir("cold-probe-wt")
            store = RepoStore(cache)
            store.remove_worktree(store.add_worktree(url, sha, path))
            # The removal is not part of the cold path: drop what it added.
            for label in ("git update-ref", "rmtree worktree files", "rmtree admin dir"):
                probe.phases.pop(label, None)
            for label, seconds in probe.phases.items():
                phases.setdefault(label, Samples()).add(seconds)
            if i == 0:
                for label, _, _ in probe.calls:
                    counts[label] = counts.get(label, 0) + 1
            rmtree(cache)
    return "\n".join(
        [
            f"### 2. Cold: first worktree of a new URL ({fmt_mib(ctx.up.pack_bytes)} packed)",
            "",
            "Ours: a `RepoStore` on an empty cache dir, `add_worktree(url, sha, path)`. Raw: "
            "`git clone --bare URL B` + `git -C B worktree add -b bench P SHA`.",
            "",
            table(
                COMPARE_HEADERS,
                compare_rows(
                    [
                        ("**clone + first worktree**", samples["ours"], samples["raw"]),
                        (
                            "clone only (`store.clone` / `clone --bare`)",
                            samples["ours clone"],
                            samples["raw clone"],
                        ),
                    ]
                ),
            ),
            "",
            "Where our cold add_worktree time goes (medians, instrumented runs; git calls "
            "per run in brackets):",
            "",
            table(
                ("phase", "median", "min"),
                [
                    [
                        f"{label} [{counts[label]}]" if label in counts else label,
                        fmt_s(s.median),
                        fmt_s(s.min),
                    ]
                    for label, s in phases.items()
                ],
            ),
        ]
    )


# -- scenario 3: naive clone per test ----------------------------------------------------------


def scenario_naive(ctx: Context) -> str:
    url = ctx.up.url
    commits = ctx.up.spread(ctx.naive_tests)
    keys = (
        "ours cold",
        "ours cold create",
        "ours warm",
        "ours warm create",
        "naive",
        "naive create",
    )
    samples = {k: Samples() for k in keys}
    warm_cache = ctx.dir("naive-warm-cache")
    RepoStore(warm_cache).clone(url)

    def run_ours(store: RepoStore, i: int) -> tuple[float, float]:
        create = 0.0
        t0 = perf()
        for n, commit in enumerate(commits):
            t = perf()
            worktree = store.add_worktree(url, commit, ctx.dir(f"naive-ours-{i}-{n}"))
            create += perf() - t
            store.remove_worktree(worktree)
        return perf() - t0, create

    def ours_cold(i: int) -> None:
        cache = ctx.dir(f"naive-cache-{i}")
        total, create = run_ours(RepoStore(cache), i)
        rmtree(cache)
        if i >= 0:
            samples["ours cold"].add(total)
            samples["ours cold create"].add(create)

    def ours_warm(i: int) -> None:
        # A new store per repetition: a later pytest session on a populated cache.
        total, create = run_ours(RepoStore(warm_cache), i)
        if i >= 0:
            samples["ours warm"].add(total)
            samples["ours warm create"].add(create)

    def naive(i: int) -> None:
        create = 0.0
        t0 = perf()
        for n, commit in enumerate(commits):
            path = ctx.dir(f"naive-clone-{i}-{n}")
            t = perf()
            git("clone", "-q", url, path)
            git("-C", path, "checkout", "-q", "--detach", commit)
            create += perf() - t
            rmtree(path)
        if i >= 0:
            samples["naive"].add(perf() - t0)
            samples["naive create"].add(create)

    log(
        f"naive: {ctx.heavy_warmup} warm-up + {ctx.reps} repetitions of {len(commits)} tests "
        "per side"
    )
    interleave(ctx.reps, ctx.heavy_warmup, [ours_cold, ours_warm, naive])
    ctx.results["naive"] = samples
    rows = []
    for label, key in (
        ("first run (empty cache)", "ours cold"),
        ("later runs (cache kept)", "ours warm"),
    ):
        for suffix, what in (("", "create + delete"), (" create", "create only")):
            ours_s, naive_s = samples[key + suffix], samples["naive" + suffix]
            rows.append(
                [
                    f"{label}, {what}",
                    fmt_s(ours_s.median),
                    fmt_s(ours_s.min),
                    fmt_s(naive_s.median),
                    fmt_s(naive_s.min),
                    fmt_ratio(ours_s.median, naive_s.median),
                    f"{naive_s.median / ours_s.median:.1f}x",
                ]
            )
    return "\n".join(
        [
            f"### 3. Naive: a fresh `git clone` per test, {len(commits)} tests at "
            f"{len(set(commits))} commits",
            "",
            "Ours: `add_worktree` + `remove_worktree` per test (one clone into the cache on the "
            "first run). Naive: `git clone URL P` + `git -C P checkout --detach SHA` per test, "
            "then `shutil.rmtree(P)` (what pytest's tmp_path cleanup does).",
            "",
            table(
                (
                    f"{len(commits)} tests",
                    "ours median",
                    "ours min",
                    "naive median",
                    "naive min",
                    "ours/naive",
                    "speed-up",
                ),
                rows,
            ),
        ]
    )


# -- scenario 4: parallel pytest ---------------------------------------------------------------

PARALLEL_CONFTEST = """\
import json
import os
import subprocess
import time
import types
from contextlib import contextmanager

import pytest

from pytest_repoclones import _lock

SPREAD = @SPREAD@

# Bench instrumentation (behaviour unchanged): time spent waiting for and holding the
# per-repository lock, written per process at the end of the session.
_waits = []
_holds = []
_hold = _lock.RepoLock.hold


@contextmanager
def _timed_hold(self, purpose):
    depth = getattr(self._depth, "value", 0)
    t0 = time.perf_counter()
    with _hold(self, purpose):
        t1 = time.perf_counter()
        try:
            yield
        finally:
            if depth == 0:
                _waits.append(t1 - t0)
                _holds.append(time.perf_counter() - t1)


_lock.RepoLock.hold = _timed_hold


def pytest_sessionfinish(session):
    path = os.environ.get("BENCH_LOCK_LOG")
    if path and _waits:
        record = {
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "n": len(_waits),
            "wait": sum(_waits),
            "max_wait": max(_waits),
            "held": sum(_holds),
        }
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\\n")


@pytest.fixture(scope="session", autouse=True)
def _spread_inodes(tmp_path_factory):
    # Same as bench/scenarios.py spread_inodes(): each test's tmp dir in a fresh block group.
    if SPREAD:
        base = tmp_path_factory.getbasetemp()
        subprocess.run(["chattr", "+T", str(base)], capture_output=True, check=False)
"""

EMPTY_TEST = """\
import pytest


@pytest.mark.parametrize("n", range({tests}))
def test_nothing(n):
    pass
"""

PARALLEL_TEST = """\
import pytest

URL = {url!r}
COMMITS = {commits!r}


@pytest.mark.parametrize("n", range({tests}))
def test_checkout(worktree, n):
    wt = worktree(URL, COMMITS[n % len(COMMITS)])
    assert wt.commit == COMMITS[n % len(COMMITS)]
    assert (wt / "{probe}").exists()
"""


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


def parallel_commits(up: Upstream) -> tuple[list[str], list[str]]:
    """20 commits: every 5th reachable only from a pull ref (fetched by name), the rest mainline.

    Returns the commits (test ``n`` uses ``commits[n % 20]``) and those of them that a clone of
    branches and tags does not have.
    """
    extra = up.unadvertised[: PARALLEL_COMMITS // 5]
    mainline = iter(up.spread(PARALLEL_COMMITS - len(extra)))
    pulls = iter(extra)
    commits = [
        next(pulls) if i % 5 == 4 and i // 5 < len(extra) else next(mainline)
        for i in range(PARALLEL_COMMITS)
    ]
    return commits, extra


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
    argv = [
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
        str(test_dir / suite) + select,
    ]
    t0 = perf()
    result = subprocess.run(
        argv, cwd=test_dir, env=env, capture_output=True, text=True, check=False
    )
    wall = perf() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime)
    lock_records = (
        [json.loads(line) for line in locks.read_text().splitlines()] if locks.exists() else []
    )
    locks.unlink(missing_ok=True)
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
    run = ParallelRun(
        workers=workers,
        wall=wall,
        passed=result.returncode == 0,
        # The store writes a new repository's skeleton itself (no `git init`): a clone is
        # its fetch into tmp/.
        clones=clone_fetches,
        cache_entries=len(repos),
        clone_fetches=clone_fetches,
        commit_fetches=commit_fetches,
        refresh_fetches=len(fetch_args) - commit_fetches - clone_fetches,
        upload_packs=sum(p.name == "upload-pack" for p in processes),
        git_processes=len(top),
        pins=pins,
        output=(result.stdout + result.stderr)[-3000:],
        cpu_user=cpu[0],
        cpu_sys=cpu[1],
        load=load,
        lock_n=sum(r["n"] for r in lock_records),
        lock_wait=sum(r["wait"] for r in lock_records),
        lock_max_wait=max((r["max_wait"] for r in lock_records), default=0.0),
        lock_held=sum(r["held"] for r in lock_records),
    )
    trace.unlink(missing_ok=True)
    rmtree(cache)
    rmtree(basetemp)
    return run


def scenario_parallel(ctx: Context) -> str:
    commits, extra = parallel_commits(ctx.up)
    probe_file = git("--git-dir", ctx.up.path, "ls-tree", "--name-only", ctx.up.head).split()[0]
    test_dir = ctx.dir("parallel-suite")
    test_dir.mkdir(parents=True)
    (test_dir / "pytest.ini").write_text("[pytest]\n")
    (test_dir / "conftest.py").write_text(PARALLEL_CONFTEST.replace("@SPREAD@", repr(ctx.spread)))
    (test_dir / "test_parallel_bench.py").write_text(
        PARALLEL_TEST.format(
            url=ctx.up.url, commits=commits, tests=ctx.parallel_tests, probe=probe_file
        )
    )
    (test_dir / "test_empty_bench.py").write_text(EMPTY_TEST.format(tests=ctx.parallel_tests))
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
    ctx.results["parallel"] = runs
    base = statistics.median(r.wall for r in runs[0])
    rows = []
    failures: list[ParallelRun] = []
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
        failures.extend(r for r in done if not r.passed)
    detail_rows = []
    for workers, done in runs.items():

        def med(values: Sequence[float]) -> float:
            return statistics.median(values)

        detail_rows.append(
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
    used = {commits[n % len(commits)] for n in range(ctx.parallel_tests)}
    missing = len(used & set(extra))
    clones_ok = all(
        r.clones == 1 and r.clone_fetches == 1 and r.cache_entries == 1
        for rs in runs.values()
        for r in rs
    )
    fetches_ok = all(r.commit_fetches <= missing for rs in runs.values() for r in rs)
    out = [
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
            rows,
        ),
        "",
        f"Clones: {'1 per URL in every run' if clones_ok else '**not 1 per URL**'}. "
        f"Commit fetches: {'at most' if fetches_ok else '**more than**'} one per commit missing "
        f"from the first clone ({missing}).",
    ]
    out += [
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
            detail_rows,
        ),
    ]
    for run in failures[:1]:
        out += ["", f"First failing run (-n {run.workers}):", "", "```", run.output, "```"]
    return "\n".join(out)


# -- scenario 5: disk --------------------------------------------------------------------------


def disk_usage(*paths: Path) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) under ``paths``, each inode once, like ``du``."""
    seen: set[tuple[int, int]] = set()
    blocks = apparent = 0
    for root in paths:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames, "."):
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                blocks += st.st_blocks * 512
                apparent += st.st_size
    return blocks, apparent


def scenario_disk(ctx: Context) -> str:
    url, sha = ctx.up.url, ctx.up.head
    counts = [n for n in DISK_COUNTS if n <= ctx.disk_max]
    if not counts:
        counts = [1]
    log(f"disk: up to {counts[-1]} worktrees and as many clones (N = {counts})")
    cache = ctx.dir("disk-cache")
    store = RepoStore(cache)
    worktrees: list[Worktree] = []
    clones: list[Path] = []
    measured: dict[int, tuple[int, int, int]] = {}
    for n in counts:
        while len(worktrees) < n:
            worktrees.append(store.add_worktree(url, sha, ctx.dir(f"disk-wt-{len(worktrees)}")))
        while len(clones) < n:
            path = ctx.dir(f"disk-clone-{len(clones)}")
            git("clone", "-q", url, path)
            git("-C", path, "checkout", "-q", "--detach", sha)
            clones.append(path)
        cache_bytes = disk_usage(cache)[0]
        tree_bytes = disk_usage(*(wt.path for wt in worktrees))[0]
        clone_bytes = disk_usage(*clones)[0]
        measured[n] = (cache_bytes, tree_bytes, clone_bytes)
    for worktree in worktrees:
        store.remove_worktree(worktree)
    for path in clones:
        rmtree(path)
    rmtree(cache)
    # Beyond what was measured, every column grows by a fixed amount per copy (the cache too:
    # each worktree's index lives in its admin entry there): extrapolate from the last two.
    last = counts[-1]
    prev = counts[-2] if len(counts) > 1 else 0
    base = measured[prev] if prev else (measured[last][0], 0, 0)
    slopes = [(measured[last][i] - base[i]) / (last - prev) for i in range(3)]
    rows = []
    for n in DISK_COUNTS:
        if n in measured:
            c, t, k = measured[n]
            mark = ""
        else:
            c, t, k = (int(measured[last][i] + slopes[i] * (n - last)) for i in range(3))
            mark = "≈ "
        rows.append(
            [
                str(n),
                mark + fmt_mib(c),
                mark + fmt_mib(t),
                mark + fmt_mib(c + t),
                mark + fmt_mib(k),
                f"{(c + t) / k:.2f}",
            ]
        )
    ctx.results["disk"] = measured
    note = (
        f"Rows marked ≈ are extrapolated linearly from N = {prev or 1} and {last} (every column "
        f"grows by a fixed amount per copy); raise `--disk-max` to measure them."
        if last < DISK_COUNTS[-1]
        else "All rows measured."
    )
    return "\n".join(
        [
            "### 5. Disk: cache + N live worktrees vs N independent clones",
            "",
            "Allocated bytes (`du`-style: st_blocks, each inode once). Ours: the cache (bare "
            "clone, no checkout) + N worktrees of one commit (files + index, whose admin entries "
            "live in the cache). Clones: N x (`git clone URL` + checkout of the same commit).",
            "",
            table(("N", "cache", "N worktrees", "ours total", "N clones", "ours/clones"), rows),
            "",
            note,
        ]
    )


# -- scenario 6: the physical floor ------------------------------------------------------------


def scenario_floor(ctx: Context) -> str:
    url, sha = ctx.up.url, ctx.up.head
    store = RepoStore(ctx.dir("floor-cache"))
    git_dir = store.clone(url)
    source = ctx.dir("floor-source")
    git("-C", git_dir, "worktree", "add", "-q", "--detach", source, sha)
    s = {
        k: Samples()
        for k in ("cp", "rm", "py rm", "ours add", "ours remove", "raw add", "raw remove")
    }

    def copy(i: int) -> None:
        target = ctx.dir(f"floor-copy-{i}")
        t0 = perf()
        subprocess.run(["cp", "-a", str(source), str(target)], check=True)
        t1 = perf()
        subprocess.run(["rm", "-rf", str(target)], check=True)
        t2 = perf()
        if i >= 0:
            s["cp"].add(t1 - t0)
            s["rm"].add(t2 - t1)

    def copy_python_delete(i: int) -> None:
        # The same deletion through shutil.rmtree, which remove_worktree uses.
        target = ctx.dir(f"floor-copy-py-{i}")
        subprocess.run(["cp", "-a", str(source), str(target)], check=True)
        t0 = perf()
        shutil.rmtree(target)
        if i >= 0:
            s["py rm"].add(perf() - t0)

    def ours(i: int) -> None:
        t0 = perf()
        worktree = store.add_worktree(url, sha, ctx.dir(f"floor-ours-{i}"))
        t1 = perf()
        store.remove_worktree(worktree)
        t2 = perf()
        if i >= 0:
            s["ours add"].add(t1 - t0)
            s["ours remove"].add(t2 - t1)

    def raw(i: int) -> None:
        path, branch = ctx.dir(f"floor-raw-{i}"), f"bench-floor-{i + 100}"
        t0 = perf()
        git("-C", git_dir, "worktree", "add", "-q", "-b", branch, path, sha)
        t1 = perf()
        git("-C", git_dir, "worktree", "remove", "--force", path)
        git("-C", git_dir, "branch", "-q", "-D", branch)
        t2 = perf()
        if i >= 0:
            s["raw add"].add(t1 - t0)
            s["raw remove"].add(t2 - t1)

    log(f"floor: {ctx.warmup} warm-up + {ctx.reps} repetitions")
    interleave(ctx.reps, ctx.warmup, [copy, ours, raw, copy_python_delete])
    git("-C", git_dir, "worktree", "remove", "--force", source)
    ctx.results["floor"] = s
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
                ("operation", "cp -a / rm -rf", "ours", "raw git", "ours/floor", "raw/floor"), rows
            ),
        ]
    )


SCENARIOS: dict[str, Callable[[Context], str]] = {
    "warm": scenario_warm,
    "cold": scenario_cold,
    "naive": scenario_naive,
    "parallel": scenario_parallel,
    "disk": scenario_disk,
    "floor": scenario_floor,
}


# -- main --------------------------------------------------------------------------------------


def plugin_digest() -> str:
    """Hash of the plugin's sources: tells whether they changed while the benchmark ran."""
    package = Path(pytest_repoclones.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def plugin_revision() -> str:
    snapshot = os.environ.get(SNAPSHOT_ENV)
    if snapshot:
        return f"{snapshot} (sources {plugin_digest()})"
    root = Path(pytest_repoclones.__file__).resolve().parent.parent
    try:
        head = git("-C", root, "rev-parse", "--short", "HEAD").strip()
        dirty = git("-C", root, "status", "--porcelain", "--", "pytest_repoclones").strip()
    except RuntimeError:
        return "unknown"
    changes = " + uncommitted changes in pytest_repoclones/" if dirty else ""
    return f"{head}{changes} (sources {plugin_digest()})"


def filesystem(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=False
        ).stdout.split()
    except OSError:
        return "?"
    kind = out[-1] if out else "?"
    if kind == "ext4" and not any(Path("/proc/fs/jbd2").glob("*")):
        kind += " without a journal"
    return kind


def header(ctx: Context, args: argparse.Namespace, scenarios: list[str]) -> str:
    up = ctx.up
    return "\n".join(
        [
            f"## {up.label}: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
            + (" (quick)" if ctx.quick else ""),
            "",
            f"- Command: `{' '.join(['python', 'bench/run.py', *args.argv])}`",
            f"- Repository: {up.files} files, {fmt_mib(up.tree_bytes)} checked out, "
            f"{len(up.mainline)} commits on HEAD, {len(up.unadvertised)} commits only on other "
            f"refs, {fmt_mib(up.pack_bytes)} packed; served as `{up.url}`",
            f"- Plugin {plugin_revision()}; {git('--version').strip()}; Python "
            f"{platform.python_version()}; {os.cpu_count()} CPUs; {platform.system()} "
            f"{platform.release()}",
            f"- Medians of {ctx.reps} repetitions after {ctx.warmup} warm-up ({ctx.heavy_warmup} "
            f"for naive; parallel: {ctx.parallel_reps} run(s) per -n"
            + ("" if ctx.quick else " after a 1-test warm-up")
            + "); "
            f"scenarios: {', '.join(scenarios)}",
            f"- Scratch dir {ctx.scratch.parent} on {filesystem(ctx.scratch)}, "
            + ("`chattr +T` applied (see `spread_inodes`)" if ctx.spread else "no `chattr +T`"),
        ]
    )


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
        help="do not chattr +T the scratch dir (see spread_inodes in scenarios.py)",
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
    big = up.files > 1000
    ctx = Context(
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
    footer = f"_Total: {perf() - started:.0f} s._"
    if plugin_digest() != digest:
        footer += (
            f"\n\n**Warning: the plugin's sources changed during this run** ({digest} -> "
            f"{plugin_digest()}): the scenarios may have measured different code."
        )
    print(footer, flush=True)
    sections.append(footer)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as handle:
            handle.write("\n\n".join(sections) + "\n\n")
    return 0
