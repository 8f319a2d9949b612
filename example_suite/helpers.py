"""Run git and Python inside a worktree, in subprocesses.

The suite never imports the project under test: every release has a module named ``semverkit``,
and one test process cannot hold two of them (or drop one it imported) at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

#: Who commits in the tests that make commits: set explicitly, never the user's git config.
IDENTITY = {
    "GIT_AUTHOR_NAME": "Example Suite",
    "GIT_AUTHOR_EMAIL": "example-suite@example.com",
    "GIT_COMMITTER_NAME": "Example Suite",
    "GIT_COMMITTER_EMAIL": "example-suite@example.com",
}

#: The command that runs the project's own tests: none of this run's plugins, nothing cached.
PROJECT_PYTEST = [
    sys.executable, "-m", "pytest", "-q",
    "-p", "no:cacheprovider", "-p", "no:repoclones", "-p", "no:xdist",
]  # fmt: skip


def _fail(argv: list[str], result: subprocess.CompletedProcess[str]) -> AssertionError:
    return AssertionError(
        f"{' '.join(argv)} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def git(cwd: os.PathLike[str], *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run git in ``cwd``; return its stripped stdout, fail the test with git's stderr."""
    argv = ["git", *args]
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        raise _fail(argv, result)
    return result.stdout.strip()


def run_python(
    cwd: os.PathLike[str], code: str, *args: str, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``python FLAGS -c CODE ARGS`` in ``cwd``, where the checkout's package is importable."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, *flags, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )


def python(cwd: os.PathLike[str], code: str, *args: str) -> str:
    """Like :func:`run_python`, but return the stripped stdout and fail the test on an error."""
    result = run_python(cwd, code, *args)
    if result.returncode != 0:
        raise _fail([sys.executable, "-c", code, *args], result)
    return result.stdout.strip()


def run_project_tests(cwd: os.PathLike[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The checked-out project's own test suite, run the way its developers run it."""
    # This run's settings and plugins are not the project's; skipping the installed plugins'
    # imports also makes each run several times faster.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONPATH"):
        env.pop(name, None)
    return subprocess.run(
        [*PROJECT_PYTEST, *args], cwd=cwd, capture_output=True, text=True, env=env
    )
