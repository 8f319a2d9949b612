"""The cached repositories of one store: clone and publish, first use, health and repair,
refreshing branches and tags once per session, and the per-repository state that goes with it.

What runs under an entry's lock, and why (git 2.39, measured in DESIGN.md): clone and publish;
every fetch (two fetches updating one ref fail with "cannot lock ref", and a fetch's
connectivity check reads every worktree's HEAD); the registration steps of _registry.py;
pruning entries of dead owners. Checking files out and deleting them, the slow parts, run
outside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ._bare import init_bare_repository
from ._files import read_stripped, rmtree, write_atomically
from ._git import GitResult
from ._layout import (
    MARKER,
    REFRESH_MARKER,
    CacheLayout,
    read_marker,
    read_only_error,
    upgrade_marker,
    write_marker,
)
from ._lock import RepoLock
from ._reference import RECORD as REFERENCE_RECORD
from ._reference import ReferenceCache, reference_problem
from ._registry import WorktreeRegistry
from ._remote import NAMED_PREFIX, OFFLINE_HINT, PIN_PREFIX, REMOTE_HEAD, Remote
from ._runner import GitRunner
from ._shallow import DEPTH, fetched_in_session, mark_fetched, name_patterns, name_refspecs
from .errors import (
    CacheCorruptError,
    CacheWriteError,
    CommitNotFoundError,
    RemoteError,
    RepoClonesError,
)
from .health import damaged_object_line, find_problem, names_damaged_file, tips_without_trees
from .revisions import Revision
from .stats import RepoStats
from .urls import RepoURL

__all__ = ["NAMED_PREFIX", "SUBMODULE_RECORD", "CacheEntries", "DamagedEntry"]

log = logging.getLogger("pytest_repoclones")

_T = TypeVar("_T")

#: Sessions remembered in REFRESH_MARKER: concurrent runs each find their own id there.
REFRESH_MEMORY = 32
#: Marker field: the (redacted) URL of the superproject an entry was first cloned for.
SUBMODULE_RECORD = "submodule_of"
#: Times an operation is retried after its cache entry was removed under it (gc in a loop).
ENTRY_RETRIES = 3
# A fetch's connectivity check found objects missing: the remote sent too little, or (what we
# check with fsck) the cache lost an object the remote assumed we have.
_INCOMPLETE_FETCH = "did not send all necessary objects"
_DAMAGED = "git cannot read some of its objects"


class DamagedEntry(CacheCorruptError):
    """git tripped over a missing or damaged object of a cache entry.

    ``add_worktree`` and ``resolve`` catch it, rebuild the entry once and retry; raised again
    after that, it reaches the caller as the CacheCorruptError it is.
    """

    git_dir: Path | None = None
    #: The entry's completion marker when the damage was seen: another one means the entry was
    #: rebuilt meanwhile (by another process that saw the same damage).
    marker: str | None = None


class CacheEntries:
    """Every cache entry one store uses, with what this process knows of each (by cache key):
    prepared this session, refreshed this session, partial, and which entry it prepared."""

    def __init__(
        self,
        layout: CacheLayout,
        runner: GitRunner,
        registry: WorktreeRegistry,
        *,
        session_id: str,
        offline: bool,
        clone_filter: str | None,
        clone_filters: Mapping[str, str | None],
        lock: Callable[[RepoURL], RepoLock],
        remote: Callable[[RepoURL], Remote],
        stats: Callable[[RepoURL], RepoStats],
        drop_parked: Callable[[str], None],
        mutex: threading.Lock,
        reference: ReferenceCache | None = None,
        warn: Callable[[str], None] | None = None,
        shallow: bool = False,
        shallow_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.layout = layout
        self.cache_dir = layout.cache_dir
        self._runner = runner
        self._registry = registry
        self.session_id = session_id
        self.offline = offline
        self.clone_filter = clone_filter
        self._clone_filters = clone_filters
        self._lock = lock
        self._remote = remote
        self._stats = stats
        self._drop_parked = drop_parked
        self._mutex = mutex
        self._reference = reference or ReferenceCache(None)
        self._warn = warn
        #: New entries are shallow (all, or those of these keys); an entry's marker decides.
        self.shallow = shallow
        self._shallow_keys = shallow_keys
        self._shallow: dict[str, bool] = {}
        self._prepared: set[str] = set()
        self._refreshed: set[str] = set()
        self._partial: dict[str, bool] = {}
        #: Inode of each prepared entry's marker: a new one means the entry was replaced.
        self._entry_ids: dict[str, int] = {}

    @property
    def read_only(self) -> bool:
        return self.layout.read_only

    def forget(self, key: str) -> None:
        """The entry was removed under us: whatever we knew of it is void."""
        with self._mutex:
            self._prepared.discard(key)
            self._refreshed.discard(key)
            self._partial.pop(key, None)
            self._shallow.pop(key, None)

    def prepared(self, key: str) -> bool:
        """Whether this process already made sure of the entry (cloned or checked it)."""
        return key in self._prepared

    def refreshed(self, key: str) -> bool:
        return key in self._refreshed

    def _git_dir(self, repo: RepoURL) -> Path:
        return self.layout.git_dir(repo.key)

    def _git(self, args: list[str], *, git_dir: Path) -> GitResult:
        return self._runner.run(args, git_dir=git_dir)

    def rebuilding_once(self, repo: RepoURL, commit: object, operation: Callable[[], _T]) -> _T:
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
                except DamagedEntry as damage:
                    self._rebuild_damaged(repo, commit, damage)
                return operation()
            except (RepoClonesError, OSError):
                if attempt == ENTRY_RETRIES or not self._entry_replaced(repo):
                    raise
                log.info("repoclones: cache entry of %s removed meanwhile; again", repo.redacted)
                self.forget(repo.key)
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

    def read_only_error(self, repo: RepoURL, what: str, commit: str | None) -> CacheWriteError:
        return read_only_error(self.cache_dir, repo.redacted, what, commit)

    def ensure(self, repo: RepoURL, *, submodule_of: str | None = None) -> Path:
        """The git dir of a complete clone of ``repo``; clone it first if needed.

        ``submodule_of`` (a redacted URL) is recorded in the marker of a clone made now, for
        `pytest-repoclones list`: the entry was first cloned as that repository's submodule.
        """
        git_dir = self._git_dir(repo)
        if repo.key in self._prepared and (git_dir / MARKER).is_file():
            return git_dir
        if self.read_only:
            if read_marker(git_dir) is None:  # also refuses an entry of a newer format
                raise self.read_only_error(repo, "does not hold this repository", None)
            with self._mutex:
                self._prepared.add(repo.key)
            return git_dir
        with self._lock(repo).hold(f"clone {repo.redacted}"):
            first_use = repo.key not in self._prepared
            if first_use and (git_dir / MARKER).is_file():
                self._check_health_locked(repo, git_dir)
            if not (git_dir / MARKER).is_file():
                self._clone_locked(repo, git_dir, submodule_of=submodule_of)
            elif first_use:
                # A clone we just made has nothing left by dead processes to clear.
                self._prepare_locked(repo, git_dir)
            with contextlib.suppress(OSError):
                self._entry_ids[repo.key] = (git_dir / MARKER).stat().st_ino
        with self._mutex:
            self._prepared.add(repo.key)
        return git_dir

    def _clone_locked(
        self, repo: RepoURL, git_dir: Path, *, submodule_of: str | None = None
    ) -> None:
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
            seed = self._reference.entry(repo, clone_filter)
            borrowed = None if seed is None else self._reference.borrow(tmp, seed)
            shallow = self.shallow or repo.key in self._shallow_keys
            extra: dict[str, Any] = {"shallow": True} if shallow else {}
            if not shallow:  # a shallow entry starts empty: each commit comes when asked for
                problem = "Could not clone"
                self._fetch_upstream(repo, tmp, problem=problem, clone_filter=clone_filter)
                # fetch writes new refs loose: a file check spares a git process (cold path).
                if not (tmp / REMOTE_HEAD).is_file():
                    self._check_has_commits(repo, tmp)
            if borrowed is not None:
                extra[REFERENCE_RECORD] = borrowed
            if submodule_of is not None:
                extra[SUBMODULE_RECORD] = submodule_of
            write_marker(
                tmp, url=repo.redacted, canonical=repo.canonical, filter=clone_filter, **extra
            )
            self._mark_refreshed(tmp)
            self.layout.publish(tmp, git_dir, self._lock(repo))
            self._partial[repo.key] = clone_filter is not None
            self._shallow[repo.key] = shallow
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
        # The reference first: a vanished one also shows as objects missing, less clearly.
        problem = reference_problem(git_dir) or find_problem(
            git_dir, lambda: tips_without_trees(git_dir, self._runner)
        )
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
        message = f"repoclones: cloning {repo.redacted} again: cache entry {git_dir}: {problem}"
        log.warning("%s", message)
        if self._warn is not None:
            self._warn(message)
        self.layout.discard(git_dir)

    def check_damage(
        self, repo: RepoURL, git_dir: Path, stderr: str, *, serving: bool = False
    ) -> None:
        """Raise DamagedEntry if git said an object of the published entry is missing or
        damaged (only ever called once git failed, or printed an error: no extra process)."""
        if git_dir != self._git_dir(repo) or self.is_partial(repo):
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
        if git_dir != self._git_dir(repo) or self.is_partial(repo):
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

    def _damaged(self, repo: RepoURL, git_dir: Path, line: str) -> DamagedEntry:
        damage = DamagedEntry(
            f"Cache entry {git_dir} is damaged: {_DAMAGED}",
            url=repo.redacted,
            git_error=repo.scrub(line),
            hint=f"delete {git_dir}, or run `pytest-repoclones verify --full {repo.redacted}`",
        )
        damage.git_dir = git_dir
        damage.marker = read_stripped(git_dir / MARKER)
        return damage

    def _rebuild_damaged(self, repo: RepoURL, commit: object, damage: DamagedEntry) -> None:
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
            self._drop_parked(repo.key)  # ours, idle: they must not keep the entry alive
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
        self, repo: RepoURL, git_dir: Path, asked: str | None, damage: DamagedEntry
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

    def refresh(self, repo: RepoURL, git_dir: Path) -> None:
        """Fetch branches and tags, at most once per repository per session."""
        if repo.key in self._refreshed or self.offline or self.read_only:
            return  # offline, read-only: branches and tags are what the cache last saw
        if self.is_shallow(repo):
            return  # names are fetched one by one (fetch_name): all of them is the history
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

    def refresh_named_ref(self, repo: RepoURL, git_dir: Path, revision: Revision) -> None:
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
        self,
        repo: RepoURL,
        git_dir: Path,
        *,
        problem: str,
        clone_filter: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        result = self._remote(repo).fetch_upstream(git_dir, clone_filter=clone_filter, extra=extra)
        if not result.ok:
            self._check_fetch_damage(repo, git_dir, result)
            raise RemoteError(problem, url=repo.redacted, git_error=repo.scrub(result.error_line))

    def fetch_commit_locked(self, repo: RepoURL, git_dir: Path, revision: Revision) -> None:
        """Fetch one object by full name (caller holds the lock); pin it under refs/repoclones."""
        self._lock(repo).assert_held()
        sha = revision.text
        assert sha is not None
        shallow = self.is_shallow(repo)
        result = self._remote(repo).fetch_commit(git_dir, sha, depth=DEPTH if shallow else None)
        if result.ok:
            return
        self._check_fetch_damage(repo, git_dir, result)
        if not Remote.not_found(result) or shallow:
            # A shallow entry never takes every branch and tag to look for one commit.
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

    def touch(self, git_dir: Path) -> None:
        """Record the last use (the marker's mtime) for `pytest-repoclones gc`: one utime."""
        with contextlib.suppress(OSError):
            os.utime(git_dir / MARKER)

    def is_shallow(self, repo: RepoURL) -> bool:
        """Whether the entry was made shallow (``--repo-shallow``): see ``_shallow``."""
        shallow = self._shallow.get(repo.key)
        if shallow is None:
            metadata = read_marker(self._git_dir(repo)) or {}
            shallow = bool(metadata.get("shallow"))
            self._shallow[repo.key] = shallow
        return shallow

    def fetch_name(self, repo: RepoURL, git_dir: Path, revision: Revision) -> None:
        """Fetch a branch, tag, ref or the default branch into a shallow entry, depth 1, once
        per session (a name that is not upstream is left for the lookup to report)."""
        name = revision.text
        session = self.session_id
        if self.offline or self.read_only or fetched_in_session(git_dir, name, session):
            return
        remote = self._remote(repo)
        with self._lock(repo).hold(f"fetch {name or 'HEAD'} (shallow)"):
            if fetched_in_session(git_dir, name, session):
                return  # another worker of this session did
            patterns = None if name is None else name_patterns(name)
            listing = ""
            if patterns is not None:
                listed = remote.list_refs(git_dir, patterns)
                if not listed.ok and not Remote.lacks(listed):
                    raise remote.fetch_error(name, listed, "Could not list the remote's refs")
                listing = listed.stdout
            specs = name_refspecs(name, listing)
            if specs:
                result = remote.fetch(git_dir, specs, extra=[f"--depth={DEPTH}", "--no-tags"])
                if not result.ok and not Remote.not_found(result):
                    self._check_fetch_damage(repo, git_dir, result)
                    raise remote.fetch_error(name, result, "Could not fetch")
            mark_fetched(git_dir, name, session)

    def deepen(self, repo: RepoURL, git_dir: Path, sha: str | None) -> None:
        """Make a shallow entry complete: every ancestor of what it holds (``sha``'s among
        them), or, without ``sha``, every branch and tag with their whole history."""
        if not (git_dir / "shallow").exists() and sha is not None:
            return
        with self._lock(repo).hold(f"deepen {repo.redacted}"):
            if sha is None:
                self._shallow[repo.key] = False  # as a full entry: refreshed as one from now
                extra = ["--unshallow"] if (git_dir / "shallow").exists() else []
                self._fetch_upstream(repo, git_dir, problem="Could not deepen", extra=extra)
                self._mark_refreshed(git_dir)
                with self._mutex:
                    self._refreshed.add(repo.key)
                return
            if not (git_dir / "shallow").exists():
                return  # another process did
            refspec = f"+{sha}:{PIN_PREFIX}{sha}"
            result = self._remote(repo).fetch(git_dir, [refspec], extra=["--unshallow"])
        if not result.ok:
            raise self._remote(repo).fetch_error(sha, result, "Could not fetch the history")

    def is_partial(self, repo: RepoURL) -> bool:
        """Whether the cached clone was made with a filter (then it fetches via 'origin')."""
        partial = self._partial.get(repo.key)
        if partial is None:
            metadata = read_marker(self._git_dir(repo)) or {}
            partial = bool(metadata.get("filter"))
            self._partial[repo.key] = partial
        return partial
