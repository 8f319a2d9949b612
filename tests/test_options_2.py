"""Options as users meet them (issue 14): pytest 9's native TOML table, `--repo-cache-dir PATH`
with a space, what `--fixtures` and `--help` say, and the git version check."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from pytest_repoclones import _git, plugin
from pytest_repoclones.errors import RepoClonesError

# Runs inside the pytester subprocess: the settings the plugin resolved from the ini file.
SETTINGS_TEST = """
from pytest_repoclones.plugin import SETTINGS_KEY

def test_settings(pytestconfig):
    settings = pytestconfig.stash[SETTINGS_KEY]
    assert (settings.timeout, settings.lock_timeout) == (5.0, 2.5)
    assert settings.offline and settings.offline_source == "ini repo_offline"
    assert settings.reuse
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


@pytest.fixture
def cache_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYTEST_REPO_CACHE_DIR", str(cache))
    return cache


# 1. Ini values with pytest's types -------------------------------------------------------------


@pytest.mark.skipif(pytest.version_tuple < (9,), reason="[tool.pytest] is new in pytest 9")
def test_native_toml_table_takes_numbers_and_bools(
    pytester: pytest.Pytester, cache_env: Path
) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest]
        repo_timeout = 5
        repo_lock_timeout = 2.5
        repo_offline = true
        repo_reuse = true
        repo_keep = "failed"
        repo_clone_filters = ["https://example.com/big.git blob:none"]
        """
    )
    pytester.makepyfile(SETTINGS_TEST)
    result = run(pytester)
    assert "expects a string" not in result.stderr.str()
    result.assert_outcomes(passed=1)


def test_classic_ini_options_table_takes_strings(
    pytester: pytest.Pytester, cache_env: Path
) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        repo_timeout = "5"
        repo_lock_timeout = "2.5"
        repo_offline = "true"
        repo_reuse = "yes"
        """
    )
    pytester.makepyfile(SETTINGS_TEST)
    run(pytester).assert_outcomes(passed=1)


def test_ini_file_numbers_are_parsed(pytester: pytest.Pytester, cache_env: Path) -> None:
    pytester.makeini(
        """
        [pytest]
        repo_timeout = 5
        repo_lock_timeout = 2.5
        repo_offline = true
        repo_reuse = 1
        """
    )
    pytester.makepyfile(SETTINGS_TEST)
    run(pytester).assert_outcomes(passed=1)


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_bad_ini_number_is_a_usage_error_naming_the_setting(
    pytester: pytest.Pytester, cache_env: Path, value: str
) -> None:
    pytester.makeini(f"[pytest]\nrepo_timeout = {value}\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini repo_timeout:*"])


@pytest.mark.parametrize(
    ("version", "expected"),
    [((8, 0, 0), "string"), ((8, 3, 5), "string"), ((8, 4, 0), "float"), ((9, 2, "dev1"), "float")],
)
def test_seconds_ini_type_needs_pytest_8_4(version: tuple[int | str, ...], expected: str) -> None:
    # pytest 8.0-8.3 assert on addini(type="float"): they must get plain strings.
    assert plugin.seconds_ini_type(version) == expected


# 2. `--repo-cache-dir PATH` with a space ------------------------------------------------------


def test_spaced_cache_dir_option_is_detected() -> None:
    assert plugin.spaced_cache_dir_option(["-q", "--repo-cache-dir", "/c", "tests"]) == "/c"
    assert plugin.spaced_cache_dir_option(["--repo-cache-dir=/c", "tests"]) is None
    assert plugin.spaced_cache_dir_option(["--repo-cache-dir"]) is None  # argparse reports that one
    assert plugin.spaced_cache_dir_option(["--", "--repo-cache-dir", "/c"]) is None


def test_spaced_cache_dir_option_warns_with_the_fix(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()  # an existing PATH is when pytest takes it for a test path
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, "--repo-cache-dir", str(cache))
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [f"*PytestConfigWarning: repoclones: write --repo-cache-dir={cache} *"]
    )


def test_cache_dir_option_with_equals_does_not_warn(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, f"--repo-cache-dir={tmp_path / 'cache'}")
    result.assert_outcomes(passed=1, warnings=0)


def test_spaced_cache_dir_in_pytest_addopts_warns(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", f"--repo-cache-dir {tmp_path}")
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester)
    result.stdout.fnmatch_lines([f"*write --repo-cache-dir={tmp_path} *"])


# 3. What --fixtures and --help say ------------------------------------------------------------


def test_fixtures_shows_every_keyword_of_worktree(
    pytester: pytest.Pytester, cache_env: Path
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, "--fixtures")
    out = result.stdout.str()
    # Without -v pytest prints the docstring's first paragraph only: it must hold the keywords.
    section = out[out.index("\nworktree -- ") :].split("\n\n", 1)[0]
    words = " ".join(section.split())  # the signature may wrap
    assert (
        "worktree(url, commit=None, *, sparse=None, isolate=False, history=True, "
        "submodules=None)" in words
    )
    assert "sparse=" in section
    assert "isolate=True" in section
    assert "submodules=True" in section


def test_help_names_the_environment_variables(pytester: pytest.Pytester, cache_env: Path) -> None:
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(
        [
            "*environment: PYTEST_REPO_CACHE_DIR=PATH, PYTEST_REPO_OFFLINE=1*",
            "  --repo-cache-dir=PATH",
        ]
    )


# 4. git version ------------------------------------------------------------------------------


def fake_git(directory: Path, version_line: str) -> Path:
    """A `git` that only answers --version (and counts how often it was asked)."""
    directory.mkdir()
    script = directory / "git"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo called >> "{directory}/calls"
            echo "{version_line}"
            """
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def put_first_on_path(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


def test_old_git_is_refused_with_both_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_first_on_path(monkeypatch, fake_git(tmp_path / "bin", "git version 2.20.1"))
    with pytest.raises(
        RepoClonesError, match=r"^git 2\.20\.1 found; pytest-repoclones needs git >= 2\.29"
    ):
        _git.check_git_version()
    with pytest.raises(RepoClonesError):
        _git.check_git_version()
    # Once per process and executable: the second check asked no git.
    assert (tmp_path / "bin" / "calls").read_text().count("called") == 1


def test_sparse_needs_a_newer_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put_first_on_path(monkeypatch, fake_git(tmp_path / "bin", "git version 2.34.1"))
    assert _git.check_git_version() == (2, 34, 1)
    with pytest.raises(RepoClonesError, match=r"git 2\.34\.1 found; .* >= 2\.35 for sparse"):
        _git.check_git_version(_git.SPARSE_MINIMUM_GIT, needed_for="sparse worktrees")


@pytest.mark.parametrize(
    "line",
    ["git version 2.39.3 (Apple Git-145)", "git version 2.45.1.windows.1", "git version 3.0"],
)
def test_vendor_version_strings_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    put_first_on_path(monkeypatch, fake_git(tmp_path / "bin", line))
    found = _git.check_git_version()
    assert found is not None
    assert found[:2] >= (2, 39)


def test_unexpected_version_output_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_first_on_path(monkeypatch, fake_git(tmp_path / "bin", "hub version 9"))
    assert _git.check_git_version() is None


def test_the_git_on_this_machine_is_new_enough() -> None:
    found = _git.check_git_version()
    assert found is not None
    assert found[:2] >= (2, 29)
