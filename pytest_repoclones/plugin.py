"""pytest hooks, options and fixtures; the logic lives in :class:`RepoStore`."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator

import pytest

from .factory import WorktreeFactory
from .settings import CACHE_DIR_ENV, Settings
from .store import RepoStore

SETTINGS_KEY = pytest.StashKey[Settings]()
STORE_KEY = pytest.StashKey[RepoStore]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("repoclones", "git worktrees from a shared clone cache")
    group.addoption(
        "--repo-cache-dir",
        dest="repo_cache_dir",
        metavar="PATH",
        help=f"Directory of the shared clone cache (env {CACHE_DIR_ENV}, ini repo_cache_dir; "
        "default: the user cache directory)",
    )
    group.addoption(
        "--repo-timeout",
        dest="repo_timeout",
        metavar="SECONDS",
        help="Time limit of each git network operation (default: 600)",
    )
    group.addoption(
        "--repo-lock-timeout",
        dest="repo_lock_timeout",
        metavar="SECONDS",
        help="How long to wait for another process holding a repository's lock (default: 900)",
    )
    parser.addini("repo_cache_dir", "Directory of the shared clone cache", default="")
    parser.addini("repo_timeout", "Time limit of each git network operation, seconds", default="")
    parser.addini(
        "repo_lock_timeout", "How long to wait for a repository's lock, seconds", default=""
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    # One id for the whole run, handed by the controller to its xdist workers, so that moving
    # names are refreshed from the remote once per run rather than once per worker.
    session_id = (workerinput or {}).get("repoclones_session") or uuid.uuid4().hex
    settings = Settings.from_config(config, session_id=session_id)
    config.stash[SETTINGS_KEY] = settings
    config.stash[STORE_KEY] = settings.make_store(notice=_notice_on_terminal)
    if workerinput is None and config.pluginmanager.hasplugin("xdist"):
        from ._xdist import XdistHooks

        config.pluginmanager.register(XdistHooks(session_id), "repoclones-xdist")


def _notice_on_terminal(message: str) -> None:
    # Lock waits happen inside fixtures, where output is captured; xdist workers inherit the
    # controller's real stderr, so this reaches the user's terminal from any process.
    logging.getLogger("pytest_repoclones").warning(message)
    print(message, file=sys.__stderr__, flush=True)


def pytest_report_header(config: pytest.Config) -> str | None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return None
    return f"repoclones: cache {settings.cache_dir} (from {settings.cache_dir_source})"


@pytest.fixture(scope="session")
def repo_store(pytestconfig: pytest.Config) -> RepoStore:
    """The session's :class:`RepoStore`: the shared clone cache behind ``worktree``."""
    return pytestconfig.stash[STORE_KEY]


@pytest.fixture
def worktree(
    repo_store: RepoStore,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorktreeFactory]:
    """Factory ``worktree(url, commit=None) -> Worktree``; every worktree is removed afterwards."""
    factory = WorktreeFactory(
        repo_store,
        lambda name: tmp_path_factory.mktemp(name, numbered=True),
        request.node.name,
    )
    yield factory
    factory.cleanup()
