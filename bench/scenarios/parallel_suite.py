"""The pytest suite that scenario 4 (parallel) generates and runs: its conftest (lock timing),
the tests, an empty suite of as many tests, and the commits the tests check out."""

from __future__ import annotations

from pathlib import Path

from common import PARALLEL_COMMITS, Context, Upstream, git

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
    # Same as bench/common.py spread_inodes(): each test's tmp dir in a fresh block group.
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


def write_suite(ctx: Context, commits: list[str]) -> Path:
    """Write the suite to ``parallel-suite/`` in the scratch dir; return that directory."""
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
    return test_dir
