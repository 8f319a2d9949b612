"""RepoStore: the public facade over a cache of bare clones shared by every process.

It parses what the caller gives, names the repository and commit in every error, and hands
the work to one object per idea, each in a module of its own:

    _layout.py      the cache directory: paths, trash, leftovers, read-only, format marker
    _ownership.py   who owns a worktree registration, decided by a lock (one liveness rule)
    _runner.py      running git: environment, time limit, time counted, stale git locks
    _remote.py      the upstream: the only place that touches the network
    _entry.py       cache entries: clone and publish, first use, health and repair, refresh
    _resolve.py     revisions to commits, fetching only what is missing
    _registry.py    worktree registrations: branches, atomic admin entries, pruning
    _checkouts.py   making and removing worktrees (and standalone repositories)
    _reuse.py       parked worktrees moved to the next commit (``reuse``)
    _submodules.py  what a commit records of its submodules, and the checks on that input
    _submodule_checkouts.py  submodules checked out from entries of their own (``submodules``)

Refs inside a cached repository:

    refs/remotes/origin/*     upstream branches
    refs/repoclones/remote-head  the remote's HEAD (its default branch's commit)
    refs/tags/*               upstream tags
    refs/repoclones/pins/<id> commits fetched by object name, pinned so nothing drops them
    refs/repoclones/named/*   other refs asked for by name (refs/pull/7/head)
    refs/heads/repoclones/... one branch per live worktree, deleted at removal
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ._checkouts import Checkouts
from ._defaults import DEFAULT_LOCK_TIMEOUT, DEFAULT_TIMEOUT
from ._entry import CacheEntries
from ._files import (
    leave_directory,
)
from ._git import GitResult
from ._inputs import check_filter, check_seconds, check_shallow
from ._layout import (
    CacheLayout,
)
from ._lock import RepoLock
from ._mirrors import NOTICES_DIR, Mirrors
from ._ownership import Owner
from ._reference import ReferenceCache
from ._registry import BRANCH_PREFIX, WorktreeRegistry
from ._remote import Remote
from ._remote_failures import RemoteFailures
from ._resolve import Resolver
from ._runner import GitRunner
from .errors import (
    CacheWriteError,
    InvalidInputError,
    RepoClonesError,
)
from .revisions import parse_revision
from .settings import Settings
from .stats import RepoStats
from .urls import DEFAULT_PROTOCOLS, RepoURL, parse_url, redact
from .worktree import Worktree

if TYPE_CHECKING:
    import pytest

__all__ = ["RepoStore"]

log = logging.getLogger("pytest_repoclones")

_T = TypeVar("_T")


class RepoStore:
    """A cache of bare clones shared by all processes, handing out worktrees at exact commits.

    Usable without pytest: ``RepoStore("~/.cache/x").add_worktree(url, "v1.0", "/tmp/wt")``.
    One instance is one session: branches and the default branch are refreshed from the remote
    at most once per repository per ``session_id`` (shared by every pytest-xdist worker).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        session_id: str | None = None,
        worker: str | None = None,
        protocols: Iterable[str] = DEFAULT_PROTOCOLS,
        notice: Callable[[str], None] | None = None,
        reuse: bool = False,
        offline: bool = False,
        clone_filter: str | None = None,
        clone_filters: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        reference_dir: str | os.PathLike[str] | None = None,
        mirrors: Iterable[tuple[str, str]] | Mapping[str, str] | None = None,
        shallow: bool = False,
        shallow_urls: Iterable[str] = (),
        submodules: bool = False,
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self.timeout = check_seconds("timeout", timeout)
        self.lock_timeout = check_seconds("lock_timeout", lock_timeout)
        if isinstance(protocols, str):
            raise InvalidInputError("protocols must be a list of names, not one string")
        self.session_id = session_id or uuid.uuid4().hex
        self.worker = worker or f"p{os.getpid()}"
        self.protocols = tuple(protocols)
        self._notice = notice
        #: Receives progress lines of clones and fetches that run longer than two seconds.
        self._progress = progress
        #: Park removed worktrees and move them to the next commit asked for (same repository).
        self.reuse = reuse
        #: Never contact a remote: only what the cache holds.
        self.offline = offline
        #: Check submodules out with every worktree unless ``add_worktree`` says otherwise.
        self.submodules = bool(submodules)
        self.clone_filter = check_filter(clone_filter)
        self._clone_filters = {
            parse_url(url, self.protocols).key: check_filter(spec)
            for url, spec in (clone_filters or {}).items()
        }
        #: New entries hold only the commits asked for, depth 1 (all, or these URLs'; see
        #: _shallow.py); an entry keeps what it was made as.
        self.shallow = shallow
        self._shallow_keys = frozenset(parse_url(url, self.protocols).key for url in shallow_urls)
        check_shallow(self.shallow, self._shallow_keys, self.clone_filter, self._clone_filters)
        #: A seed cache whose objects new clones borrow (git alternates); never written.
        self.reference = ReferenceCache(reference_dir)
        self._mirror_rules = mirrors.items() if isinstance(mirrors, Mapping) else (mirrors or ())
        self._mutex = threading.Lock()
        self._locks: dict[str, RepoLock] = {}
        self.layout = CacheLayout(self.cache_dir)
        #: Remotes that did not answer in this session fail at once afterwards.
        self.remote_failures = RemoteFailures()
        #: Counters per repository (cache key), for this process only.
        self.stats: dict[str, RepoStats] = {}
        self._wire()

    def _wire(self) -> None:
        """The objects behind the facade, each handed what it needs (no I/O yet)."""
        #: This process's claim on its worktree registrations (see _ownership.py).
        self._owner = Owner(self.cache_dir)
        self._mirrors = Mirrors(
            self._mirror_rules,
            self.protocols,
            notices=self.cache_dir / NOTICES_DIR,
            session_id=self.session_id,
            warn=self._notice,
        )
        self._runner = GitRunner(self.protocols, self.timeout, self.stats, self._mutex)
        self._registry = WorktreeRegistry(self.cache_dir, self._runner, self._owner)
        self._entries = CacheEntries(
            self.layout,
            self._runner,
            self._registry,
            session_id=self.session_id,
            offline=self.offline,
            clone_filter=self.clone_filter,
            clone_filters=self._clone_filters,
            lock=self._lock,
            remote=self._remote,
            stats=self._stats,
            drop_parked=self._drop_parked,
            mutex=self._mutex,
            reference=self.reference,
            warn=self._notice,
            shallow=self.shallow,
            shallow_keys=self._shallow_keys,
        )
        self._resolver = Resolver(self._entries, self._runner, self._lock)
        self._checkouts = Checkouts(
            self.layout,
            self._runner,
            self._registry,
            self._entries,
            self._resolver,
            self._owner,
            lock_by_key=self._lock_by_key,
            remote=self._remote,
            stats=self._stats,
            new_branch_name=self.new_branch_name,
            offline=self.offline,
            reuse=self.reuse,
        )
        self._parking = self._checkouts.parking

    @classmethod
    def from_config(cls, config: pytest.Config) -> RepoStore:
        """Build the store a pytest session uses, from its options, env and ini."""
        return cls.from_settings(Settings.from_config(config))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        notice: Callable[[str], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> RepoStore:
        """The store that resolved settings describe (RepoClonesError without a cache)."""
        if settings.cache_dir is None:
            raise settings.cache_error()
        return cls(
            settings.cache_dir,
            notice=notice,
            progress=progress,
            timeout=settings.timeout,
            lock_timeout=settings.lock_timeout,
            session_id=settings.session_id,
            worker=settings.worker,
            reuse=settings.reuse,
            offline=settings.offline,
            clone_filter=settings.clone_filter,
            clone_filters=dict(settings.clone_filters),
            reference_dir=settings.reference_dir,
            mirrors=settings.mirrors,
            shallow=settings.shallow,
            shallow_urls=settings.shallow_urls,
            submodules=settings.submodules,
        )

    def __repr__(self) -> str:
        return f"RepoStore({str(self.cache_dir)!r})"

    # -- public API ------------------------------------------------------------------------

    def clone(self, url: str | os.PathLike[str]) -> Path:
        """Make sure the cached clone of ``url`` exists; return its git directory."""
        __tracebackhide__ = True  # its arguments may hold a secret
        repo = self._parse_url(url)
        with _context(repo, None):
            return self._entries.ensure(repo)

    def resolve(
        self, url: str | os.PathLike[str], commit: str | None = None, *, submodules: bool = False
    ) -> str:
        """Full object name of the commit ``commit`` names, fetching only if needed.

        With ``submodules``, also clone every submodule that commit records, recursively, and
        fetch the commits it records for them: what a worktree with submodules will need
        (prefetching does this for markers that ask for submodules).
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        repo = self._parse_url(url)
        with _context(repo, commit):
            revision = parse_revision(commit)
            sha = self._entries.rebuilding_once(
                repo,
                commit,
                lambda: self._resolver.resolve(repo, self._entries.ensure(repo), revision),
            )
            if submodules:
                self._checkouts.submodules.warm(repo, self._git_dir(repo), sha)
            return sha

    def add_worktree(
        self,
        url: str | os.PathLike[str],
        commit: str | None,
        path: str | os.PathLike[str],
        branch: str | None = None,
        *,
        sparse: Sequence[str] | None = None,
        isolate: bool = False,
        history: bool = True,
        submodules: bool | None = None,
    ) -> Worktree:
        """Check out ``commit`` of ``url`` into a new worktree at ``path`` on a new branch.

        ``path`` must not exist or be an empty directory. Without ``branch``, a unique
        ``repoclones/<worker>/wt-<random>`` branch is made. ``sparse`` lists the only paths
        to check out (directories end with ``/``; cone mode when all are directories).
        ``isolate`` makes a repository of its own, built from the cache, holding only the
        commit and its ancestors: no other branch, tag, remote or reflog can leak the future.
        With ``history=False`` (and ``isolate=True``) it holds one new parentless commit of
        ``commit``'s tree and nothing else.
        ``submodules`` (default: the store's ``submodules``) checks out every submodule,
        recursively, at the commit the superproject's commit records, each from a cache
        entry of its own (``Worktree.submodules``); with ``sparse``, only those inside the
        checked-out paths; with ``isolate``, each isolated likewise.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        repo = self._parse_url(url)
        wanted = self.submodules if submodules is None else bool(submodules)
        with _context(repo, commit):
            return self._entries.rebuilding_once(
                repo,
                commit,
                lambda: self._checkouts.add(
                    repo, url, commit, path, branch, sparse, isolate, history, wanted
                ),
            )

    def remove_worktree(self, worktree: Worktree) -> None:
        """Delete the worktree's files, its registration in the store and its branch.

        With ``reuse``, an intact worktree is parked instead, for the next request of this
        store for the same repository; :meth:`close` removes what is still parked.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        with _context(redact(worktree.url), worktree.commit):
            if self.reuse and self._parking.parkable(worktree):
                leave_directory(worktree.path)
                self._parking.park(worktree)
                return
            self._checkouts.remove(worktree)

    def keep_worktree(self, worktree: Worktree) -> None:
        """Leave ``worktree`` in place for a human to inspect (``--repo-keep``).

        Its entry is marked kept, so other sessions do not prune it while its directory
        exists; once pytest rotates the directory away, the next session removes the entry.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        if worktree.isolated or worktree.standalone:
            return
        lock = self._lock_for_git_dir(worktree.git_dir, redact(worktree.url))
        with _context(redact(worktree.url), worktree.commit):
            with lock.hold(f"keep {worktree.path}"):
                self._registry.keep(lock, worktree.admin_dir, worktree.branch)
            # Registered in their own entries: a dead owner's would be pruned, files and all.
            self._checkouts.submodules.keep(worktree.submodules)

    def close(self) -> None:
        """Remove every parked worktree (reuse mode) and release this process's owner lock
        (worktrees still registered then read as dead). The store stays usable."""
        parked = self._parking.drain()
        errors = []
        for worktree in parked:
            try:
                self._checkouts.remove(worktree)
            except RepoClonesError as exc:
                errors.append(exc)
        # Every worktree of the session is gone (kept ones need no owner): give up the claim,
        # so that in-process runs (pytester) do not pile up open lock files.
        self._owner.close()
        if errors:
            raise errors[0]

    # -- worktree reuse --------------------------------------------------------------------

    def new_branch_name(self, label: str = "wt") -> str:
        """A branch name unique across workers, runs and machines sharing the cache."""
        return f"{BRANCH_PREFIX}{self.worker}/{label}-{secrets.token_hex(4)}"

    def git_dir(self, url: str | os.PathLike[str]) -> Path:
        """Where the cached clone of ``url`` lives (whether or not it exists yet)."""
        __tracebackhide__ = True  # its arguments may hold a secret
        return self._git_dir(self._parse_url(url))

    def registered_worktrees(self, url: str | os.PathLike[str]) -> list[Path]:
        """Worktrees currently registered in the cached clone of ``url`` (any process's)."""
        __tracebackhide__ = True  # its arguments may hold a secret
        return self._registry.registered(self._git_dir(self._parse_url(url)))

    #: The earlier name: it lists registrations, live or not, not only live ones.
    live_worktrees = registered_worktrees

    def test_branches(self, url: str | os.PathLike[str]) -> list[str]:
        """Branches this plugin made in the cached clone of ``url`` that still exist."""
        __tracebackhide__ = True  # its arguments may hold a secret
        git_dir = self._git_dir(self._parse_url(url))
        if not git_dir.is_dir():
            return []  # not cached (yet, or any more): no branches
        refs = self._registry.plugin_branches(git_dir)
        return [ref[len("refs/heads/") :] for ref in refs]

    # -- cache entries ---------------------------------------------------------------------

    def _parse_url(self, url: object) -> RepoURL:
        __tracebackhide__ = True  # its arguments may hold a secret
        return parse_url(url, self.protocols)

    def _git_dir(self, repo: RepoURL) -> Path:
        return self.layout.git_dir(repo.key)

    def _lock(self, repo: RepoURL) -> RepoLock:
        return self._lock_by_key(repo.key, repo.redacted)

    def _lock_for_git_dir(self, git_dir: Path, url: str) -> RepoLock:
        return self._lock_by_key(git_dir.name[: -len(".git")], url)

    def _lock_by_key(self, key: str, shown_url: str) -> RepoLock:
        with self._mutex:
            lock = self._locks.get(key)
            if lock is None:
                writable = not self.read_only
                if writable:
                    self.layout.ensure()
                lock = RepoLock(
                    self.layout.lock_path(key),
                    timeout=self.lock_timeout,
                    shown_url=shown_url,
                    notice=self._notice,
                    enabled=writable,
                )
                self._locks[key] = lock
            return lock

    @property
    def read_only(self) -> bool:
        """Whether the cache cannot be written (a read-only mount, a CI image's baked cache,
        a shared directory of another user): then it is served as it is, nothing written."""
        return self.layout.read_only

    # -- objects found missing or damaged mid-operation ------------------------------------

    # -- resolving commits -----------------------------------------------------------------

    # -- talking to the remote -------------------------------------------------------------

    def _drop_parked(self, key: str) -> None:
        """Remove this store's parked worktrees of an entry (they must not keep it alive)."""
        for idle in self._parking.drain(key):
            with contextlib.suppress(OSError, RepoClonesError):
                self._checkouts.remove(idle)

    def _remote(self, repo: RepoURL) -> Remote:
        """The upstream as ``repo`` spells it: made per call, since URLs that share an entry
        may differ in what reaches the network (credentials, an ssh login, an insteadOf)."""
        return Remote(
            repo,
            self._runner,
            cache_dir=self.cache_dir,
            offline=self.offline,
            read_only=lambda: self.read_only,
            failures=self.remote_failures,
            stats=lambda: self._stats(repo),
            partial=lambda: self._entries.is_partial(repo),
            progress=self._progress,
            mirrors=self._mirrors,
        )

    def _stats(self, repo: RepoURL) -> RepoStats:
        with self._mutex:
            stats = self.stats.get(repo.key)
            if stats is None:
                stats = self.stats[repo.key] = RepoStats(repo.redacted)
            return stats

    def _git(
        self, args: list[str], *, git_dir: Path | None = None, key: str | None = None
    ) -> GitResult:
        return self._runner.run(args, git_dir=git_dir, key=key)

    def _git_input(self, args: list[str], stdin: str, *, git_dir: Path) -> GitResult:
        return self._runner.run(args, git_dir=git_dir, stdin=stdin)


@contextlib.contextmanager
def _context(repo: RepoURL | str, commit: object) -> Iterator[None]:
    """Errors raised inside name the repository and the commit asked for; a filesystem error
    (a full disk, a read-only or vanished cache) becomes a CacheWriteError, never a bare one."""
    url = repo if isinstance(repo, str) else repo.redacted
    try:
        yield
    except RepoClonesError as exc:
        exc.add_context(url=url, commit=commit)
        raise
    except OSError as exc:
        asked = commit if isinstance(commit, str) else None
        raise CacheWriteError.from_os_error(exc, url=url, commit=asked) from None
