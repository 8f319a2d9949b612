"""Other tests' worktree entries appear and vanish in one step for git run inside a worktree.

git writes an entry of ``worktrees/`` file by file; anything that walks every worktree's HEAD
(`git log --all`, `rev-list --all`, `fsck`) in one worktree while another process adds or
removes one used to fail now and then ("bad object worktrees/X/HEAD", "failed to read
worktrees/X/commondir"). The store builds each entry aside and renames it in (and out).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers.children import ChildGroup
from upstream import Upstream

from pytest_repoclones import RepoStore
from pytest_repoclones._registry import HUSK_GRACE

pytestmark = pytest.mark.slow


def test_git_log_all_in_a_worktree_never_sees_a_half_made_entry(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    c1, c2 = upstream.rev("v1.0^{commit}"), upstream.rev("v1.1")
    commits = {c1: ["README.md", "# project\n"], c2: ["src/app.py", "VERSION = 2\n"]}
    store = RepoStore(cache_dir, timeout=60, lock_timeout=60)
    mine = store.add_worktree(upstream.url, "main", tmp_path / "mine")
    failures: list[str] = []
    calls = 0
    with ChildGroup(tmp_path / "logs") as group:
        churners = [
            group.start(
                "worktrees",
                {
                    "cache": str(cache_dir),
                    "url": upstream.url,
                    "commits": commits,
                    "rounds": 12,
                    "seed": n,
                    "root": str(tmp_path / f"churn{n}"),
                    "barrier": False,
                },
            )
            for n in range(2)
        ]
        for child in churners:
            child.wait_ready()
        deadline = time.monotonic() + 60
        while any(c.proc.poll() is None for c in churners) and time.monotonic() < deadline:
            for args in (["log", "--all", "--oneline"], ["rev-list", "--all", "--count"]):
                calls += 1
                run = subprocess.run(
                    ["git", *args], cwd=mine.path, capture_output=True, text=True, check=False
                )
                if run.returncode != 0:
                    failures.append(run.stderr.strip())
        results = [child.finish(timeout=60) for child in churners]
    assert all(not result["errors"] for result in results), results
    assert calls > 20, "the churn ended before git ran often enough to tell"
    # git itself races a loose ref being deleted (plain `update-ref -d` beside `log --all`:
    # "bad object refs/heads/x", about 1 call in 3,000 here): not an entry, not ours to fix.
    entries = [line for line in failures if not line.startswith("fatal: bad object refs/")]
    assert entries == [], f"{len(entries)} of {calls} calls failed: {entries[:3]}"
    assert len(failures) <= calls // 100, failures
    store.remove_worktree(mine)


def test_withdrawn_entries_are_swept_after_a_grace(
    upstream: Upstream, store: RepoStore, tmp_path: Path
) -> None:
    """Removal first unlinks the entry's gitdir (git stops listing it), and deletes the rest
    once no git can still be reading it: by the next removal after HUSK_GRACE seconds."""
    first = store.add_worktree(upstream.url, "main", tmp_path / "one")
    store.remove_worktree(first)
    assert first.admin_dir.is_dir()
    assert not (first.admin_dir / "gitdir").exists()
    listing = subprocess.run(
        ["git", f"--git-dir={first.git_dir}", "worktree", "list", "--porcelain"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(first.path) not in listing
    second = store.add_worktree(upstream.url, "v1.0", tmp_path / "two")
    store.remove_worktree(second)
    assert first.admin_dir.is_dir()  # still within its grace
    old = time.time() - HUSK_GRACE - 1
    os.utime(first.admin_dir, (old, old))
    third = store.add_worktree(upstream.url, "v1.1", tmp_path / "three")
    store.remove_worktree(third)
    assert not first.admin_dir.exists()
    assert second.admin_dir.is_dir()
