"""Shallow entries (issue 11, ``--repo-shallow``): a cold runner fetches just the commits asked
for, depth 1, by name; history comes when a test needs it, never silently missing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from inner import run
from upstream import Upstream, git, upload_packs

from pytest_repoclones import CommitNotFoundError, InvalidInputError, RepoStore


@pytest.fixture
def history(upstream: Upstream) -> Upstream:
    """The small project plus twenty more commits on main."""
    for n in range(20):
        upstream.commit({"src/app.py": f"VERSION = {n + 10}\n"}, f"change {n}")
    return upstream


def commits_held(git_dir: Path) -> int:
    return int(git(f"--git-dir={git_dir}", "rev-list", "--count", "--all"))


def test_a_cold_shallow_entry_fetches_one_commit_and_nothing_else(
    history: Upstream, tmp_path: Path, trace_file: Path
) -> None:
    store = RepoStore(tmp_path / "cache", shallow=True)
    old = history.rev("main~15")
    wt = store.add_worktree(history.url, old, tmp_path / "wt")
    git_dir = store.git_dir(history.url)
    assert (git_dir / "shallow").is_file()
    assert commits_held(git_dir) == 1
    assert upload_packs(trace_file, history.path) == 1
    assert git("rev-parse", "HEAD", cwd=wt) == old
    assert git("rev-list", "--count", "HEAD", cwd=wt) == "1"  # what a test sees of history
    assert git("status", "--porcelain", cwd=wt) == ""
    store.remove_worktree(wt)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("main", "main"),
        ("v1.0", "v1.0^{commit}"),  # annotated
        ("v1.1", "v1.1"),
        (None, "main"),  # the default branch
        ("refs/pull/7/head", "refs/pull/7/head"),
        ("refs/heads/feature", "feature"),
        ("refs/tags/v1.0", "v1.0^{commit}"),
    ],
)
def test_names_are_fetched_by_name_depth_one_once_per_session(
    name: str | None, expected: str, history: Upstream, tmp_path: Path, trace_file: Path
) -> None:
    store = RepoStore(tmp_path / "cache", shallow=True)
    wt = store.add_worktree(history.url, name, tmp_path / "wt")
    assert wt.commit == history.rev(expected)
    assert commits_held(store.git_dir(history.url)) == 1
    served = upload_packs(trace_file, history.path)
    again = store.add_worktree(history.url, name, tmp_path / "again")
    assert again.commit == wt.commit
    assert upload_packs(trace_file, history.path) == served, "fetched twice in one session"


def test_a_moved_branch_is_fetched_again_by_the_next_session(
    history: Upstream, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = RepoStore(cache, shallow=True).resolve(history.url, "main")
    moved = history.commit({"later.txt": "later\n"}, "after the first session")
    assert RepoStore(cache, shallow=True).resolve(history.url, "main") == moved != first
    # Offline, names and commits are what the cache last saw.
    offline = RepoStore(cache, offline=True)
    assert offline.resolve(history.url, "main") == moved
    assert offline.resolve(history.url, first) == first


def test_isolate_takes_the_whole_history_first(history: Upstream, tmp_path: Path) -> None:
    store = RepoStore(tmp_path / "cache", shallow=True)
    base = history.rev("main~5")
    iso = store.add_worktree(history.url, base, tmp_path / "iso", isolate=True)
    full = history.git("rev-list", "--count", base)
    assert git("rev-list", "--count", "--all", cwd=iso) == full
    assert git("fsck", "--no-progress", cwd=iso) == ""
    git_dir = store.git_dir(history.url)
    assert not (git_dir / "shallow").exists()


def test_a_history_free_worktree_needs_no_history(history: Upstream, tmp_path: Path) -> None:
    store = RepoStore(tmp_path / "cache", shallow=True)
    base = history.rev("main~5")
    wt = store.add_worktree(history.url, base, tmp_path / "wt", isolate=True, history=False)
    assert git("rev-list", "--count", "--all", cwd=wt) == "1"
    assert (store.git_dir(history.url) / "shallow").exists()
    assert commits_held(store.git_dir(history.url)) == 1


def test_an_abbreviated_name_takes_the_whole_history(history: Upstream, tmp_path: Path) -> None:
    store = RepoStore(tmp_path / "cache", shallow=True)
    store.resolve(history.url, history.rev("main"))
    old = history.rev("main~12")
    assert store.resolve(history.url, old[:10]) == old
    assert commits_held(store.git_dir(history.url)) > 20


def test_what_is_not_upstream_is_said_clearly(
    history: Upstream, tmp_path: Path, trace_file: Path
) -> None:
    store = RepoStore(tmp_path / "cache", shallow=True)
    with pytest.raises(CommitNotFoundError, match="No such branch or tag upstream"):
        store.resolve(history.url, "no-such-branch")
    before = upload_packs(trace_file, history.path)
    with pytest.raises(CommitNotFoundError):
        store.resolve(history.url, "0" * 40)
    assert upload_packs(trace_file, history.path) == before + 1, "no branch-and-tag fallback"


def test_concurrent_shallow_fetches_share_the_entry_lock(history: Upstream, tmp_path: Path) -> None:
    """git fails concurrent shallow fetches on shallow.lock: the entry's lock orders them."""
    cache = tmp_path / "cache"
    RepoStore(cache, shallow=True).clone(history.url)
    wanted = [history.rev(f"main~{n}") for n in range(6)]
    failures: list[BaseException] = []
    start = threading.Barrier(len(wanted))

    def one(sha: str) -> None:
        store = RepoStore(cache, shallow=True)
        start.wait()
        try:
            assert store.resolve(history.url, sha) == sha
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(sha,)) for sha in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert commits_held(RepoStore(cache).git_dir(history.url)) == len(wanted)


def test_shallow_and_a_clone_filter_exclude_each_other(tmp_path: Path, history: Upstream) -> None:
    with pytest.raises(InvalidInputError, match="both shallow and cloned with a filter"):
        RepoStore(tmp_path / "cache", shallow=True, clone_filter="blob:none")
    with pytest.raises(InvalidInputError, match="both shallow"):
        RepoStore(
            tmp_path / "cache",
            shallow_urls=[history.url],
            clone_filters={history.url: "blob:none"},
        )


def test_shallow_from_the_command_line_and_per_url_under_xdist(
    pytester: pytest.Pytester,
    make_upstream: Callable[..., Upstream],
    history: Upstream,
    tmp_path: Path,
) -> None:
    other = make_upstream("other")
    other.commit({"a.txt": "1\n"}, "one")
    other.commit({"a.txt": "2\n"}, "two")
    pytester.makeini(f"[pytest]\nrepo_shallow_urls =\n    {other.url}\n")
    pytester.makepyfile(
        f"""
        import subprocess, pytest

        def count(wt):
            return subprocess.run(
                ["git", "rev-list", "--count", "HEAD"], cwd=wt, capture_output=True, text=True
            ).stdout.strip()

        @pytest.mark.worktree({history.url!r}, ["v1.1", "main", {history.rev("main~3")!r}])
        def test_history(repo_worktree):
            assert count(repo_worktree) == "1"

        def test_other(worktree):
            assert count(worktree({other.url!r}, "main")) == "1"
        """
    )
    cache = tmp_path / "inner"
    run(pytester, cache, "-n", "2", "--repo-shallow").assert_outcomes(passed=4)
    assert (RepoStore(cache).git_dir(history.url) / "shallow").exists()
    # Per URL from the ini file alone: the other repository shallow, this one full.
    cache2 = tmp_path / "inner2"
    result = run(pytester, cache2, "-n", "2")
    result.assert_outcomes(passed=1, failed=3)
    assert (RepoStore(cache2).git_dir(other.url) / "shallow").exists()
    assert not (RepoStore(cache2).git_dir(history.url) / "shallow").exists()
