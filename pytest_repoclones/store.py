"""RepoStore: one bare clone per repository, shared by every process, and worktrees on top.

The cache directory's layout is described in _layout.py.

Refs inside a cached repository:

    refs/remotes/origin/*     upstream branches
    refs/repoclones/remote-head  the remote's HEAD (its default branch's commit)
    refs/tags/*               upstream tags
    refs/repoclones/pins/<id> commits fetched by object name, pinned so nothing drops them
    refs/heads/repoclones/... one branch per live worktree, deleted at removal

What runs under the per-repository lock, and why (git 2.39, measured in DESIGN.md): clone and
publish; every fetch (two fetches updating one ref fail with "cannot lock ref", and a fetch's
connectivity check reads every worktree's HEAD, which a concurrent ``worktree add`` leaves half
written); ``worktree add --no-checkout`` (writes its admin files one by one); removal of a
worktree's admin entry and branch (ref and packed-refs writes); pruning entries of dead
processes. Checking files out and deleting them, the slow parts, run outside it.
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

from ._entry import CacheEntries
from ._files import (
    leave_directory,
    read_stripped,
    rmtree,
)
from ._git import (
    DEFAULT_TIMEOUT,
    GitResult,
)
from ._inputs import check_filter, check_seconds, sparse_arguments
from ._layout import (
    MARKER,
    CacheLayout,
)
from ._lock import DEFAULT_LOCK_TIMEOUT, RepoLock
from ._ownership import Owner
from ._registry import BRANCH_PREFIX, WorktreeRegistry
from ._remote import OFFLINE_HINT, Remote
from ._remote_failures import RemoteFailures
from ._resolve import Resolver
from ._reuse import Parking
from ._runner import GitRunner
from ._standalone import init_borrowing, init_isolated
from .errors import (
    CacheWriteError,
    CommitNotFoundError,
    InvalidInputError,
    RepoClonesError,
    WorktreeError,
)
from .revisions import Revision, check_branch_name, parse_revision
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
        self.clone_filter = check_filter(clone_filter)
        self._clone_filters = {
            parse_url(url, self.protocols).key: check_filter(spec)
            for url, spec in (clone_filters or {}).items()
        }
        #: This process's claim on its worktree registrations (see _ownership.py).
        self._owner = Owner(self.cache_dir)
        self._mutex = threading.Lock()
        self._locks: dict[str, RepoLock] = {}
        self.layout = CacheLayout(self.cache_dir)
        #: Remotes that did not answer in this session fail at once afterwards.
        self.remote_failures = RemoteFailures()
        #: Counters per repository (cache key), for this process only.
        self.stats: dict[str, RepoStats] = {}
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
        )
        self._resolver = Resolver(self._entries, self._runner, self._lock)
        self._parking = Parking(
            owner=self._owner,
            registry=self._registry,
            lock=self._lock,
            run=self._run_in_worktree,
            check_damage=self._entries.check_damage,
            resolve_object=self._resolver.resolve_object,
            branch_commit=self._branch_commit,
            remove=self._remove_for_real,
        )

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

    def resolve(self, url: str | os.PathLike[str], commit: str | None = None) -> str:
        """Full object name of the commit ``commit`` names, fetching only if needed."""
        __tracebackhide__ = True  # its arguments may hold a secret
        repo = self._parse_url(url)
        with _context(repo, commit):
            revision = parse_revision(commit)
            return self._entries.rebuilding_once(
                repo,
                commit,
                lambda: self._resolver.resolve(repo, self._entries.ensure(repo), revision),
            )

    def add_worktree(
        self,
        url: str | os.PathLike[str],
        commit: str | None,
        path: str | os.PathLike[str],
        branch: str | None = None,
        *,
        sparse: Sequence[str] | None = None,
        isolate: bool = False,
    ) -> Worktree:
        """Check out ``commit`` of ``url`` into a new worktree at ``path`` on a new branch.

        ``path`` must not exist or be an empty directory. Without ``branch``, a unique
        ``repoclones/<worker>/wt-<random>`` branch is made. ``sparse`` lists the only paths
        to check out (directories end with ``/``; cone mode when all are directories).
        ``isolate`` makes a repository of its own, built from the cache, holding only the
        commit and its ancestors: no other branch, tag, remote or reflog can leak the future.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        repo = self._parse_url(url)
        with _context(repo, commit):
            return self._entries.rebuilding_once(
                repo,
                commit,
                lambda: self._add_worktree(repo, url, commit, path, branch, sparse, isolate),
            )

    def _add_worktree(
        self,
        repo: RepoURL,
        url: str | os.PathLike[str],
        commit: str | None,
        path: str | os.PathLike[str],
        branch: str | None,
        sparse: Sequence[str] | None,
        isolate: bool,
    ) -> Worktree:
        __tracebackhide__ = True  # its arguments may hold a secret
        revision = parse_revision(commit)
        target = self._check_new_worktree_path(path, repo, commit)
        sparse_args = sparse_arguments(sparse)
        auto_branch = branch is None
        branch = check_branch_name(branch if branch is not None else self.new_branch_name())
        network_before = self._network_ops(repo)
        self._stats(repo)  # time spent cloning counts too
        git_dir = self._entries.ensure(repo)
        if revision.kind == "full":
            # Hot path: let git itself find the commit, fetch only if that fails.
            assert revision.text is not None
            start = f"{revision.text}^{{commit}}"
        else:
            start = self._resolver.resolve(repo, git_dir, revision)
        worktree = None
        if isolate:
            if self._entries.is_partial(repo):
                # Its blobs are fetched lazily from the remote; git's local transport cannot
                # copy what the cache does not hold.
                raise InvalidInputError(
                    "isolate=True needs a full clone; this repository was cloned with a filter",
                    url=repo.redacted,
                    commit=revision.text,
                    hint="drop --repo-clone-filter for it (repo_clone_filters per URL)",
                )
            if revision.kind == "full":
                start = self._resolver.resolve_object(repo, git_dir, revision)
            worktree = self._isolated_worktree(repo, start, target, branch, sparse_args, str(url))
        elif self.reuse and sparse_args is None and not self.read_only:
            worktree = self._parking.take(repo, revision, start, target, branch, str(url))
        if worktree is None and self.read_only:
            worktree = self._borrowing_worktree(repo, start, target, branch, sparse_args, str(url))
        if worktree is None:
            worktree = self._new_worktree(
                repo, revision, start, target, branch, auto_branch, sparse_args, str(url)
            )
        stats = self._stats(repo)
        stats.worktrees += 1
        if self._network_ops(repo) == network_before:
            stats.cache_hits += 1
        self._entries.touch(git_dir)
        return worktree

    def _new_worktree(
        self,
        repo: RepoURL,
        revision: Revision,
        start: str,
        target: Path,
        branch: str,
        auto_branch: bool,
        sparse_args: list[str] | None,
        url: str,
    ) -> Worktree:
        __tracebackhide__ = True  # its arguments may hold a secret
        git_dir = self._git_dir(repo)
        lock = self._lock(repo)
        with lock.hold(f"worktree add {target}"):
            if not (git_dir / MARKER).is_file():
                # Removed meanwhile by `pytest-repoclones gc/clear`: clone it again (the
                # lock is reentrant).
                self._entries.forget(repo.key)
                git_dir = self._entries.ensure(repo)
            result = self._registry.create_branch(lock, git_dir, branch, start)
            exists = "already exists" in result.stderr
            if not result.ok and auto_branch and exists:
                branch = self.new_branch_name()
                result = self._registry.create_branch(lock, git_dir, branch, start)
            elif not result.ok and revision.kind == "full" and not exists:
                # Not in the cache (or not a commit): fetch under the lock we hold, then retry.
                start = self._resolver.resolve_object(repo, git_dir, revision)
                result = self._registry.create_branch(lock, git_dir, branch, start)
            if not result.ok:
                self._entries.check_damage(repo, git_dir, result.stderr)
                raise WorktreeError(
                    f"Could not create a worktree at {target}",
                    url=repo.redacted,
                    commit=revision.text,
                    git_error=repo.scrub(result.error_line),
                )
            try:
                admin_dir = self._registry.register(lock, git_dir, target, branch)
            except BaseException:
                self._registry.delete_branch(lock, git_dir, branch)
                raise
        worktree = Worktree(
            path=target,
            url=url,
            commit=self._branch_commit(git_dir, branch),
            branch=branch,
            git_dir=git_dir,
            admin_dir=admin_dir,
            sparse=tuple(sparse_args) if sparse_args else None,
        )
        try:
            if sparse_args is not None:
                # Only writes the worktree's own config and pattern file: no lock needed
                # (worktreeConfig is already enabled in the shared config at clone time).
                self._run_in_worktree(repo, worktree, ["sparse-checkout", "set", *sparse_args])
            # What `worktree add` runs internally, here outside the lock: the slow part.
            self._run_in_worktree(
                repo, worktree, ["reset", "--quiet", "--hard", "--no-recurse-submodules"]
            )
        except BaseException:
            self._remove_for_real(worktree)
            raise
        return worktree

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
            self._remove_for_real(worktree)

    def keep_worktree(self, worktree: Worktree) -> None:
        """Leave ``worktree`` in place for a human to inspect (``--repo-keep``).

        Its entry is marked kept, so other sessions do not prune it while its directory
        exists; once pytest rotates the directory away, the next session removes the entry.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        if worktree.isolated or worktree.standalone:
            return
        lock = self._lock_for_git_dir(worktree.git_dir, redact(worktree.url))
        with _context(redact(worktree.url), worktree.commit), lock.hold(f"keep {worktree.path}"):
            self._registry.keep(lock, worktree.admin_dir, worktree.branch)

    def close(self) -> None:
        """Remove every parked worktree (reuse mode) and release this process's owner lock
        (worktrees still registered then read as dead). The store stays usable."""
        parked = self._parking.drain()
        errors = []
        for worktree in parked:
            try:
                self._remove_for_real(worktree)
            except RepoClonesError as exc:
                errors.append(exc)
        # Every worktree of the session is gone (kept ones need no owner): give up the claim,
        # so that in-process runs (pytester) do not pile up open lock files.
        self._owner.close()
        if errors:
            raise errors[0]

    def _remove_for_real(self, worktree: Worktree) -> None:
        __tracebackhide__ = True  # its arguments may hold a secret
        leave_directory(worktree.path)
        # Deleting files is the slow part and needs no lock: the admin entry stays valid
        # (a concurrent fetch still reads a consistent HEAD) until we remove it below.
        rmtree(worktree.path)
        if worktree.isolated or worktree.standalone:
            return  # a repository of its own: nothing registered in the cache
        lock = self._lock_for_git_dir(worktree.git_dir, redact(worktree.url))
        with lock.hold(f"worktree remove {worktree.path}"):
            self._registry.unregister(lock, worktree.git_dir, worktree.admin_dir)
            result = self._registry.delete_branch(lock, worktree.git_dir, worktree.branch)
        if not result.ok and worktree.git_dir.exists():
            raise WorktreeError(
                f"Could not delete branch {worktree.branch}",
                url=redact(worktree.url),
                commit=worktree.commit,
                git_error=result.error_line,
            )

    def _isolated_worktree(
        self,
        repo: RepoURL,
        sha: str,
        target: Path,
        branch: str,
        sparse_args: list[str] | None,
        url: str,
    ) -> Worktree:
        """A new repository at ``target`` with only ``sha``'s history, fetched from the cache.

        Not a worktree of the cache (that would share every ref and object): a fetch of the
        one commit over git's local transport copies exactly its ancestors, nothing else.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        git_dir = target / ".git"
        try:
            failed = init_isolated(self._runner, self._git_dir(repo), target, branch, sha, repo.key)
            if failed is not None:
                # The fetch's other end is the cache entry: its complaints are its damage.
                self._entries.check_damage(repo, self._git_dir(repo), failed.stderr, serving=True)
                raise WorktreeError(
                    f"Could not build an isolated repository at {target}",
                    url=repo.redacted,
                    commit=sha,
                    git_error=failed.error_line,
                )
            worktree = Worktree(
                path=target,
                url=url,
                commit=self._branch_commit(git_dir, branch),
                branch=branch,
                git_dir=git_dir,
                admin_dir=git_dir,
                sparse=tuple(sparse_args) if sparse_args else None,
                isolated=True,
            )
            if sparse_args is not None:
                self._run_in_worktree(repo, worktree, ["sparse-checkout", "set", *sparse_args])
            self._run_in_worktree(repo, worktree, ["reset", "--quiet", "--hard"])
            rmtree(git_dir / "logs")
        except BaseException:
            rmtree(target)
            raise
        return worktree

    def _borrowing_worktree(
        self,
        repo: RepoURL,
        start: str,
        target: Path,
        branch: str,
        sparse_args: list[str] | None,
        url: str,
    ) -> Worktree:
        """A checkout for a read-only cache: a repository of its own at ``target`` that borrows
        the cache's objects (git alternates) and copies its branches and tags, so the test sees
        what a worktree shows. Nothing is written into the cache: no registration, no branch.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        git_dir = self._git_dir(repo)
        # A full name asked for is not checked yet (the hot path lets git do it): do it here.
        sha = start
        if start.endswith("^{commit}"):
            sha = self._resolver.resolve_object(
                repo, git_dir, parse_revision(start[: -len("^{commit}")])
            )
        dot_git = target / ".git"
        try:
            init_borrowing(git_dir, target, branch, sha)
            worktree = Worktree(
                path=target,
                url=url,
                commit=sha,
                branch=branch,
                git_dir=dot_git,
                admin_dir=dot_git,
                sparse=tuple(sparse_args) if sparse_args else None,
                standalone=True,
            )
            if sparse_args is not None:
                self._run_in_worktree(repo, worktree, ["sparse-checkout", "set", *sparse_args])
            self._run_in_worktree(repo, worktree, ["reset", "--quiet", "--hard"])
        except BaseException:
            rmtree(dot_git)
            raise
        return worktree

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
                self._remove_for_real(idle)

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
        )

    def _stats(self, repo: RepoURL) -> RepoStats:
        with self._mutex:
            stats = self.stats.get(repo.key)
            if stats is None:
                stats = self.stats[repo.key] = RepoStats(repo.redacted)
            return stats

    def _network_ops(self, repo: RepoURL) -> int:
        stats = self.stats.get(repo.key)
        return 0 if stats is None else stats.clones + stats.fetches

    # -- worktrees -------------------------------------------------------------------------

    def _check_new_worktree_path(self, path: object, repo: RepoURL, commit: str | None) -> Path:
        text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if not isinstance(text, str) or not text or any(ord(ch) < 32 for ch in text):
            raise InvalidInputError(
                "Worktree path must be a non-empty str or path without control characters",
                url=repo.redacted,
                commit=commit,
            )
        target = Path(text).absolute()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise WorktreeError(
                f"Worktree path {target} exists and is not an empty directory",
                url=repo.redacted,
                commit=commit,
            )
        # Compare real paths: '..' and symlinks must not smuggle a worktree into the cache.
        real_target = Path(os.path.realpath(target))
        real_cache = Path(os.path.realpath(self.cache_dir))
        if real_target == real_cache or real_cache in real_target.parents:
            raise InvalidInputError(
                f"Worktree path {target} is inside the cache", url=repo.redacted, commit=commit
            )
        return target

    def _run_in_worktree(
        self,
        repo: RepoURL,
        worktree: Worktree,
        args: list[str],
        *,
        check: bool = True,
        stdin: str | None = None,
    ) -> GitResult:
        # A partial clone fetches missing blobs during checkout: it needs the credentials,
        # or, offline, a promisor that fails at once instead of reaching the network.
        pre_args: list[str] = []
        extra_env: dict[str, str] = {}
        if self._entries.is_partial(repo) and not worktree.isolated:
            if self.offline:
                # No transport at all: a lazy fetch of a missing blob fails at once.
                extra_env = {"GIT_ALLOW_PROTOCOL": "none"}
            else:
                pre_args, extra_env = self._remote(repo).auth()
        result = self._runner.run(
            args,
            key=repo.key,
            cwd=worktree.path,
            pre_args=[*pre_args, "-C", str(worktree.path)],
            extra_env=extra_env,
            url=repo.redacted,
            stdin=stdin,
        )
        if check and not result.ok:
            if not worktree.isolated:
                # The checkout reads the cache's objects: the one place deep history is read.
                self._entries.check_damage(repo, worktree.git_dir, result.stderr)
            if extra_env.get("GIT_ALLOW_PROTOCOL") == "none" and "not allowed" in result.stderr:
                raise CommitNotFoundError(
                    "Files of this commit are not in the cache (a partial clone fetches them "
                    "when checked out), and --repo-offline forbids fetching them",
                    url=repo.redacted,
                    commit=worktree.commit,
                    git_error=repo.scrub(result.error_line),
                    hint=OFFLINE_HINT,
                )
            raise WorktreeError(
                f"git {args[0]} failed in {worktree.path}",
                url=repo.redacted,
                commit=worktree.commit,
                git_error=repo.scrub(result.error_line),
            )
        return result

    def _branch_commit(self, git_dir: Path, branch: str) -> str:
        # A brand-new branch is a loose ref file: reading it costs no git process.
        loose = read_stripped(git_dir / "refs" / "heads" / branch)
        if loose and len(loose) in (40, 64):
            return loose
        result = self._git(["rev-parse", "--verify", f"refs/heads/{branch}"], git_dir=git_dir)
        return result.stdout.strip()

    # -- running git -----------------------------------------------------------------------

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
