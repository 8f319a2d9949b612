"""Submodules checked out inside a superproject's worktree, each from its own cache entry.

Every submodule repository is a cache entry like any other (keyed by its URL, cloned once,
fetched by object name when the recorded commit is missing, pinned, under its own lock).
Its checkout is made the way the superproject's own worktree is:

* in a worktree of the cache, a worktree of the submodule's entry, registered there under
  this process's owner lock (so pruning, crash recovery, ``gc`` and ``clear`` see it), on a
  detached HEAD at the recorded commit, as `git submodule update` leaves it. Its ``.git`` is
  a gitfile naming its admin entry in the submodule's cache entry: git accepts any git
  directory there (``git submodule status``, ``git status`` and ``git diff`` in the
  superproject only open it), and nothing is copied;
* in an isolated superproject (``isolate=True``) and in one borrowing a read-only cache, a
  repository of its own under the superproject's ``.git/modules/<name>``, where git itself
  keeps submodules: isolated likewise from a pack of the commit's history (or, with
  ``history=False``, the commit alone, shallow), or borrowing the read-only entry's objects.

The superproject's per-worktree configuration (``config.worktree`` beside its admin entry,
or its own ``config``) gets ``submodule.<name>.url`` and ``.active``, what
`git submodule init` writes, never into the entry's shared configuration. URLs written there
carry no credentials.

The cache entry of the superproject is only read here (its ``.gitmodules`` and gitlinks);
each submodule's entry is locked on its own, never while another lock is held.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from ._bare import config_quote
from ._entry import CacheEntries, DamagedEntry
from ._files import rmtree
from ._git import GitResult
from ._layout import MARKER, CacheLayout, key_of
from ._lock import RepoLock
from ._packs import HistoryPacks, Pack
from ._registry import WorktreeRegistry, write_checkout_reflog
from ._resolve import Resolver
from ._reuse import RunInWorktree
from ._runner import GitRunner
from ._standalone import init_submodule_repository
from ._submodules import (
    RecordedSubmodule,
    SubmoduleProblem,
    check_path,
    named_problem,
    pair_with_gitlinks,
    parse_gitmodules,
    prefixes,
    resolve_submodule_url,
)
from .errors import (
    CacheCorruptError,
    CommitNotFoundError,
    InvalidInputError,
    RepoClonesError,
    WorktreeError,
)
from .revisions import Revision
from .stats import RepoStats
from .urls import RepoURL, redact
from .worktree import Worktree

__all__ = ["SubmoduleCheckouts"]

_NO_GITMODULES = "unable to resolve config blob"
#: Submodule repositories cloned at once (each clone mostly waits on the network).
PARALLEL_CLONES = 8
_SYMLINK_MODE = "120000"


@dataclass(frozen=True)
class _Planned:
    """A submodule to set up: what the commit records, and its validated URL."""

    recorded: RecordedSubmodule
    repo: RepoURL
    #: Its directory in the superproject's checkout; None when outside the sparse paths.
    target: Path | None


class SubmoduleCheckouts:
    """Makes, keeps and removes the submodule checkouts of one store's worktrees."""

    def __init__(
        self,
        layout: CacheLayout,
        runner: GitRunner,
        registry: WorktreeRegistry,
        entries: CacheEntries,
        resolver: Resolver,
        packs: HistoryPacks,
        *,
        lock_by_key: Callable[[str, str], RepoLock],
        stats: Callable[[RepoURL], RepoStats],
        run_in_worktree: RunInWorktree,
    ) -> None:
        self.layout = layout
        self._runner = runner
        self._registry = registry
        self._entries = entries
        self._resolver = resolver
        self._packs = packs
        self._lock_by_key = lock_by_key
        self._stats = stats
        self._run = run_in_worktree

    # -- making ----------------------------------------------------------------------------

    def check_out(
        self, repo: RepoURL, worktree: Worktree, *, history: bool = True
    ) -> tuple[Worktree, ...]:
        """Check out every submodule of ``worktree``'s commit, recursively, at the commits it
        records; the new checkouts (each with its own ``submodules``).

        On failure, the checkouts made so far are unregistered before the error is raised;
        their files go with the superproject's, which the caller removes.
        """
        made: list[Worktree] = []
        try:
            return self._check_out_level(repo, worktree, history, made)
        except BaseException:
            with contextlib.suppress(OSError, RepoClonesError):
                self.remove(made)
            raise

    def _check_out_level(
        self, repo: RepoURL, parent: Worktree, history: bool, made: list[Worktree]
    ) -> tuple[Worktree, ...]:
        planned = [
            self._locate(repo, parent, item)
            for item in self._plan(repo, parent.git_dir, parent.commit)
        ]
        present = [item for item in planned if item.target is not None]
        if not present:
            return ()
        wanted = [item for item in present if item.recorded.populate]
        # Counted before the parallel clones: a checkout whose entry they cloned is no hit.
        network_before = {item.repo.key: self._network_ops(item.repo) for item in wanted}
        self._clone_new_entries(repo, wanted)
        self._configure(parent, present)
        return tuple(
            self._check_out_one(repo, parent, item, history, made, network_before[item.repo.key])
            for item in wanted
        )

    def _network_ops(self, repo: RepoURL) -> int:
        stats = self._stats(repo)
        return stats.clones + stats.fetches

    def _check_out_one(
        self,
        repo: RepoURL,
        parent: Worktree,
        item: _Planned,
        history: bool,
        made: list[Worktree],
        network_before: int,
    ) -> Worktree:
        sub = item.repo
        assert item.target is not None
        with _within(repo, parent.commit, item.recorded):
            checkout, has_gitmodules = self._entries.rebuilding_once(
                sub,
                item.recorded.commit,
                lambda: self._make(repo, parent, item, history),
            )
        made.append(checkout)
        nested: tuple[Worktree, ...] = ()
        if has_gitmodules:  # known from the lookup of the commit: no process for a leaf
            with _within(repo, parent.commit, item.recorded):
                nested = self._check_out_level(sub, checkout, history, made)
        stats = self._stats(sub)
        stats.worktrees += 1
        stats.submodules += 1
        # The definition Checkouts.add uses: no clone and no fetch by this process for it.
        if self._network_ops(sub) == network_before:
            stats.cache_hits += 1
        if not checkout.isolated and not checkout.standalone:
            self._entries.touch(checkout.git_dir)
        return replace(checkout, submodules=nested) if nested else checkout

    def _make(
        self, repo: RepoURL, parent: Worktree, item: _Planned, history: bool
    ) -> tuple[Worktree, bool]:
        """One submodule's checkout at ``item.target``: its entry cloned and its commit
        fetched if need be, then the kind of checkout its superproject is; and whether the
        commit has a ``.gitmodules`` (nested submodules)."""
        sub = item.repo
        git_dir = self._entries.ensure(sub, submodule_of=repo.redacted)
        sha, has_gitmodules = self._recorded_commit(item, git_dir)
        assert item.target is not None
        url = sub.original
        if parent.isolated:
            made = self._isolated(sub, git_dir, parent, item, sha, url, history)
        elif parent.standalone:
            made = self._borrowing(sub, git_dir, parent, item, sha, url)
        else:
            made = self._registered(sub, git_dir, item.target, sha, url)
        return made, has_gitmodules

    def _clone_new_entries(self, repo: RepoURL, items: Sequence[_Planned]) -> None:
        """Clone (or first check) at once the entries this process has not used yet: on a
        cold cache the clones dominate, and `git submodule update` makes them one after
        another. A failure is left for the checkout of that submodule to raise, in context."""
        fresh: dict[str, _Planned] = {}
        for item in items:
            if not self._entries.prepared(item.repo.key):
                fresh.setdefault(item.repo.key, item)  # one thread per entry (and its lock)
        if len(fresh) < 2:
            return

        def clone(item: _Planned) -> None:
            with contextlib.suppress(RepoClonesError, OSError):
                self._entries.ensure(item.repo, submodule_of=repo.redacted)

        workers = min(PARALLEL_CLONES, len(fresh))
        with ThreadPoolExecutor(workers, thread_name_prefix="repoclones-submodules") as pool:
            list(pool.map(clone, fresh.values()))

    def _recorded_commit(self, item: _Planned, git_dir: Path) -> tuple[str, bool]:
        """The commit the superproject records, from the submodule's entry (fetched by name
        if missing), and whether it has a ``.gitmodules``. Not found: the error names the
        submodule's repository and the commit, and (see _within) the superproject."""
        sub, recorded = item.repo, item.recorded
        revision = Revision(recorded.commit, "full")
        try:
            return self._resolver.commit_with_file(sub, git_dir, revision, ".gitmodules")
        except CommitNotFoundError as exc:
            raise CommitNotFoundError(
                f"The commit the superproject records is not in {sub.redacted}: "
                f"{exc.problem[:1].lower()}{exc.problem[1:]}",
                url=sub.redacted,
                commit=recorded.commit,
                git_error=exc.git_error,
                hint=exc.hint,
            ) from None

    def _registered(
        self, sub: RepoURL, git_dir: Path, target: Path, sha: str, url: str
    ) -> Worktree:
        """A worktree of the submodule's entry, registered there, on a detached HEAD."""
        lock = self._lock_by_key(sub.key, sub.redacted)
        with lock.hold(f"submodule checkout {target}"):
            if not (git_dir / MARKER).is_file():
                # Removed meanwhile by `pytest-repoclones gc/clear`: rebuilding_once sees
                # the entry replaced, clones it again and tries once more.
                raise WorktreeError("Cache entry removed meanwhile", url=sub.redacted)
            admin = self._registry.register(lock, git_dir, target, "", detached=sha)
        checkout = Worktree(
            path=target, url=url, commit=sha, branch="", git_dir=git_dir, admin_dir=admin
        )
        try:
            self._write_files(sub, checkout)
        except BaseException:
            with contextlib.suppress(OSError, RepoClonesError):
                self._unregister(checkout)
            _empty(target)
            raise
        return checkout

    def _isolated(
        self,
        sub: RepoURL,
        cache_git_dir: Path,
        parent: Worktree,
        item: _Planned,
        sha: str,
        url: str,
        history: bool,
    ) -> Worktree:
        """A repository of its own under the superproject's ``modules/``, holding only the
        recorded commit's history (``history=False``: the commit alone, shallow)."""
        assert item.target is not None
        if self._entries.is_partial(sub):
            raise InvalidInputError(
                "isolate=True needs full clones; this submodule's repository was cloned with "
                "a filter",
                url=sub.redacted,
                commit=sha,
                hint="drop --repo-clone-filter for it (repo_clone_filters per URL)",
            )
        git_dir = _modules_dir(parent, item.recorded.name)
        try:
            pack = self._pack(sub, cache_git_dir, git_dir, sha, history)
            init_submodule_repository(git_dir, item.target, sha, pack=pack, shallow=not history)
            checkout = Worktree(
                path=item.target,
                url=url,
                commit=sha,
                branch="",
                git_dir=git_dir,
                admin_dir=git_dir,
                isolated=True,
            )
            self._write_files(sub, checkout)
            # Only what the test does from here on may be in the logs (as for the superproject);
            # the one line `git submodule update` leaves names nothing else.
            (git_dir / "ORIG_HEAD").unlink(missing_ok=True)
            rmtree(git_dir / "logs")
            write_checkout_reflog(git_dir, sha)
        except BaseException:
            rmtree(git_dir)
            _empty(item.target)
            raise
        return checkout

    def _pack(
        self, sub: RepoURL, cache_git_dir: Path, git_dir: Path, sha: str, history: bool
    ) -> Pack:
        if self.layout.read_only:
            staging = git_dir / "objects" / "pack"
            staging.mkdir(parents=True)
            made = self._packs.build(
                cache_git_dir,
                sha,
                staging,
                history=history,
                key=sub.key,
                objects=git_dir / "objects",
                shallow=not history,
            )
        else:
            made = self._packs.shared(
                cache_git_dir, sha, history=history, key=sub.key, shallow=not history
            )
        if isinstance(made, GitResult):
            self._entries.check_damage(sub, cache_git_dir, made.stderr, serving=True)
            raise WorktreeError(
                "Could not build an isolated submodule repository",
                url=sub.redacted,
                commit=sha,
                git_error=made.error_line,
            )
        return made

    def _borrowing(
        self,
        sub: RepoURL,
        cache_git_dir: Path,
        parent: Worktree,
        item: _Planned,
        sha: str,
        url: str,
    ) -> Worktree:
        """For a read-only cache: a repository under the superproject's ``modules/`` borrowing
        the entry's objects; nothing is written into the cache."""
        assert item.target is not None
        git_dir = _modules_dir(parent, item.recorded.name)
        try:
            init_submodule_repository(git_dir, item.target, sha, borrow_from=cache_git_dir)
            write_checkout_reflog(git_dir, sha)
            checkout = Worktree(
                path=item.target,
                url=url,
                commit=sha,
                branch="",
                git_dir=git_dir,
                admin_dir=git_dir,
                standalone=True,
            )
            self._write_files(sub, checkout)
        except BaseException:
            rmtree(git_dir)
            _empty(item.target)
            raise
        return checkout

    def _write_files(self, sub: RepoURL, checkout: Worktree) -> None:
        # What `git submodule update` runs (a checkout of the detached commit), without
        # recursing: nested submodules come from their own entries.
        self._run(sub, checkout, ["reset", "--quiet", "--hard", "--no-recurse-submodules"])

    # -- what a commit records -------------------------------------------------------------

    def _plan(self, repo: RepoURL, git_dir: Path, commit: str) -> list[_Planned]:
        """The submodules ``commit`` records, with their URLs resolved and checked."""
        planned = []
        for recorded in self.recorded(repo, git_dir, commit):
            try:
                url = resolve_submodule_url(repo, recorded.url, self._runner.protocols)
            except SubmoduleProblem as exc:
                raise _refused(exc, recorded, repo, commit) from None
            planned.append(_Planned(recorded, url, None))
        return planned

    def recorded(self, repo: RepoURL, git_dir: Path, commit: str) -> list[RecordedSubmodule]:
        """What ``commit`` records: its ``.gitmodules`` (read from the commit, never from a
        checkout a test may have changed) paired with its gitlinks. Two git processes with a
        ``.gitmodules``, one without."""
        listing = self._runner.run(
            ["config", "--no-includes", "-z", "--blob", f"{commit}:.gitmodules", "--list"],
            git_dir=git_dir,
            key=repo.key,
        )
        if not listing.ok:
            if _NO_GITMODULES in listing.stderr:
                return []
            raise InvalidInputError(
                "The commit's .gitmodules cannot be read",
                url=repo.redacted,
                commit=commit,
                git_error=listing.error_line,
            )
        entries = parse_gitmodules(listing.stdout)
        paths: set[str] = set()
        for variables in entries.values():
            with contextlib.suppress(SubmoduleProblem):  # refused by the pairing, by name
                path = check_path(variables.get("path", ""))
                paths.update([path, *prefixes(path)])
        tree = self._tree_entries(repo, git_dir, commit, sorted(paths))
        if tree.get(".gitmodules", ("", ""))[0] == _SYMLINK_MODE:
            # Read through the link, it may parse as anything (an empty config, say).
            raise InvalidInputError(
                "Submodules refused: the commit's .gitmodules is a symlink (git refuses to "
                "read one)",
                url=repo.redacted,
                commit=commit,
            )
        try:
            return pair_with_gitlinks(entries, tree)
        except SubmoduleProblem as exc:
            exc.add_context(url=repo.redacted, commit=commit)
            raise

    def _tree_entries(
        self, repo: RepoURL, git_dir: Path, commit: str, paths: list[str]
    ) -> dict[str, tuple[str, str]]:
        """(mode, object) of each of ``paths`` in ``commit``, and of ``.gitmodules``; a path
        below a symlink or a gitlink is not there (ls-tree stops at them, listing them)."""
        result = self._runner.run(
            [
                "--literal-pathspecs",
                "ls-tree",
                "-z",
                "--full-tree",
                commit,
                "--",
                ".gitmodules",
                *paths,
            ],
            git_dir=git_dir,
            key=repo.key,
        )
        if not result.ok:
            raise InvalidInputError(
                "The commit's submodule paths cannot be listed",
                url=repo.redacted,
                commit=commit,
                git_error=result.error_line,
            )
        tree = {}
        for line in result.stdout.split("\0"):
            meta, _, path = line.partition("\t")
            fields = meta.split()
            if len(fields) == 3:
                tree[path] = (fields[0], fields[2])
        return tree

    def _locate(self, repo: RepoURL, parent: Worktree, item: _Planned) -> _Planned:
        """Where the submodule goes in ``parent``'s checkout, checked on disk: every directory
        on the way a real one (a symlink there, as a case-insensitive filesystem can make of
        ``A`` and ``a/``, could lead into ``.git``: CVE-2024-32002), the last one empty, as
        the superproject's checkout leaves a gitlink. Not there at all: outside the sparse
        paths, left out as `git submodule update` leaves it."""
        current = parent.path
        for part in item.recorded.path.split("/"):
            current = current / part
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                return item
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
                problem = SubmoduleProblem(
                    f"its path goes through {current.relative_to(parent.path)}, which is not "
                    "a directory in the checkout (CVE-2024-32002)"
                )
                raise _refused(problem, item.recorded, repo, parent.commit)
        if any(current.iterdir()):
            problem = SubmoduleProblem(f"its directory {current} is not empty after checkout")
            raise _refused(problem, item.recorded, repo, parent.commit)
        return replace(item, target=current)

    def _configure(self, parent: Worktree, present: Sequence[_Planned]) -> None:
        """What `git submodule init` writes, into the superproject's own configuration:
        per worktree for a worktree of the cache (never the entry's shared config)."""
        if parent.isolated or parent.standalone:
            config = parent.admin_dir / "config"
        else:
            config = parent.admin_dir / "config.worktree"
        lines = []
        for item in present:
            name = item.recorded.name.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(
                f'[submodule "{name}"]\n\turl = {config_quote(item.repo.fetch_url)}\n'
                "\tactive = true\n"
            )
        with open(config, "a", encoding="utf-8") as handle:
            handle.write("".join(lines))

    # -- warming (prefetch) ----------------------------------------------------------------

    def warm(self, repo: RepoURL, git_dir: Path, commit: str) -> None:
        """Clone every submodule ``commit`` records and fetch its recorded commit, recursively,
        without checking anything out: what a worktree with submodules needs, before tests."""
        planned = self._plan(repo, git_dir, commit)
        self._clone_new_entries(repo, planned)
        for item in planned:
            with _within(repo, commit, item.recorded):
                sub_git_dir, has_gitmodules = self._entries.rebuilding_once(
                    item.repo, item.recorded.commit, functools.partial(self._fetched, repo, item)
                )
                if has_gitmodules:
                    self.warm(item.repo, sub_git_dir, item.recorded.commit)

    def _fetched(self, repo: RepoURL, item: _Planned) -> tuple[Path, bool]:
        git_dir = self._entries.ensure(item.repo, submodule_of=repo.redacted)
        return git_dir, self._recorded_commit(item, git_dir)[1]

    # -- keeping and removing --------------------------------------------------------------

    def remove(self, checkouts: Sequence[Worktree]) -> None:
        """Withdraw the registrations of submodule checkouts (their files are gone with the
        superproject's, or go with them); repositories of their own need nothing."""
        errors = []
        for checkout in _depth_first(checkouts):
            if checkout.isolated or checkout.standalone:
                continue
            try:
                self._unregister(checkout)
            except RepoClonesError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def keep(self, checkouts: Sequence[Worktree]) -> None:
        """Mark the registrations of submodule checkouts kept, with their superproject."""
        for checkout in _depth_first(checkouts):
            if checkout.isolated or checkout.standalone:
                continue
            lock = self._lock_by_key(key_of(checkout.git_dir), redact(checkout.url))
            with lock.hold(f"keep {checkout.path}"):
                self._registry.keep(lock, checkout.admin_dir, "")

    def _unregister(self, checkout: Worktree) -> None:
        lock = self._lock_by_key(key_of(checkout.git_dir), redact(checkout.url))
        with lock.hold(f"submodule remove {checkout.path}"):
            self._registry.unregister(lock, checkout.git_dir, checkout.admin_dir)


def _depth_first(checkouts: Sequence[Worktree]) -> Iterator[Worktree]:
    for checkout in checkouts:
        yield from _depth_first(checkout.submodules)
        yield checkout


def _modules_dir(parent: Worktree, name: str) -> Path:
    """``<superproject git dir>/modules/<name>``, where git keeps a submodule's repository
    (the name is checked: no '..', no empty or absolute component)."""
    return parent.admin_dir.joinpath("modules", *name.split("/"))


def _empty(directory: Path) -> None:
    """Leave a submodule's directory as the superproject's checkout made it: empty."""
    if directory.is_dir() and not directory.is_symlink():
        for child in directory.iterdir():
            if child.is_dir() and not child.is_symlink():
                rmtree(child)
            else:
                child.unlink()


def _refused(
    exc: SubmoduleProblem, recorded: RecordedSubmodule, repo: RepoURL, commit: str
) -> SubmoduleProblem:
    named = named_problem(exc, recorded.name, recorded.path, recorded.url)
    named.add_context(url=repo.redacted, commit=commit)
    return named


@contextlib.contextmanager
def _within(repo: RepoURL, commit: str, recorded: RecordedSubmodule) -> Iterator[None]:
    """A submodule's failure names its superproject, which the submodule's own error (its
    repository, its commit) does not; a damaged submodule entry that could not be rebuilt
    must not make the superproject's caller rebuild the superproject's entry."""
    where = (
        f"In submodule {recorded.name!r} (path {recorded.path!r}) of {repo.redacted} at {commit}"
    )
    try:
        yield
    except DamagedEntry as exc:
        raise CacheCorruptError(
            f"{where}: {exc.problem}", url=exc.url, commit=exc.commit, git_error=exc.git_error,
            hint=exc.hint,
        ) from None  # fmt: skip
    except RepoClonesError as exc:
        exc.add_outer(where)
        raise
