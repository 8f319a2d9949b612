"""What the ``pytest-repoclones`` command does to the cache, apart from parsing and printing.

Every removal follows the store's own rules, so that it is safe while test sessions run:

* under the entry's lock, taken with a short timeout: a busy entry is skipped, not waited for;
* never while a worktree of a live process (or a kept or hand-made worktree) is registered in
  it: that process would lose its checkout's repository under its feet. ``force`` lifts this
  for kept worktrees only (their owner is gone; a human asked to drop them), never for live
  or hand-made ones;
* by renaming into ``tmp/trash.*`` first, so readers see a complete entry or none, and what a
  killed gc leaves behind is deleted by the next session.

Last use is the mtime of the entry's marker, which the store touches on every use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import settings
from ._entry import NAMED_PREFIX, SUBMODULE_RECORD
from ._files import read_stripped, rmtree
from ._git import git_environment, run_git
from ._layout import MARKER, CacheLayout, read_marker
from ._lock import RepoLock
from ._ownership import Registration, judge, points_back
from ._processes import pid_alive
from ._remote import PIN_PREFIX, REMOTE_HEAD
from ._runner import GitRunner
from ._units import (  # noqa: F401 - also importable from here, as before
    format_age,
    format_size,
    format_span,
    parse_duration,
    parse_size,
    tree_size,
)
from .cache_records import Entry, GcReport, Prefetched, Removal, VerifyResult
from .errors import InvalidInputError, LockTimeoutError, RepoClonesError
from .health import find_problem, tips_without_trees
from .store import RepoStore
from .urls import DEFAULT_PROTOCOLS, parse_url, redact

__all__ = [
    "CacheAdmin",
    "Entry",
    "GcReport",
    "Prefetched",
    "Removal",
    "VerifyResult",
    "format_size",
    "parse_duration",
    "parse_size",
    "resolve_cache_dir",
]

#: How long gc and clear wait for an entry's lock: a held lock means a session is using it.
PROBE_LOCK_TIMEOUT = 0.1
#: How long verify waits for an entry's lock (sessions hold it for seconds at most, but a
#: clone or fetch of a large repository holds it for as long as the transfer takes).
VERIFY_LOCK_TIMEOUT = 30.0
#: fsck of a large repository takes minutes.
FSCK_TIMEOUT = 3600.0


def resolve_cache_dir(
    option: str | os.PathLike[str] | None, cwd: Path | None = None
) -> tuple[Path, str]:
    """The cache directory and where it came from: option, environment, the ``repo_cache_dir``
    of the pytest configuration pytest would use in ``cwd`` (default: the current directory),
    or the user default. The same order as the plugin's, so that ``pytest-repoclones list``
    run in a project shows the cache its test sessions use."""

    def project() -> tuple[Path, str] | None:
        try:
            start = cwd if cwd is not None else Path.cwd()
        except OSError:  # the current directory was deleted: no project around us
            return None
        return settings.project_cache_dir(start)

    return settings.resolve_cache_dir(option, "--cache-dir", ini=project)


def _quiet(_message: str) -> None:
    """Lock-wait notices are noise for a short probe: a busy entry is reported instead."""


class CacheAdmin:
    """Listing, pruning, verifying and warming one cache directory."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        notice: Callable[[str], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self._notice = notice
        self._progress = progress
        self.layout = CacheLayout(self.cache_dir)
        # Only for its locks (short timeout), its liveness rule and its _discard.
        self._runner = GitRunner(DEFAULT_PROTOCOLS, FSCK_TIMEOUT)

    def _lock(
        self,
        key: str,
        shown_url: str,
        timeout: float,
        notice: Callable[[str], None] | None = None,
    ) -> RepoLock:
        """The entry's lock, as sessions take it (shared with this process's own stores)."""
        return RepoLock(
            self.layout.lock_path(key),
            timeout=timeout,
            shown_url=shown_url,
            notice=notice or _quiet,
            enabled=not self.layout.read_only,
        )

    # -- reading ---------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every entry under ``repos/``, most recently used first."""
        repos = self.cache_dir / "repos"
        if not repos.is_dir():
            return []
        found = [self._read_entry(path) for path in repos.glob("*.git") if path.is_dir()]
        return sorted(found, key=lambda entry: entry.last_used, reverse=True)

    def entry(self, url: str) -> Entry | None:
        """The entry of ``url`` (any spelling of it that shares the cache key), if cached."""
        git_dir = self.layout.git_dir(parse_url(url).key)
        return self._read_entry(git_dir) if git_dir.is_dir() else None

    def _read_entry(self, git_dir: Path) -> Entry:
        metadata = read_marker(git_dir, check=False)
        last_used = _mtime(git_dir / MARKER) if metadata is not None else _mtime(git_dir)
        data = metadata or {}
        url = data.get("url")
        canonical = data.get("canonical")
        created = data.get("created")
        clone_filter = data.get("filter")
        submodule_of = data.get(SUBMODULE_RECORD)
        pins = pinned_commits(git_dir)
        return Entry(
            key=git_dir.name[: -len(".git")],
            git_dir=git_dir,
            url=redact(url) if isinstance(url, str) else None,
            canonical=redact(canonical) if isinstance(canonical, str) else None,
            clone_filter=clone_filter if isinstance(clone_filter, str) else None,
            created=float(created) if isinstance(created, (int, float)) else None,
            last_used=last_used,
            size=tree_size(git_dir),
            pins=None if pins is None else len(pins),
            worktrees=sum(1 for admin in _admin_dirs(git_dir) if _checkout_exists(admin)),
            complete=metadata is not None and isinstance(url, str),
            submodule_of=redact(submodule_of) if isinstance(submodule_of, str) else None,
        )

    def users(self, git_dir: Path) -> list[str]:
        """Who uses the entry: worktrees of live owners, kept or hand-made ones that exist.

        The store's own rule (_ownership.judge: an owner lives while it holds its lock, in any
        pid namespace or on any host); exact only under the entry's lock.
        """
        return [r.describe() for r in self._blockers(git_dir)]

    def _blockers(self, git_dir: Path) -> list[Registration]:
        """The registrations that keep the entry from removal, live ones first (what --force
        cannot lift is what the user must hear about first)."""
        verdicts: dict[str, bool] = {}
        registrations = [
            judge(self.cache_dir, admin, verdicts=verdicts) for admin in _admin_dirs(git_dir)
        ]
        in_use = [r for r in registrations if r.in_use]
        return sorted(in_use, key=lambda r: r.state == "kept")

    # -- removing --------------------------------------------------------------------------

    def remove(
        self,
        entry: Entry,
        why: str,
        *,
        dry_run: bool = False,
        unused_since: bool = False,
        force: bool = False,
    ) -> Removal:
        """Remove ``entry`` unless it is in use. ``unused_since``: also unless used meanwhile.
        ``force``: kept worktrees do not count as a use (they go with the entry)."""
        if self.layout.read_only:
            return Removal(entry, why, skipped="the cache is read-only")
        lock = self._lock(entry.key, entry.shown_url, PROBE_LOCK_TIMEOUT)
        try:
            with lock.hold(f"pytest-repoclones: remove {entry.git_dir}"):
                if not entry.git_dir.exists():
                    return Removal(entry, why, skipped="already gone")
                if unused_since and _mtime(entry.git_dir / MARKER) > entry.last_used + 1:
                    return Removal(entry, why, skipped="used meanwhile")
                blockers = self._blockers(entry.git_dir)
                kept = tuple(r.tree for r in blockers if r.state == "kept" and r.tree)
                if force:
                    blockers = [r for r in blockers if r.state != "kept"]
                if blockers:
                    users = [r.describe() for r in blockers]
                    skipped = f"in use by {_first(users)}"
                    if all(r.state == "kept" for r in blockers):
                        # Otherwise nothing says how to get rid of it, short of deleting the
                        # directory by hand.
                        skipped += " (left by --repo-keep; --force removes it)"
                    return Removal(entry, why, skipped=skipped)
                if not dry_run:
                    # The kept checkouts go too: without the entry they are broken worktrees.
                    self._discard_entry_locked(entry.git_dir)
                return Removal(entry, why, kept=kept)
        except LockTimeoutError:
            return Removal(entry, why, skipped=f"in use: lock held by {lock.describe_owner()}")

    def _discard_entry_locked(self, git_dir: Path) -> None:
        """Delete the entry and the leftover checkouts of its dead users (none is live)."""
        self._delete_checkouts_locked(git_dir)
        self.layout.discard(git_dir)

    def _delete_checkouts_locked(self, git_dir: Path) -> None:
        """Checkouts registered in ``git_dir`` that still point back into it, which the caller
        found to belong to dead processes: useless once the entry is gone or rebuilt."""
        for admin in _admin_dirs(git_dir):
            gitdir_file = read_stripped(admin / "gitdir")
            if not gitdir_file:
                continue
            tree = Path(gitdir_file).parent
            # Never some other directory: only a checkout whose .git names this very entry.
            if points_back(tree, admin):
                rmtree(tree)

    def clear(
        self, entries: Sequence[Entry], *, dry_run: bool = False, force: bool = False
    ) -> list[Removal]:
        return [self.remove(entry, "cleared", dry_run=dry_run, force=force) for entry in entries]

    def clean_leftovers(self, *, dry_run: bool = False) -> list[tuple[Path, int]]:
        """Clones and trash that killed processes left in ``tmp/``; each checked as the store does.

        ``tmp/trash.<pid>.*``: being deleted, stale once that process is dead.
        ``tmp/<key>.<pid>.<rand>``: a clone being built under ``<key>``'s lock; stale if we can
        take that lock (a live builder holds it from start to publication).
        """
        tmp = self.cache_dir / "tmp"
        removed: list[tuple[Path, int]] = []
        if self.layout.read_only:
            return removed
        # Trash first: taking a lock lets the store delete dead trash itself, unreported.
        paths = sorted(tmp.iterdir()) if tmp.is_dir() else []
        for path in sorted(paths, key=lambda path: not path.name.startswith("trash.")):
            parts = path.name.split(".")
            if parts[0] == "trash" and len(parts) == 3:
                if parts[1].isdigit() and not pid_alive(int(parts[1])):
                    removed.append((path, tree_size(path)))
                    if not dry_run:
                        rmtree(path)
                continue
            key, _, _ = path.name.rpartition(".")
            key, _, pid = key.rpartition(".")
            if not key or not pid.isdigit():
                continue  # not something the store makes: leave it alone
            lock = self._lock(key, key, PROBE_LOCK_TIMEOUT)
            try:
                with lock.hold(f"pytest-repoclones: remove leftover {path}"):
                    if path.exists():
                        removed.append((path, tree_size(path)))
                        if not dry_run:
                            rmtree(path)
            except LockTimeoutError:
                continue  # a clone in progress
        return removed

    def gc(
        self,
        *,
        older_than: float | None = None,
        max_size: int | None = None,
        dry_run: bool = False,
        now: float | None = None,
        force: bool = False,
    ) -> GcReport:
        """Remove entries unused for ``older_than`` seconds, then the least recently used ones
        until the entries total at most ``max_size`` bytes; and ``tmp/`` leftovers.
        ``force``: also entries that only kept worktrees hold."""
        now = time.time() if now is None else now
        report = GcReport(leftovers=self.clean_leftovers(dry_run=dry_run))
        kept: list[Entry] = []
        tried: set[str] = set()
        for entry in sorted(self.entries(), key=lambda e: e.last_used):
            age = now - entry.last_used
            why = None
            if not entry.complete:
                why = "incomplete (no marker)"
            elif older_than is not None and age > older_than:
                why = f"unused for {format_span(age)}"
            if why is not None:
                removal = self.remove(entry, why, dry_run=dry_run, unused_since=True, force=force)
                report.removals.append(removal)
                tried.add(entry.key)
                if removal.removed:
                    continue
            kept.append(entry)
        total = sum(entry.size for entry in kept)
        if max_size is not None:
            for entry in list(kept):  # least recently used first
                if total <= max_size:
                    break
                if entry.key in tried:
                    continue
                why = f"cache above {format_size(max_size)}"
                removal = self.remove(entry, why, dry_run=dry_run, unused_since=True, force=force)
                report.removals.append(removal)
                if removal.removed:
                    kept.remove(entry)
                    total -= entry.size
        report.remaining_size = total
        report.remaining_count = len(kept)
        return report

    # -- verifying -------------------------------------------------------------------------

    def verify(self, entry: Entry, *, full: bool = False, url: str | None = None) -> VerifyResult:
        """Check ``entry``; rebuild it from its remote if damaged, or say what to delete.

        ``url``: the URL to rebuild from (with credentials), else the one the marker recorded.
        """
        store = RepoStore(
            self.cache_dir,
            lock_timeout=VERIFY_LOCK_TIMEOUT,
            notice=self._notice,
            progress=self._progress,
            clone_filter=entry.clone_filter,
        )
        lock = self._lock(entry.key, entry.shown_url, VERIFY_LOCK_TIMEOUT, self._notice)
        problem = None
        if full and entry.complete:
            # fsck can take minutes: run it without the lock, confirm a problem under it.
            problem = _fsck_problem(entry.git_dir)
        try:
            with lock.hold(f"pytest-repoclones: verify {entry.git_dir}"):
                if not entry.git_dir.exists():
                    return VerifyResult(entry, "ok", "removed meanwhile")
                problem = self._problem_locked(store, entry, full=full and problem is not None)
                if problem is None:
                    return VerifyResult(entry, "ok")
                return self._repair_locked(store, entry, problem, url)
        except LockTimeoutError:
            return VerifyResult(entry, "busy", f"lock held by {lock.describe_owner()}")

    def _problem_locked(self, store: RepoStore, entry: Entry, *, full: bool) -> str | None:
        git_dir = entry.git_dir
        if not (git_dir / MARKER).is_file():
            return "incomplete: no completion marker"
        if not entry.complete:
            return f"unreadable marker {MARKER}"
        problem = find_problem(git_dir, lambda: tips_without_trees(git_dir, self._runner))
        if problem is None and full:
            problem = _fsck_problem(git_dir)
        return problem

    def _repair_locked(
        self, store: RepoStore, entry: Entry, problem: str, url: str | None
    ) -> VerifyResult:
        git_dir = entry.git_dir
        if store.read_only:
            return VerifyResult(
                entry, "damaged", f"{problem}; the cache is read-only: not repaired"
            )
        users = self.users(git_dir)
        if users:
            return VerifyResult(
                entry,
                "damaged",
                f"{problem}; in use by {_first(users)}: stop it, then delete {git_dir}",
            )
        source = _rebuild_url(entry, url)
        if source is None:
            if not entry.complete and url is None:
                # Nothing to rebuild from, and the next session would discard it anyway.
                self._discard_entry_locked(git_dir)
                return VerifyResult(entry, "removed", f"{problem}; next use clones it again")
            return VerifyResult(
                entry, "damaged", f"{problem}; no URL to rebuild it from: delete {git_dir}"
            )
        pins = pinned_commits(git_dir) or []
        # Move the damaged entry aside; put it back if the remote cannot give us a new one.
        aside = self.layout.trash_path()
        self._delete_checkouts_locked(git_dir)
        os.rename(git_dir, aside)
        try:
            store.clone(source)
        except RepoClonesError as exc:
            _put_back(aside, git_dir)
            reason = str(exc).splitlines()[0]
            return VerifyResult(
                entry, "damaged", f"{problem}; could not rebuild ({reason}): delete {git_dir}"
            )
        except BaseException:  # Ctrl-C, a full disk: leave the cache as we found it
            _put_back(aside, git_dir)
            raise
        rmtree(aside)
        detail = f"was: {problem}"
        if pins:
            fetched = _fetch_again(store, source, pins)
            detail += f"; fetched {fetched} of {len(pins)} pinned commits again"
        return VerifyResult(entry, "repaired", detail)

    # -- warming ---------------------------------------------------------------------------

    def prefetch(
        self,
        requests: Sequence[tuple[str, Sequence[str]]],
        *,
        clone_filter: str | None = None,
        submodules: bool = False,
    ) -> Iterator[Prefetched]:
        """For each ``(url, commits)``: clone ``url`` if needed, then fetch each commit
        (default: the default branch). One step per repository and per commit, yielded as it
        ends, so a long run shows progress; a failure is a step too and the others still run
        (a CI image build wants to hear of every missing commit at once, not one per try).
        With ``submodules``, each commit's submodules are warmed too (a failure there fails
        that commit's step)."""
        # One store for all: a remote that does not answer fails at once for its next commits.
        store = RepoStore(
            self.cache_dir,
            notice=self._notice,
            progress=self._progress,
            clone_filter=clone_filter,
        )
        for url, commits in requests:
            shown = redact(url)
            names: list[str | None] = list(commits) or [None]
            try:
                key = parse_url(url, store.protocols).key
                before = _transfers(store, key)
                git_dir = store.clone(url)
            except (RepoClonesError, OSError) as exc:
                yield Prefetched(shown, None, "failed", detail=_reason(exc))
                # Its commits cannot be had without the clone: each says so, so that every
                # commit asked for has its line and counts as failed.
                for name in names:
                    shown_name = name or "(default branch)"
                    yield Prefetched(shown, shown_name, "failed", detail="the clone failed")
                continue
            cloned = _transfers(store, key) > before
            yield Prefetched(shown, None, "fetched" if cloned else "cached", git_dir=git_dir)
            for name in names:
                shown_name = name or "(default branch)"
                had = None if cloned else _cached_commit(git_dir, name)
                try:
                    sha = store.resolve(url, name, submodules=submodules)
                except (RepoClonesError, OSError) as exc:
                    yield Prefetched(shown, shown_name, "failed", detail=_reason(exc))
                    continue
                # Not "a fetch ran": a branch name is always checked against the remote, and
                # that is no news when the branch had not moved. New is what the cache did
                # not have under that name when its turn came (a tag that an earlier
                # commit's refresh of branches and tags brought counts as cached).
                status = "cached" if had == sha else "fetched"
                yield Prefetched(shown, shown_name, status, sha=sha, git_dir=git_dir)


def _cached_commit(git_dir: Path, name: str | None) -> str | None:
    """The commit ``name`` gives in the cache as it is, without contacting the remote: where
    the store's resolver looks for it (see _resolve.Resolver._lookup_name). None if none."""
    if name is None:
        refs = [REMOTE_HEAD]
    elif name.startswith(("refs/heads/", "refs/tags/")):
        refs = [name.replace("refs/heads/", "refs/remotes/origin/", 1)]
    elif name.startswith("refs/"):
        refs = [NAMED_PREFIX + name[len("refs/") :]]
    else:  # an object name (full or abbreviated), else a short branch or tag name
        refs = [name, f"refs/tags/{name}", f"refs/remotes/origin/{name}"]
    try:
        result = run_git(
            ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            env=git_environment(),
            git_dir=git_dir,
            stdin="".join(f"{ref}^{{commit}}\n" for ref in refs),
        )
    except (RepoClonesError, OSError):
        return None  # only the report's wording depends on it: "fetched" then
    for line in result.stdout.splitlines():
        sha, _, kind = line.partition(" ")
        if kind == "commit":
            return sha
    return None


def _transfers(store: RepoStore, key: str) -> int:
    stats = store.stats.get(key)
    return 0 if stats is None else stats.clones + stats.fetches


def _reason(exc: BaseException) -> str:
    """One line for a failed step: the problem and git's own line (already redacted)."""
    if isinstance(exc, RepoClonesError):
        # git's error may span lines (a "remote:" line, then "fatal:"): keep them on one.
        git = "; ".join(line.strip() for line in (exc.git_error or "").splitlines() if line.strip())
        return exc.problem + (f" (git: {git})" if git else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _rebuild_url(entry: Entry, url: str | None) -> str | None:
    """A URL that maps to this entry's key: the one given, the marker's, or its canonical form.

    The marker's URL is the original spelling (``git@host:org/repo`` keeps its user) unless it
    carried credentials; the canonical form drops those, and credential helpers may supply them.
    """
    candidates = [url] if url else []
    if entry.url and "***" not in entry.url:
        candidates.append(entry.url)
    if entry.canonical:
        candidates.append(entry.canonical)
    for candidate in candidates:
        try:
            if parse_url(candidate, DEFAULT_PROTOCOLS).key == entry.key:
                return candidate
        except InvalidInputError:
            continue
    return None


def _fetch_again(store: RepoStore, url: str, pins: Sequence[str]) -> int:
    """Fetch the commits a rebuilt entry had pinned (tests may ask for them offline); how
    many came back."""
    fetched = 0
    for sha in pins:
        try:
            store.resolve(url, sha)
            fetched += 1
        except RepoClonesError:
            continue
    return fetched


def _put_back(aside: Path, git_dir: Path) -> None:
    """Return a damaged entry to its place (under its lock) when no new one replaced it."""
    if not git_dir.exists():
        os.rename(aside, git_dir)


def _fsck_problem(git_dir: Path) -> str | None:
    result = run_git(
        ["fsck", "--connectivity-only", "--no-dangling", "--no-progress"],
        env=git_environment(),
        git_dir=git_dir,
        timeout=FSCK_TIMEOUT,
    )
    if result.ok:
        return None
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    first = next((line for line in lines if line), f"exit status {result.returncode}")
    return f"git fsck: {first}"


def pinned_commits(git_dir: Path) -> list[str] | None:
    """Commits pinned under ``refs/repoclones/pins/``, read from the ref files themselves: no
    git process, and still readable when objects are damaged (to fetch them again)."""
    pins: set[str] = set()
    packed = git_dir / "packed-refs"
    try:
        if packed.exists():
            for line in packed.read_text().splitlines():
                _, _, ref = line.partition(" ")
                if ref.startswith(PIN_PREFIX):
                    pins.add(ref[len(PIN_PREFIX) :])
        loose = git_dir / PIN_PREFIX
        if loose.is_dir():
            pins.update(path.name for path in loose.iterdir() if not path.name.endswith(".lock"))
    except (OSError, UnicodeDecodeError):
        return None
    return sorted(pins)


def _admin_dirs(git_dir: Path) -> list[Path]:
    root = git_dir / "worktrees"
    try:
        return sorted(path for path in root.iterdir() if path.is_dir())
    except OSError:
        return []


def _checkout_exists(admin: Path) -> bool:
    """Whether the checkout registered in ``admin`` is on disk (git's ``gitdir`` file names
    its ``.git``)."""
    gitdir_file = read_stripped(admin / "gitdir")
    return gitdir_file is not None and gitdir_file != "" and Path(gitdir_file).parent.is_dir()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _first(users: list[str]) -> str:
    more = len(users) - 1
    return users[0] + (f" (and {more} more)" if more else "")
