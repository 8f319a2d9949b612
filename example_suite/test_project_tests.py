"""The project's own test suite, run at each release in a subprocess."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from pytest_repoclones import Worktree

from .helpers import run_project_tests

WorktreeFactory = Callable[..., Worktree]

#: Revision -> how many tests the project had there (its suite only grows).
TEST_COUNTS = {"v0.1.0": 5, "v0.2.0": 9, "v0.2.1": 10, "v1.0.0": 16, "develop": 18}


@pytest.mark.parametrize("rev", TEST_COUNTS)
def test_project_suite_passes(worktree: WorktreeFactory, upstream_url: str, rev: str) -> None:
    wt = worktree(upstream_url, rev)
    result = run_project_tests(wt)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{TEST_COUNTS[rev]} passed" in result.stdout


def test_regression_test_of_0_2_1_fails_on_0_2_0(
    worktree: WorktreeFactory, upstream_url: str
) -> None:
    """The test added with the fix catches the bug: run on the release before, it fails."""
    fixed = worktree(upstream_url, "v0.2.1")
    broken = worktree(upstream_url, "v0.2.0")
    shutil.copyfile(fixed / "tests/test_compare.py", broken / "tests/test_compare.py")
    result = run_project_tests(broken, "tests/test_compare.py")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "FAILED tests/test_compare.py::test_prerelease_precedes_release" in result.stdout
    assert "1 failed, 3 passed" in result.stdout
