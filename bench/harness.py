"""Isolated worktrees for evaluation harnesses: what ``isolate=True`` costs per worktree, old
against new, and in a SWE-style suite against SWE-bench's clone-per-task recipe.

    python bench/harness.py                          # synthetic repo, 6 reps, 16 tasks, -n 4
    python bench/harness.py --reps 5 --suite-reps 3  # part 1 shorter, part 2 longer
    python bench/harness.py --repo ~/src/proj --tasks 8 --workers 2
    python bench/harness.py --new-rev HEAD           # the new side as committed, not the tree

Prints markdown tables (progress on stderr). Everything is measured in one run, sides
interleaved with their order rotating per repetition; medians and mins.

1. Per worktree, on the upstream served as ``file://``: the ``add_worktree`` call alone of a
   plain worktree, an isolated one at a commit not packed yet (each repetition walks to another
   commit) and at one repeated commit (its pack exists, or was "freshened" by a ``git add -A``
   in the previous worktree), a history-free one (``history=False``, first and repeated), and
   the OLD isolate (the package at ``--old-rev``, default ``f4beccb^``: ``git init`` + a local
   fetch that re-hashes every object) at the same commits.
   Disk: the bytes of the new inodes the call left in the cache entry and under the worktree's
   ``.git`` (a pack hard-linked from ``repoclones-packs`` is counted once, when it is made).
   Each revision of the plugin runs in a process of its own (one package name cannot be
   imported twice), driven over a pipe; the time is taken inside it.
2. A SWE-style suite, ``--tasks`` tasks (a distinct base commit each, a generated test patch and
   fix patch), run as ``pytest -n --workers`` sessions: per task, a checkout, ``git apply`` of
   the test patch, the test (must fail), ``git apply`` of the fix, the test (must pass),
   ``git add -N .`` + ``git diff <base>`` (``--stage add``: SWE-agent's ``git add -A`` +
   ``git diff --cached <base>``), the checkout deleted. Checkouts: the plugin's
   ``worktree(url, base, isolate=True)`` (new; history-free; old), or SWE-bench's setup script
   (``make_repo_script_list_py``): clone, ``reset --hard``, remove the remote, delete tags newer
   than the base, expire reflogs, ``gc --prune=now`` (``--aggressive`` with --swe-aggressive, as
   SWE-bench does: 10 s more per task here), check that no newer commit is left, commit.
   Plugin sides run on a fresh cache per session (a first run: the clone is inside it) and on a
   kept cache (later runs: cloned by an untimed warm-up session; the plugin keeps up to 8 packs
   per repository between sessions).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import stat
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common import (
    WORK_DIR,
    Samples,
    Upstream,
    git,
    interleave,
    isolate_environment,
    log,
    perf,
    prepare_upstream,
    read_trace,
    rmtree,
    spread_inodes,
)

# report.py imports the plugin: in a --serve process, the revision its PYTHONPATH puts first.
from report import filesystem, fmt_mib, fmt_ratio, fmt_s, plugin_revision, table

PACKS_DIR = "repoclones-packs"  # where the new isolate keeps its packs, in the cache entry
SIDE_ENV = "HARNESS_SIDE"


# -- the plugin in a process of its own ------------------------------------------------------------


def serve(cache: str) -> None:
    """``--serve``: run ``RepoStore`` requests read as JSON lines on stdin, one reply per line.

    The plugin imported here is whatever PYTHONPATH puts first: the parent starts one such
    process per revision it compares.
    """
    import pytest_repoclones

    store = pytest_repoclones.RepoStore(cache)
    made: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        reply: dict[str, Any] = {}
        try:
            if op == "add":
                options: dict[str, bool] = {}
                if request["isolate"]:
                    options["isolate"] = True
                if not request["history"]:
                    options["history"] = False  # the old revision has no such parameter
                t0 = perf()
                worktree = store.add_worktree(
                    request["url"], request["commit"], request["path"], **options
                )
                reply["seconds"] = perf() - t0
                reply["commit"] = worktree.commit
                made[request["path"]] = worktree
            elif op == "remove":
                store.remove_worktree(made.pop(request["path"]))
            elif op == "clone":
                reply["git_dir"] = str(store.clone(request["url"]))
            elif op == "where":
                reply["file"] = pytest_repoclones.__file__
            elif op == "quit":
                break
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


class PluginProcess:
    """A ``--serve`` process on one cache with one revision of the plugin on its path."""

    def __init__(self, cache: Path, snapshot: Path | None) -> None:
        env = dict(os.environ)
        if snapshot is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(snapshot), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(cache)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def call(self, op: str, **request: Any) -> dict[str, Any]:
        stdin, stdout = self._pipes()
        stdin.write(json.dumps({"op": op, **request}) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the plugin process died during {op}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{op} {request}: {reply['error']}")
        return reply

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("the plugin process has no pipes")
        return stdin, stdout

    def close(self) -> None:
        if self.process.poll() is None:
            stdin, _ = self._pipes()
            stdin.write(json.dumps({"op": "quit"}) + "\n")
            stdin.close()
            self.process.wait(timeout=60)


# -- disk ------------------------------------------------------------------------------------------


@dataclass
class NewFiles:
    total: int = 0
    index: int = 0
    packs: int = 0


def files_by_inode(*roots: Path) -> dict[tuple[int, int, int], tuple[int, str]]:
    """Regular files under ``roots`` (a root may be a file): (device, inode, mtime) -> (size,
    path); a file with several links counts once. The mtime tells a file from a new one that
    got the inode number of a file deleted meanwhile (a pack the plugin found changed and made
    again), which ext4 hands out at once; linking a file changes its ctime, not its mtime."""
    found: dict[tuple[int, int, int], tuple[int, str]] = {}
    for root in roots:
        walked = [(str(root.parent), [root.name])] if root.is_file() else []
        walked += [(top, names) for top, _, names in os.walk(root)]
        for top, names in walked:
            for name in names:
                path = os.path.join(top, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):  # a shared pack: named by its first root's path
                    key = (info.st_dev, info.st_ino, info.st_mtime_ns)
                    found.setdefault(key, (info.st_size, path))
    return found


def new_files(
    before: dict[tuple[int, int, int], tuple[int, str]], entry: Path, dot_git: Path
) -> NewFiles:
    """What a worktree added on disk beyond its checked-out files: every inode in the cache
    entry or under its ``.git`` that the entry did not hold before (a plain worktree's admin
    entry, an isolated one's index and config, a pack made for it)."""
    result = NewFiles()
    for key, (size, path) in files_by_inode(entry, dot_git).items():
        if key in before:
            continue  # the cache's own file, or a pack made earlier and hard-linked
        result.total += size
        if os.path.basename(path) == "index":
            result.index += size
        if f"/{PACKS_DIR}/" in path:
            result.packs += size
    return result


# -- part 1: per worktree --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorktreeSide:
    key: str
    label: str
    plugin: str  # "new" or "old": which process makes it
    isolate: bool = True
    history: bool = True
    #: "head" (the same commit every time), "walk" (a commit new to every side, per
    #: repetition) or "second" (another fixed commit, for the `touch` side alone).
    commit: str = "head"
    #: Run `git add -A` in the worktree before removing it, as a task's harness does: git then
    #: "freshens" the objects' pack (a utime), through the hard link into the cache's copy.
    touch: bool = False


WORKTREE_SIDES = (
    WorktreeSide("plain", "plain worktree (`add_worktree`)", "new", isolate=False),
    WorktreeSide("isolated first", "isolated, first at its commit", "new", commit="walk"),
    WorktreeSide("isolated", "isolated, repeated commit (pack exists)", "new"),
    WorktreeSide(
        "isolated touched",
        "isolated, repeated commit, after `git add -A` in the previous one",
        "new",
        commit="second",
        touch=True,
    ),
    WorktreeSide("free first", "history-free, first at its commit", "new", True, False, "walk"),
    WorktreeSide("free", "history-free, repeated commit", "new", history=False),
    WorktreeSide("old first", "OLD isolate, the same first commits", "old", commit="walk"),
    WorktreeSide("old", "OLD isolate, the repeated commit", "old"),
)  # fmt: skip


@dataclass
class Plugins:
    """The two revisions compared: their snapshot dirs (None: the working tree) and labels."""

    new: Path | None
    new_label: str
    old: Path
    old_label: str


def per_worktree(up: Upstream, plugins: Plugins, work: Path, reps: int) -> list[str]:
    """Part 1: interleaved ``add_worktree`` calls of every kind; their time and new bytes."""
    processes = {
        "new": PluginProcess(work / "cache-new", plugins.new),
        "old": PluginProcess(work / "cache-old", plugins.old),
    }
    try:
        # The old revision must not be shadowed by the editable install (and vice versa).
        imported = Path(processes["old"].call("where")["file"])
        if not imported.is_relative_to(plugins.old):
            raise RuntimeError(f"the old process imported {imported}, not {plugins.old}")
        entries = {
            name: Path(process.call("clone", url=up.url)["git_dir"])
            for name, process in processes.items()
        }
        warmup = 1
        # Commits never checked out before in this run, one per repetition ("walk"), and a
        # second fixed one that only the "touched" side uses (its pack is freshened each time).
        commits = [sha for sha in up.spread(reps + warmup + 2) if sha != up.head]
        if len(commits) < reps + warmup + 1:
            raise SystemExit(f"--reps {reps}: the repository has too few commits")
        second, walk = commits[-1], commits[: reps + warmup]
        times = {side.key: Samples() for side in WORKTREE_SIDES}
        disks: dict[str, list[NewFiles]] = {side.key: [] for side in WORKTREE_SIDES}

        def measure(side: WorktreeSide) -> Callable[[int], None]:
            def run(i: int) -> None:
                commit = {"head": up.head, "walk": walk[i + warmup], "second": second}
                # Straight under the `chattr +T` dir: each tree starts in a fresh block group.
                path = work / f"wt-{side.key.replace(' ', '-')}-{i + warmup}"
                entry, process = entries[side.plugin], processes[side.plugin]
                before = files_by_inode(entry)
                reply = process.call(
                    "add", url=up.url, commit=commit[side.commit], path=str(path),
                    isolate=side.isolate, history=side.history,
                )  # fmt: skip
                disk = new_files(before, entry, path / ".git")
                if side.touch:
                    git("-C", path, "add", "-A")
                process.call("remove", path=str(path))
                if i >= 0:
                    times[side.key].add(reply["seconds"])
                    disks[side.key].append(disk)

            return run

        sides = [measure(side) for side in WORKTREE_SIDES]
        log(f"part 1: {warmup} warm-up + {reps} repetitions of {len(sides)} worktree kinds")
        interleave(reps, warmup, sides)
    finally:
        for process in processes.values():
            process.close()
    return [
        f"### 1. One worktree, {up.files:,} files: time of the call, new disk",
        "",
        f"Medians and mins of {reps} repetitions (after 1 warm-up), time taken around the "
        "`add_worktree` call inside the process running that revision. Repeated: the "
        "repository's HEAD each time (the touched side: another fixed commit, and `git add -A` "
        'in each worktree before its removal); "first": a commit new to every side at each '
        "repetition. New disk: bytes of the inodes the call added to the cache entry and to "
        "the worktree's `.git`, not the checked-out files; a shared pack counts once, when made.",
        "",
        *worktree_tables(times, disks),
    ]


def worktree_tables(times: dict[str, Samples], disks: dict[str, list[NewFiles]]) -> list[str]:
    plain = times["plain"]
    rows = []
    for side in WORKTREE_SIDES:
        label, sample, disk = side.label, times[side.key], disks[side.key]
        rows.append(
            [
                label,
                fmt_s(sample.median),
                fmt_s(sample.min),
                fmt_ratio(sample.median, plain.median),
                fmt_ratio(sample.min, plain.min),
                fmt_bytes(statistics.median(d.total for d in disk)),
                fmt_bytes(statistics.median(d.index for d in disk)),
                fmt_bytes(statistics.median(d.packs for d in disk)),
            ]
        )
    versus = [
        [
            label,
            fmt_ratio(times[new].median, times[old].median),
            fmt_ratio(times[new].min, times[old].min),
        ]
        for label, new, old in (
            ("isolated, first / OLD at the same commits", "isolated first", "old first"),
            ("isolated, repeated commit / OLD at that commit", "isolated", "old"),
            ("history-free, repeated commit / OLD at that commit", "free", "old"),
        )
    ]  # fmt: skip
    return [
        table(
            (
                "`add_worktree`",
                "median",
                "min",
                "/plain (medians)",
                "/plain (mins)",
                "new disk",
                "of which index",
                "of which new pack",
            ),
            rows,
        ),
        "",
        table(("new / old isolate", "medians", "mins"), versus),
    ]


# -- part 2: a SWE-style suite ---------------------------------------------------------------------

TASK_TEST = '''\
"""Task {n}: fails until {path} carries its fix."""
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / {path!r}


def test_fixed():
    assert {marker!r} in SOURCE.read_text(encoding="utf-8")


if __name__ == "__main__":
    test_fixed()
'''

SUITE_CONFTEST = """\
import subprocess

import pytest


@pytest.fixture(scope="session", autouse=True)
def _spread_inodes(tmp_path_factory):
    # bench/common.py spread_inodes(), for every side's checkouts alike.
    subprocess.run(["chattr", "+T", str(tmp_path_factory.getbasetemp())], capture_output=True)
"""

SUITE_TEST = '''\
"""Generated by bench/harness.py: one SWE-style task per test, checked out the way
$HARNESS_SIDE says."""
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = json.loads((Path(__file__).resolve().parent / "tasks.json").read_text())
SIDE = os.environ["HARNESS_SIDE"]


def git(cwd, *args, stdin=None):
    return subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=True
    ).stdout


def swe_bench_checkout(url, base, path):
    """SWE-bench's make_repo_script_list_py (swebench/harness/test_spec/python.py), step by
    step, without the environment setup."""
    subprocess.run(
        ["git", "clone", "-q", "-o", "origin", "--single-branch", url, str(path)],
        check=True, capture_output=True,
    )
    git(path, "reset", "-q", "--hard", base)
    git(path, "remote", "remove", "origin")
    target = git(path, "show", "-s", "--format=%ci", base).strip()
    for tag in git(path, "tag", "-l").split():
        tag_commit = git(path, "rev-list", "-n", "1", tag).strip()
        if git(path, "show", "-s", "--format=%ci", tag_commit).strip() > target:
            git(path, "tag", "-d", tag)
    git(path, "reflog", "expire", "--expire=now", "--all")
    git(path, "gc", "-q", *SUITE["gc"])
    stamp = int(git(path, "show", "-s", "--format=%ct", base))
    after = datetime.datetime.fromtimestamp(stamp + 1, datetime.timezone.utc).isoformat()
    assert not git(path, "log", "--oneline", "--all", f"--since={after}").strip()
    git(path, "commit", "-q", "--allow-empty", "-am", "SWE-bench")
    return base


def run_test(path, task):
    return subprocess.run([sys.executable, task["test_file"]], cwd=path, capture_output=True)


@pytest.fixture
def checkout(request, tmp_path):
    """(path, base) of a repository at the task's base, removed after the test either way:
    the plugin's teardown deletes its worktree, so the clone is deleted in the session too."""
    task = request.node.callspec.params["task"]
    if SIDE == "clone":
        path = tmp_path / "repo"
        try:
            yield path, swe_bench_checkout(SUITE["url"], task["base"], path)
        finally:
            shutil.rmtree(path, ignore_errors=True)
        return
    options = {"history": False} if SIDE == "history-free" else {}
    made = request.getfixturevalue("worktree")(SUITE["url"], task["base"], isolate=True, **options)
    yield made.path, made.commit


@pytest.mark.parametrize("task", SUITE["tasks"], ids=lambda task: task["id"])
def test_task(task, checkout):
    path, base = checkout
    git(path, "apply", "-", stdin=task["test_patch"])
    assert run_test(path, task).returncode != 0
    git(path, "apply", "-", stdin=task["fix_patch"])
    assert run_test(path, task).returncode == 0, run_test(path, task).stderr
    if SUITE["stage"] == "add":
        git(path, "add", "-A")  # SWE-agent's way to the patch; writes the index and trees
        diff = git(path, "diff", "--cached", "--no-color", base)
    else:
        git(path, "add", "-N", ".")  # the new test file in the diff, no object written
        diff = git(path, "diff", "--no-color", base)
    assert task["test_file"] in diff and task["marker"] in diff
'''


def git_dir_args(path: Path) -> list[str]:
    return ["--git-dir", str(path)] if (path / "objects").is_dir() else ["-C", str(path)]


def make_task(up: Upstream, n: int, base: str) -> dict[str, str]:
    """A task at ``base``: a test file that fails until one existing text file (of at least
    three lines) starts with a marker line, and the fix patch that adds that line."""
    gd = git_dir_args(up.path)
    files = git(*gd, "ls-tree", "-r", "--name-only", base).splitlines()
    for step in range(len(files)):
        path = files[(n * 7919 + step) % len(files)]  # a different file per task, deterministic
        try:
            head = git(*gd, "cat-file", "blob", f"{base}:{path}").splitlines(keepends=True)[:3]
        except (RuntimeError, UnicodeDecodeError):
            continue
        if len(head) == 3 and all(line.endswith("\n") for line in head):
            break
    else:
        raise SystemExit(f"no text file of 3 lines or more at {base}")
    marker = f"FIXED_TASK_{n}"
    test_file = f"tests/test_task_{n}.py"
    test_lines = TASK_TEST.format(n=n, path=path, marker=marker).splitlines(keepends=True)
    test_patch = (
        f"diff --git a/{test_file} b/{test_file}\nnew file mode 100644\n--- /dev/null\n"
        f"+++ b/{test_file}\n@@ -0,0 +1,{len(test_lines)} @@\n"
        + "".join(f"+{line}" for line in test_lines)
    )
    fix_patch = (
        f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1,3 +1,4 @@\n"
        f"+# {marker}\n" + "".join(f" {line}" for line in head)
    )
    return {
        "id": f"task{n}",
        "base": base,
        "test_file": test_file,
        "marker": marker,
        "test_patch": test_patch,
        "fix_patch": fix_patch,
    }


def write_suite(up: Upstream, directory: Path, tasks: int, options: argparse.Namespace) -> None:
    bases = up.spread(tasks)
    if len(set(bases)) < tasks:
        raise SystemExit(f"--tasks {tasks}: the repository has only {len(set(bases))} commits")
    directory.mkdir(parents=True)
    # Its own ini file: the project's pyproject.toml (-p pytester, warnings as errors) stays out.
    (directory / "pytest.ini").write_text("[pytest]\n")
    (directory / "conftest.py").write_text(SUITE_CONFTEST)
    (directory / "test_harness_suite.py").write_text(SUITE_TEST)
    suite = {
        "url": up.url,
        "gc": ["--prune=now", "--aggressive"] if options.swe_aggressive else ["--prune=now"],
        "stage": options.stage,
        "tasks": [make_task(up, n, base) for n, base in enumerate(bases)],
    }
    (directory / "tasks.json").write_text(json.dumps(suite, indent=1))


@dataclass(frozen=True)
class SuiteSide:
    key: str
    label: str
    side: str  # $HARNESS_SIDE: clone, isolate, history-free
    plugin: str  # new or old: whose pytest plugin is loaded
    cache: str  # "first" (fresh per session), "later" (kept) or "" (unused)


SUITE_SIDES = (
    SuiteSide("clone", "SWE-bench recipe (clone per task)", "clone", "new", ""),
    SuiteSide("new first", "plugin `isolate=True`", "isolate", "new", "first"),
    SuiteSide("new later", "plugin `isolate=True`", "isolate", "new", "later"),
    SuiteSide("free later", "plugin `isolate=True, history=False`", "history-free", "new", "later"),
    SuiteSide("old later", "OLD plugin `isolate=True`", "isolate", "old", "later"),
)  # fmt: skip


@dataclass
class Session:
    wall: float
    passed: bool
    pack_builds: int  # pack-objects started by the plugin (new: one per pack made)
    fetches: int  # fetch processes (old: one per isolated repository)
    git_processes: int
    output: str


def run_session(
    suite: Path, side: SuiteSide, cache: Path, work: Path, workers: int, plugins: Plugins
) -> Session:
    basetemp = work / "basetemp"
    trace = work / "trace.json"
    trace.unlink(missing_ok=True)
    snapshot = plugins.new if side.plugin == "new" else plugins.old
    env = dict(os.environ, GIT_TRACE2_EVENT=str(trace), **{SIDE_ENV: side.side})
    if snapshot is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(snapshot), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
        "-p", "no:benchmark", "-n", str(workers), f"--repo-cache-dir={cache}",
        f"--basetemp={basetemp}", str(suite),
    ]  # fmt: skip
    t0 = perf()
    result = subprocess.run(argv, cwd=suite, env=env, capture_output=True, text=True, check=False)
    wall = perf() - t0
    top = [p for p in read_trace(trace) if p.top_level]
    trace.unlink(missing_ok=True)
    rmtree(basetemp)
    return Session(
        wall=wall,
        passed=result.returncode == 0,
        pack_builds=sum(p.name == "pack-objects" for p in top),
        fetches=sum(p.name == "fetch" for p in top),
        git_processes=len(top),
        output=(result.stdout + result.stderr)[-3000:],
    )


def swe_suite(
    up: Upstream, plugins: Plugins, work: Path, reps: int, options: argparse.Namespace
) -> list[str]:
    """Part 2: every side's pytest session, interleaved."""
    suite, workers = work / "suite", options.workers
    write_suite(up, suite, options.tasks, options)
    runs: dict[str, list[Session]] = {s.key: [] for s in SUITE_SIDES}

    def session(side: SuiteSide) -> Callable[[int], None]:
        def run(i: int) -> None:
            cache = work / f"cache-{side.key.replace(' ', '-')}"
            if side.cache != "later":
                rmtree(cache)  # a first run (and the clone side leaves it unused)
            done = run_session(suite, side, cache, work, workers, plugins)
            log(f"  {side.key} (rep {i}): {done.wall:.1f} s, passed={done.passed}")
            if not done.passed:
                log(done.output)
            if i >= 0:
                runs[side.key].append(done)

        return run

    # Warm-up: the kept caches' clone (a later run finds the repository cached), untimed.
    for side in SUITE_SIDES:
        if side.cache == "later":
            session(side)(-1)
    log(f"part 2: {reps} repetitions of {len(SUITE_SIDES)} pytest sessions")
    interleave(reps, 0, [session(side) for side in SUITE_SIDES])
    gc = "gc --prune=now --aggressive" if options.swe_aggressive else "gc --prune=now"
    stage = {
        "add": "`git add -A` + `git diff --cached <base>`",
        "intent": "`git add -N .` + `git diff <base>`",
    }[options.stage]
    return [
        f"### 2. SWE-style suite: {options.tasks} tasks at distinct commits, `pytest -n {workers}`",
        "",
        f"Wall time of the whole session, medians and mins of {reps} sessions per side, "
        "interleaved (the kept caches were filled by one untimed session first). Per task: "
        "checkout, apply the test patch, run it (fails), apply the fix, run it (passes), "
        f"{stage}, delete the checkout (the plugin's teardown; `shutil.rmtree` of the clone). "
        f"SWE-bench recipe: its setup script, with `{gc}`. Counts per session (`a/b/c`), "
        "top-level git processes from GIT_TRACE2_EVENT: pack-objects = packs the new plugin "
        "made, fetches = the old plugin's (one per task) and clones into a fresh cache.",
        "",
        *suite_table(runs),
    ]


def suite_table(runs: dict[str, list[Session]]) -> list[str]:
    base = Samples([r.wall for r in runs["clone"]])
    rows = []
    for side in SUITE_SIDES:
        done = runs[side.key]
        walls = Samples([r.wall for r in done])
        cache = {"first": "fresh (first run)", "later": "kept (later runs)", "": "-"}[side.cache]
        rows.append(
            [
                side.label,
                cache,
                fmt_s(walls.median),
                fmt_s(walls.min),
                fmt_ratio(base.median, walls.median),
                fmt_ratio(base.min, walls.min),
                "/".join(str(r.pack_builds) for r in done),
                "/".join(str(r.fetches) for r in done),
                "/".join(str(r.git_processes) for r in done),
                "yes" if all(r.passed for r in done) else "**NO**",
            ]
        )
    return [
        table(
            (
                "checkout",
                "cache",
                "session median",
                "min",
                "clone/this (medians)",
                "clone/this (mins)",
                "pack-objects",
                "fetches",
                "git processes",
                "passed",
            ),
            rows,
        )
    ]


# -- the command -----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/harness.py", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default="synthetic", help="synthetic, small or a local path")
    # Defaults sized for about 10 minutes on a 2-CPU VM with little else running (a busy one
    # doubles it): part 2's 13 sessions of 16 checkouts of 6,000 files are most of it.
    parser.add_argument("--reps", type=int, default=6, help="repetitions of part 1 (default 6)")
    parser.add_argument(
        "--suite-reps",
        type=int,
        help="pytest sessions per side in part 2 (default: 2, at most --reps)",
    )
    parser.add_argument("--tasks", type=int, default=16, help="tasks in the suite (default 16)")
    parser.add_argument("--workers", type=int, default=4, help="pytest -n (default 4)")
    parser.add_argument("--parts", default="1,2", help="1 (per worktree), 2 (suite) or 1,2")
    parser.add_argument("--old-rev", default="f4beccb^", help="the OLD isolate (f4beccb^)")
    parser.add_argument("--new-rev", help="the new side as committed at REV (default: the tree)")
    parser.add_argument(
        "--swe-aggressive", action="store_true", help="SWE-bench's own `gc --aggressive`"
    )
    parser.add_argument(
        "--stage",
        choices=("intent", "add"),
        default="intent",
        help="the task's diff: `git add -N .` + `git diff <base>` (default), or SWE-agent's "
        "`git add -A` + `git diff --cached <base>`, which makes git freshen (utime) the "
        "repository's pack",
    )
    parser.add_argument("--no-spread", action="store_true", help="no `chattr +T` (see README)")
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/harness-<pid>/")
    parser.add_argument("--serve", metavar="CACHE", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def snapshot(rev: str) -> tuple[Path, str]:
    from run import snapshot_plugin  # the launcher's extractor: bench/.work/plugin/<sha>

    return snapshot_plugin(rev)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    if options.serve:
        serve(options.serve)
        return 0
    started = perf()
    work = WORK_DIR / f"harness-{os.getpid()}"
    rmtree(work)
    work.mkdir(parents=True)
    spread = not options.no_spread and spread_inodes(work)
    isolate_environment(work)
    try:
        up = prepare_upstream(options.repo)
        old, old_label = snapshot(options.old_rev)
        new, new_label = snapshot(options.new_rev) if options.new_rev else (None, "working tree")
        if new is None:
            new_label = f"working tree ({plugin_revision()})"
        plugins = Plugins(new, new_label, old, old_label)
        suite_reps = options.suite_reps or min(2, options.reps)
        parts = options.parts.split(",")
        print(harness_header(options, up, plugins, spread, suite_reps, argv) + "\n")
        if "1" in parts:
            print("\n".join(per_worktree(up, plugins, work, options.reps)) + "\n")
        if "2" in parts:
            suite = swe_suite(up, plugins, work, suite_reps, options)
            print("\n".join(suite) + "\n")
        print(f"_Total: {perf() - started:.0f} s._")
    finally:
        if not options.keep:
            rmtree(work)
    return 0


def harness_header(
    options: argparse.Namespace,
    up: Upstream,
    plugins: Plugins,
    spread: bool,
    suite_reps: int,
    argv: list[str],
) -> str:
    return "\n".join(
        [
            f"## Isolated worktrees: {up.label}, {datetime.datetime.now():%Y-%m-%d %H:%M}",
            "",
            f"- Command: `{' '.join(['python', 'bench/harness.py', *argv])}`",
            f"- New: {plugins.new_label}; old: {plugins.old_label}",
            f"- Repository: {up.files:,} files, {fmt_mib(up.tree_bytes)} checked out, "
            f"{len(up.mainline)} commits on HEAD, {fmt_mib(up.pack_bytes)} packed; served as "
            f"`{up.url}`",
            f"- {git('--version').strip()}; Python {platform.python_version()}; "
            f"{os.cpu_count()} CPUs; scratch on {filesystem(WORK_DIR)}"
            + (", `chattr +T`" if spread else ""),
            f"- Part 1: {options.reps} repetitions; part 2: {suite_reps} sessions per side, "
            f"{options.tasks} tasks, -n {options.workers}",
        ]
    )


def fmt_bytes(size: float) -> str:
    return f"{size / 1024:,.0f} KiB" if size < 1048576 else fmt_mib(size)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
