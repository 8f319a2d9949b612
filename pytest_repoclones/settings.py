"""Where each setting comes from: command line, environment, ini file, or default.

Kept apart from the hooks so the report header, option errors and (later) the cache CLI show the
same value together with its source.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._git import DEFAULT_TIMEOUT
from .store import DEFAULT_LOCK_TIMEOUT, RepoStore

if TYPE_CHECKING:
    import pytest

__all__ = ["CACHE_DIR_ENV", "Settings", "default_cache_dir"]

CACHE_DIR_ENV = "PYTEST_REPO_CACHE_DIR"
OFFLINE_ENV = "PYTEST_REPO_OFFLINE"
KEEP_CHOICES = ("none", "failed", "all")


def default_cache_dir() -> Path:
    """The user cache directory: ``$XDG_CACHE_HOME/pytest-repoclones`` or ``~/.cache/...``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "pytest-repoclones"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "pytest-repoclones" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "pytest-repoclones"
    return Path.home() / ".cache" / "pytest-repoclones"


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one pytest process, each with a note of where it came from."""

    cache_dir: Path
    cache_dir_source: str
    timeout: float
    lock_timeout: float
    session_id: str | None = None
    worker: str | None = None
    reuse: bool = False
    offline: bool = False
    offline_source: str = "default"
    keep: str = "none"
    clone_filter: str | None = None
    clone_filters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, config: pytest.Config, session_id: str | None = None) -> Settings:
        import pytest

        cache_dir, source = _cache_dir_with_source(config)
        timeout = _positive_float(config, "repo_timeout", "--repo-timeout")
        lock_timeout = _positive_float(config, "repo_lock_timeout", "--repo-lock-timeout")
        workerinput = getattr(config, "workerinput", None)
        worker = workerinput.get("workerid") if workerinput else "main"
        offline, offline_source = _offline_with_source(config)
        keep = config.getoption("repo_keep", None) or config.getini("repo_keep") or "none"
        if keep not in KEEP_CHOICES:
            raise pytest.UsageError(
                f"repo_keep: expected one of {', '.join(KEEP_CHOICES)}, got {keep!r}"
            )
        clone_filter = config.getoption("repo_clone_filter", None) or (
            config.getini("repo_clone_filter") or None
        )
        clone_filters = []
        for line in config.getini("repo_clone_filters"):
            url, _, spec = str(line).strip().rpartition(" ")
            if not url.strip() or not spec:
                raise pytest.UsageError(
                    f"repo_clone_filters: expected lines 'URL FILTER', got {line!r}"
                )
            clone_filters.append((url.strip(), spec))
        _refuse_wiped_locations(config, cache_dir, source, pytest.UsageError)
        if cache_dir.exists() and not cache_dir.is_dir():
            raise pytest.UsageError(
                f"repoclones: the repository cache {cache_dir} (from {source}) is not a directory"
            )
        return cls(
            cache_dir=cache_dir,
            cache_dir_source=source,
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
            lock_timeout=lock_timeout if lock_timeout is not None else DEFAULT_LOCK_TIMEOUT,
            session_id=session_id,
            worker=worker,
            reuse=bool(config.getoption("repo_reuse", False) or config.getini("repo_reuse")),
            offline=offline,
            offline_source=offline_source,
            keep=keep,
            clone_filter=clone_filter,
            clone_filters=tuple(clone_filters),
        )

    def make_store(
        self,
        notice: Callable[[str], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> RepoStore:
        return RepoStore(
            self.cache_dir,
            notice=notice,
            progress=progress,
            timeout=self.timeout,
            lock_timeout=self.lock_timeout,
            session_id=self.session_id,
            worker=self.worker,
            reuse=self.reuse,
            offline=self.offline,
            clone_filter=self.clone_filter,
            clone_filters=dict(self.clone_filters),
        )


def _cache_dir_with_source(config: pytest.Config) -> tuple[Path, str]:
    option = config.getoption("repo_cache_dir", None)
    if option:
        return Path(option).expanduser().absolute(), "--repo-cache-dir"
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser().absolute(), f"env {CACHE_DIR_ENV}"
    ini = config.getini("repo_cache_dir")
    if ini:
        path = Path(str(ini)).expanduser()
        if not path.is_absolute():
            # Relative ini paths mean relative to the ini file, as for pytest's own paths.
            base = config.inipath.parent if config.inipath else config.rootpath
            path = base / path
        where = config.inipath.name if config.inipath else "ini"
        return path.absolute(), f"ini repo_cache_dir in {where}"
    return default_cache_dir(), "default user cache directory"


def _offline_with_source(config: pytest.Config) -> tuple[bool, str]:
    if config.getoption("repo_offline", False):
        return True, "--repo-offline"
    env = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if env:
        return env not in ("0", "false", "no", "off"), f"env {OFFLINE_ENV}"
    if config.getini("repo_offline"):
        return True, "ini repo_offline"
    return False, "default"


def _positive_float(config: pytest.Config, name: str, flag: str) -> float | None:
    import pytest

    raw = config.getoption(name, None)
    source = flag
    if raw is None:
        raw = config.getini(name) or None
        source = f"ini {name}"
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{source}: expected a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise pytest.UsageError(f"{source}: must be greater than 0, got {raw!r}")
    return value


def _refuse_wiped_locations(
    config: pytest.Config, cache_dir: Path, source: str, error: type[Exception]
) -> None:
    """pytest deletes --basetemp and may clear its own cache: a clone cache there is lost."""
    resolved = cache_dir.resolve()
    wiped: list[tuple[str, Path]] = []
    basetemp = config.option.basetemp
    if basetemp:
        wiped.append(("--basetemp", Path(basetemp)))
    cache = getattr(config, "cache", None)
    if cache is not None:
        wiped.append(("pytest's cache directory", Path(cache._cachedir)))
    for what, root in wiped:
        root = root.absolute().resolve()
        if resolved == root or root in resolved.parents:
            raise error(
                f"repoclones: the repository cache {cache_dir} (from {source}) is inside {what} "
                f"({root}), which pytest deletes; choose another --repo-cache-dir"
            )
