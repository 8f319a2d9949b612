"""What the user sees on the terminal: progress of slow transfers, a summary despite a crash."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from upstream import Upstream

INNER_FLAGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


@pytest.fixture
def slow_upstream(make_upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Upstream:  # type: ignore[no-untyped-def]
    """An upstream whose pack is sent at about 1 MiB/s, so a clone takes a few seconds.

    git honours uploadpack.packObjectsHook only from global config: the hook pipes
    pack-objects through a throttle, for real, with no change to the plugin.
    """
    up = make_upstream("slow")
    up.commit({f"blob{i}": os.urandom(16_000) for i in range(250)}, "incompressible")
    hook = tmp_path / "throttle.sh"
    hook.write_text(
        textwrap.dedent(
            """\
            #!/bin/sh
            "$@" | python3 -c '
            import sys, time
            while True:
                chunk = sys.stdin.buffer.read(65536)
                if not chunk:
                    break
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                time.sleep(0.06)
            '
            """
        )
    )
    hook.chmod(0o755)
    with open(os.environ["GIT_CONFIG_GLOBAL"], "a") as config:
        config.write(f"[uploadpack]\n\tpackObjectsHook = {hook}\n")
    return up


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
def test_slow_clone_shows_progress(
    pytester: pytest.Pytester, slow_upstream: Upstream, cache_dir: Path, workers: list[str]
) -> None:
    pytester.makepyfile(
        f"""
        def test_one(worktree):
            worktree({slow_upstream.url!r})

        def test_two(worktree):
            worktree({slow_upstream.url!r})
        """
    )
    result = pytester.runpytest_subprocess(f"--repo-cache-dir={cache_dir}", *INNER_FLAGS, *workers)
    result.assert_outcomes(passed=2)
    progress = [line for line in result.errlines if line.startswith("repoclones: cloning")]
    assert progress, result.errlines
    assert slow_upstream.url in progress[0]
    assert "Receiving objects" in " ".join(progress)


@pytest.mark.slow
def test_quiet_run_shows_no_progress(
    pytester: pytest.Pytester, slow_upstream: Upstream, cache_dir: Path
) -> None:
    pytester.makepyfile(
        f"""
        def test_one(worktree):
            worktree({slow_upstream.url!r})
        """
    )
    result = pytester.runpytest_subprocess(f"--repo-cache-dir={cache_dir}", "-q", *INNER_FLAGS)
    result.assert_outcomes(passed=1)
    assert not [line for line in result.errlines if line.startswith("repoclones: cloning")]


def test_summary_survives_a_crashed_worker(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    """A worker killed mid-run sends no final counters; what it wrote after each report and
    the others' counters still make the summary."""
    pytester.makepyfile(
        f"""
        import os
        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_uses_a_worktree(worktree, i):
            worktree({upstream.url!r}, "v1.0")

        def test_crashes_its_worker(worktree):
            worktree({upstream.url!r}, "v1.1")
            os._exit(1)
        """
    )
    result = pytester.runpytest_subprocess(f"--repo-cache-dir={cache_dir}", "-n", "2", *INNER_FLAGS)
    # The crashed worker's counters up to its last report are in, and the summary says so.
    result.stdout.fnmatch_lines(
        [
            "*repoclones*",
            "6 worktrees from 1 repository*",
            "(crashed worker gw?: counted up to its last test report)",
        ]
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 1, result.outlines  # the crash, reported by xdist
    assert outcomes.get("passed", 0) == 6
