"""--repo-reuse shows: the summary counts reused worktrees, the -v table has a column."""

from __future__ import annotations

from pathlib import Path

import pytest
from upstream import Upstream


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["no-xdist", "n2"])
def test_summary_counts_reused_worktrees(
    pytester: pytest.Pytester, upstream: Upstream, tmp_path: Path, xdist: list[str]
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.parametrize("commit", ["v1.0", "v1.1", "main", "v1.0", "main", "v1.1"])
        def test_checkout(worktree, commit):
            assert (worktree({upstream.url!r}, commit) / "README.md").is_file()
        """
    )
    result = pytester.runpytest_subprocess(
        *xdist, "-v", "--repo-reuse", f"--repo-cache-dir={tmp_path / 'cache'}"
    )
    result.assert_outcomes(passed=6)
    lines = result.stdout.lines
    at = next(n for n, line in enumerate(lines) if line.strip("-").strip() == "repoclones")
    assert lines[at + 1].split() == [
        "repository", "worktrees", "clones", "fetches", "hits", "reused", "git", "s", "size",
    ]  # fmt: skip
    row = lines[at + 2].split()
    worktrees, reused = int(row[1]), int(row[5])
    assert worktrees == 6
    # Each process reuses every worktree but its first: 5 alone, 4 with two workers.
    assert reused == (5 if xdist[0] == "-p" else 4), row
    assert f"({reused} worktrees of them reused a parked one: --repo-reuse)" in lines[at + 4 :]


def test_no_reused_column_without_reuse(
    pytester: pytest.Pytester, upstream: Upstream, tmp_path: Path
) -> None:
    pytester.makepyfile(
        f"""
        def test_checkout(worktree):
            worktree({upstream.url!r}, "main")
        """
    )
    result = pytester.runpytest_subprocess("-v", f"--repo-cache-dir={tmp_path / 'cache'}")
    result.assert_outcomes(passed=1)
    lines = result.stdout.lines
    at = next(n for n, line in enumerate(lines) if line.strip("-").strip() == "repoclones")
    assert "reused" not in lines[at + 1].split()
    assert not any(line.endswith("--repo-reuse)") for line in lines[at:])
