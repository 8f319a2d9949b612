from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from upstream import IDENTITY, Upstream

from pytest_repoclones import RepoStore


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the developer's git config or writes to the real user cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg-cache"))
    monkeypatch.delenv("PYTEST_REPO_CACHE_DIR", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_TRACE2_EVENT"):
        monkeypatch.delenv(name, raising=False)
    for key, value in IDENTITY.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def make_upstream(tmp_path: Path) -> Callable[..., Upstream]:
    """Factory of bare upstream repositories under the test's tmp dir."""
    root = tmp_path / "upstreams"

    def make(name: str = "project", default_branch: str = "main") -> Upstream:
        return Upstream(root / f"{name}.git", default_branch)

    return make


@pytest.fixture
def upstream(make_upstream: Callable[..., Upstream]) -> Upstream:
    """A small project: main with three commits, tags v1.0 (annotated) and v1.1, a feature branch
    and a commit reachable only from a pull-request ref."""
    up = make_upstream("project")
    c1 = up.commit({"README.md": "# project\n", "src/app.py": "VERSION = 1\n"}, "initial")
    up.tag("v1.0", c1, message="release 1.0")
    c2 = up.commit({"src/app.py": "VERSION = 2\n", "run.sh": ("#!/bin/sh\necho hi\n", "100755")})
    up.tag("v1.1", c2)
    up.commit({"CHANGES": "3\n"}, "third")
    up.commit({"feature.txt": "wip\n"}, "feature work", branch="feature", parent=c1)
    up.commit({"pr.txt": "pull request\n"}, "pr", parent=c2, ref="refs/pull/7/head")
    return up


@pytest.fixture
def big_upstream(make_upstream: Callable[..., Upstream]) -> Upstream:
    """More than 100 objects, so the cached clone keeps a pack instead of loose objects."""
    up = make_upstream("big")
    up.commit({f"dir/file{i:03}.txt": f"content {i}\n" * 20 for i in range(150)}, "150 files")
    up.commit({"README.md": "big\n"}, "readme")
    return up


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(cache_dir: Path) -> RepoStore:
    return RepoStore(cache_dir, timeout=60, lock_timeout=60)


@pytest.fixture
def trace_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every git process started from now on (in any process) logs its argv here."""
    path = tmp_path / "trace2.jsonl"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(path))
    return path
