"""A suite that never asks for a worktree pays for the plugin's options and hooks only: the
store and everything behind it are imported on first need."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["no-xdist", "n2"])
def test_plain_suite_does_not_import_the_store(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_plain():
            loaded = sorted(m for m in sys.modules if m.startswith("pytest_repoclones"))
            heavy = [m for m in loaded if m.rsplit(".", 1)[-1] in (
                "store", "_git", "_entry", "_checkouts", "_remote", "urls", "_lock", "filelock"
            )]
            assert heavy == [], loaded
        """
    )
    result = pytester.runpytest_subprocess(*xdist, f"--repo-cache-dir={pytester.path / 'c'}")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "c").exists()  # nothing written into the cache either


def test_first_worktree_still_gets_everything(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_store(repo_store):
            assert "pytest_repoclones.store" in sys.modules
            assert repo_store.cache_dir.name == "c"
        """
    )
    result = pytester.runpytest_subprocess(f"--repo-cache-dir={pytester.path / 'c'}")
    result.assert_outcomes(passed=1)
