"""End-to-end tests of the pytest plugin: fixtures, options, teardown, errors, xdist.

Each test writes an inner test module with ``pytester`` and runs pytest on it, mostly in a
subprocess (the plugin is loaded from its ``pytest11`` entry point there, as for a user), then
checks the inner outcomes, the report, and the state left in the clone cache.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import filelock
import pytest
from upstream import Upstream, count_git_commands, git

from pytest_repoclones import RepoStore

# Shared by every inner test module: constants are prepended by ``write_tests``.
PRELUDE = '''
import json
import os
import pathlib
import subprocess

import pytest


def record(wt, **extra):
    """Append what the worktree looked like to LOG, for the outer test to check."""
    entry = {
        "path": str(wt.path),
        "branch": wt.branch,
        "commit": wt.commit,
        "url": wt.url,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        **extra,
    }
    with open(LOG, "a") as handle:
        handle.write(json.dumps(entry) + "\\n")
    return wt


def git(*args, cwd):
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()
'''

INTERNAL_FILES = ("store.py", "factory.py", "_git.py", "_lock.py", "revisions.py", "urls.py")


def write_tests(pytester: pytest.Pytester, body: str, **constants: Any) -> Path:
    """Write ``test_inner.py``: constants, the prelude, then ``body``; LOG is a JSONL file."""
    constants.setdefault("LOG", str(pytester.path / "records.jsonl"))
    header = "\n".join(f"{name} = {value!r}" for name, value in constants.items())
    source = f"{PRELUDE}\n{header}\n\n{textwrap.dedent(body)}"
    return pytester.makepyfile(test_inner=source)


def records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    log = pytester.path / "records.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def run(pytester: pytest.Pytester, cache_dir: Path | None, *args: str) -> pytest.RunResult:
    cache_args = (f"--repo-cache-dir={cache_dir}",) if cache_dir is not None else ()
    return pytester.runpytest_subprocess(*cache_args, "-p", "no:cacheprovider", *args, timeout=180)


def assert_store_clean(store: RepoStore, url: str) -> None:
    """No worktree registered in the cached clone of ``url``, no plugin branch left."""
    git_dir = store.git_dir(url)
    assert (git_dir / "repoclones.json").is_file(), "the clone should exist"
    assert store.live_worktrees(url) == []
    assert store.test_branches(url) == []
    listing = git(f"--git-dir={git_dir}", "worktree", "list", "--porcelain")
    entries = [line for line in listing.splitlines() if line.startswith("worktree ")]
    assert len(entries) == 1, listing  # only the bare repository itself
    assert "bare" in listing.splitlines()
    assert git(f"--git-dir={git_dir}", "for-each-ref", "refs/heads/repoclones/") == ""


def cache_entries(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "repos").iterdir())


# -- registration ----------------------------------------------------------------------------


def test_entry_point_is_named_repoclones() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("repoclones") == "pytest_repoclones.plugin"


def test_disabling_the_plugin_makes_its_fixtures_unknown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_wt(worktree):
            pass

        def test_store(repo_store):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:repoclones", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*fixture 'worktree' not found*", "*fixture 'repo_store' not found*"]
    )
    assert "repoclones: cache" not in result.stdout.str()


# -- what a worktree is --------------------------------------------------------------------


def test_default_commit_is_the_remote_default_branch(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    url = upstream.url + "/"  # kept exactly as given in Worktree.url
    write_tests(
        pytester,
        """
        def test_default(worktree):
            wt = worktree(URL)
            assert wt.url == URL
            assert wt.commit == MAIN
            assert git("rev-parse", "HEAD", cwd=wt) == MAIN
            assert (wt / "CHANGES").read_text() == "3\\n"
            assert not (wt / "feature.txt").exists()
        """,
        URL=url,
        MAIN=upstream.rev("main"),
    )
    run(pytester, cache_dir).assert_outcomes(passed=1)


def test_worktree_checks_out_any_kind_of_revision(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    c1, c2, main = upstream.rev("v1.0^{commit}"), upstream.rev("v1.1"), upstream.rev("main")
    feature, pr = upstream.rev("feature"), upstream.rev("refs/pull/7/head")
    upstream.set_ref("refs/heads/cafe1234", feature)
    cases = [
        ("pr-by-full-sha", pr, pr),  # first: not on any branch, so not in a fresh clone
        ("annotated-tag", "v1.0", c1),
        ("lightweight-tag", "v1.1", c2),
        ("full-tag-ref", "refs/tags/v1.0", c1),
        ("branch", "feature", feature),
        ("full-branch-ref", "refs/heads/feature", feature),
        ("main", "main", main),
        ("full-sha", c1, c1),
        ("uppercase-sha", c2.upper(), c2),
        ("abbreviated-sha", c2[:10], c2),
        ("pull-request-ref", "refs/pull/7/head", pr),
        ("annotated-tag-object", upstream.rev("v1.0"), c1),  # the tag's own object name
        ("hex-looking-branch", "cafe1234", feature),
    ]
    write_tests(
        pytester,
        """
        @pytest.mark.parametrize("rev,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
        def test_rev(worktree, rev, expected):
            wt = worktree(URL, rev)
            assert wt.commit == expected
            assert git("rev-parse", "HEAD", cwd=wt) == expected
            assert git("status", "--porcelain", "--ignored", cwd=wt) == ""
        """,
        URL=upstream.url,
        CASES=cases,
    )
    run(pytester, cache_dir).assert_outcomes(passed=len(cases))


def test_worktree_is_an_immutable_pathlike(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        import re

        def test_pathlike(worktree):
            wt = worktree(URL, "v1.1")
            assert isinstance(wt, os.PathLike)
            assert isinstance(wt.path, pathlib.Path) and wt.path.is_absolute()
            assert os.fspath(wt) == str(wt.path)
            child = wt / "src"
            assert isinstance(child, pathlib.Path) and child == wt.path / "src"
            with open(wt / "src" / "app.py") as handle:
                assert handle.read() == "VERSION = 2\\n"
            out = subprocess.run(["cat", "README.md"], cwd=wt, capture_output=True, text=True)
            assert out.stdout == "# project\\n"
            assert os.access(wt / "run.sh", os.X_OK)  # the executable bit is checked out
            assert re.fullmatch("[0-9a-f]{40}", wt.commit)
            assert isinstance(wt.url, str) and isinstance(wt.branch, str)
            for field in ("path", "url", "commit", "branch"):
                with pytest.raises(AttributeError):
                    setattr(wt, field, getattr(wt, field))
        """,
        URL=upstream.url,
    )
    run(pytester, cache_dir).assert_outcomes(passed=1)


def test_every_call_gives_a_new_worktree(
    pytester: pytest.Pytester,
    upstream: Upstream,
    make_upstream: Any,
    cache_dir: Path,
    store: RepoStore,
) -> None:
    other = make_upstream("other")
    other_sha = other.commit({"other.txt": "o\n"})
    write_tests(
        pytester,
        """
        def test_many(worktree, repo_store):
            same = [worktree(URL, "main") for _ in range(3)]
            old = worktree(URL, "v1.0")
            foreign = worktree(OTHER)
            made = [*same, old, foreign]
            assert len({wt.path for wt in made}) == 5
            assert len({wt.branch for wt in made}) == 5
            assert len({wt.commit for wt in same}) == 1
            assert old.commit != same[0].commit and foreign.commit == OTHER_SHA
            assert not (old / "CHANGES").exists() and (same[0] / "CHANGES").exists()
            assert (foreign / "other.txt").read_text() == "o\\n"
            (same[0] / "CHANGES").write_text("changed in one worktree only")
            assert (same[1] / "CHANGES").read_text() == "3\\n"
            live = set(repo_store.live_worktrees(URL))
            assert {wt.path for wt in [*same, old]} <= live
            for wt in made:
                record(wt)
        """,
        URL=upstream.url,
        OTHER=other.url,
        OTHER_SHA=other_sha,
    )
    run(pytester, cache_dir).assert_outcomes(passed=1)
    assert len(cache_entries(cache_dir)) == 2
    assert len(records(pytester)) == 5
    assert all(not Path(r["path"]).exists() for r in records(pytester))
    assert_store_clean(store, upstream.url)
    assert_store_clean(store, other.url)


def test_worktree_is_in_the_tmp_area_on_a_valid_named_branch(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        import re

        @pytest.mark.parametrize(
            "label",
            ["plain", "a/b c", "..x.lock", "@{1}~^:?*[\\\\", "ünïcode", "x" * 150],
        )
        def test_place(worktree, tmp_path_factory, request, label):
            wt = worktree(URL)
            record(wt, test=request.node.name)
            assert wt.path.is_relative_to(tmp_path_factory.getbasetemp())
            assert not wt.path.is_relative_to(CACHE)
            assert wt.branch.startswith("repoclones/main/test_place")
            assert re.fullmatch(r"repoclones/main/[A-Za-z0-9_-]+-[0-9A-Za-z]+", wt.branch)
            git("check-ref-format", "refs/heads/" + wt.branch, cwd=wt)
            assert git("symbolic-ref", "HEAD", cwd=wt) == "refs/heads/" + wt.branch
            assert git("rev-parse", "HEAD", cwd=wt) == wt.commit
            assert git("status", "--porcelain", "--ignored", cwd=wt) == ""
        """,
        URL=upstream.url,
        CACHE=str(cache_dir),
    )
    run(pytester, cache_dir).assert_outcomes(passed=6)
    branches = [r["branch"] for r in records(pytester)]
    assert len(set(branches)) == 6


# -- repo_store ------------------------------------------------------------------------------


def test_repo_store_is_the_session_store_behind_worktree(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        from pytest_repoclones import RepoStore

        SEEN = []

        @pytest.mark.parametrize("n", range(2))
        def test_uses_store(worktree, repo_store, n):
            assert isinstance(repo_store, RepoStore)
            assert repo_store.cache_dir == pathlib.Path(CACHE)
            SEEN.append(id(repo_store))
            wt = worktree(URL)
            assert wt.path in repo_store.live_worktrees(URL)
            assert wt.branch in repo_store.test_branches(URL)
            git_dir = repo_store.git_dir(URL)
            assert git_dir.parent == pathlib.Path(CACHE) / "repos"
            listing = git(f"--git-dir={git_dir}", "worktree", "list", "--porcelain", cwd="/")
            assert f"branch refs/heads/{wt.branch}" in listing.splitlines()

        def test_one_store_per_session():
            assert len(SEEN) == 2 and len(set(SEEN)) == 1
        """,
        URL=upstream.url,
        CACHE=str(cache_dir),
    )
    run(pytester, cache_dir).assert_outcomes(passed=3)


# -- teardown --------------------------------------------------------------------------------


def test_teardown_removes_everything_after_pass_fail_and_error(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, store: RepoStore
) -> None:
    write_tests(
        pytester,
        """
        def test_passes(worktree):
            record(worktree(URL), outcome="pass")

        def test_fails(worktree):
            record(worktree(URL), outcome="fail")
            assert False, "inner failure"

        @pytest.fixture
        def broken_setup(worktree):
            record(worktree(URL), outcome="setup error")
            raise RuntimeError("setup broke")

        def test_setup_error(broken_setup):
            pass

        @pytest.fixture
        def broken_teardown(worktree):
            yield record(worktree(URL), outcome="teardown error")
            raise RuntimeError("teardown broke")

        def test_teardown_error(broken_teardown):
            pass

        def test_skipped_after_worktree(worktree):
            record(worktree(URL), outcome="skip")
            pytest.skip("skipped midway")

        def test_previous_worktrees_are_already_gone(repo_store):
            for entry in map(json.loads, open(LOG)):
                assert not pathlib.Path(entry["path"]).exists(), entry
            assert repo_store.live_worktrees(URL) == []
            assert repo_store.test_branches(URL) == []
        """,
        URL=upstream.url,
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=3, failed=1, errors=2, skipped=1)
    made = records(pytester)
    assert len(made) == 5
    for entry in made:
        assert not Path(entry["path"]).exists(), entry
    assert_store_clean(store, upstream.url)


def test_teardown_copes_with_commits_read_only_files_and_chdir(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, store: RepoStore
) -> None:
    write_tests(
        pytester,
        """
        import stat

        def test_messy(worktree):
            wt = record(worktree(URL))
            (wt / "README.md").write_text("edited\\n")
            (wt / "new.txt").write_text("new\\n")
            git("add", "-A", cwd=wt)
            git("commit", "--quiet", "-m", "work in the test", cwd=wt)
            assert git("rev-parse", "HEAD", cwd=wt) != wt.commit
            (wt / "build" / "deep").mkdir(parents=True)
            (wt / "build" / "deep" / "out.o").write_bytes(b"\\0" * 10)
            (wt / "dirty.txt").write_text("uncommitted\\n")
            for path in [*wt.path.rglob("*"), wt.path]:
                if path.name == ".git" or ".git" in path.parts[len(wt.path.parts):]:
                    continue
                mode = path.stat().st_mode
                path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            if os.geteuid() != 0:  # root ignores permissions
                with pytest.raises(PermissionError):
                    (wt / "src" / "other.py").write_text("x")
            os.chdir(wt / "build" / "deep")

        def test_next_test_runs_normally(worktree):
            os.getcwd()  # the process is no longer in a deleted directory
            wt = record(worktree(URL))
            assert wt.commit == MAIN
            assert git("status", "--porcelain", "--ignored", cwd=wt) == ""

        def test_chdir_into_worktree_root_and_delete_it(worktree):
            import shutil

            wt = record(worktree(URL))
            os.chdir(wt)
            shutil.rmtree(wt.path)
        """,
        URL=upstream.url,
        MAIN=upstream.rev("main"),
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=3)
    for entry in records(pytester):
        assert not Path(entry["path"]).exists(), entry
    assert_store_clean(store, upstream.url)


def test_many_tests_under_xdist_leave_no_worktrees_or_branches(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, store: RepoStore
) -> None:
    write_tests(
        pytester,
        """
        @pytest.mark.parametrize("n", range(24))
        def test_many(worktree, n):
            revs = [None, "main", "v1.0", "v1.1", "feature", MAIN]
            wt = record(worktree(URL, revs[n % len(revs)]))
            if n % 3 == 0:
                (wt / "scratch").write_text("x")
            if n % 4 == 0:
                assert False, "some fail"
        """,
        URL=upstream.url,
        MAIN=upstream.rev("main"),
    )
    result = run(pytester, cache_dir, "-n", "2")
    result.assert_outcomes(passed=18, failed=6)
    made = records(pytester)
    assert len(made) == 24
    assert {r["worker"] for r in made} == {"gw0", "gw1"}
    for entry in made:
        assert entry["branch"].startswith(f"repoclones/{entry['worker']}/test_many-")
        assert not Path(entry["path"]).exists()
    assert_store_clean(store, upstream.url)


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
def test_unknown_branch_report_is_the_message_not_plugin_internals(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, xdist: list[str]
) -> None:
    write_tests(
        pytester,
        """
        def test_missing_branch(worktree):
            worktree(URL, "no-such-branch")
        """,
        URL=upstream.url,
    )
    result = run(pytester, cache_dir, "--tb=long", *xdist)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["*CommitNotFoundError: *"])
    assert upstream.url in out
    assert "'no-such-branch'" in out
    for name in INTERNAL_FILES:
        assert name not in out, f"{name} in the failure report"


def test_missing_full_sha_report_names_repo_commit_and_git_error(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    missing = "deadbeef" * 5
    write_tests(
        pytester,
        """
        def test_missing_sha(worktree):
            worktree(URL, MISSING)
        """,
        URL=upstream.url,
        MISSING=missing,
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([f"*CommitNotFoundError: *{upstream.url}*{missing}*"])
    result.stdout.fnmatch_lines(["E * git: *"])
    for name in INTERNAL_FILES:
        assert name not in out, f"{name} in the failure report"


def test_unreachable_remote_report_has_gits_error_line(
    pytester: pytest.Pytester, tmp_path: Path, cache_dir: Path
) -> None:
    url = (tmp_path / "no-such-repo.git").as_uri()
    write_tests(
        pytester,
        """
        def test_unreachable(worktree):
            worktree(URL, "main")
        """,
        URL=url,
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([f"*RemoteError: *{url}*", "E * git: fatal: *"])
    for name in INTERNAL_FILES:
        assert name not in out, f"{name} in the failure report"


def test_user_errors_raise_repoclones_error_subclasses(
    pytester: pytest.Pytester, upstream: Upstream, tmp_path: Path, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        from pytest_repoclones import (
            CommitNotFoundError,
            InvalidInputError,
            RemoteError,
            RepoClonesError,
        )

        CASES = [
            (URL, "--upload-pack=touch pwned", InvalidInputError),
            (URL, "main..feature", InvalidInputError),
            (URL, "HEAD~1", InvalidInputError),
            (URL, 123, InvalidInputError),
            ("ext::sh -c touch% pwned", None, InvalidInputError),
            ("--upload-pack=touch pwned", None, InvalidInputError),
            ("", None, InvalidInputError),
            (URL, "no-such-tag", CommitNotFoundError),
            (URL, "0123456789abcdef0123456789abcdef01234567", CommitNotFoundError),
            (MISSING_URL, None, RemoteError),
        ]

        @pytest.mark.parametrize("url,commit,kind", CASES)
        def test_error(worktree, url, commit, kind):
            assert issubclass(kind, RepoClonesError)
            with pytest.raises(kind) as info:
                worktree(url, commit)
            assert isinstance(info.value, RepoClonesError)
            assert str(info.value)
            assert not os.path.exists("pwned")
        """,
        URL=upstream.url,
        MISSING_URL=(tmp_path / "missing.git").as_uri(),
    )
    run(pytester, cache_dir).assert_outcomes(passed=10)
    assert not (pytester.path / "pwned").exists()


def test_failure_report_never_shows_credentials(
    pytester: pytest.Pytester, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 9: git fails at once, with the URL in its own error line. The
    # URLs come from the environment so that the test's own source line does not show them.
    monkeypatch.setenv("PW_URL", "http://user:s3cr3t-pw@127.0.0.1:9/team/repo.git")
    monkeypatch.setenv("TOKEN_URL", "https://t0ken-value@127.0.0.1:9/team/repo.git")
    write_tests(
        pytester,
        """
        def test_password(worktree):
            worktree(os.environ["PW_URL"], "main")

        def test_token(worktree):
            worktree(os.environ["TOKEN_URL"])
        """,
    )
    result = run(pytester, cache_dir, "--tb=long")
    result.assert_outcomes(failed=2)
    out = result.stdout.str() + result.stderr.str()
    assert "s3cr3t-pw" not in out
    assert "t0ken-value" not in out
    result.stdout.fnmatch_lines(
        [
            "*RemoteError: *http://user:***@127.0.0.1:9/team/repo.git*",
            "E * git: *",
            "*RemoteError: *https://***@127.0.0.1:9/team/repo.git*",
            "E * git: *",
        ]
    )
    names = "\n".join(str(p) for p in cache_dir.rglob("*"))
    assert "s3cr3t-pw" not in names
    assert "t0ken-value" not in names


def test_lock_timeout_bounds_the_wait_for_a_busy_repository(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, store: RepoStore
) -> None:
    store.clone(upstream.url)
    key = store.git_dir(upstream.url).name[: -len(".git")]
    busy = filelock.FileLock(str(cache_dir / "locks" / f"{key}.lock"))
    write_tests(
        pytester,
        """
        import time

        def test_busy(worktree):
            start = time.monotonic()
            try:
                worktree(URL, MAIN)
            finally:
                assert time.monotonic() - start < 30
        """,
        URL=upstream.url,
        MAIN=upstream.rev("main"),
    )
    with busy:
        result = run(pytester, cache_dir, "--repo-lock-timeout=0.5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*LockTimeoutError: *0.5 s*{upstream.url}*"])
    out = result.stdout.str()
    for name in INTERNAL_FILES:
        assert name not in out, f"{name} in the failure report"
    run(pytester, cache_dir, "--repo-lock-timeout=0.5").assert_outcomes(passed=1)


def test_cache_dir_that_is_a_file_is_reported_as_a_user_error(
    pytester: pytest.Pytester, upstream: Upstream, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("oops\n")
    write_tests(
        pytester,
        """
        from pytest_repoclones import RepoClonesError

        def test_clone(worktree):
            with pytest.raises(RepoClonesError, match="cache-file") as info:
                worktree(URL)
            assert "as the repository cache" in info.value.problem
        """,
        URL=upstream.url,
    )
    result = run(pytester, not_a_dir)
    # Either refused up front, or a RepoClonesError naming the directory when used.
    if result.ret != pytest.ExitCode.USAGE_ERROR:
        result.assert_outcomes(passed=1)
    else:
        assert "cache-file" in result.stderr.str()
        assert f"{not_a_dir} (from --repo-cache-dir) is not a directory" in result.stderr.str()


# -- the cache location and options ----------------------------------------------------------


def header_line(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.startswith("repoclones: cache ")]
    assert len(lines) == 1, result.outlines
    return lines[0]


def test_cache_dir_option_is_used_and_shown_in_the_header(
    pytester: pytest.Pytester, upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "from-option"
    monkeypatch.setenv("PYTEST_REPO_CACHE_DIR", str(tmp_path / "from-env"))
    pytester.makeini(f"[pytest]\nrepo_cache_dir = {tmp_path / 'from-ini'}\n")
    write_tests(
        pytester,
        """
        def test_clone(worktree):
            worktree(URL)
        """,
        URL=upstream.url,
    )
    result = run(pytester, chosen)
    result.assert_outcomes(passed=1)
    assert header_line(result) == f"repoclones: cache {chosen} (from --repo-cache-dir)"
    assert len(cache_entries(chosen)) == 1
    assert not (tmp_path / "from-env").exists()
    assert not (tmp_path / "from-ini").exists()


def test_cache_dir_env_var_beats_ini(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "from-env"
    monkeypatch.setenv("PYTEST_REPO_CACHE_DIR", str(chosen))
    pytester.makeini(f"[pytest]\nrepo_cache_dir = {tmp_path / 'from-ini'}\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    assert header_line(result) == f"repoclones: cache {chosen} (from env PYTEST_REPO_CACHE_DIR)"


def test_relative_ini_cache_dir_is_relative_to_the_ini_file(pytester: pytest.Pytester) -> None:
    conf = pytester.mkdir("conf")
    (conf / "pytest.ini").write_text("[pytest]\nrepo_cache_dir = clones\n")
    pytester.makepyfile("def test_nothing(): pass")
    # Run from elsewhere: the relative path must not be taken relative to the cwd.
    result = pytester.runpytest_inprocess("-c", str(conf / "pytest.ini"), str(pytester.path))
    result.assert_outcomes(passed=1)
    expected = f"repoclones: cache {conf / 'clones'} (from ini repo_cache_dir in pytest.ini)"
    assert header_line(result) == expected


def test_default_cache_dir_is_under_xdg_cache_home(
    pytester: pytest.Pytester, upstream: Upstream, store: RepoStore
) -> None:
    default = Path(os.environ["XDG_CACHE_HOME"]) / "pytest-repoclones"
    write_tests(
        pytester,
        """
        def test_clone(worktree, repo_store):
            worktree(URL)
            assert repo_store.cache_dir == pathlib.Path(DEFAULT)
        """,
        URL=upstream.url,
        DEFAULT=str(default),
    )
    result = run(pytester, None)
    result.assert_outcomes(passed=1)
    assert header_line(result) == f"repoclones: cache {default} (from default user cache directory)"
    assert (RepoStore(default).git_dir(upstream.url) / "repoclones.json").is_file()


@pytest.mark.parametrize("inside", ["", "clones", "a/b"], ids=["itself", "child", "grandchild"])
def test_cache_dir_in_basetemp_is_a_usage_error(pytester: pytest.Pytester, inside: str) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    basetemp = pytester.path / "bt"
    result = pytester.runpytest_inprocess(
        f"--basetemp={basetemp}", "--repo-cache-dir", str(basetemp / inside)
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--basetemp" in result.stderr.str()


def test_cache_dir_in_pytests_cache_dir_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess(
        "-p", "cacheprovider", "-o", "cache_dir=pc", "--repo-cache-dir", "pc/clones"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "pytest's cache directory" in result.stderr.str()


@pytest.mark.parametrize("option", ["--repo-timeout", "--repo-lock-timeout"])
@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", ""])
def test_timeout_options_reject_non_positive_numbers(
    pytester: pytest.Pytester, option: str, value: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess(f"{option}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, value
    assert option in result.stderr.str()


@pytest.mark.parametrize("name", ["repo_timeout", "repo_lock_timeout"])
@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_timeout_ini_settings_reject_non_positive_numbers(
    pytester: pytest.Pytester, name: str, value: str
) -> None:
    pytester.makeini(f"[pytest]\n{name} = {value}\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert name in result.stderr.str()


def test_valid_timeouts_reach_the_store_and_options_beat_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrepo_timeout = 12\nrepo_lock_timeout = 7.5\n")
    pytester.makepyfile(
        """
        import os

        def test_values(repo_store):
            assert repo_store.timeout == float(os.environ["EXPECT_TIMEOUT"])
            assert repo_store.lock_timeout == float(os.environ["EXPECT_LOCK_TIMEOUT"])
        """
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPECT_TIMEOUT", "12")
        mp.setenv("EXPECT_LOCK_TIMEOUT", "7.5")
        pytester.runpytest_inprocess().assert_outcomes(passed=1)
        mp.setenv("EXPECT_TIMEOUT", "30")
        mp.setenv("EXPECT_LOCK_TIMEOUT", "0.5")
        result = pytester.runpytest_inprocess("--repo-timeout=30", "--repo-lock-timeout", "0.5")
        result.assert_outcomes(passed=1)


# -- network use -----------------------------------------------------------------------------


MOVING_NAMES_TESTS = """
@pytest.mark.parametrize("rev", [None, "main", "feature", "v1.1", "refs/heads/main"])
def test_moving(worktree, rev):
    wt = worktree(URL, rev)
    if rev in (None, "main", "refs/heads/main"):
        assert wt.commit == EXPECTED_MAIN

def test_upstream_moves_mid_session(worktree):
    subprocess.run(
        ["git", f"--git-dir={UPSTREAM}", "update-ref", "refs/heads/main", MOVE_MAIN_TO],
        check=True,
    )
    # Already refreshed in this session: the remote is not asked again.
    assert worktree(URL).commit == EXPECTED_MAIN
    assert worktree(URL, "main").commit == EXPECTED_MAIN
"""


def test_moving_names_are_refreshed_once_per_session(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, trace_file: Path
) -> None:
    first = upstream.rev("main")
    second = upstream.commit({"CHANGES": "4\n"}, "fourth", ref="refs/spare/second")
    third = upstream.commit({"CHANGES": "5\n"}, "fifth", ref="refs/spare/third", parent=second)
    constants = {"URL": upstream.url, "UPSTREAM": str(upstream.path)}

    write_tests(pytester, MOVING_NAMES_TESTS, **constants, EXPECTED_MAIN=first, MOVE_MAIN_TO=second)
    run(pytester, cache_dir).assert_outcomes(passed=6)
    assert count_git_commands(trace_file, "upload-pack") == 1  # the clone, nothing more
    assert upstream.rev("main") == second

    # The next session sees where main moved, fetching once, however many tests ask.
    trace_file.unlink()
    write_tests(pytester, MOVING_NAMES_TESTS, **constants, EXPECTED_MAIN=second, MOVE_MAIN_TO=third)
    run(pytester, cache_dir).assert_outcomes(passed=6)
    assert count_git_commands(trace_file, "upload-pack") == 1


def test_moving_names_are_refreshed_once_per_xdist_run(
    pytester: pytest.Pytester,
    upstream: Upstream,
    cache_dir: Path,
    store: RepoStore,
    trace_file: Path,
) -> None:
    store.clone(upstream.url)  # warm cache from an earlier "session"
    new_main = upstream.commit({"CHANGES": "4\n"}, "fourth")
    new_feature = upstream.commit({"feature.txt": "more\n"}, "more", branch="feature")
    trace_file.unlink()
    write_tests(
        pytester,
        """
        @pytest.mark.parametrize("n", range(16))
        def test_moving(worktree, n):
            import time
            time.sleep(0.05)  # let both workers take tests
            rev = [None, "main", "feature", "refs/heads/feature"][n % 4]
            wt = record(worktree(URL, rev))
            assert wt.commit == (NEW_MAIN if n % 4 < 2 else NEW_FEATURE)
        """,
        URL=upstream.url,
        NEW_MAIN=new_main,
        NEW_FEATURE=new_feature,
    )
    run(pytester, cache_dir, "-n", "2").assert_outcomes(passed=16)
    assert {r["worker"] for r in records(pytester)} == {"gw0", "gw1"}
    assert count_git_commands(trace_file, "upload-pack") == 1


def test_full_sha_in_cache_never_touches_the_network(
    pytester: pytest.Pytester,
    upstream: Upstream,
    cache_dir: Path,
    store: RepoStore,
    trace_file: Path,
) -> None:
    shas = [upstream.rev("v1.0^{commit}"), upstream.rev("main"), upstream.rev("refs/pull/7/head")]
    for sha in shas:
        store.resolve(upstream.url, sha)  # the pull-request commit is fetched by name
    shutil.rmtree(upstream.path)  # from now on any network use fails
    trace_file.unlink()
    write_tests(
        pytester,
        """
        @pytest.mark.parametrize("sha", SHAS)
        def test_offline(worktree, sha):
            wt = worktree(URL, sha)
            assert wt.commit == sha
            assert git("rev-parse", "HEAD", cwd=wt) == sha
        """,
        URL=upstream.url,
        SHAS=shas,
    )
    run(pytester, cache_dir, "-n", "2").assert_outcomes(passed=3)
    assert count_git_commands(trace_file, "upload-pack") == 0
    assert count_git_commands(trace_file, "fetch") == 0


def test_many_tests_under_xdist_make_exactly_one_clone(
    pytester: pytest.Pytester,
    upstream: Upstream,
    cache_dir: Path,
    store: RepoStore,
    trace_file: Path,
) -> None:
    write_tests(
        pytester,
        """
        @pytest.mark.parametrize("n", range(12))
        def test_same_url(worktree, n):
            import time
            time.sleep(0.05)
            wt = record(worktree(URL, [None, "main", "v1.0", MAIN][n % 4]))
            assert (wt / "README.md").exists()
        """,
        URL=upstream.url,
        MAIN=upstream.rev("main"),
    )
    run(pytester, cache_dir, "-n", "2").assert_outcomes(passed=12)
    assert {r["worker"] for r in records(pytester)} == {"gw0", "gw1"}
    assert [p.name for p in cache_entries(cache_dir)] == [store.git_dir(upstream.url).name]
    assert count_git_commands(trace_file, "upload-pack") == 1
    assert list((cache_dir / "tmp").iterdir()) == []
    assert_store_clean(store, upstream.url)
