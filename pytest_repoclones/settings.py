"""Where each setting comes from: command line, environment, ini file, or default.

Kept apart from the hooks so the report header, option errors and (later) the cache CLI show the
same value together with its source.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._defaults import DEFAULT_LOCK_TIMEOUT, DEFAULT_TIMEOUT
from .errors import RepoClonesError

if TYPE_CHECKING:
    import pytest

__all__ = [
    "CACHE_DIR_ENV",
    "REFERENCE_DIR_ENV",
    "ProjectConfigError",
    "Settings",
    "default_cache_dir",
    "project_cache_dir",
    "resolve_cache_dir",
]

CACHE_DIR_ENV = "PYTEST_REPO_CACHE_DIR"
#: Keys of xdist's ``workerinput``, the dict the controller hands each worker: the run's
#: session id; an execnet channel to the controller for what must cross during the run (see
#: _xdist.py), which works wherever the worker runs; and facts about the controller (its
#: cache's identity, whether the worker is its child).
SESSION_ID = "repoclones_session"
CHANNEL = "repoclones_channel"
CONTROLLER = "repoclones_controller"
OFFLINE_ENV = "PYTEST_REPO_OFFLINE"
REFERENCE_DIR_ENV = "PYTEST_REPO_REFERENCE_DIR"
KEEP_CHOICES = ("none", "failed", "all")


#: What a pytest user can set instead, in the order the plugin looks at them.
PYTEST_CACHE_DIR_SETTINGS = f"--repo-cache-dir=PATH, {CACHE_DIR_ENV}, XDG_CACHE_HOME or HOME"


class _NoCacheDir(Exception):
    """Internal: there is no cache directory; the message says why."""


def default_cache_dir() -> Path:
    """The user cache directory: ``$XDG_CACHE_HOME/pytest-repoclones`` or ``~/.cache/...``.

    Raises RepoClonesError when there is none: no usable ``XDG_CACHE_HOME`` and no home
    directory (``HOME`` unset under a user id without a password entry, as in containers run
    with an arbitrary uid, or ``HOME`` not an absolute path).
    """
    try:
        return _user_cache_dir()
    except _NoCacheDir as exc:
        raise RepoClonesError(
            f"No cache directory: {exc}", hint="set the cache directory, XDG_CACHE_HOME or HOME"
        ) from None


def _user_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "pytest-repoclones"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "pytest-repoclones" / "Cache"
    home = _home_directory()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "pytest-repoclones"
    return home / ".cache" / "pytest-repoclones"


def _home_directory() -> Path:
    try:
        home = Path.home()
    except (RuntimeError, KeyError, OSError):
        # Python gives up when HOME is unset and the password database has no entry for us.
        if "HOME" not in os.environ and hasattr(os, "getuid"):
            raise _NoCacheDir(
                f"HOME is not set and user id {os.getuid()} has no entry in the password database"
            ) from None
        raise _NoCacheDir("the home directory is unknown") from None
    if not home.is_absolute():
        # A relative HOME: Python hands it back as it is, and a cache relative to the current
        # directory would scatter clones into whatever project pytest runs in.
        raise _NoCacheDir(f"HOME is not an absolute path ({os.environ.get('HOME', '')!r})")
    return home


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one pytest process, each with a note of where it came from."""

    #: None when none was given and there is no user cache directory (see ``cache_problem``).
    cache_dir: Path | None
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
    #: A seed cache new clones borrow objects from (``--repo-reference-dir``).
    reference_dir: Path | None = None
    #: (ORIGINAL, MIRROR) pairs (``--repo-mirror``, ini ``repo_mirrors``).
    mirrors: tuple[tuple[str, str], ...] = ()
    #: New entries shallow (``--repo-shallow``), or those of these URLs (``repo_shallow_urls``).
    shallow: bool = False
    shallow_urls: tuple[str, ...] = ()
    #: Check submodules out with every worktree (``--repo-submodules``, ini
    #: ``repo_submodules``); the factory's and the marker's ``submodules=`` override it.
    submodules: bool = False
    #: Why there is no cache directory. A session that never uses the plugin must still run,
    #: so this is only shown in the header and raised by the fixtures that need the cache.
    cache_problem: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config, session_id: str | None = None) -> Settings:
        import pytest

        cache_dir: Path | None
        cache_problem: str | None = None
        try:
            cache_dir, source = _cache_dir_with_source(config)
        except _NoCacheDir as exc:
            cache_dir, source, cache_problem = None, "nowhere", str(exc)
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
        clone_filters = _clone_filters(config)
        if cache_dir is not None:
            _check_cache_dir(config, cache_dir, source)
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
            clone_filters=clone_filters,
            reference_dir=_reference_dir(config),
            mirrors=_mirrors(config),
            shallow=bool(config.getoption("repo_shallow", False) or config.getini("repo_shallow")),
            shallow_urls=tuple(
                str(line).strip()
                for line in config.getini("repo_shallow_urls")
                if str(line).strip()
            ),
            submodules=bool(
                config.getoption("repo_submodules", False) or config.getini("repo_submodules")
            ),
            cache_problem=cache_problem,
        )

    def check(self) -> None:
        """Refuse now what the store would refuse at its first use (a bad clone filter)."""
        from ._inputs import check_filter

        check_filter(self.clone_filter)
        if self.clone_filters or self.mirrors:
            from .urls import parse_url  # only then: a plain suite imports no more than needed

            for url, spec in self.clone_filters:
                parse_url(url)
                check_filter(spec)
            for original, mirror in self.mirrors:
                parse_url(original)
                parse_url(mirror)
        if self.shallow_urls or (self.shallow and (self.clone_filter or self.clone_filters)):
            from ._inputs import check_shallow
            from .urls import parse_url

            keys = frozenset(parse_url(url).key for url in self.shallow_urls)
            filters = {parse_url(url).key: spec for url, spec in self.clone_filters}
            check_shallow(self.shallow, keys, self.clone_filter, filters)

    def cache_error(self) -> RepoClonesError:
        """What a test that needs the cache gets when there is none: why, and what to set."""
        return RepoClonesError(
            f"No repository cache directory: {self.cache_problem}",
            hint=f"set {PYTEST_CACHE_DIR_SETTINGS}",
        )


def resolve_cache_dir(
    option: str | os.PathLike[str] | None,
    option_name: str,
    ini: Callable[[], tuple[Path, str] | None] | None = None,
) -> tuple[Path, str]:
    """The cache directory and where it came from, for the plugin and the CLI alike: the
    option, else the environment, else (pytest only) the ini file, else the user cache
    directory. RepoClonesError if there is none (no home directory) or ``~`` cannot expand."""
    try:
        return _cache_dir(option, option_name, ini)
    except _NoCacheDir as exc:
        raise RepoClonesError(
            f"No cache directory: {exc}", hint="set the cache directory, XDG_CACHE_HOME or HOME"
        ) from None


def _cache_dir(
    option: str | os.PathLike[str] | None,
    option_name: str,
    ini: Callable[[], tuple[Path, str] | None] | None,
) -> tuple[Path, str]:
    if option:
        return _expand(os.fspath(option), option_name).absolute(), option_name
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return _expand(env, f"env {CACHE_DIR_ENV}").absolute(), f"env {CACHE_DIR_ENV}"
    found = ini() if ini is not None else None
    if found is not None:
        return found
    return _user_cache_dir(), "default user cache directory"


def _cache_dir_with_source(config: pytest.Config) -> tuple[Path, str]:
    return _cache_dir(
        config.getoption("repo_cache_dir", None), "--repo-cache-dir", lambda: _ini_cache_dir(config)
    )


def _ini_cache_dir(config: pytest.Config) -> tuple[Path, str] | None:
    ini = config.getini("repo_cache_dir")
    if ini:
        path = _expand(str(ini), "ini repo_cache_dir")
        if not path.is_absolute():
            # Relative ini paths mean relative to the ini file, as for pytest's own paths.
            base = config.inipath.parent if config.inipath else config.rootpath
            path = base / path
        where = config.inipath.name if config.inipath else "ini"
        return path.absolute(), f"ini repo_cache_dir in {where}"
    return None


#: pytest's configuration files, in the order it looks for them in each directory from the
#: current one up (pytest 9 added the two pytest.toml names), each with the section that makes
#: it count, and whether the file counts even without that section (pytest.ini and
#: pytest.toml do: pytest takes them, empty).
_PROJECT_FILES: tuple[tuple[str, str, bool], ...] = (
    ("pytest.toml", "pytest", True),
    (".pytest.toml", "pytest", True),
    ("pytest.ini", "pytest", True),
    (".pytest.ini", "pytest", True),
    ("pyproject.toml", "tool.pytest", False),
    ("tox.ini", "pytest", False),
    ("setup.cfg", "tool:pytest", False),
)


class ProjectConfigError(RepoClonesError):
    """The pytest configuration file of the project cannot be read (pytest would fail too)."""


def project_cache_dir(start: Path) -> tuple[Path, str] | None:
    """``repo_cache_dir`` of the pytest configuration pytest would use when run in ``start``.

    For the cache CLI, which has no pytest.Config: the first file walking up from ``start``
    that has a pytest section, as pytest's own search does (without test paths given); a
    relative value is relative to that file's directory, as the plugin reads it. None when
    that file does not set it, or there is none. ProjectConfigError if it cannot be parsed.
    """
    for directory in (start, *start.parents):
        for name, section, always in _PROJECT_FILES:
            path = directory / name
            try:
                exists = path.is_file()
            except OSError:  # a directory we may not search: as if nothing were there
                exists = False
            if not exists:
                continue
            found = _read_project_file(path, section, always)
            if found is None:
                continue  # no pytest section: pytest looks further too
            table, value = found
            if not value:
                return None  # this file is pytest's configuration, and it does not set it
            where = f"ini repo_cache_dir in {path} [{table}]"
            resolved = _expand(value, where)
            if not resolved.is_absolute():
                resolved = directory / resolved
            return resolved.absolute(), where
    return None


def _read_project_file(path: Path, section: str, always: bool) -> tuple[str, str] | None:
    """(the section found, its ``repo_cache_dir`` or "") if ``path`` is pytest's configuration
    file, else None."""
    if path.suffix == ".toml":
        return _read_toml(path, section, always)
    import iniconfig  # pytest's own ini parser (a dependency of pytest): the same reading

    try:
        parsed = iniconfig.IniConfig(str(path))
    except (iniconfig.ParseError, OSError, UnicodeDecodeError) as exc:
        raise ProjectConfigError(f"cannot read the pytest configuration {path}: {exc}") from None
    if section not in parsed:
        return (section, "") if always else None
    return section, str(parsed[section].get("repo_cache_dir", "") or "")


def _read_toml(path: Path, section: str, always: bool) -> tuple[str, str] | None:
    # tomllib is in the standard library from 3.11; on 3.10 pytest itself depends on tomli,
    # the same parser. Imported by name, so that mypy (checking for 3.10) needs neither's
    # stubs. Were neither importable, TOML files are skipped: the search goes on upward,
    # where pytest would have stopped; passing --cache-dir is the way out then.
    toml = None
    for module in ("tomllib", "tomli"):
        try:
            toml = importlib.import_module(module)
            break
        except ImportError:
            continue
    if toml is None:
        return None
    try:
        document = toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise ProjectConfigError(f"cannot read the pytest configuration {path}: {exc}") from None
    table: object = document
    for part in section.split("."):
        table = table.get(part) if isinstance(table, dict) else None
    if not isinstance(table, dict):
        return (section, "") if always else None
    if section == "tool.pytest":
        # pytest 9's native [tool.pytest], or the older [tool.pytest.ini_options].
        ini_options = table.get("ini_options")
        if isinstance(ini_options, dict) and "repo_cache_dir" not in table:
            return f"{section}.ini_options", _toml_string(ini_options.get("repo_cache_dir"))
        if not table:
            return None
    return section, _toml_string(table.get("repo_cache_dir"))


def _toml_string(value: object) -> str:
    return "" if value is None else str(value)


def _expand(path: str, source: str) -> Path:
    """``path`` with a leading ``~`` expanded; _NoCacheDir naming ``source`` if it cannot be."""
    try:
        return Path(path).expanduser()
    except (RuntimeError, KeyError, OSError):  # "~" or "~user" with no home directory
        raise _NoCacheDir(f"{source} is {path!r} and the home directory is unknown") from None


def _clone_filters(config: pytest.Config) -> tuple[tuple[str, str], ...]:
    import pytest

    filters = []
    for line in config.getini("repo_clone_filters"):
        url, _, spec = str(line).strip().rpartition(" ")
        if not url.strip() or not spec:
            raise pytest.UsageError(
                f"repo_clone_filters: expected lines 'URL FILTER', got {line!r}"
            )
        filters.append((url.strip(), spec))
    return tuple(filters)


def _reference_dir(config: pytest.Config) -> Path | None:
    """--repo-reference-dir, else $PYTEST_REPO_REFERENCE_DIR, else ini repo_reference_dir (a
    relative ini path is relative to the ini file, as pytest's own paths are)."""
    given = config.getoption("repo_reference_dir", None) or os.environ.get(REFERENCE_DIR_ENV)
    if given:
        return Path(given).expanduser().absolute()
    ini = config.getini("repo_reference_dir")
    if not ini:
        return None
    base = config.inipath.parent if config.inipath else Path.cwd()
    return (base / Path(str(ini)).expanduser()).absolute()


def _mirrors(config: pytest.Config) -> tuple[tuple[str, str], ...]:
    import pytest

    lines = [*(config.getoption("repo_mirror", None) or []), *config.getini("repo_mirrors")]
    if not lines:
        return ()  # and nothing more imported: a plain suite pays for no URL parsing
    from ._mirrors import parse_mirror_rule

    try:
        return tuple(parse_mirror_rule(str(line)) for line in lines if str(line).strip())
    except RepoClonesError as exc:
        raise pytest.UsageError(f"repo_mirrors / --repo-mirror: {exc}") from None


def _check_cache_dir(config: pytest.Config, cache_dir: Path, source: str) -> None:
    import pytest

    _refuse_wiped_locations(config, cache_dir, source, pytest.UsageError)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise pytest.UsageError(
            f"repoclones: the repository cache {cache_dir} (from {source}) is not a directory"
        )


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
        source = f"ini {name}"
        try:
            # A float already where pytest has the "float" ini type (see plugin.addini), a
            # string on older pytest; None or "" when unset.
            raw = config.getini(name)
        # pytest's own conversion refused the value: a UsageError from pytest 9.2, a bare
        # TypeError or ValueError before; either way, say which setting and what it expects.
        except (TypeError, ValueError, pytest.UsageError) as exc:
            raise pytest.UsageError(f"{source}: expected a number of seconds ({exc})") from None
        if raw == "":  # unset under pytest < 8.4, which registers it as a string
            return None
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
