"""Everyday features of the plugin: offline runs, keeping failures, the ``worktree`` marker with
prefetching at collection, isolated worktrees, and the terminal summary.

Most tests run an inner pytest with ``pytester`` in a subprocess (the plugin loads from its entry
point, as for a user) and check its outcomes, its report and what it left in the cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.messages import message_of, without_paths
from inner import records, run
from upstream import Upstream, count_git_commands, git, upload_packs

from pytest_repoclones import RepoClonesError, RepoStore

PRELUDE = '''
import json
import os
import pathlib
import subprocess

import pytest


def git(*args, cwd):
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def record(wt, **extra):
    """Append what the worktree looked like to LOG, for the outer test to check."""
    entry = {"path": str(wt.path), "branch": wt.branch, "commit": wt.commit,
             "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), **extra}
    with open(LOG, "a") as handle:
        handle.write(json.dumps(entry) + "\\n")
    return wt
'''


def write_tests(pytester: pytest.Pytester, body: str, **constants: Any) -> Path:
    constants.setdefault("LOG", str(pytester.path / "records.jsonl"))
    header = "\n".join(f"{name} = {value!r}" for name, value in constants.items())
    return pytester.makepyfile(test_inner=f"{PRELUDE}\n{header}\n\n{textwrap.dedent(body)}")


def make_store(cache_dir: Path, **kwargs: Any) -> RepoStore:
    return RepoStore(cache_dir, timeout=60, lock_timeout=60, **kwargs)


def assert_store_empty(cache_dir: Path, url: str) -> None:
    store = make_store(cache_dir)
    assert (store.git_dir(url) / "repoclones.json").is_file()
    assert store.live_worktrees(url) == []
    assert store.test_branches(url) == []


def has_commit(git_dir: Path, sha: str) -> bool:
    return (
        subprocess.run(
            ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{sha}^{{commit}}"], check=False
        ).returncode
        == 0
    )


def missing_objects(git_dir: Path, commit: str) -> list[str]:
    """Objects of ``commit`` a partial clone lacks; nothing is fetched to find out."""
    listing = subprocess.run(
        ["git", f"--git-dir={git_dir}", "rev-list", "--objects", "--missing=print", commit],
        env={**os.environ, "GIT_ALLOW_PROTOCOL": "none"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line[1:] for line in listing.splitlines() if line.startswith("?")]


# -- offline -----------------------------------------------------------------------------------

OFFLINE_TESTS = """
@pytest.mark.parametrize("rev,expected", CASES, ids=[c[0] or "default" for c in CASES])
def test_cached(worktree, rev, expected):
    wt = worktree(URL, rev)
    assert wt.commit == expected
    assert git("rev-parse", "HEAD", cwd=wt) == expected
    assert git("status", "--porcelain", cwd=wt) == ""
"""


@pytest.mark.parametrize("how", ["option", "env", "ini"])
def test_offline_serves_cached_commits_and_names_without_the_network(
    pytester: pytest.Pytester,
    upstream: Upstream,
    cache_dir: Path,
    trace_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    main, pr = upstream.rev("main"), upstream.rev("refs/pull/7/head")
    c1, c2 = upstream.rev("v1.0^{commit}"), upstream.rev("v1.1")
    feature = upstream.rev("feature")
    warm = make_store(cache_dir)
    for rev in (pr, "refs/pull/7/head", "main"):
        warm.resolve(upstream.url, rev)
    # The remote moves on after the cache was warmed: offline, names mean what the cache saw.
    upstream.commit({"CHANGES": "4\n"}, "after warming")
    upstream.set_ref("refs/heads/feature", main)
    cases = [
        (main, main),
        (c1, c1),
        (c2[:8], c2),
        ("main", main),
        (None, main),
        ("v1.0", c1),
        ("refs/tags/v1.1", c2),
        ("feature", feature),
        (pr, pr),
        ("refs/pull/7/head", pr),
    ]
    write_tests(pytester, OFFLINE_TESTS, URL=upstream.url, CASES=cases)
    args: list[str] = []
    if how == "option":
        args.append("--repo-offline")
        source = "--repo-offline"
    elif how == "env":
        monkeypatch.setenv("PYTEST_REPO_OFFLINE", "1")
        source = "env PYTEST_REPO_OFFLINE"
    else:
        pytester.makeini("[pytest]\nrepo_offline = true\n")
        source = "ini repo_offline"
    before = count_git_commands(trace_file, "upload-pack")
    result = run(pytester, cache_dir, *args)
    result.assert_outcomes(passed=len(cases))
    assert count_git_commands(trace_file, "upload-pack") == before
    result.stdout.fnmatch_lines([f"repoclones: offline (from {source})*"])


def test_offline_works_with_the_remote_gone(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    c2 = upstream.rev("v1.1")
    make_store(cache_dir).resolve(upstream.url, c2)
    url = upstream.url
    upstream.path.rename(tmp_path / "gone.git")
    write_tests(pytester, OFFLINE_TESTS, URL=url, CASES=[(c2, c2), ("v1.1", c2)])
    run(pytester, cache_dir, "--repo-offline").assert_outcomes(passed=2)


def test_offline_env_zero_means_online_and_beats_ini(
    pytester: pytest.Pytester, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nrepo_offline = true\n")
    pytester.makepyfile("def test_nothing(): pass")
    monkeypatch.setenv("PYTEST_REPO_OFFLINE", "0")
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=1)
    assert not any(line.startswith("repoclones: offline") for line in result.stdout.lines)


def test_offline_misses_fail_and_say_how_to_warm_the_cache(
    pytester: pytest.Pytester,
    upstream: Upstream,
    make_upstream: Callable[..., Upstream],
    cache_dir: Path,
    trace_file: Path,
) -> None:
    make_store(cache_dir).resolve(upstream.url, "main")
    newer = upstream.commit({"late.txt": "late\n"}, "made after the cache was warmed")
    upstream.commit({"b.txt": "b\n"}, "new branch", branch="brand-new")
    other = make_upstream("never-cloned")
    other.commit({"x": "x\n"})
    write_tests(
        pytester,
        """
        def test_uncached_full_sha(worktree):
            worktree(URL, NEWER)

        def test_uncached_abbreviation(worktree):
            worktree(URL, NEWER[:10])

        def test_uncached_branch(worktree):
            worktree(URL, "brand-new")

        def test_uncached_repository(worktree):
            worktree(OTHER)

        def test_uncached_pull_request_ref(worktree):
            worktree(URL, "refs/pull/7/head")
        """,
        URL=upstream.url,
        NEWER=newer,
        OTHER=other.url,
    )
    before = count_git_commands(trace_file, "upload-pack")
    result = run(pytester, cache_dir, "--repo-offline")
    result.assert_outcomes(failed=5)
    assert count_git_commands(trace_file, "upload-pack") == before
    output = result.stdout.str()
    for name in ("full_sha", "abbreviation", "branch", "repository", "pull_request_ref"):
        # Each failure's message, from its E lines.
        section = output.split(f"test_uncached_{name} _")[1].split("\n___")[0]
        errors = "\n".join(line for line in section.splitlines() if line.startswith("E "))
        # The inner run's paths are named after this test: the words must be the message's.
        errors = without_paths(errors)
        assert "offline" in errors, (name, errors)
        assert "prefetch" in errors, (name, errors)
    assert not make_store(cache_dir).git_dir(other.url).exists()


def test_offline_never_lazily_fetches_blobs_of_a_partial_clone(
    upstream: Upstream, cache_dir: Path, tmp_path: Path, trace_file: Path
) -> None:
    c1, c2 = upstream.rev("v1.0^{commit}"), upstream.rev("v1.1")
    make_store(cache_dir, clone_filter="blob:none").add_worktree(upstream.url, c1, tmp_path / "a")
    assert missing_objects(make_store(cache_dir).git_dir(upstream.url), c2) != []
    before = upload_packs(trace_file, upstream.path)
    offline = make_store(cache_dir, offline=True)
    with pytest.raises(RepoClonesError) as info:
        offline.add_worktree(upstream.url, c2, tmp_path / "b")  # run.sh: a blob never fetched
    assert upload_packs(trace_file, upstream.path) == before
    # The message itself says why (this test's paths spell "offline" too).
    assert "offline" in message_of(info.value)
    assert not (tmp_path / "b").exists()


# -- keeping worktrees -------------------------------------------------------------------------

KEEP_TESTS = """
def test_passes(worktree):
    record(worktree(URL, "v1.0"), test="passes")


def test_fails(worktree):
    record(worktree(URL, "v1.1"), test="fails")
    record(worktree(URL, "main"), test="fails")
    assert False, "on purpose"


def test_no_worktree_fails():
    assert False
"""


def by_test(pytester: pytest.Pytester) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in records(pytester):
        grouped.setdefault(row["test"], []).append(row)
    return grouped


def test_keep_failed_keeps_only_the_failing_tests_worktrees(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(pytester, KEEP_TESTS, URL=upstream.url)
    result = run(pytester, cache_dir, "--repo-keep=failed")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["repoclones: keep=failed*"])
    rows = by_test(pytester)
    store = make_store(cache_dir)
    kept = rows["fails"]
    for row in kept:
        assert Path(row["path"]).is_dir()
        assert git("rev-parse", "HEAD", cwd=Path(row["path"])) == row["commit"]
    assert sorted(store.test_branches(upstream.url)) == sorted(row["branch"] for row in kept)
    assert sorted(store.live_worktrees(upstream.url)) == sorted(Path(r["path"]) for r in kept)
    assert not Path(rows["passes"][0]["path"]).exists()
    # One section, for the failing test with worktrees, naming each path, branch and commit.
    output = result.stdout.str()
    assert output.count("repoclones: kept worktrees") == 1
    section = output.split("repoclones: kept worktrees")[1].split("\n___")[0]
    for row in kept:
        assert f"{row['path']}  (branch {row['branch']}, commit {row['commit']})" in section
    assert rows["passes"][0]["path"] not in output


KEEP_FIXTURE_ERRORS = """
@pytest.fixture
def breaks_in_setup(worktree):
    record(worktree(URL, "v1.0"), test="setup")
    raise RuntimeError("setup broke")


@pytest.fixture
def breaks_in_teardown(worktree):
    record(worktree(URL, "v1.1"), test="teardown")
    yield
    raise RuntimeError("teardown broke")


@pytest.fixture
def clean(worktree):
    record(worktree(URL, "main"), test="clean")


def test_setup_error(breaks_in_setup):
    pass


def test_teardown_error(breaks_in_teardown):
    pass


def test_clean(clean):
    pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
def test_keep_failed_keeps_and_shows_worktrees_of_fixture_errors(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, workers: list[str]
) -> None:
    """A test that errors in setup or in teardown failed too: its worktrees are kept and the
    error's report says where they are; a clean test's worktree is removed."""
    write_tests(pytester, KEEP_FIXTURE_ERRORS, URL=upstream.url)
    result = run(pytester, cache_dir, "--repo-keep=failed", *workers)
    result.assert_outcomes(passed=2, errors=2)
    rows = {row["test"]: row for row in records(pytester)}
    output = result.stdout.str()
    assert output.count("repoclones: kept worktrees") == 2
    for name in ("setup", "teardown"):
        row = rows[name]
        assert Path(row["path"]).is_dir(), name
        shown = f"{row['path']}  (branch {row['branch']}, commit {row['commit']})"
        report = output.split(f"ERROR at {name} of test_{name}_error")[1].split("\n___")[0]
        assert shown in report, (name, report)
    assert not Path(rows["clean"]["path"]).exists()
    store = make_store(cache_dir)
    assert sorted(store.test_branches(upstream.url)) == sorted(
        rows[name]["branch"] for name in ("setup", "teardown")
    )


def test_keep_all_keeps_every_worktree(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(pytester, KEEP_TESTS, URL=upstream.url)
    pytester.makeini("[pytest]\nrepo_keep = all\n")
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=1, failed=2)
    rows = records(pytester)
    assert len(rows) == 3
    assert all(Path(row["path"]).is_dir() for row in rows)
    assert len(make_store(cache_dir).test_branches(upstream.url)) == 3
    result.stdout.fnmatch_lines(["repoclones: keep=all*"])


def test_keep_defaults_to_none(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(pytester, KEEP_TESTS, URL=upstream.url)
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=1, failed=2)
    assert not any(Path(row["path"]).exists() for row in records(pytester))
    assert "kept worktrees" not in result.stdout.str()
    assert "keep=" not in result.stdout.str()
    assert_store_empty(cache_dir, upstream.url)


def test_invalid_keep_value_is_a_usage_error(pytester: pytest.Pytester, cache_dir: Path) -> None:
    pytester.makeini("[pytest]\nrepo_keep = sometimes\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, cache_dir)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "repo_keep" in result.stderr.str()


def test_later_sessions_prune_kept_worktrees_only_once_their_directory_is_gone(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(pytester, KEEP_TESTS, URL=upstream.url)
    run(pytester, cache_dir, "--repo-keep=failed").assert_outcomes(passed=1, failed=2)
    kept = by_test(pytester)["fails"]
    branches = sorted(row["branch"] for row in kept)
    store = make_store(cache_dir)
    assert sorted(store.test_branches(upstream.url)) == branches

    # A later session using the same repository (its process is dead, the directories exist).
    pytester.makepyfile(
        test_inner=f"""
        def test_later(worktree):
            worktree({upstream.url!r}, "v1.0")
        """
    )
    run(pytester, cache_dir).assert_outcomes(passed=1)
    assert sorted(store.test_branches(upstream.url)) == branches
    assert all(Path(row["path"]).is_dir() for row in kept)

    # Once the directories are gone (pytest rotated them away), the next session prunes.
    for row in kept:
        shutil.rmtree(row["path"])
    run(pytester, cache_dir).assert_outcomes(passed=1)
    assert_store_empty(cache_dir, upstream.url)


# -- the worktree marker -----------------------------------------------------------------------


def test_marker_gives_repo_worktree_at_the_declared_commit(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        @pytest.mark.worktree(URL, "v1.0")
        def test_v10(repo_worktree, worktree):
            assert repo_worktree.commit == C1
            assert git("rev-parse", "HEAD", cwd=repo_worktree) == C1
            assert (repo_worktree / "src" / "app.py").read_text() == "VERSION = 1\\n"
            assert worktree.made == [repo_worktree]  # made through the ordinary factory
            record(repo_worktree)

        @pytest.mark.worktree(URL)
        def test_default_branch(repo_worktree):
            assert repo_worktree.commit == MAIN

        @pytest.mark.worktree(url=URL, commit="feature")
        def test_keywords(repo_worktree):
            assert repo_worktree.commit == FEATURE
        """,
        URL=upstream.url,
        C1=upstream.rev("v1.0^{commit}"),
        MAIN=upstream.rev("main"),
        FEATURE=upstream.rev("feature"),
    )
    run(pytester, cache_dir).assert_outcomes(passed=3)
    assert not Path(records(pytester)[0]["path"]).exists()
    assert_store_empty(cache_dir, upstream.url)


def test_marker_with_a_list_of_commits_parametrizes(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    expected = {
        "v1.0": upstream.rev("v1.0^{commit}"),
        "v1.1": upstream.rev("v1.1"),
        "main": upstream.rev("main"),
        "default": upstream.rev("main"),
    }
    write_tests(
        pytester,
        """
        @pytest.mark.worktree(URL, ["v1.0", "v1.1", "main"])
        def test_each(repo_worktree, request):
            record(repo_worktree, id=request.node.callspec.id)

        @pytest.mark.worktree(URL, commit=("v1.1", None))
        def test_tuple(repo_worktree, request):
            record(repo_worktree, id=request.node.callspec.id)

        @pytest.mark.worktree(URL, ["v1.0", "main"])
        @pytest.mark.parametrize("n", [1, 2])
        def test_combined(repo_worktree, n, request):
            record(repo_worktree, id=request.node.callspec.id)
        """,
        URL=upstream.url,
    )
    result = run(pytester, cache_dir, "-v")
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(
        [
            "*test_inner.py::test_each[[]v1.0[]] PASSED*",
            "*test_inner.py::test_each[[]v1.1[]] PASSED*",
            "*test_inner.py::test_each[[]main[]] PASSED*",
            "*test_inner.py::test_tuple[[]v1.1[]] PASSED*",
            "*test_inner.py::test_tuple[[]default[]] PASSED*",
        ]
    )
    rows = records(pytester)
    assert len(rows) == 9
    for row in rows:
        commit_id = next(part for part in row["id"].split("-") if part in expected)
        assert row["commit"] == expected[commit_id], row


def test_class_and_module_markers(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        pytestmark = pytest.mark.worktree(URL, "v1.0")

        def test_module_level(repo_worktree):
            assert repo_worktree.commit == C1

        @pytest.mark.worktree(URL, "v1.1")
        class TestClass:
            def test_class_level(self, repo_worktree):
                assert repo_worktree.commit == C2

            @pytest.mark.worktree(URL, "main")
            def test_closest_marker_wins(self, repo_worktree):
                assert repo_worktree.commit == MAIN

        @pytest.mark.worktree(URL, ["v1.0", "main"])
        class TestParametrizedClass:
            def test_a(self, repo_worktree):
                assert repo_worktree.commit in (C1, MAIN)

            def test_b(self, repo_worktree):
                assert repo_worktree.commit in (C1, MAIN)
        """,
        URL=upstream.url,
        C1=upstream.rev("v1.0^{commit}"),
        C2=upstream.rev("v1.1"),
        MAIN=upstream.rev("main"),
    )
    run(pytester, cache_dir).assert_outcomes(passed=7)


def test_repo_worktree_without_a_marker_fails_clearly(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        def test_forgot_the_marker(repo_worktree):
            pass

        @pytest.mark.worktree(URL, "v1.0")
        def test_fine(repo_worktree):
            pass
        """,
        URL=upstream.url,
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*repo_worktree needs @pytest.mark.worktree(url, commit) on the test*"]
    )
    # The message, not the plugin's internals.
    assert "markers.py" not in result.stdout.str()


def test_marker_without_url_is_reported_when_the_test_runs(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        @pytest.mark.worktree()
        def test_no_url(repo_worktree):
            pass

        @pytest.mark.worktree(URL, "v1.0", "extra")
        def test_extra_positional(repo_worktree):
            pass

        @pytest.mark.worktree(URL, "v1.0")
        def test_fine(repo_worktree):
            pass
        """,
        URL=upstream.url,
    )
    result = run(pytester, cache_dir)
    result.stdout.fnmatch_lines(["*@pytest.mark.worktree takes (url, commit=None, *"])
    result.assert_outcomes(passed=1, errors=2)


def test_malformed_marker_is_reported_clearly(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        @pytest.mark.worktree()
        def test_no_url(repo_worktree):
            pass
        """,
    )
    result = run(pytester, cache_dir)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.worktree takes (url, commit=None, *, sparse=None, isolate=False, "
            "history=True, submodules=None)*"
        ]
    )


def test_marker_rejects_unknown_keyword_arguments(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        @pytest.mark.worktree(URL, "v1.0", isolated=True)
        def test_typo(repo_worktree):
            pass
        """,
        URL=upstream.url,
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*isolated*"])


def test_marker_passes_sparse_and_isolate_through(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        def files(root):
            return sorted(
                p.relative_to(root).as_posix() for p in pathlib.Path(root).rglob("*")
                if p.is_file() and ".git" not in p.relative_to(root).parts
            )

        @pytest.mark.worktree(URL, "v1.1", sparse=["src/app.py"])
        def test_sparse(repo_worktree):
            assert files(repo_worktree) == ["src/app.py"]
            assert git("status", "--porcelain", cwd=repo_worktree) == ""

        @pytest.mark.worktree(URL, ["v1.0", "v1.1"], isolate=True)
        def test_isolated(repo_worktree):
            assert git("remote", cwd=repo_worktree) == ""
            assert git("tag", cwd=repo_worktree) == ""
            assert MAIN not in git("log", "--all", "--format=%H", cwd=repo_worktree)
            assert (pathlib.Path(repo_worktree) / ".git").is_dir()
            record(repo_worktree)

        @pytest.mark.worktree(URL, "v1.1", sparse=["src/"], isolate=True)
        def test_both(repo_worktree):
            assert files(repo_worktree) == ["README.md", "run.sh", "src/app.py"]
            assert git("remote", cwd=repo_worktree) == ""
        """,
        URL=upstream.url,
        MAIN=upstream.rev("main"),
    )
    run(pytester, cache_dir).assert_outcomes(passed=4)
    rows = records(pytester)
    assert len(rows) == 2
    assert not any(Path(row["path"]).exists() for row in rows)
    assert_store_empty(cache_dir, upstream.url)


# -- prefetch at collection ------------------------------------------------------------------

PREFETCH_TESTS = """
@pytest.mark.worktree(URL, [C1, "v1.1", "main", PR7, PR8])
def test_declared(repo_worktree):
    assert git("rev-parse", "HEAD", cwd=repo_worktree) == repo_worktree.commit


@pytest.mark.worktree(URL, PR7)
@pytest.mark.parametrize("n", range(4))
def test_pull_request(repo_worktree, n):
    assert (repo_worktree / "pr.txt").read_text() == "pull request\\n"


@pytest.mark.worktree(URL, "no-such-branch")
def test_bad_declaration_fails_at_run_time_not_collection(repo_worktree):
    pass


def test_not_declared():
    pass
"""


@pytest.fixture
def prefetch_project(upstream: Upstream) -> dict[str, str]:
    """The upstream plus a second commit reachable only from a pull-request ref."""
    pr8 = upstream.commit(
        {"pr8.txt": "8\n"}, "pr 8", parent=upstream.rev("main"), ref="refs/pull/8/head"
    )
    return {
        "URL": upstream.url,
        "C1": upstream.rev("v1.0^{commit}"),
        "PR7": upstream.rev("refs/pull/7/head"),
        "PR8": pr8,
    }


def test_declared_commits_are_fetched_during_collection(
    pytester: pytest.Pytester,
    upstream: Upstream,
    cache_dir: Path,
    trace_file: Path,
    prefetch_project: dict[str, str],
) -> None:
    write_tests(pytester, PREFETCH_TESTS, **prefetch_project)
    result = run(pytester, cache_dir, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    git_dir = make_store(cache_dir).git_dir(upstream.url)
    assert (git_dir / "repoclones.json").is_file(), "cloned during collection"
    for sha in (prefetch_project["PR7"], prefetch_project["PR8"]):
        assert has_commit(git_dir, sha), "fetched during collection"
    # One clone plus one fetch per commit the clone did not bring.
    assert upload_packs(trace_file, upstream.path) == 3
    assert make_store(cache_dir).live_worktrees(upstream.url) == []


def test_prefetch_under_xdist_fetches_each_missing_commit_once(
    pytester: pytest.Pytester,
    upstream: Upstream,
    cache_dir: Path,
    trace_file: Path,
    prefetch_project: dict[str, str],
) -> None:
    write_tests(pytester, PREFETCH_TESTS, **prefetch_project)
    result = run(pytester, cache_dir, "-n", "2")
    result.assert_outcomes(passed=10, errors=1)
    result.stdout.fnmatch_lines(["*CommitNotFoundError*no-such-branch*"])
    assert upload_packs(trace_file, upstream.path) == 1 + 2
    assert_store_empty(cache_dir, upstream.url)


WORKER_VIEW_TESTS = """
@pytest.fixture(scope="session", autouse=True)
def worker_counters(repo_store):
    # What this process's store had to do itself, written when its session ends.
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    rows = {key: stats.as_dict() for key, stats in repo_store.stats.items()}
    pathlib.Path(COUNTERS, f"{worker}.json").write_text(json.dumps(rows))


@pytest.fixture(autouse=True)
def everything_declared_is_cached(repo_store):
    # Before this worker's first test: every declared commit is already in the cache.
    for url, commits in DECLARED.items():
        git_dir = repo_store.git_dir(url)
        for sha in commits:
            git("cat-file", "-e", sha + "^{commit}", cwd=git_dir)


@pytest.mark.worktree(URL_A, [A1, A_PR, "main"])
@pytest.mark.parametrize("n", range(3))
def test_a(repo_worktree, n):
    assert git("rev-parse", "HEAD", cwd=repo_worktree) == repo_worktree.commit


@pytest.mark.worktree(URL_B, [B1, B_PR])
@pytest.mark.parametrize("n", range(3))
def test_b(repo_worktree, n):
    assert git("rev-parse", "HEAD", cwd=repo_worktree) == repo_worktree.commit
"""


@pytest.fixture
def two_projects(make_upstream: Callable[..., Upstream]) -> dict[str, Any]:
    """Two upstreams, each with a release and a commit reachable only from a pull request."""
    out: dict[str, Any] = {}
    for name in ("A", "B"):
        up = make_upstream(f"project-{name.lower()}")
        first = up.commit({"README": f"{name}\n"}, "initial")
        up.commit({"README": f"{name} 2\n"}, "second")
        pr = up.commit({"pr": "1\n"}, "pr", parent=first, ref="refs/pull/1/head")
        out[name] = up
        out[f"URL_{name}"] = up.url
        out[f"{name}1"] = first
        out[f"{name}_PR"] = pr
    return out


def write_one_test_per_project(pytester: pytest.Pytester, p: dict[str, Any]) -> None:
    """test_a declares the first commit of project A, test_b that of project B."""
    write_tests(
        pytester,
        """
        @pytest.mark.worktree(URL_A, A1)
        def test_a(repo_worktree):
            pass

        @pytest.mark.worktree(URL_B, B1)
        def test_b(repo_worktree):
            pass
        """,
        **{name: p[name] for name in ("URL_A", "URL_B", "A1", "B1")},
    )


def test_xdist_controller_prefetches_before_workers_run_a_test(
    pytester: pytest.Pytester, cache_dir: Path, trace_file: Path, two_projects: dict[str, Any]
) -> None:
    """Workers find every declared commit cached and never clone or fetch themselves."""
    counters = pytester.mkdir("counters")
    p = two_projects
    declared = {
        p["URL_A"]: [p["A1"], p["A_PR"], p["A"].rev("main")],
        p["URL_B"]: [p["B1"], p["B_PR"]],
    }
    constants = {k: v for k, v in p.items() if isinstance(v, str)}
    write_tests(pytester, WORKER_VIEW_TESTS, COUNTERS=str(counters), DECLARED=declared, **constants)
    result = run(pytester, cache_dir, "-n", "2", "-v")
    result.assert_outcomes(passed=15)
    workers = {path.stem: json.loads(path.read_text()) for path in counters.glob("*.json")}
    assert set(workers) == {"gw0", "gw1"}, workers
    for worker, rows in workers.items():
        assert rows, f"{worker} used no repository"
        for row in rows.values():
            assert (row["clones"], row["fetches"]) == (0, 0), (worker, row)
            assert row["worktrees"] > 0
    # Each repository cloned once and its pull-request commit fetched once, by the controller.
    assert upload_packs(trace_file, p["A"].path) == 2
    assert upload_packs(trace_file, p["B"].path) == 2
    result.stdout.fnmatch_lines(["*15 worktrees from 2 repositories: 2 clones, 2 fetches*"])
    # (Declarations cross over xdist's channel: tests/test_remote_workers.py checks that no
    # file is written for it.)


def rendezvous_hook(directory: Path) -> None:
    """A global ``uploadpack.packObjectsHook`` that proves two uploads overlap in time.

    Each upload of a repository marks itself started, then waits (at most 30 s) for the
    other repository's upload to start too, and records whether it did. Serial prefetching
    can never make both meet.
    """
    directory.mkdir()
    hook = directory / "hook.sh"
    hook.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            me=$(basename "$PWD")
            touch "{directory}/started-$me"
            i=0
            while [ $i -lt 300 ]; do
                others=$(ls "{directory}" | grep '^started-' | grep -cv "started-$me$")
                if [ "$others" -gt 0 ]; then touch "{directory}/met-$me"; break; fi
                sleep 0.1; i=$((i + 1))
            done
            exec "$@"
            """
        )
    )
    hook.chmod(0o755)
    with open(os.environ["GIT_CONFIG_GLOBAL"], "a") as config:
        config.write(f"[uploadpack]\n\tpackObjectsHook = {hook}\n")


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
def test_prefetch_clones_several_repositories_at_once(
    pytester: pytest.Pytester,
    cache_dir: Path,
    tmp_path: Path,
    two_projects: dict[str, Any],
    workers: list[str],
) -> None:
    meeting = tmp_path / "meeting"
    rendezvous_hook(meeting)
    p = two_projects
    write_one_test_per_project(pytester, p)
    run(pytester, cache_dir, *workers).assert_outcomes(passed=2)
    names = {p["A"].path.name, p["B"].path.name}
    assert {f.name for f in meeting.glob("started-*")} == {f"started-{n}" for n in names}
    assert {f.name for f in meeting.glob("met-*")} == {f"met-{n}" for n in names}, (
        "the two clones did not overlap"
    )


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
def test_deselected_tests_are_not_prefetched(
    pytester: pytest.Pytester,
    cache_dir: Path,
    trace_file: Path,
    two_projects: dict[str, Any],
    workers: list[str],
) -> None:
    p = two_projects
    write_one_test_per_project(pytester, p)
    run(pytester, cache_dir, "-k", "test_a", *workers).assert_outcomes(passed=1)
    assert upload_packs(trace_file, p["A"].path) == 1
    assert upload_packs(trace_file, p["B"].path) == 0


def test_no_marker_no_prefetch(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, trace_file: Path
) -> None:
    pytester.makepyfile("def test_plain(): pass")
    run(pytester, cache_dir, "--collect-only").assert_outcomes()
    assert upload_packs(trace_file, upstream.path) == 0
    assert not (cache_dir / "repos").exists() or not any((cache_dir / "repos").iterdir())


# -- isolated worktrees ------------------------------------------------------------------------


def reachable_objects(up: Upstream, commit: str) -> set[str]:
    return {line.split()[0] for line in up.git("rev-list", "--objects", commit).splitlines()}


def all_objects(git_dir: Path) -> set[str]:
    listing = git(
        f"--git-dir={git_dir}", "cat-file", "--batch-all-objects", "--batch-check=%(objectname)"
    )
    return set(listing.splitlines())


@pytest.mark.parametrize("rev", ["v1.1", "pr-by-sha", "v1.0"])
def test_isolated_worktree_holds_only_the_commit_and_its_ancestors(
    store: RepoStore, upstream: Upstream, tmp_path: Path, trace_file: Path, rev: str
) -> None:
    url = upstream.url
    pr = upstream.rev("refs/pull/7/head")
    wanted = pr if rev == "pr-by-sha" else rev
    commit = upstream.rev(f"{wanted}^{{commit}}")
    # Another test's worktree of a later commit is alive, with a commit of its own.
    other = store.add_worktree(url, "main", tmp_path / "other")
    (other / "secret.txt").write_text("from the future\n")
    git("add", "secret.txt", cwd=other)
    git("commit", "--quiet", "-m", "another test's commit", cwd=other)
    future = git("rev-parse", "HEAD", cwd=other)
    git("tag", "later-tag", future, cwd=other)
    store.resolve(url, pr)  # the cache holds the pull-request commit too
    store.resolve(url, "v1.0")  # and every tag and branch

    before = upload_packs(trace_file, upstream.path)
    iso = store.add_worktree(url, wanted, tmp_path / "iso", isolate=True)
    assert upload_packs(trace_file, upstream.path) == before, "built from the cache"

    assert iso.commit == commit
    assert git("rev-parse", "HEAD", cwd=iso) == commit
    assert git("status", "--porcelain", "--ignored", cwd=iso) == ""
    assert git("symbolic-ref", "HEAD", cwd=iso) == f"refs/heads/{iso.branch}"
    # A repository of its own: not a worktree of the cache, no alternates, not shallow.
    git_dir = iso.path / ".git"
    assert git_dir.is_dir()
    assert Path(git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=iso)) == git_dir
    assert not (git_dir / "objects" / "info" / "alternates").exists()
    assert git("rev-parse", "--is-shallow-repository", cwd=iso) == "false"
    assert len(git("worktree", "list", "--porcelain", cwd=iso).split("\n\n")) == 1

    expected = reachable_objects(upstream, commit)
    ancestors = upstream.git("rev-list", commit).splitlines()
    # Every git command that could show more shows only the commit and its ancestors.
    assert git("log", "--all", "--format=%H", cwd=iso).splitlines() == ancestors
    assert git("log", "--all", "--reflog", "--format=%H", cwd=iso).splitlines() == ancestors
    assert git("for-each-ref", "--format=%(refname)", cwd=iso) == f"refs/heads/{iso.branch}"
    assert git("branch", "-a", "--format=%(refname)", cwd=iso) == f"refs/heads/{iso.branch}"
    assert git("tag", cwd=iso) == ""
    assert git("remote", cwd=iso) == ""
    assert git("reflog", cwd=iso) == ""
    assert git("reflog", "show", "--all", cwd=iso) == ""
    assert git("stash", "list", cwd=iso) == ""
    assert git("fsck", "--unreachable", "--no-reflogs", "--no-progress", cwd=iso) == ""
    assert git("fsck", "--dangling", "--no-progress", cwd=iso) == ""
    git("fsck", "--lost-found", "--no-progress", cwd=iso)
    assert not (git_dir / "lost-found").exists()
    assert run_status(iso.path, "describe", "--tags", "--always") == (0, commit[:7])
    assert all_objects(git_dir) == expected
    for later in {upstream.rev("main"), upstream.rev("feature"), pr, future} - set(ancestors):
        assert run_status(iso.path, "cat-file", "-e", later)[0] != 0, later
    # No later object name anywhere in the repository's files (refs, logs, config, HEADs...).
    forbidden = {
        upstream.rev("main"),
        upstream.rev("feature"),
        pr,
        future,
        upstream.rev("refs/tags/v1.0"),
    } - set(ancestors)
    for path in git_dir.rglob("*"):
        if path.is_file() and "objects" not in path.relative_to(git_dir).parts:
            text = path.read_bytes().decode(errors="replace")
            assert not any(sha in text for sha in forbidden), path
            assert upstream.url not in text, path
            assert str(store.cache_dir) not in text, path
    assert "remote." not in git("config", "--list", "--local", cwd=iso)

    # Nothing of it in the cache, and the other test's worktree is untouched.
    assert store.live_worktrees(url) == [other.path]
    assert git("rev-parse", "HEAD", cwd=other) == future
    store.remove_worktree(iso)
    assert not iso.path.exists()
    store.remove_worktree(other)
    assert store.live_worktrees(url) == []
    assert store.test_branches(url) == []


def run_status(cwd: Path, *args: str) -> tuple[int, str]:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout.strip()


def test_isolated_worktree_of_an_uncached_repository_clones_once(
    store: RepoStore, upstream: Upstream, tmp_path: Path, trace_file: Path
) -> None:
    first = store.add_worktree(upstream.url, "v1.1", tmp_path / "a", isolate=True)
    assert upload_packs(trace_file, upstream.path) == 1  # the clone into the cache
    second = store.add_worktree(upstream.url, "v1.0", tmp_path / "b", isolate=True)
    assert upload_packs(trace_file, upstream.path) == 1
    assert git("log", "--all", "--format=%H", cwd=second) == upstream.rev("v1.0^{commit}")
    for wt in (first, second):
        store.remove_worktree(wt)
        assert not wt.path.exists()


def test_isolated_worktree_is_removed_at_teardown(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, trace_file: Path
) -> None:
    make_store(cache_dir).resolve(upstream.url, "v1.1")
    write_tests(
        pytester,
        """
        @pytest.mark.parametrize("n", range(3))
        def test_isolated(worktree, n):
            wt = record(worktree(URL, ANCESTORS[0], isolate=True))
            assert git("log", "--all", "--format=%H", cwd=wt).splitlines() == ANCESTORS
            (wt / "scratch.txt").write_text("dirty")
            git("commit", "-q", "--allow-empty", "-m", "a test's own commit", cwd=wt)
        """,
        URL=upstream.url,
        ANCESTORS=upstream.git("rev-list", "v1.1").splitlines(),
    )
    before = upload_packs(trace_file, upstream.path)
    run(pytester, cache_dir, "--repo-reuse").assert_outcomes(passed=3)
    assert upload_packs(trace_file, upstream.path) == before
    rows = records(pytester)
    assert len({row["path"] for row in rows}) == 3
    assert not any(Path(row["path"]).exists() for row in rows)
    assert_store_empty(cache_dir, upstream.url)


# -- terminal summary ----------------------------------------------------------------------------

SUMMARY_RE = re.compile(
    r"^(?P<worktrees>\d+) worktrees? from (?P<repos>\d+) repositor(?:y|ies): "
    r"(?P<clones>\d+) clones?, (?P<fetches>\d+) fetch(?:es)?, (?P<hits>\d+) cache hits?, "
    r"(?P<seconds>\d+\.\d) s in git; cache (?P<size>\d+(?:\.\d)? (?:B|KiB|MiB|GiB)) in (?P<dir>.+)$"
)


def summary_lines(result: pytest.RunResult) -> list[re.Match[str]]:
    return [m for line in result.stdout.lines if (m := SUMMARY_RE.match(line))]


def summary_counts(result: pytest.RunResult) -> dict[str, str]:
    found = summary_lines(result)
    assert len(found) == 1, result.stdout.str()
    return found[0].groupdict()


def test_no_summary_when_no_test_used_a_worktree(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, trace_file: Path
) -> None:
    """Not even when the only test declaring one was skipped after its commit was prefetched."""
    write_tests(
        pytester,
        """
        def test_plain():
            pass

        def test_store_only(repo_store):
            assert repo_store.cache_dir

        @pytest.mark.skipif(True, reason="decided at setup, after prefetching")
        @pytest.mark.worktree(URL, C1)
        def test_skipped(repo_worktree):
            pass

        @pytest.mark.skip(reason="never runs, never prefetched")
        @pytest.mark.worktree(URL, PR)
        def test_never(repo_worktree):
            pass
        """,
        URL=upstream.url,
        C1=upstream.rev("v1.0^{commit}"),
        PR=upstream.rev("refs/pull/7/head"),
    )
    for args in ((), ("-v",), ("-n", "2")):
        result = run(pytester, cache_dir, *args)
        result.assert_outcomes(passed=2, skipped=2)
        assert summary_lines(result) == []
        assert not any(re.match(r"^-+ repoclones -+$", line) for line in result.stdout.lines)
    # The clone for test_skipped, once; the pull-request commit of test_never: never.
    assert upload_packs(trace_file, upstream.path) == 1


def test_summary_is_one_line_with_correct_counts(
    pytester: pytest.Pytester,
    upstream: Upstream,
    make_upstream: Callable[..., Upstream],
    cache_dir: Path,
) -> None:
    other = make_upstream("other")
    other.commit({"o.txt": "o\n"})
    write_tests(
        pytester,
        """
        def test_one(worktree):
            worktree(URL, C1)          # the clone: not a cache hit
            worktree(URL, C1)          # hit
            worktree(URL, "v1.1")      # hit: names were fetched with the clone
            worktree(URL, PR)          # a fetch: not a hit

        def test_two(worktree):
            worktree(OTHER)            # a second clone
            worktree(URL, PR)          # hit

        def test_three():
            pass
        """,
        URL=upstream.url,
        OTHER=other.url,
        C1=upstream.rev("v1.0^{commit}"),
        PR=upstream.rev("refs/pull/7/head"),
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*- repoclones -*"])
    counts = summary_counts(result)
    assert counts["worktrees"] == "6"
    assert counts["repos"] == "2"
    assert counts["clones"] == "2"
    assert counts["fetches"] == "1"
    assert counts["hits"] == "3"
    assert float(counts["seconds"]) > 0.0
    assert counts["dir"] == str(cache_dir)
    # The size is that of the two cached repositories (KiB with one decimal).
    size = sum(
        path.lstat().st_size
        for repo in (cache_dir / "repos").iterdir()
        for path in repo.rglob("*")
        if path.is_file() or path.is_symlink()
    )
    assert counts["size"] == f"{size / 1024:.1f} KiB"
    # The separator is followed by exactly the one line (no table without -v).
    lines = result.stdout.lines
    at = next(n for n, line in enumerate(lines) if re.match(r"^-+ repoclones -+$", line))
    assert SUMMARY_RE.match(lines[at + 1])
    assert "worktrees" not in lines[at + 2]

    # A second session: all cached, names refreshed once per repository.
    result = run(pytester, cache_dir)
    counts = summary_counts(result)
    assert (counts["clones"], counts["worktrees"]) == ("0", "6")


def test_summary_counts_singular(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        def test_one(worktree):
            worktree(URL, PR)
        """,
        URL=upstream.url,
        PR=upstream.rev("refs/pull/7/head"),
    )
    result = run(pytester, cache_dir)
    counts = summary_counts(result)
    assert (counts["worktrees"], counts["repos"], counts["clones"]) == ("1", "1", "1")
    assert (counts["fetches"], counts["hits"]) == ("1", "0")
    result.stdout.fnmatch_lines(["1 worktree from 1 repository: 1 clone, 1 fetch, 0 cache hits,*"])


def test_summary_table_with_verbose(
    pytester: pytest.Pytester,
    upstream: Upstream,
    make_upstream: Callable[..., Upstream],
    cache_dir: Path,
) -> None:
    other = make_upstream("other")
    other.commit({"o.txt": "o\n"})
    write_tests(
        pytester,
        """
        def test_one(worktree):
            worktree(URL, "v1.0")
            worktree(URL, "v1.1")
            worktree(OTHER)
        """,
        URL=upstream.url,
        OTHER=other.url,
    )
    result = run(pytester, cache_dir, "-v")
    result.assert_outcomes(passed=1)
    lines = result.stdout.lines
    at = next(n for n, line in enumerate(lines) if re.match(r"^-+ repoclones -+$", line))
    assert lines[at + 1].split() == [
        "repository", "worktrees", "clones", "fetches", "hits", "git", "s", "size",
    ]  # fmt: skip
    # One row per repository, sorted by URL ("other" before "project").
    rows = [line.split() for line in lines[at + 2 : at + 4]]
    assert [row[1:5] for row in rows] == [["1", "1", "0", "0"], ["2", "1", "0", "1"]]
    assert all(re.fullmatch(r"\d+\.\d\d", row[5]) for row in rows)
    assert [row[0] for row in rows] == [other.url, upstream.url]
    assert SUMMARY_RE.match(lines[at + 4])
    assert summary_counts(result)["worktrees"] == "3"


def test_summary_table_tells_repositories_apart(
    pytester: pytest.Pytester, make_upstream: Callable[..., Upstream], cache_dir: Path
) -> None:
    names = ["a-rather-long-repository-name-one", "a-rather-long-repository-name-two"]
    urls = []
    for name in names:
        up = make_upstream(name)
        up.commit({"f": "f\n"})
        urls.append(up.url)
    write_tests(
        pytester,
        """
        def test_both(worktree):
            for url in URLS:
                worktree(url)
        """,
        URLS=urls,
    )
    result = run(pytester, cache_dir, "-v")
    result.assert_outcomes(passed=1)
    lines = result.stdout.lines
    at = next(n for n, line in enumerate(lines) if re.match(r"^-+ repoclones -+$", line))
    labels = [line.split()[0] for line in lines[at + 2 : at + 4]]
    assert labels[0] != labels[1], labels


def test_summary_under_xdist_aggregates_every_worker(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        @pytest.mark.parametrize("n", range(10))
        def test_each(worktree, n):
            record(worktree(URL, C1))
        """,
        URL=upstream.url,
        C1=upstream.rev("v1.0^{commit}"),
    )
    result = run(pytester, cache_dir, "-n", "2")
    result.assert_outcomes(passed=10)
    assert {row["worker"] for row in records(pytester)} == {"gw0", "gw1"}
    counts = summary_counts(result)
    assert counts["worktrees"] == "10"
    assert counts["repos"] == "1"
    assert counts["clones"] == "1"
    assert counts["fetches"] == "0"
    assert counts["hits"] == "9"
