"""The ``pytest-repoclones`` command, issue 14: prefetch reports every commit and repository,
the cache directory set in the project's pytest configuration is the one the CLI uses, and
kept worktrees (``--repo-keep``) can be cleared with ``--force``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Run
from upstream import Upstream

from pytest_repoclones import RepoStore, cli
from pytest_repoclones.cache_admin import resolve_cache_dir

MISSING_SHA = "0123456789abcdef0123456789abcdef01234567"


def small_upstream(make_upstream: Callable[..., Upstream], name: str) -> Upstream:
    up = make_upstream(name)
    up.commit({"README.md": f"# {name}\n"}, "initial")
    return up


# -- prefetch: every commit, every repository --------------------------------------------------


def test_prefetch_goes_on_after_a_failed_commit_and_reports_each(
    run: Run, upstream: Upstream
) -> None:
    status, out, err = run("prefetch", upstream.url, "v1.0", "no-such-branch", MISSING_SHA, "v1.1")
    assert status == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"cached {upstream.url} in ")
    assert lines[0].endswith("(cloned)")
    assert lines[1] == f"  {upstream.rev('v1.0^{commit}')}  v1.0  (fetched)"
    assert lines[2].startswith("  FAILED  no-such-branch: No such branch or tag upstream")
    assert lines[3].startswith(f"  FAILED  {MISSING_SHA}: ")
    # The one after the failures was still fetched (the tags came with the first refresh).
    assert lines[4] == f"  {upstream.rev('v1.1')}  v1.1  (fetched)"
    assert len(lines) == 5
    assert "error: 2 of 4 commits could not be prefetched" in err

    # Everything there now: each commit says so, and the status is 0.
    status, out, err = run("prefetch", upstream.url, upstream.rev("v1.1"))
    assert status == 0, err
    assert f"cached {upstream.url} in " in out
    assert out.splitlines()[0].endswith("(already cached)")
    assert out.splitlines()[1] == f"  {upstream.rev('v1.1')}  (already cached)"
    # A branch is checked against the remote, but has not moved: nothing new.
    status, out, err = run("prefetch", upstream.url, "feature")
    assert status == 0, err
    assert out.splitlines()[1] == f"  {upstream.rev('feature')}  feature  (already cached)"


def test_prefetch_several_repositories_with_url(
    run: Run, make_upstream: Callable[..., Upstream], tmp_path: Path
) -> None:
    alpha, beta = (small_upstream(make_upstream, name) for name in ("alpha", "beta"))
    missing = (tmp_path / "no-such-repo").as_uri()
    status, out, err = run(
        "prefetch", alpha.url, "main", "--url", missing, "main", "--url", beta.url, "main"
    )
    assert status == 1
    assert f"cached {alpha.url} in " in out
    assert f"  {alpha.rev('main')}  main  (fetched)" in out
    assert f"FAILED {missing}: Could not clone" in out
    assert "  FAILED  main: the clone failed" in out
    assert f"cached {beta.url} in " in out  # after the failure
    assert f"  {beta.rev('main')}  main  (fetched)" in out
    assert "error: 1 of 3 commits could not be prefetched" in err

    # Only --url, and the default branch when no commit is given.
    status, out, err = run("prefetch", "--url", alpha.url, "--url", beta.url)
    assert status == 0, err
    assert f"  {alpha.rev('main')}  (default branch)  (already cached)" in out
    assert f"  {beta.rev('main')}  (default branch)  (already cached)" in out

    status, _, err = run("prefetch")
    assert status == 2
    assert "give the URL to prefetch" in err


# -- the cache directory of the project's pytest configuration ---------------------------------

PROJECT_FILES = {
    "pyproject.toml": '[tool.pytest.ini_options]\nrepo_cache_dir = "clones"\n',
    "pyproject.toml (pytest 9)": '[tool.pytest]\nrepo_cache_dir = "clones"\n',
    "pytest.ini": "[pytest]\nrepo_cache_dir = clones\n",
    "tox.ini": "[tox]\nenvlist = py\n\n[pytest]\nrepo_cache_dir = clones\n",
    "setup.cfg": "[metadata]\nname = x\n\n[tool:pytest]\nrepo_cache_dir = clones\n",
}
SECTIONS = {
    "pyproject.toml": "tool.pytest.ini_options",
    "pyproject.toml (pytest 9)": "tool.pytest",
    "pytest.ini": "pytest",
    "tox.ini": "pytest",
    "setup.cfg": "tool:pytest",
}


@pytest.mark.parametrize("kind", sorted(PROJECT_FILES))
def test_the_cli_uses_the_cache_dir_of_the_project_it_runs_in(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tmp_path / "project"
    (project / "src" / "pkg").mkdir(parents=True)
    config = project / kind.split()[0]
    config.write_text(PROJECT_FILES[kind])
    # pytest passes over files without a pytest section on its way up, so must we.
    (project / "src" / "setup.cfg").write_text("[metadata]\nname = inner\n")
    (project / "src" / "tox.ini").write_text("[tox]\nenvlist = py\n")
    monkeypatch.chdir(project / "src" / "pkg")
    source = f"ini repo_cache_dir in {config} [{SECTIONS[kind]}]"

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"cache: {project / 'clones'} (from {source})"

    assert cli.main(["list", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["cache_dir"] == str(project / "clones")
    assert document["cache_dir_source"] == source

    # The environment and --cache-dir come first, as in the plugin.
    monkeypatch.setenv("PYTEST_REPO_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(None) == (tmp_path / "env", "env PYTEST_REPO_CACHE_DIR")
    assert resolve_cache_dir(str(tmp_path / "opt")) == (tmp_path / "opt", "--cache-dir")


def test_the_first_pytest_configuration_up_the_tree_wins_even_without_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tox.ini").write_text("[pytest]\nrepo_cache_dir = ~/far\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pytest.ini").write_text("[pytest]\naddopts = -q\n")  # pytest stops here
    monkeypatch.chdir(inner)
    path, source = resolve_cache_dir(None)
    assert source == "default user cache directory"

    # Without it, the outer file is the configuration; its "~" is expanded.
    (inner / "pytest.ini").unlink()
    path, source = resolve_cache_dir(None)
    assert path == Path("~/far").expanduser()
    assert source == f"ini repo_cache_dir in {tmp_path / 'tox.ini'} [pytest]"


def test_a_broken_project_configuration_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options\nrepo_cache_dir = 1\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err
    assert f"cannot read the pytest configuration {tmp_path / 'pyproject.toml'}" in err
    assert "Traceback" not in err
    # An explicit directory does not need the file.
    assert cli.main(["--cache-dir", str(tmp_path / "c"), "list"]) == 0


@pytest.mark.parametrize(
    "command", [["list"], ["gc"], ["verify"], ["clear", "--all"], ["prefetch", "URL"]]
)
def test_every_command_says_which_cache_and_why(
    command: list[str], run: Run, upstream: Upstream, cache_dir: Path
) -> None:
    command = [upstream.url if word == "URL" else word for word in command]
    status, out, err = run(*command)
    assert status == 0, err
    # list: part of the listing; the others keep stdout for their result lines.
    shown = out if command == ["list"] else err
    assert shown.splitlines()[0] == f"cache: {cache_dir} (from --cache-dir)"


# -- kept worktrees ----------------------------------------------------------------------------


def test_a_kept_worktree_blocks_clear_with_a_hint_and_force_removes_it(
    run: Run, make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    kept_up, live_up = (small_upstream(make_upstream, name) for name in ("kept", "live"))
    store = RepoStore(cache_dir)
    kept = store.add_worktree(kept_up.url, "main", tmp_path / "kept")
    store.keep_worktree(kept)
    live = store.add_worktree(live_up.url, "main", tmp_path / "live")  # this process lives

    status, out, _ = run("clear", kept_up.url)
    assert status == 1
    assert (
        f"skipped {kept_up.url}: in use by kept worktree {kept.path} "
        "(left by --repo-keep; --force removes it)"
    ) in out

    for command in (["gc", "--max-size", "0", "--force"], ["clear", "--all", "--force"]):
        status, out, _ = run(*command, "--dry-run")
        assert status == 0
        assert f"would remove {kept_up.url}" in out
        assert f"  with its kept worktree {kept.path}" in out
        assert f"skipped {live_up.url}: in use by worktree {live.path}" in out, "never live"
        assert kept.git_dir.is_dir()

    status, out, _ = run("clear", "--force", kept_up.url, live_up.url)
    assert status == 1, "the live one is still refused"
    assert f"removed {kept_up.url}" in out
    assert f"skipped {live_up.url}: in use by worktree {live.path}" in out
    assert "--force removes it" not in out
    assert not kept.git_dir.exists()
    assert not kept.path.exists()
    assert (live.path / "README.md").is_file()
    store.remove_worktree(live)


def test_a_kept_worktree_deleted_by_hand_is_not_counted_and_blocks_nothing(
    run: Run, upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    store = RepoStore(cache_dir)
    kept = store.add_worktree(upstream.url, "main", tmp_path / "kept")
    store.keep_worktree(kept)
    status, out, _ = run("list", "--json")
    assert json.loads(out)["repositories"][0]["worktrees"] == 1
    status, out, _ = run("list")
    assert "1 worktree" in out

    shutil.rmtree(kept.path)
    status, out, _ = run("list", "--json")
    assert json.loads(out)["repositories"][0]["worktrees"] == 0
    status, out, _ = run("list")
    assert not out.splitlines()[2].endswith("worktree")  # no note: no worktree

    status, out, _ = run("clear", upstream.url)
    assert status == 0
    assert f"removed {upstream.url}" in out


def test_the_cli_and_a_pytest_session_in_the_project_use_the_same_cache(
    pytester: pytest.Pytester,
) -> None:
    """The point of reading the ini file: one resolution, so both name the same directory."""
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nrepo_cache_dir = "clones"\n')
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    (line,) = [ln for ln in result.outlines if ln.startswith("repoclones: cache ")]
    cache, source = resolve_cache_dir(None, cwd=pytester.path)
    assert cache == pytester.path / "clones"
    assert line.startswith(f"repoclones: cache {cache} (from ini repo_cache_dir in pyproject.toml")
    assert (
        source
        == f"ini repo_cache_dir in {pytester.path / 'pyproject.toml'} [tool.pytest.ini_options]"
    )
