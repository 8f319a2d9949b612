"""A commit that prefetch could not get is said on the terminal, once, before its tests fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from upstream import Upstream


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["no-xdist", "n2"])
def test_prefetch_failure_is_said_once_on_the_terminal(
    pytester: pytest.Pytester, upstream: Upstream, tmp_path: Path, xdist: list[str]
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.worktree({upstream.url!r}, "no-such-branch")
        @pytest.mark.parametrize("n", range(4))
        def test_needs_it(repo_worktree, n):
            pass

        @pytest.mark.worktree({upstream.url!r}, "v1.0")
        def test_fine(repo_worktree):
            assert (repo_worktree / "README.md").is_file()
        """
    )
    result = pytester.runpytest_subprocess(*xdist, f"--repo-cache-dir={tmp_path / 'cache'}")
    result.assert_outcomes(passed=1, errors=4)
    output = result.stdout.str() + "\n" + result.stderr.str()
    said = [
        line
        for line in output.splitlines()
        if line.startswith("repoclones: could not prefetch no-such-branch")
    ]
    assert len(said) == 1, output
    assert f"of {upstream.url}; the tests that declare it will fail: " in said[0]
    assert "No such branch or tag" in said[0]
    assert "could not prefetch v1.0" not in output
