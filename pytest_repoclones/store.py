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

from ._bare import init_bare_repository
from ._files import (
    leave_directory,
    read_stripped,
    rmtree,
    write_atomically,
)
from ._git import (
    DEFAULT_TIMEOUT,
    GitResult,
)
from ._inputs import check_filter, check_seconds, sparse_arguments
from ._layout import (
    MARKER,
    REFRESH_MARKER,
    CacheLayout,
    read_marker,
    read_only_error,
    upgrade_marker,
    write_marker,
)
from ._lock import DEFAULT_LOCK_TIMEOUT, RepoLock
from ._ownership import Owner
from ._registry import BRANCH_PREFIX, WorktreeRegistry
from ._remote import OFFLINE_HINT, REMOTE_HEAD, Remote
from ._remote_failures import RemoteFailures
from ._reuse import Parking
from ._runner import GitRunner
from ._standalone import init_borrowing, init_isolated
from .errors import (
    CacheCorruptError,
    CacheWriteError,
    CommitNotFoundError,
    InvalidInputError,
    RemoteError,
    RepoClonesError,
    WorktreeError,
)
from .health import damaged_object_line, find_problem, names_damaged_file, tips_without_trees
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

#: Sessions remembered in REFRESH_MARKER: concurrent runs each find their own id there.
REFRESH_MEMORY = 32
NAMED_PREFIX = "refs/repoclones/named/"

#: Times an operation is retried after its cache entry was removed under it (gc in a loop).
ENTRY_RETRIES = 3
# A fetch's connectivity check found objects missing: the remote sent too little, or (what we
# check with fsck) the cache lost an object the remote assumed we have.
_INCOMPLETE_FETCH = "did not send all necessary objects"
_DAMAGED = "git cannot read some of its objects"


class _DamagedEntry(CacheCorruptError):
    """git tripped over a missing or damaged object of a cache entry.

    ``add_worktree`` and ``resolve`` catch it, rebuild the entry once and retry; raised again
    after that, it reaches the caller as the CacheCorruptError it is.
    """

    git_dir: Path | None = None
    #: The entry's completion marker when the damage was seen: another one means the entry was
    #: rebuilt meanwhile (by another process that saw the same damage).
    marker: str | None = None


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
        self._partial: dict[str, bool] = {}
        #: This process's claim on its worktree registrations (see _ownership.py).
        self._owner = Owner(self.cache_dir)
        self._mutex = threading.Lock()
        self._locks: dict[str, RepoLock] = {}
        self._prepared: set[str] = set()
        #: Inode of each prepared entry's marker: a new one means the entry was replaced.
        self._entry_ids: dict[str, int] = {}
        self._refreshed: set[str] = set()
        self.layout = CacheLayout(self.cache_dir)
        #: Remotes that did not answer in this session fail at once afterwards.
        self.remote_failures = RemoteFailures()
        #: Counters per repository (cache key), for this process only.
        self.stats: dict[str, RepoStats] = {}
        self._runner = GitRunner(self.protocols, self.timeout, self.stats, self._mutex)
        self._registry = WorktreeRegistry(self.cache_dir, self._runner, self._owner)
        self._parking = Parking(
            owner=self._owner,
            registry=self._registry,
            lock=self._lock,
            run=self._run_in_worktree,
            check_damage=self._check_damage,
            resolve_object=self._resolve_object,
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
            return self._ensure(repo)

    def resolve(self, url: str | os.PathLike[str], commit: str | None = None) -> str:
        """Full object name of the commit ``commit`` names, fetching only if needed."""
        __tracebackhide__ = True  # its arguments may hold a secret
        repo = self._parse_url(url)
        with _context(repo, commit):
            revision = parse_revision(commit)
            return self._rebuilding_once(
                repo, commit, lambda: self._resolve(repo, self._ensure(repo), revision)
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
            return self._rebuilding_once(
                repo,
                commit,
                lambda: self._add_worktree(repo, url, commit, path, branch, sparse, isolate),
            )

    def _rebuilding_once(self, repo: RepoURL, commit: object, operation: Callable[[], _T]) -> _T:
        """Run ``operation``; if git found objects of the entry missing or damaged, rebuild the
        entry and run it once more (a second failure is raised as it is: never a loop).

        An entry removed (or replaced) under us by `pytest-repoclones gc/clear` makes git fail
        in ways that look like the remote's or the commit's fault ("no such branch", a missing
        directory): whatever failed, if the entry we prepared is gone, clone it again and retry.
        """
        for attempt in range(ENTRY_RETRIES + 1):
            try:
                try:
                    return operation()
                except _DamagedEntry as damage:
                    self._rebuild_damaged(repo, commit, damage)
                return operation()
            except (RepoClonesError, OSError):
                if attempt == ENTRY_RETRIES or not self._entry_replaced(repo):
                    raise
                log.info("repoclones: cache entry of %s removed meanwhile; again", repo.redacted)
                with self._mutex:
                    self._prepared.discard(repo.key)
                    self._refreshed.discard(repo.key)
                    self._partial.pop(repo.key, None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _entry_replaced(self, repo: RepoURL) -> bool:
        """Whether the entry this process prepared was removed or replaced since."""
        known = self._entry_ids.get(repo.key)
        if known is None:
            return False  # never had one: a first clone that failed removed nothing
        try:
            now = (self._git_dir(repo) / MARKER).stat().st_ino
        except OSError:
            return True
        return known != now

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
        git_dir = self._ensure(repo)
        if revision.kind == "full":
            # Hot path: let git itself find the commit, fetch only if that fails.
            assert revision.text is not None
            start = f"{revision.text}^{{commit}}"
        else:
            start = self._resolve(repo, git_dir, revision)
        worktree = None
        if isolate:
            if self._is_partial(repo):
                # Its blobs are fetched lazily from the remote; git's local transport cannot
                # copy what the cache does not hold.
                raise InvalidInputError(
                    "isolate=True needs a full clone; this repository was cloned with a filter",
                    url=repo.redacted,
                    commit=revision.text,
                    hint="drop --repo-clone-filter for it (repo_clone_filters per URL)",
                )
            if revision.kind == "full":
                start = self._resolve_object(repo, git_dir, revision)
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
        self._touch(git_dir)
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
                with self._mutex:
                    self._prepared.discard(repo.key)
                git_dir = self._ensure(repo)
            result = self._registry.create_branch(lock, git_dir, branch, start)
            exists = "already exists" in result.stderr
            if not result.ok and auto_branch and exists:
                branch = self.new_branch_name()
                result = self._registry.create_branch(lock, git_dir, branch, start)
            elif not result.ok and revision.kind == "full" and not exists:
                # Not in the cache (or not a commit): fetch under the lock we hold, then retry.
                start = self._resolve_object(repo, git_dir, revision)
                result = self._registry.create_branch(lock, git_dir, branch, start)
            if not result.ok:
                self._check_damage(repo, git_dir, result.stderr)
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
                self._check_damage(repo, self._git_dir(repo), failed.stderr, serving=True)
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
            sha = self._resolve_object(repo, git_dir, parse_revision(start[: -len("^{commit}")]))
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

    def _read_only_error(self, repo: RepoURL, what: str, commit: str | None) -> CacheWriteError:
        return read_only_error(self.cache_dir, repo.redacted, what, commit)

    def _ensure(self, repo: RepoURL) -> Path:
        """The git dir of a complete clone of ``repo``; clone it first if needed."""
        git_dir = self._git_dir(repo)
        if repo.key in self._prepared and (git_dir / MARKER).is_file():
            return git_dir
        if self.read_only:
            if read_marker(git_dir) is None:  # also refuses an entry of a newer format
                raise self._read_only_error(repo, "does not hold this repository", None)
            with self._mutex:
                self._prepared.add(repo.key)
            return git_dir
        with self._lock(repo).hold(f"clone {repo.redacted}"):
            first_use = repo.key not in self._prepared
            if first_use and (git_dir / MARKER).is_file():
                self._check_health_locked(repo, git_dir)
            if not (git_dir / MARKER).is_file():
                self._clone_locked(repo, git_dir)
            elif first_use:
                # A clone we just made has nothing left by dead processes to clear.
                self._prepare_locked(repo, git_dir)
            with contextlib.suppress(OSError):
                self._entry_ids[repo.key] = (git_dir / MARKER).stat().st_ino
        with self._mutex:
            self._prepared.add(repo.key)
        return git_dir

    def _clone_locked(self, repo: RepoURL, git_dir: Path) -> None:
        self._lock(repo).assert_held()
        if git_dir.exists():
            # No completion marker: left by a process killed mid-publish, or damaged.
            log.warning("repoclones: replacing incomplete cache entry %s", git_dir)
            self.layout.discard(git_dir)
        self.layout.remove_stale_builds(repo.key)
        if self.offline:
            raise RemoteError(
                "Repository is not in the cache, and --repo-offline forbids cloning it",
                url=repo.redacted,
                hint=OFFLINE_HINT,
            )
        tmp = self.layout.build_dir(repo.key)
        try:
            # The cache directory may have been removed while this session ran: make it again.
            self.layout.ensure_for_clone()
            clone_filter = self._clone_filters.get(repo.key, self.clone_filter)
            init_bare_repository(tmp, promisor_url=repo.fetch_url, clone_filter=clone_filter)
            self._fetch_upstream(repo, tmp, problem="Could not clone", clone_filter=clone_filter)
            # fetch writes new refs loose: a file check spares a git process on the cold path.
            if not (tmp / REMOTE_HEAD).is_file():
                self._check_has_commits(repo, tmp)
            write_marker(tmp, url=repo.redacted, canonical=repo.canonical, filter=clone_filter)
            self._mark_refreshed(tmp)
            # The rename is the publication: readers see a complete clone or none at all.
            os.rename(tmp, git_dir)
            self._partial[repo.key] = clone_filter is not None
            self._stats(repo).clones += 1
        except BaseException:
            rmtree(tmp)
            raise
        self._refreshed.add(repo.key)

    def _check_has_commits(self, repo: RepoURL, git_dir: Path) -> None:
        refs = self._git(["for-each-ref", "--count=1", "--format=%(refname)"], git_dir=git_dir)
        if not refs.stdout.strip():
            raise RemoteError("Repository has no commits (no branches or tags)", url=repo.redacted)

    def _check_health_locked(self, repo: RepoURL, git_dir: Path) -> None:
        """Rebuild a damaged entry, unless live worktrees still use it: then say what to delete."""
        self._lock(repo).assert_held()
        problem = find_problem(git_dir, lambda: tips_without_trees(git_dir, self._runner))
        if problem is None:
            return
        self._registry.prune_dead(self._lock(repo), git_dir)
        if self._registry.users(git_dir):
            raise CacheCorruptError(
                f"Cache entry {git_dir} is damaged ({problem}) and worktrees of live processes "
                "still use it",
                url=repo.redacted,
                hint=f"stop those processes, then delete {git_dir}",
            )
        log.warning("repoclones: rebuilding damaged cache entry %s: %s", git_dir, problem)
        self.layout.discard(git_dir)

    # -- objects found missing or damaged mid-operation ------------------------------------

    def _check_damage(
        self, repo: RepoURL, git_dir: Path, stderr: str, *, serving: bool = False
    ) -> None:
        """Raise _DamagedEntry if git said an object of the published entry is missing or
        damaged (only ever called once git failed, or printed an error: no extra process)."""
        if git_dir != self._git_dir(repo) or self._is_partial(repo):
            # A clone being built is no cache entry yet; a partial clone fetches what it
            # lacks from the remote, so a failure there is the remote's.
            return
        line = damaged_object_line(stderr, serving=serving)
        if line is not None:
            raise self._damaged(repo, git_dir, line)

    def _check_fetch_damage(self, repo: RepoURL, git_dir: Path, result: GitResult) -> None:
        """After a failed fetch into the entry: was it the entry's own damage?

        A fetch's connectivity check says "Could not read X", "bad object X", "did not send
        all necessary objects" both when the entry lost an object the remote assumed we have
        (we advertised a descendant of it) and when a broken remote sent too little. Only the
        first leaves a ref's history incomplete, which ``fsck --connectivity-only`` tells
        (slow on a big repository, but this is a failure path).
        """
        if git_dir != self._git_dir(repo) or self._is_partial(repo):
            return
        line = damaged_object_line(result.stderr)
        if line is None and _INCOMPLETE_FETCH not in result.stderr:
            return
        if line is None or not names_damaged_file(line):
            fsck = self._git(
                ["fsck", "--connectivity-only", "--no-dangling", "--no-progress"],
                git_dir=git_dir,
            )
            if fsck.ok:
                return  # the entry is whole: the remote's fault
            missing = [
                text
                for text in (fsck.stdout + "\n" + fsck.stderr).splitlines()
                if text.startswith("missing ")
            ]
            line = f"fsck: {missing[0]}" if missing else (line or fsck.error_line)
        raise self._damaged(repo, git_dir, line)

    def _damaged(self, repo: RepoURL, git_dir: Path, line: str) -> _DamagedEntry:
        damage = _DamagedEntry(
            f"Cache entry {git_dir} is damaged: {_DAMAGED}",
            url=repo.redacted,
            git_error=repo.scrub(line),
            hint=f"delete {git_dir}, or run `pytest-repoclones verify --full {repo.redacted}`",
        )
        damage.git_dir = git_dir
        damage.marker = read_stripped(git_dir / MARKER)
        return damage

    def _rebuild_damaged(self, repo: RepoURL, commit: object, damage: _DamagedEntry) -> None:
        """Clone the damaged entry again, unless live worktrees use it (or we are offline)."""
        git_dir = damage.git_dir or self._git_dir(repo)
        asked = commit if isinstance(commit, str) else None
        with self._lock(repo).hold(f"rebuild {repo.redacted}"):
            if read_stripped(git_dir / MARKER) != damage.marker:
                return  # rebuilt (or removed) by another process meanwhile: just retry
            if self.offline:
                raise CacheCorruptError(
                    f"Cache entry {git_dir} is damaged ({_DAMAGED}), and --repo-offline "
                    "forbids cloning it again",
                    url=repo.redacted,
                    commit=asked,
                    git_error=damage.git_error,
                    hint=f"run once without --repo-offline to rebuild it, or delete {git_dir}",
                )
            for idle in self._parking.drain(repo.key):  # ours: they must not keep it alive
                with contextlib.suppress(OSError, RepoClonesError):
                    self._remove_for_real(idle)
            self._registry.prune_dead(self._lock(repo), git_dir)
            live = self._registry.users(git_dir)
            if live:
                raise CacheCorruptError(
                    f"Cache entry {git_dir} is damaged ({_DAMAGED}) and {len(live)} "
                    f"worktree(s) of live processes still use it, e.g. {live[0]}",
                    url=repo.redacted,
                    commit=asked,
                    git_error=damage.git_error,
                    hint=f"stop those processes, then delete {git_dir}, or run "
                    f"`pytest-repoclones verify --full {repo.redacted}`",
                )
            self._replace_entry_locked(repo, git_dir, asked, damage)
        log.warning(
            "repoclones: rebuilt cache entry %s of %s: %s (git: %s)",
            git_dir,
            repo.redacted,
            _DAMAGED,
            damage.git_error,
        )

    def _replace_entry_locked(
        self, repo: RepoURL, git_dir: Path, asked: str | None, damage: _DamagedEntry
    ) -> None:
        """Clone afresh; if that fails, put the old entry back (it still serves most commits)."""
        self._lock(repo).assert_held()
        aside = self.layout.trash_path()
        os.rename(git_dir, aside)
        try:
            self._clone_locked(repo, git_dir)
        except BaseException as exc:
            if not git_dir.exists():
                with contextlib.suppress(OSError):
                    os.rename(aside, git_dir)
            if not isinstance(exc, RepoClonesError):
                raise
            raise CacheCorruptError(
                f"Cache entry {git_dir} is damaged ({_DAMAGED}), and cloning it again failed: "
                f"{exc.problem}",
                url=repo.redacted,
                commit=asked,
                git_error=exc.git_error or damage.git_error,
                hint=f"once the remote is reachable, the next use rebuilds it; or delete {git_dir}",
            ) from exc
        rmtree(aside)

    def _prepare_locked(self, repo: RepoURL, git_dir: Path) -> None:
        """First use in this process: clear what killed processes left behind."""
        self._lock(repo).assert_held()
        self._check_format(git_dir)
        self.layout.remove_stale_builds(repo.key)
        self._registry.prepare(self._lock(repo), git_dir)

    def _check_format(self, git_dir: Path) -> None:
        """Refuse an entry of a newer layout; bring an older one's marker up to date."""
        data = read_marker(git_dir)
        if data is not None:
            upgrade_marker(git_dir, data)

    # -- resolving commits -----------------------------------------------------------------

    def _resolve(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str:
        if revision.kind == "full":
            return self._resolve_object(repo, git_dir, revision)
        if revision.kind == "abbrev":
            return self._resolve_abbrev(repo, git_dir, revision)
        return self._resolve_name(repo, git_dir, revision)

    def _resolve_object(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str:
        expr = f"{revision.text}^{{commit}}"
        found = self._lookup(git_dir, [expr], repo=repo)[0]
        if found is None:
            with self._lock(repo).hold(f"fetch {revision.text}"):
                # Another process may have fetched it.
                found = self._lookup(git_dir, [expr], repo=repo)[0]
                if found is None:
                    self._fetch_commit_locked(repo, git_dir, revision)
                    found = self._lookup(git_dir, [expr], repo=repo)[0]
        if found is None:
            raise CommitNotFoundError(
                "Object exists but is not a commit", url=repo.redacted, commit=revision.text
            )
        return found

    def _resolve_abbrev(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str:
        expr = f"{revision.text}^{{commit}}"
        found = self._lookup(git_dir, [expr], abbrev=revision, repo=repo)[0]
        if found is None:
            self._refresh(repo, git_dir)
            found = self._lookup(git_dir, [expr], abbrev=revision, repo=repo)[0]
        if found is None:
            # A branch or tag whose name happens to look like hex.
            found = self._lookup_name(repo, git_dir, revision)
        if found is None:
            raise CommitNotFoundError(
                "No commit matches this abbreviated object name",
                url=repo.redacted,
                commit=revision.text,
                hint=OFFLINE_HINT
                if self.offline
                else "abbreviations are resolved against the cache after fetching all branches "
                "and tags; give the full object name to fetch a commit outside them",
            )
        return found

    def _resolve_name(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str:
        named = revision.text is not None and revision.text.startswith("refs/")
        if named and not revision.text.startswith(("refs/heads/", "refs/tags/")):  # type: ignore[union-attr]
            self._refresh_named_ref(repo, git_dir, revision)
        else:
            self._refresh(repo, git_dir)
        found = self._lookup_name(repo, git_dir, revision)
        if found is None:
            what = "default branch (remote HEAD)" if revision.kind == "default" else "branch or tag"
            raise CommitNotFoundError(
                f"No such {what} upstream",
                url=repo.redacted,
                commit=revision.text,
                hint=OFFLINE_HINT
                if self.offline
                else "the remote's HEAD names a branch it does not have; pass a branch name"
                if revision.kind == "default"
                else "branches and tags were fetched from the remote in this session",
            )
        return found

    def _lookup_name(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str | None:
        name = revision.text
        if name is None:
            # The second: where caches made before 0.2 kept it (offline, never refreshed).
            candidates = [REMOTE_HEAD, "refs/remotes/origin/HEAD"]
        elif name.startswith("refs/heads/"):
            candidates = ["refs/remotes/origin/" + name[len("refs/heads/") :]]
        elif name.startswith("refs/tags/"):
            candidates = [name]
        elif name.startswith("refs/"):
            candidates = [NAMED_PREFIX + name[len("refs/") :]]
        else:
            # git's own order for an ambiguous short name: tags before branches.
            candidates = [f"refs/tags/{name}", f"refs/remotes/origin/{name}"]
        exprs = [f"{ref}^{{commit}}" for ref in candidates]
        for found in self._lookup(git_dir, exprs, repo=repo):
            if found is not None:
                return found
        return None

    def _lookup(
        self,
        git_dir: Path,
        exprs: list[str],
        abbrev: Revision | None = None,
        kind: str = "commit",
        repo: RepoURL | None = None,
    ) -> list[str | None]:
        """Object names for revision expressions, None where missing; one git process.

        With ``repo``, a damaged object (cat-file dies on it) raises _DamagedEntry; without,
        it counts as missing (what the health check wants).
        """
        result = self._git_input(
            ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            "".join(f"{expr}\n" for expr in exprs),
            git_dir=git_dir,
        )
        if not result.ok and repo is not None:
            self._check_damage(repo, git_dir, result.stderr)
        found: list[str | None] = []
        for line in result.stdout.splitlines():
            if line.endswith(" ambiguous") and abbrev is not None:
                raise InvalidInputError(
                    "Abbreviated object name is ambiguous; give more hex digits",
                    commit=abbrev.text,
                )
            name, _, object_type = line.partition(" ")
            found.append(name if object_type == kind else None)
        found.extend([None] * (len(exprs) - len(found)))
        return found

    # -- talking to the remote -------------------------------------------------------------

    def _refresh(self, repo: RepoURL, git_dir: Path) -> None:
        """Fetch branches and tags, at most once per repository per session."""
        if repo.key in self._refreshed or self.offline or self.read_only:
            return  # offline, read-only: branches and tags are what the cache last saw
        if not self._refreshed_by_session(git_dir):
            with self._lock(repo).hold(f"fetch branches and tags of {repo.redacted}"):
                # Re-check under the lock: another worker of this session may have done it.
                if not self._refreshed_by_session(git_dir):
                    self._fetch_upstream(repo, git_dir, problem="Could not fetch branches and tags")
                    self._mark_refreshed(git_dir)
        with self._mutex:
            self._refreshed.add(repo.key)

    def _refreshed_by_session(self, git_dir: Path) -> bool:
        return self.session_id in (read_stripped(git_dir / REFRESH_MARKER) or "").split()

    def _mark_refreshed(self, git_dir: Path) -> None:
        """Record this session (caller holds the lock, or owns the unpublished clone).

        A list, not one id: with one, concurrent runs overwrote each other's id and each
        refreshed again on its next worker.
        """
        marker = git_dir / REFRESH_MARKER
        others = [s for s in (read_stripped(marker) or "").split() if s != self.session_id]
        write_atomically(marker, "\n".join([*others[-(REFRESH_MEMORY - 1) :], self.session_id]))

    def _refresh_named_ref(self, repo: RepoURL, git_dir: Path, revision: Revision) -> None:
        assert revision.text is not None
        local = NAMED_PREFIX + revision.text[len("refs/") :]
        if self.offline or self.read_only:
            return
        with self._lock(repo).hold(f"fetch {revision.text}"):
            result = self._remote(repo).fetch(git_dir, [f"+{revision.text}:{local}"])
            if not result.ok:
                self._check_fetch_damage(repo, git_dir, result)
        if not result.ok:
            raise self._remote(repo).fetch_error(revision.text, result, "Could not fetch ref")

    def _fetch_upstream(
        self, repo: RepoURL, git_dir: Path, *, problem: str, clone_filter: str | None = None
    ) -> None:
        result = self._remote(repo).fetch_upstream(git_dir, clone_filter=clone_filter)
        if not result.ok:
            self._check_fetch_damage(repo, git_dir, result)
            raise RemoteError(problem, url=repo.redacted, git_error=repo.scrub(result.error_line))

    def _fetch_commit_locked(self, repo: RepoURL, git_dir: Path, revision: Revision) -> None:
        """Fetch one object by full name (caller holds the lock); pin it under refs/repoclones."""
        self._lock(repo).assert_held()
        sha = revision.text
        assert sha is not None
        result = self._remote(repo).fetch_commit(git_dir, sha)
        if result.ok:
            return
        self._check_fetch_damage(repo, git_dir, result)
        if not Remote.not_found(result):
            raise self._remote(repo).fetch_error(sha, result, "Could not fetch commit")
        # Servers without fetch-by-name (protocol v0, some mirrors): try the advertised refs.
        if repo.key not in self._refreshed:
            self._fetch_upstream(repo, git_dir, problem="Could not fetch branches and tags")
            self._mark_refreshed(git_dir)
            with self._mutex:
                self._refreshed.add(repo.key)
        if not self._exists(git_dir, sha):
            raise CommitNotFoundError(
                "Commit not found in the cache nor upstream",
                url=repo.redacted,
                commit=sha,
                git_error=repo.scrub(result.error_line),
                hint="tried: the cache, fetching it by object name, fetching all branches and tags",
            )

    def _exists(self, git_dir: Path, sha: str) -> bool:
        return self._git(["cat-file", "-e", sha], git_dir=git_dir).ok

    def _touch(self, git_dir: Path) -> None:
        """Record the last use (the marker's mtime) for `pytest-repoclones gc`: one utime."""
        with contextlib.suppress(OSError):
            os.utime(git_dir / MARKER)

    def _is_partial(self, repo: RepoURL) -> bool:
        """Whether the cached clone was made with a filter (then it fetches via 'origin')."""
        partial = self._partial.get(repo.key)
        if partial is None:
            metadata = read_marker(self._git_dir(repo)) or {}
            partial = bool(metadata.get("filter"))
            self._partial[repo.key] = partial
        return partial

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
            partial=lambda: self._is_partial(repo),
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
        if self._is_partial(repo) and not worktree.isolated:
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
                self._check_damage(repo, worktree.git_dir, result.stderr)
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
