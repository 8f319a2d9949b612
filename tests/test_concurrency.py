"""Many real processes sharing one cache: one clone, one fetch per missing commit, one refresh
per session, and no failures or leftovers. Every child is a real Python process running a real
RepoStore (tests/helpers/store_worker.py); they are released together through a stdin barrier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.children import ChildGroup, child_env, pack_objects_hook
from upstream import Upstream, count_git_commands, git

from pytest_repoclones import RepoStore

pytestmark = pytest.mark.slow

PROCESSES = 8


def total(results: list[dict[str, Any]], counter: str) -> int:
    """Sum of one stats counter over every child and every repository."""
    return sum(stats[counter] for result in results for stats in result["stats"].values())


def assert_clean_cache(cache_dir: Path, git_dir: Path) -> None:
    """Only the bare repository is registered, no plugin branch survives, nothing in tmp/."""
    listing = git(f"--git-dir={git_dir}", "worktree", "list", "--porcelain")
    assert [line for line in listing.splitlines() if line.startswith("worktree ")] == [
        f"worktree {git_dir}"
    ], listing
    assert git(f"--git-dir={git_dir}", "for-each-ref", "refs/heads/repoclones/") == ""
    assert list((cache_dir / "tmp").iterdir()) == []


def test_simultaneous_first_use_clones_once(
    upstream: Upstream, cache_dir: Path, trace_file: Path, tmp_path: Path
) -> None:
    """8 processes released at once on an empty cache, with different spellings of one URL: one
    clones, seven wait on the repository lock and reuse its clone."""
    c1 = upstream.rev("v1.0^{commit}")
    spellings = [upstream.url, upstream.url + "/", upstream.url[: -len(".git")], str(upstream.path)]
    # A one-second pause inside the upload keeps the clone in progress long enough that every
    # other process provably asks for the repository before it is published.
    env = child_env(pack_objects_hook(tmp_path / "hook", delay=1.0))
    with ChildGroup(tmp_path / "logs") as group:
        children = group.start_together(
            "clone",
            [
                {
                    "cache": str(cache_dir),
                    "url": spellings[number % len(spellings)],
                    "commit": c1,
                    "file": "src/app.py",
                    "path": str(tmp_path / f"wt{number}"),
                }
                for number in range(PROCESSES)
            ],
            env,
        )
        results = [child.finish(timeout=90) for child in children]

    assert all(result["ok"] and result["gone"] for result in results), results
    assert total(results, "clones") == 1
    cloner = next(r for r in results if sum(s["clones"] for s in r["stats"].values()))
    # Everyone was already inside clone() before the one clone finished: they waited.
    assert max(result["started"] for result in results) < cloner["cloned"]
    assert count_git_commands(trace_file, "upload-pack") == 1

    git_dir = RepoStore(cache_dir).git_dir(upstream.url)
    assert [path.name for path in (cache_dir / "repos").iterdir()] == [git_dir.name]
    assert (git_dir / "repoclones.json").is_file()
    assert_clean_cache(cache_dir, git_dir)


def test_concurrent_worktrees_of_many_commits(
    upstream: Upstream, cache_dir: Path, trace_file: Path, tmp_path: Path
) -> None:
    """8 processes add and remove 15 worktrees each over 5 commits, from an empty cache; the
    commit reachable only from refs/pull/7/head is fetched once, by whichever asks first."""
    pr = upstream.rev("refs/pull/7/head")
    commits = {
        upstream.rev("v1.0^{commit}"): ["src/app.py", "VERSION = 1\n"],
        upstream.rev("v1.1"): ["src/app.py", "VERSION = 2\n"],
        upstream.rev("main"): ["CHANGES", "3\n"],
        upstream.rev("feature"): ["feature.txt", "wip\n"],
        pr: ["pr.txt", "pull request\n"],
    }
    with ChildGroup(tmp_path / "logs") as group:
        children = group.start_together(
            "worktrees",
            [
                {
                    "cache": str(cache_dir),
                    "url": upstream.url,
                    "commits": commits,
                    "rounds": 3,
                    "seed": number,
                    "root": str(tmp_path / f"child{number}"),
                }
                for number in range(PROCESSES)
            ],
        )
        results = [child.finish(timeout=120) for child in children]

    assert [error for result in results for error in result["errors"]] == []
    assert sum(result["count"] for result in results) == PROCESSES * 3 * len(commits)
    assert total(results, "clones") == 1
    assert total(results, "worktrees") == PROCESSES * 3 * len(commits)
    # One clone, plus one fetch of the pull-request commit: nothing else talked to upstream.
    assert count_git_commands(trace_file, "upload-pack") == 2

    git_dir = RepoStore(cache_dir).git_dir(upstream.url)
    assert git(f"--git-dir={git_dir}", "cat-file", "-t", pr) == "commit"
    assert_clean_cache(cache_dir, git_dir)
    for number in range(PROCESSES):
        assert list((tmp_path / f"child{number}").iterdir()) == []


@pytest.mark.parametrize("cache", ["warm", "empty"])
def test_shared_session_refreshes_branches_once(
    upstream: Upstream,
    store: RepoStore,
    cache_dir: Path,
    trace_file: Path,
    tmp_path: Path,
    cache: str,
) -> None:
    """8 processes of one session (xdist workers) resolve "main" after upstream moved: one
    fetch in total (none if the clone was made in this session), all see the new tip. Another
    session then refreshes again."""
    if cache == "warm":
        store.clone(upstream.url)  # by an earlier session
    new_tip = upstream.commit({"CHANGES": "4\n"}, "fourth")
    uploads = count_git_commands(trace_file, "upload-pack")

    args = {"cache": str(cache_dir), "url": upstream.url, "name": "main"}
    with ChildGroup(tmp_path / "logs") as group:
        children = group.start_together("resolve", [{**args, "session": "same"}] * PROCESSES)
        results = [child.finish(timeout=60) for child in children]
        assert [result["sha"] for result in results] == [new_tip] * PROCESSES
        if cache == "warm":
            assert (total(results, "clones"), total(results, "fetches")) == (0, 1)
        else:
            assert total(results, "clones") == 1  # and that clone counts as the refresh
        assert count_git_commands(trace_file, "upload-pack") == uploads + 1

        later = group.start("resolve", {**args, "session": "other", "barrier": False})
        later.wait_ready()
        assert later.finish(timeout=60)["sha"] == new_tip
    assert count_git_commands(trace_file, "upload-pack") == uploads + 2
