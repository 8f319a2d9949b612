"""No HOME, and a user id with no entry in the password database (containers run with an
arbitrary uid, as OpenShift does): ``Path.home()`` raises there.

The plugin must never break a suite that does not use it; a test that does use it gets an error
that says what to set; an explicit cache directory works; the CLI exits 2 with the same advice.
Everything runs for real: pytest and the CLI as a subprocess under such a uid (so the tests need
root, to switch to it), with HOME and XDG_CACHE_HOME removed from its environment.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from upstream import Upstream

UID = GID = 54321  # no passwd entry (checked below)
WHY = f"HOME is not set and user id {UID} has no entry in the password database"
WHAT_TO_SET = "set --repo-cache-dir=PATH, PYTEST_REPO_CACHE_DIR, XDG_CACHE_HOME or HOME"
HEADER = f"repoclones: cache unavailable ({WHY}): tests that use worktree or repo_store will fail; "
# The plugin loads from its entry point, as for users; unrelated plugins only slow starts down.
PYTEST = [
    "-m",
    "pytest",
    "-p",
    "no:cacheprovider",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:benchmark",
    "-W",
    "error",  # a warning from the plugin would fail users who run with -W error
]

XDIST = pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])


class Nobody:
    """Runs commands as UID/GID with no supplementary groups and a minimal environment."""

    def __init__(self, root: Path, prefix: list[str]) -> None:
        self.root = root  # world-writable, outside root's private temporary directories
        self.prefix = prefix

    def env(self, **extra: str) -> dict[str, str]:
        # Built from scratch: no HOME, no XDG_CACHE_HOME, nothing of the outer pytest run
        # (its xdist worker variables, its per-test git config in a directory we cannot read).
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "PYTHONDONTWRITEBYTECODE": "1",
            **extra,
        }

    def run(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, sys.executable, *args],
            cwd=cwd or self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def pytest(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        suite = self.root / "suite"
        basetemp = self.root / f"basetemp-{len(list(self.root.glob('basetemp-*')))}"
        return self.run(*PYTEST, f"--basetemp={basetemp}", *args, cwd=suite, **env)


def _probe(prefix: list[str]) -> str | None:
    """None if this interpreter, the plugin and xdist work for UID under ``prefix`` (also in a
    child it starts, as xdist does); else what went wrong."""
    code = (
        "import os, subprocess, sys\n"
        f"assert 'HOME' not in os.environ and os.getuid() == {UID}\n"
        "subprocess.run([sys.executable, '-c', 'import pytest_repoclones, xdist'], check=True)\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [*prefix, sys.executable, "-c", code],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["?"])[-1]


@pytest.fixture(scope="module")
def switch_user() -> list[str]:
    """The command prefix that runs a program as UID, or skip saying why there is none."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root, to run pytest under a uid without a passwd entry")
    try:
        pwd.getpwuid(UID)
    except KeyError:
        pass
    else:
        pytest.skip(f"user id {UID} has a passwd entry here; the case needs one without")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("util-linux setpriv is missing")
    plain = [setpriv, f"--reuid={UID}", f"--regid={GID}", "--clear-groups"]
    problem = _probe(plain)
    if problem is None:
        return plain
    # The interpreter may sit where only root can look (a venv made from pyenv under
    # /root): let UID read and search every directory, nothing more. Writes still need the
    # world-writable directory the tests make, like in a real container.
    with_read = [*plain, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    if _probe(with_read) is None:
        return with_read
    pytest.skip(f"{sys.executable} is not usable by user id {UID}: {problem}")


@pytest.fixture
def nobody(switch_user: list[str]) -> Iterator[Nobody]:
    # Not under tmp_path: pytest makes its temporary root private to root (0700).
    root = Path(tempfile.mkdtemp(prefix="repoclones-no-home-"))
    try:
        root.chmod(0o777)
        (root / "suite").mkdir()
        (root / "suite" / "pytest.ini").write_text("[pytest]\n")  # this is the rootdir
        yield Nobody(root, switch_user)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write(nobody: Nobody, name: str, source: str) -> None:
    (nobody.root / "suite" / name).write_text(textwrap.dedent(source))


def owned_upstream(nobody: Nobody) -> Upstream:
    """An upstream UID may read, and owns (git refuses repositories of other users)."""
    up = Upstream(nobody.root / "upstream.git")
    up.commit({"README.md": "# project\n"}, "initial")
    for path in [up.path, *up.path.rglob("*")]:
        os.chown(path, UID, GID, follow_symlinks=False)
    return up


def outcome_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("=")]
    return lines[-1] if lines else ""


@XDIST
def test_a_suite_that_does_not_use_the_plugin_passes(nobody: Nobody, xdist: list[str]) -> None:
    write(nobody, "test_plain.py", "def test_plain():\n    assert 1 + 1 == 2\n")
    result = nobody.pytest(*xdist)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert " 1 passed" in outcome_line(result)
    assert f"{HEADER}{WHAT_TO_SET}" in result.stdout.splitlines()


@XDIST
def test_tests_that_use_the_cache_fail_saying_what_to_set(nobody: Nobody, xdist: list[str]) -> None:
    write(nobody, "test_plain.py", "def test_plain():\n    pass\n")
    write(
        nobody,
        "test_uses.py",
        """
        def test_factory(worktree):
            worktree("file:///nowhere/project.git")

        def test_store(repo_store):
            repo_store.clone("file:///nowhere/project.git")
        """,
    )
    result = nobody.pytest(*xdist, "-rE")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "INTERNALERROR" not in output
    assert " 1 passed, 2 errors" in outcome_line(result)
    expected = f"RepoClonesError: No repository cache directory: {WHY}"
    # Both tests error in setup with the reason and the settings to choose from.
    assert output.count(expected) >= 2, output
    assert output.count(f"hint: {WHAT_TO_SET}") >= 2, output
    assert "Traceback" not in output


@XDIST
def test_marked_tests_fail_saying_what_to_set(nobody: Nobody, xdist: list[str]) -> None:
    """Markers are prefetched after collection: that must not end the run either."""
    write(nobody, "test_plain.py", "def test_plain():\n    pass\n")
    write(
        nobody,
        "test_marked.py",
        """
        import pytest

        @pytest.mark.worktree("file:///nowhere/project.git", ["main", "v1"])
        def test_marked(repo_worktree):
            pass
        """,
    )
    result = nobody.pytest(*xdist)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "INTERNALERROR" not in output
    assert " 1 passed, 2 errors" in outcome_line(result)
    assert f"No repository cache directory: {WHY}" in output


@XDIST
@pytest.mark.parametrize("where", ["option", "PYTEST_REPO_CACHE_DIR", "XDG_CACHE_HOME"])
def test_a_cache_directory_that_was_given_works(
    nobody: Nobody, xdist: list[str], where: str
) -> None:
    up = owned_upstream(nobody)
    write(
        nobody,
        "test_uses.py",
        f"""
        def test_factory(worktree):
            wt = worktree({up.url!r}, "main")
            assert (wt / "README.md").read_text() == "# project\\n"

        def test_store(repo_store):
            assert repo_store.resolve({up.url!r}, "main")
        """,
    )
    cache = nobody.root / "cache"
    if where == "option":
        result = nobody.pytest(*xdist, f"--repo-cache-dir={cache}")
        source = "--repo-cache-dir"
    elif where == "PYTEST_REPO_CACHE_DIR":
        result = nobody.pytest(*xdist, PYTEST_REPO_CACHE_DIR=str(cache))
        source = "env PYTEST_REPO_CACHE_DIR"
    else:
        result = nobody.pytest(*xdist, XDG_CACHE_HOME=str(nobody.root))
        cache = nobody.root / "pytest-repoclones"
        source = "default user cache directory"
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 2 passed" in outcome_line(result)
    assert f"repoclones: cache {cache} (from {source})" in result.stdout.splitlines()
    assert (cache / "repos").is_dir()
    assert cache.stat().st_uid == UID


def test_cli_exits_2_saying_what_to_set(nobody: Nobody) -> None:
    result = nobody.run("-m", "pytest_repoclones", "list")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"pytest-repoclones: error: No cache directory: {WHY}",
        "  hint: pass --cache-dir PATH, or set PYTEST_REPO_CACHE_DIR, XDG_CACHE_HOME or HOME",
    ]
    # "~" cannot be expanded either: the same advice, no traceback.
    result = nobody.run("-m", "pytest_repoclones", "--cache-dir=~/clones", "list")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "hint: pass --cache-dir PATH" in result.stderr
    # Given a directory, it works without HOME.
    cache = nobody.root / "cache"
    result = nobody.run("-m", "pytest_repoclones", "list", PYTEST_REPO_CACHE_DIR=str(cache))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"cache: {cache} (from env PYTEST_REPO_CACHE_DIR)",
        "no cached repositories",
    ]


def test_a_relative_home_is_no_home(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative HOME made the cache relative to whatever directory pytest ran in; now it is
    no cache directory, as above (any user can run this one)."""
    monkeypatch.setenv("HOME", "home")
    monkeypatch.delenv("XDG_CACHE_HOME")
    pytester.makepyfile(
        """
        def test_plain():
            pass

        def test_factory(worktree):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1, errors=1)
    why = "HOME is not an absolute path ('home')"
    result.stdout.fnmatch_lines(
        [
            f"repoclones: cache unavailable ({why}): *; {WHAT_TO_SET}",
            f"E   *RepoClonesError: No repository cache directory: {why}",
            f"*hint: {WHAT_TO_SET}",
        ]
    )
    assert not (pytester.path / "home").exists()
