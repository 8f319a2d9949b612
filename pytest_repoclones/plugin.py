"""pytest hooks, options and fixtures; the logic lives in :class:`RepoStore`."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shlex
import sys
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pytest

from .errors import RepoClonesError
from .settings import (
    CACHE_DIR_ENV,
    CHANNEL,
    CONTROLLER,
    KEEP_CHOICES,
    OFFLINE_ENV,
    PYTEST_CACHE_DIR_SETTINGS,
    REFERENCE_DIR_ENV,
    SESSION_ID,
    Settings,
)

# Everything else is imported where it is first needed: pytest loads this module in every run,
# and a suite that never asks for a worktree must not pay for the store and what it imports.
if TYPE_CHECKING:
    from ._xdist import FailureShare, WorkerLink
    from .factory import WorktreeFactory
    from .prefetch import KeyPair, Unfetched
    from .store import RepoStore
    from .worktree import Worktree


class StoreSlot:
    """The session's store, made on first need (a worktree, a prefetch, a summary to write)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self._config = config
        self.settings = settings
        self._store: RepoStore | None = None
        self._failures_share: FailureShare | None = None

    @property
    def available(self) -> bool:
        """Whether there is a cache directory at all (HOME may be unset, see settings.py)."""
        return self.settings.cache_dir is not None

    def peek(self) -> RepoStore | None:
        """The store if something made it already."""
        return self._store

    def get(self) -> RepoStore:
        """The store, made now if needed; the settings' error if there is no cache."""
        if self._store is None:
            from .store import RepoStore

            terminal = _Terminal(self._config)
            store = RepoStore.from_settings(
                self.settings,
                notice=terminal.warn,
                progress=terminal if self._config.get_verbosity() >= 0 else None,
            )
            if self._failures_share is not None:
                self._failures_share.attach(store.remote_failures)
            self._store = store
        return self._store

    def share_failures(self, share: FailureShare) -> None:
        """Tell the run's other xdist processes of remotes that did not answer, and be told."""
        self._failures_share = share
        if self._store is not None:
            share.attach(self._store.remote_failures)


SETTINGS_KEY = pytest.StashKey[Settings]()
STORE_KEY = pytest.StashKey[StoreSlot]()
FAILED_KEY = pytest.StashKey[bool]()
FACTORY_KEY = pytest.StashKey["WorktreeFactory"]()
PENDING_KEY = pytest.StashKey["WorktreeFactory"]()
LINK_KEY = pytest.StashKey["WorkerLink"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    # pytest's own "Environment variables" list in --help is fixed, so the variables the plugin
    # reads are named in the group's title, which --help prints above the options.
    group = parser.getgroup(
        "repoclones",
        f"git worktrees from a shared clone cache (environment: {CACHE_DIR_ENV}=PATH, "
        f"{OFFLINE_ENV}=1)",
    )
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
    group.addoption(
        "--repo-reuse",
        dest="repo_reuse",
        action="store_true",
        default=None,
        help="Park worktrees at teardown and move them to the next test's commit (faster)",
    )
    group.addoption(
        "--repo-offline",
        dest="repo_offline",
        action="store_true",
        default=None,
        help=f"Never contact a remote; use only what the cache holds (env {OFFLINE_ENV})",
    )
    group.addoption(
        "--repo-submodules",
        dest="repo_submodules",
        action="store_true",
        default=None,
        help="Check out every submodule with each worktree, each from its own cache entry "
        "(ini repo_submodules)",
    )
    group.addoption(
        "--repo-keep",
        dest="repo_keep",
        choices=KEEP_CHOICES,
        help="Keep the worktrees of failed tests, or of all tests (default: none)",
    )
    group.addoption(
        "--repo-clone-filter",
        dest="repo_clone_filter",
        metavar="FILTER",
        help="Make new clones partial, e.g. blob:none (blobs are fetched when checked out)",
    )
    group.addoption(
        "--repo-reference-dir",
        dest="repo_reference_dir",
        metavar="PATH",
        help=f"A seed cache (another machine's, read-only is fine) whose objects new clones "
        f"borrow (env {REFERENCE_DIR_ENV}, ini repo_reference_dir)",
    )
    group.addoption(
        "--repo-mirror",
        dest="repo_mirror",
        metavar="ORIGINAL=MIRROR",
        action="append",
        help="Fetch ORIGINAL (a URL or URL prefix) from MIRROR first, falling back to ORIGINAL "
        "(repeatable; ini repo_mirrors)",
    )
    parser.addini("repo_cache_dir", "Directory of the shared clone cache", default="")
    group.addoption(
        "--repo-shallow",
        dest="repo_shallow",
        action="store_true",
        default=None,
        help="New cache entries hold only the commits asked for, fetched with depth 1 "
        "(fast cold starts; history is fetched when needed; ini repo_shallow_urls per URL)",
    )
    parser.addini("repo_shallow", "New cache entries are shallow", type="bool", default=False)
    parser.addini(
        "repo_shallow_urls", "Repositories whose new entries are shallow", type="linelist"
    )
    parser.addini("repo_reference_dir", "A seed cache new clones borrow objects from", default="")
    parser.addini("repo_mirrors", "Mirrors, lines of 'ORIGINAL=MIRROR'", type="linelist")
    # A number where pytest has the type, so that pytest 9's native [tool.pytest] table takes
    # `repo_timeout = 5`; None when unset, so an explicit 0 is still refused as "not > 0".
    seconds = seconds_ini_type(pytest.version_tuple)
    parser.addini(
        "repo_timeout",
        "Time limit of each git network operation, seconds",
        type=seconds,
        default=None,
    )
    parser.addini(
        "repo_lock_timeout",
        "How long to wait for a repository's lock, seconds",
        type=seconds,
        default=None,
    )
    parser.addini("repo_reuse", "Reuse worktrees between tests", type="bool", default=False)
    parser.addini("repo_offline", "Never contact a remote", type="bool", default=False)
    parser.addini(
        "repo_submodules", "Check out submodules with every worktree", type="bool", default=False
    )
    parser.addini("repo_keep", "Keep worktrees: none, failed or all", default="")
    parser.addini("repo_clone_filter", "Partial-clone filter for new clones", default="")
    parser.addini(
        "repo_clone_filters", "Per-repository clone filters, lines of 'URL FILTER'", type="linelist"
    )
    # CI recipes: the key a cache step stores the clone cache under (prefetch.cache_key).
    group.addoption(
        "--repo-cache-key",
        dest="repo_cache_key",
        action="store_true",
        default=False,
        help="Print 'repoclones-key: <hex>' made from the commits markers declare, to key a CI "
        "cache (with --collect-only nothing is fetched; -v lists them)",
    )


def seconds_ini_type(version: tuple[int | str, ...]) -> Literal["float", "string"]:
    """The ini type of a number of seconds under pytest ``version``.

    ``addini(type="float")`` exists from pytest 8.4 (changelog #11381); pytest 8.0 to 8.3 assert
    on it (and under ``python -O`` would fail later, in getini), hence a version check rather
    than trying. With "string", settings.py converts the value itself.
    """
    major, minor = (int(part) for part in version[:2])
    return "float" if (major, minor) >= (8, 4) else "string"


def spaced_cache_dir_option(args: Sequence[str]) -> str | None:
    """The PATH of ``--repo-cache-dir PATH`` written as two arguments, else None.

    pytest picks its rootdir and ini file from the non-option arguments before any plugin's
    options are known, so it takes such a PATH for a test path: with an existing PATH the run
    may lose the project's configuration. Only the ``=`` form is safe.
    """
    for flag, value in itertools.pairwise(args):
        if flag == "--":
            break
        if flag == "--repo-cache-dir":
            return value
    return None


def _warn_spaced_cache_dir(config: pytest.Config) -> None:
    # PYTEST_ADDOPTS is prepended to the arguments pytest looks for paths in, so it counts too.
    args = [
        *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
        *config.invocation_params.args,
    ]
    path = spaced_cache_dir_option(args)
    if path is None:
        return
    config.issue_config_time_warning(
        pytest.PytestConfigWarning(
            f"repoclones: write --repo-cache-dir={path} (with '='), not '--repo-cache-dir "
            f"{path}': pytest chooses its rootdir and ini file before it knows this option, "
            f"takes {path} for a test path, and may have used the wrong configuration for "
            f"this run (rootdir {config.rootpath}, ini file {config.inipath or 'none'}). "
            f"{CACHE_DIR_ENV}={path} works too."
        ),
        stacklevel=2,
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "worktree(url, commit=None, *, sparse=None, isolate=False, history=True, "
        "submodules=None): the worktree the repo_worktree fixture gives; a list of commits "
        "parametrizes the test over them",
    )
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # workers get their arguments from the controller, which warns
        _warn_spaced_cache_dir(config)
    elif (workerinput.get(CONTROLLER) or {}).get("local", True):
        from ._processes import die_with_parent

        # A SIGKILLed controller must not leave its workers making worktrees (and starting
        # git in the cache) for seconds; their git dies with them in turn. Not a worker run
        # by a socket server or over ssh: its parent is not the controller, and the server
        # would die with whatever started it.
        die_with_parent()
    # One id for the whole run, handed by the controller to its xdist workers, so that moving
    # names are refreshed from the remote once per run rather than once per worker.
    session_id = (workerinput or {}).get(SESSION_ID) or uuid.uuid4().hex
    settings = Settings.from_config(config, session_id=session_id)
    config.stash[SETTINGS_KEY] = settings
    try:
        settings.check()  # option mistakes are usage errors now, not at the first worktree
    except RepoClonesError as exc:
        raise pytest.UsageError(f"repoclones: {exc}") from None
    # No cache directory (HOME unset under an arbitrary uid): the session goes on; only the
    # fixtures that need the cache fail, and the header says why.
    slot = config.stash[STORE_KEY] = StoreSlot(config, settings)
    if workerinput is not None and workerinput.get(CHANNEL) is not None:
        from ._xdist import WorkerLink

        # What must cross during the run goes over this channel (see _xdist.py).
        controller = workerinput.get(CONTROLLER) or {}
        link = WorkerLink(workerinput[CHANNEL], controller, settings.cache_dir)
        config.stash[LINK_KEY] = link
        slot.share_failures(link.failures)
    if workerinput is None and config.pluginmanager.hasplugin("xdist"):
        from ._xdist import XdistHooks

        say_key = _key_writer(config) if config.getoption("repo_cache_key", False) else None
        hooks = XdistHooks(session_id, slot, report=_Terminal(config), say_key=say_key)
        config.pluginmanager.register(hooks, "repoclones-xdist")


def pytest_unconfigure(config: pytest.Config) -> None:
    slot = config.stash.get(STORE_KEY, None)
    store = slot.peek() if slot is not None else None
    if store is not None:
        store.close()  # worktrees parked by --repo-reuse


class _Terminal:
    """Lines for the user's terminal from inside fixtures, where output is captured.

    Capture is suspended for the write; xdist workers inherit the controller's stderr, so
    the line reaches the terminal from any process.
    """

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def __call__(self, message: str) -> None:
        capman = self._config.pluginmanager.getplugin("capturemanager")
        context = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with context:
            print(message, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        logging.getLogger("pytest_repoclones").warning(message)
        self(message)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return None
    if settings.cache_dir is None:
        return [
            f"repoclones: cache unavailable ({settings.cache_problem}): tests that use "
            f"worktree or repo_store will fail; set {PYTEST_CACHE_DIR_SETTINGS}"
        ]
    lines = [f"repoclones: cache {settings.cache_dir} (from {settings.cache_dir_source})"]
    modes = []
    if settings.offline:
        modes.append(f"offline (from {settings.offline_source})")
    if settings.reuse:
        modes.append("reuse")
    if settings.submodules:
        modes.append("submodules")
    if settings.keep != "none":
        modes.append(f"keep={settings.keep}")
    if settings.clone_filter:
        modes.append(f"clone filter {settings.clone_filter}")
    if modes:
        lines.append(f"repoclones: {', '.join(modes)}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("worktree") is None:
        return  # most tests: nothing to import or do
    from . import markers

    markers.parametrize_commits(metafunc)


@pytest.hookimpl(tryfirst=True)  # under xdist: before the worker reports its collection done
def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    slot = config.stash[STORE_KEY]
    key = bool(config.getoption("repo_cache_key", False))
    if not key and (
        not slot.available or not any(i.get_closest_marker("worktree") for i in session.items)
    ):
        return  # no cache (the tests that need one say why), or nothing declared
    from . import prefetch

    wanted = prefetch.declared(session.items)
    link = config.stash.get(LINK_KEY, None)
    # Under xdist the controller says the key, and prefetches for a worker sharing its cache
    # before it schedules any test; a worker with a cache of its own warms it now.
    # The ini default decides whether a marker that does not say wants submodules.
    pairs = prefetch.key_pairs(wanted, submodules=slot.settings.submodules) if key else None
    if link is not None and link.declare(wanted, pairs):
        return
    if key and config.option.collectonly:
        return  # a CI step computing its cache key, maybe before restoring the cache: no fetch
    if wanted and slot.available:
        report = link.unfetched if link is not None else _terminal_report(config)
        prefetch.prefetch(slot.get(), wanted, report=report)


def _terminal_report(config: pytest.Config) -> Callable[[Unfetched], None]:
    terminal = _Terminal(config)
    return lambda failure: terminal(failure.line)


def pytest_report_collectionfinish(
    config: pytest.Config, items: Sequence[pytest.Item]
) -> list[str] | None:
    if not config.getoption("repo_cache_key", False) or hasattr(config, "workerinput"):
        return None  # under xdist the controller says it, from what a worker collected
    from . import prefetch

    # Printed by pytest after "collected N items", and before the test ids with -q.
    submodules = config.stash[SETTINGS_KEY].submodules
    pairs = prefetch.key_pairs(prefetch.declared(items), submodules=submodules)
    return prefetch.key_lines(pairs, verbose=config.get_verbosity() > 0)


def _key_writer(config: pytest.Config) -> Callable[[list[KeyPair]], None]:
    """On the xdist controller: prints the CI cache key on standard output, where a CI step
    reads it (the pairs too with -v)."""

    def write(pairs: list[KeyPair]) -> None:
        from .prefetch import key_lines

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        lines = key_lines(pairs, verbose=config.get_verbosity() > 0)
        if reporter is None:
            print("\n".join(lines), flush=True)
            return
        if reporter._tw.width_of_current_line:
            reporter._tw.line()  # after xdist's status, rewritten in place on a terminal
        for line in lines:
            reporter.write_line(line)

    return write


def _send_counters(config: pytest.Config) -> None:
    """Counters so far, to the xdist controller, for the summary in case this worker crashes
    before it sends its final ones (a few hundred bytes, when they changed)."""
    link: WorkerLink | None = config.stash.get(LINK_KEY, None)
    store = config.stash[STORE_KEY].peek()
    if link is None or store is None:
        return  # not an xdist worker, or no worktree made yet
    from . import summary

    link.counters(summary.collect(store, cache=link.cache_label))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _send_counters(item.config)
    keep = item.config.stash[SETTINGS_KEY].keep
    factory = item.stash.get(FACTORY_KEY, None)
    if report.when == "teardown":
        pending = item.stash.get(PENDING_KEY, None)
        if pending is not None:
            del item.stash[PENDING_KEY]
            _settle_pending(pending, report)
        return report
    first_failure = report.failed and not item.stash.get(FAILED_KEY, False)
    if report.failed:
        item.stash[FAILED_KEY] = True
    # The section goes on the report that failed (setup or call), or, with keep=all, on the
    # call report; the fixture's teardown has not run yet, so factory.made is complete.
    passed_call = report.when == "call" and not report.failed
    if (
        factory is not None
        and keep != "none"
        and (first_failure or (keep == "all" and passed_call))
    ):
        _show_kept(report, factory.made)
    return report


def _show_kept(report: pytest.TestReport, worktrees: list[Worktree]) -> None:
    """Where to look: the failure report lists every worktree the test keeps."""
    if worktrees:
        lines = (f"{wt.path}  (branch {wt.branch}, commit {wt.commit})" for wt in worktrees)
        report.sections.append(("repoclones: kept worktrees", "\n".join(lines)))


def _settle_pending(factory: WorktreeFactory, report: pytest.TestReport) -> None:
    """--repo-keep=failed, for a test that passed until teardown: only now, with the teardown
    report made, is it known whether another fixture's teardown failed it."""
    if report.failed:
        _show_kept(report, factory.made)
        factory.cleanup(keep=True)
        return
    try:
        factory.cleanup(keep=False)
    except RepoClonesError as exc:
        report.outcome = "failed"
        report.longrepr = f"repoclones: {exc}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    slot = config.stash[STORE_KEY]
    if slot.peek() is None and config.pluginmanager.get_plugin("repoclones-xdist") is None:
        return  # no worktree was made in this run
    from . import summary

    # Workers may have caches of their own even where the controller has none.
    summary.write(terminalreporter, config, slot.peek(), slot.settings.cache_dir)


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from . import summary
        from ._xdist import STATS_KEY

        # Plain builtins only: xdist sends this to the controller through execnet; an empty
        # list when this worker made no worktree. A cache the controller does not share is
        # measured here: the controller cannot see it.
        store = session.config.stash[STORE_KEY].peek()
        link = session.config.stash.get(LINK_KEY, None)
        label = link.cache_label if link is not None else None
        workeroutput[STATS_KEY] = (
            [] if store is None else summary.collect(store, cache=label, sizes=label is not None)
        )


@pytest.fixture(scope="session")
def repo_store(pytestconfig: pytest.Config) -> RepoStore:
    """The session's :class:`RepoStore`: the shared clone cache behind ``worktree``."""
    __tracebackhide__ = True
    slot = pytestconfig.stash[STORE_KEY]
    if not slot.available:
        # Raised once per session, then pytest reports it for every test that asks.
        raise pytestconfig.stash[SETTINGS_KEY].cache_error()
    return slot.get()


@pytest.fixture
def worktree(
    repo_store: RepoStore,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorktreeFactory]:
    """Factory ``worktree(url, commit=None, *, sparse=None, isolate=False, history=True,
    submodules=None) -> Worktree``: a new worktree of ``commit`` of ``url`` (default: the
    remote's default branch) on a new branch; ``sparse=["src/", "docs/index.md"]`` checks out
    only those paths; ``isolate=True`` gives a repository of its own holding only the commit
    and its ancestors (no other branch, tag or remote); ``history=False`` with it, one new
    commit of the files and no history; ``submodules=True`` (default: --repo-submodules, ini
    repo_submodules) checks out every submodule, recursively, at the commits it records.
    Call it as often as needed; every worktree is removed at teardown.

    ``commit`` is a full or abbreviated object name, a branch, a tag or a ref such as
    ``refs/pull/7/head``. The result is a :class:`Worktree` (``path``, ``url``, ``commit``,
    ``branch``), usable wherever a path is.
    """
    from .factory import WorktreeFactory

    factory = WorktreeFactory(
        repo_store,
        lambda name: tmp_path_factory.mktemp(name, numbered=True),
        request.node.name,
    )
    request.node.stash[FACTORY_KEY] = factory
    yield factory
    keep = request.config.stash[SETTINGS_KEY].keep
    failed = request.node.stash.get(FAILED_KEY, False)
    if keep == "failed" and not failed:
        # A later fixture teardown may still fail the test: decide in its teardown report.
        request.node.stash[PENDING_KEY] = factory
        return
    factory.cleanup(keep=keep == "all" or (keep == "failed" and failed))


@pytest.fixture
def repo_worktree(request: pytest.FixtureRequest, worktree: WorktreeFactory) -> Worktree:
    """The worktree declared by ``@pytest.mark.worktree(url, commit)`` on the test."""
    __tracebackhide__ = True
    from . import markers

    url, commit, options = markers.declared(request)
    return worktree(url, commit, **options)
