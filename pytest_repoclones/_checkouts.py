"""Checkouts: a test's worktree made from a cache entry (registered in it, or a repository of
its own), checked out, and removed again; the one place that builds a :class:`Worktree`.

The metadata steps (the branch, the registration) run under the entry's lock and take
milliseconds; the checkout itself, the slow part, runs outside it, and so does deleting the
files at removal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ._entry import CacheEntries
from ._files import leave_directory, read_stripped, rmtree
from ._git import SPARSE_MINIMUM_GIT, GitResult, check_git_version
from ._inputs import check_worktree_path, sparse_arguments
from ._layout import MARKER, CacheLayout, key_of
from ._lock import RepoLock
from ._ownership import Owner
from ._packs import HistoryPacks
from ._registry import WorktreeRegistry
from ._remote import OFFLINE_HINT, Remote
from ._resolve import Resolver
from ._reuse import Parking, remember_index
from ._runner import GitRunner
from ._standalone import init_borrowing, init_isolated
from ._submodule_checkouts import SubmoduleCheckouts
from .errors import CommitNotFoundError, InvalidInputError, RepoClonesError, WorktreeError
from .revisions import Revision, check_branch_name, parse_revision
from .stats import RepoStats
from .urls import RepoURL, redact
from .worktree import Worktree

__all__ = ["Checkouts"]


class Checkouts:
    """Makes and removes the worktrees of one store."""

    def __init__(
        self,
        layout: CacheLayout,
        runner: GitRunner,
        registry: WorktreeRegistry,
        entries: CacheEntries,
        resolver: Resolver,
        owner: Owner,
        *,
        lock_by_key: Callable[[str, str], RepoLock],
        remote: Callable[[RepoURL], Remote],
        stats: Callable[[RepoURL], RepoStats],
        new_branch_name: Callable[[], str],
        offline: bool,
        reuse: bool,
    ) -> None:
        self.layout = layout
        self.cache_dir = layout.cache_dir
        self._runner = runner
        self._registry = registry
        self._entries = entries
        self._resolver = resolver
        self._lock_by_key = lock_by_key
        self._remote = remote
        self._stats = stats
        self._new_branch_name = new_branch_name
        self.offline = offline
        self.reuse = reuse
        self._packs = HistoryPacks(runner)
        #: Submodules inside the worktrees made here (``submodules=True``).
        self.submodules = SubmoduleCheckouts(
            layout,
            runner,
            registry,
            entries,
            resolver,
            self._packs,
            lock_by_key=lock_by_key,
            stats=stats,
            run_in_worktree=self.run_in_worktree,
        )
        self.parking = Parking(
            owner=owner,
            registry=registry,
            lock=self._lock,
            run=self.run_in_worktree,
            check_damage=entries.check_damage,
            resolve_object=resolver.resolve_object,
            branch_commit=self.branch_commit,
            remove=self.remove,
        )

    @property
    def read_only(self) -> bool:
        return self.layout.read_only

    def _lock(self, repo: RepoURL) -> RepoLock:
        return self._lock_by_key(repo.key, repo.redacted)

    def _network_ops(self, repo: RepoURL) -> int:
        stats = self._stats(repo)
        return stats.clones + stats.fetches

    def add(
        self,
        repo: RepoURL,
        url: str | os.PathLike[str],
        commit: str | None,
        path: str | os.PathLike[str],
        branch: str | None,
        sparse: Sequence[str] | None,
        isolate: bool,
        history: bool = True,
        submodules: bool = False,
    ) -> Worktree:
        __tracebackhide__ = True  # its arguments may hold a secret
        revision = parse_revision(commit)
        if not history and not isolate:
            raise InvalidInputError(
                "history=False needs isolate=True (a worktree of the cache shares its history)",
                url=repo.redacted,
                commit=commit,
            )
        target = check_worktree_path(path, self.cache_dir, repo.redacted, commit)
        sparse_args = sparse_arguments(sparse)
        if sparse_args is not None:
            check_git_version(SPARSE_MINIMUM_GIT, needed_for="sparse worktrees")
        auto_branch = branch is None
        branch = check_branch_name(branch if branch is not None else self._new_branch_name())
        network_before = self._network_ops(repo)
        self._stats(repo)  # time spent cloning counts too
        git_dir = self._entries.ensure(repo)
        if revision.kind == "full":
            # Hot path: let git itself find the commit, fetch only if that fails.
            assert revision.text is not None
            start = f"{revision.text}^{{commit}}"
        else:
            start = self._resolver.resolve(repo, git_dir, revision)
        isolation = (isolate, history)
        worktree = self._make(
            repo,
            git_dir,
            revision,
            start,
            target,
            branch,
            auto_branch,
            sparse_args,
            isolation,
            url,
            reuse=self.reuse and not submodules,
        )
        if submodules:
            worktree = self._with_submodules(repo, worktree, history)
        stats = self._stats(repo)
        stats.worktrees += 1
        # The one definition of a cache hit (the summary relies on it): making this worktree
        # needed no clone and no fetch by this process. What prefetch fetched before the test
        # ran was not this worktree's doing, so its worktree is a hit; worktrees = hits + the
        # worktrees that needed the network, whatever the clone and fetch counters say.
        if self._network_ops(repo) == network_before:
            stats.cache_hits += 1
        self._entries.touch(git_dir)
        return worktree

    def _make(
        self,
        repo: RepoURL,
        git_dir: Path,
        revision: Revision,
        start: str,
        target: Path,
        branch: str,
        auto_branch: bool,
        sparse_args: list[str] | None,
        isolation: tuple[bool, bool],
        given_url: str | os.PathLike[str],
        *,
        reuse: bool,
    ) -> Worktree:
        """The worktree the settings call for: isolated, reused, borrowing a read-only
        cache's objects, or a new one registered in the entry."""
        __tracebackhide__ = True  # its arguments may hold a secret
        url = str(given_url)
        isolate, history = isolation
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
            if history and self._entries.is_shallow(repo):
                self._entries.deepen(repo, git_dir, start)  # every ancestor, as promised
            return self._isolated_worktree(repo, start, target, branch, sparse_args, url, history)
        # Worktrees with submodules are always fresh (see _with_submodules).
        if reuse and sparse_args is None and not self.read_only:
            reused = self.parking.take(repo, revision, start, target, branch, url)
            if reused is not None:
                self._stats(repo).reused += 1
                return reused
        if self.read_only:
            return self._borrowing_worktree(repo, start, target, branch, sparse_args, url)
        return self._new_worktree(
            repo, revision, start, target, branch, auto_branch, sparse_args, url
        )

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
        git_dir = self.layout.git_dir(repo.key)
        lock = self._lock(repo)
        with lock.hold(f"worktree add {target}"):
            if not (git_dir / MARKER).is_file():
                # Removed meanwhile by `pytest-repoclones gc/clear`: clone it again (the
                # lock is reentrant).
                self._entries.forget(repo.key)
                git_dir = self._entries.ensure(repo)
            branch = self._create_branch_locked(
                lock, repo, git_dir, revision, start, target, branch, auto_branch
            )
            try:
                admin_dir = self._registry.register(lock, git_dir, target, branch)
            except BaseException:
                self._registry.delete_branch(lock, git_dir, branch)
                raise
        worktree = Worktree(
            path=target,
            url=url,
            commit=self.branch_commit(git_dir, branch),
            branch=branch,
            git_dir=git_dir,
            admin_dir=admin_dir,
            sparse=tuple(sparse_args) if sparse_args else None,
        )
        self._check_out(repo, worktree, sparse_args)
        return worktree

    def _with_submodules(self, repo: RepoURL, worktree: Worktree, history: bool) -> Worktree:
        """``worktree`` with its submodules checked out, recursively; on failure it is removed.

        Such a worktree is never parked for reuse, nor made from a parked one: moving a tree
        of worktrees from several entries to other recorded commits (submodules added,
        removed, moved or pointed at another URL meanwhile) is left to a fresh checkout.
        """
        try:
            made = self.submodules.check_out(repo, worktree, history=history)
        except BaseException:
            self.remove(worktree)
            raise
        return replace(worktree, submodules=made) if made else worktree

    def _check_out(self, repo: RepoURL, worktree: Worktree, sparse_args: list[str] | None) -> None:
        """Write a registered worktree's files, outside the lock: the slow part."""
        try:
            self._write_files(repo, worktree, sparse_args)
            if self.reuse and sparse_args is None:
                remember_index(worktree.admin_dir)  # what a later move starts from
        except BaseException:
            self.remove(worktree)
            raise

    def _write_files(
        self, repo: RepoURL, worktree: Worktree, sparse_args: list[str] | None
    ) -> None:
        """Check the commit's files out (only the sparse paths, if given)."""
        if sparse_args is not None:
            _check_sparse_paths(self._runner, repo, worktree, sparse_args)
            # Only writes the worktree's own config and pattern file: no lock needed
            # (worktreeConfig is already enabled in the shared config at clone time).
            self.run_in_worktree(repo, worktree, ["sparse-checkout", "set", *sparse_args])
        # What `worktree add` runs internally.
        self.run_in_worktree(
            repo, worktree, ["reset", "--quiet", "--hard", "--no-recurse-submodules"]
        )

    def _create_branch_locked(
        self,
        lock: RepoLock,
        repo: RepoURL,
        git_dir: Path,
        revision: Revision,
        start: str,
        target: Path,
        branch: str,
        auto_branch: bool,
    ) -> str:
        """The worktree's branch; the name it got (a generated name is drawn again if taken)."""
        lock.assert_held()
        result = self._registry.create_branch(lock, git_dir, branch, start)
        exists = "already exists" in result.stderr
        if not result.ok and auto_branch and exists:
            branch = self._new_branch_name()
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
        return branch

    def remove(self, worktree: Worktree) -> None:
        __tracebackhide__ = True  # its arguments may hold a secret
        leave_directory(worktree.path)
        # Deleting files is the slow part and needs no lock: the admin entry stays valid
        # (a concurrent fetch still reads a consistent HEAD) until we remove it below.
        rmtree(worktree.path)
        # Submodule checkouts are registered in their own entries (files gone with ours); a
        # failure there must not leave the superproject's registration behind.
        try:
            self.submodules.remove(worktree.submodules)
        except RepoClonesError as exc:
            submodule_error: RepoClonesError | None = exc
        else:
            submodule_error = None
        if worktree.isolated or worktree.standalone:
            if submodule_error is not None:
                raise submodule_error
            return  # a repository of its own: nothing registered in the cache
        lock = self._lock_by_key(key_of(worktree.git_dir), redact(worktree.url))
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
        if submodule_error is not None:
            raise submodule_error

    def _isolated_worktree(
        self,
        repo: RepoURL,
        sha: str,
        target: Path,
        branch: str,
        sparse_args: list[str] | None,
        url: str,
        history: bool,
    ) -> Worktree:
        """A new repository at ``target`` with only ``sha``'s history (or, without
        ``history``, one new commit of its tree), from a pack of the cache entry.

        Not a worktree of the cache (that would share every ref and object). The pack is made
        once per commit and shared (``_packs``); a read-only cache gets one per repository.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        git_dir = target / ".git"
        cache_git_dir = self.layout.git_dir(repo.key)
        try:
            if self.read_only:
                staging = git_dir / "objects" / "pack"
                staging.mkdir(parents=True)
                objects = git_dir / "objects"
                pack = self._packs.build(
                    cache_git_dir, sha, staging, history=history, key=repo.key, objects=objects
                )
            else:
                pack = self._packs.shared(cache_git_dir, sha, history=history, key=repo.key)
            if isinstance(pack, GitResult):
                # The pack's source is the cache entry: its complaints are its damage.
                self._entries.check_damage(repo, cache_git_dir, pack.stderr, serving=True)
                raise WorktreeError(
                    f"Could not build an isolated repository at {target}",
                    url=repo.redacted,
                    commit=sha,
                    git_error=pack.error_line,
                )
            worktree = Worktree(
                path=target,
                url=url,
                commit=init_isolated(pack, target, branch, sha),
                branch=branch,
                git_dir=git_dir,
                admin_dir=git_dir,
                sparse=tuple(sparse_args) if sparse_args else None,
                isolated=True,
            )
            self._write_files(repo, worktree, sparse_args)
            # `reset --hard` names the commit in ORIG_HEAD and the logs: only what the test
            # does from here on may be there.
            (git_dir / "ORIG_HEAD").unlink(missing_ok=True)
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
        git_dir = self.layout.git_dir(repo.key)
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
            self._write_files(repo, worktree, sparse_args)
        except BaseException:
            rmtree(dot_git)
            raise
        return worktree

    def _lazy_fetch_access(
        self, repo: RepoURL, worktree: Worktree
    ) -> tuple[list[str], dict[str, str]]:
        """A partial clone fetches missing blobs during checkout: it needs the credentials,
        or, offline, a promisor that fails at once instead of reaching the network."""
        if not self._entries.is_partial(repo) or worktree.isolated:
            return [], {}
        if self.offline:
            return [], {"GIT_ALLOW_PROTOCOL": "none"}  # no transport at all: fails at once
        return self._remote(repo).auth()

    def run_in_worktree(
        self,
        repo: RepoURL,
        worktree: Worktree,
        args: list[str],
        *,
        check: bool = True,
        stdin: str | None = None,
    ) -> GitResult:
        pre_args, extra_env = self._lazy_fetch_access(repo, worktree)
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

    def branch_commit(self, git_dir: Path, branch: str) -> str:
        # A brand-new branch is a loose ref file: reading it costs no git process.
        loose = read_stripped(git_dir / "refs" / "heads" / branch)
        if loose and len(loose) in (40, 64):
            return loose
        result = self._runner.run(
            ["rev-parse", "--verify", f"refs/heads/{branch}"], git_dir=git_dir
        )
        return result.stdout.strip()


def _check_sparse_paths(
    runner: GitRunner, repo: RepoURL, worktree: Worktree, sparse_args: list[str]
) -> None:
    """A sparse path that names nothing at the commit (a typo, `scr/` for `src/`) would
    silently give a worktree with only top-level files, or none: refuse it instead.
    One git process for all the paths, and only when sparse paths are asked for (a failed
    listing is left to the checkout to report)."""
    given = [arg.strip("/") for arg in sparse_args[sparse_args.index("--") + 1 :]]
    paths = [path for path in given if not any(ch in path for ch in "*?[")]  # not globs
    if not paths:
        return
    # ls-tree reads trees only: a partial clone fetches no blob for this.
    listing = runner.run(
        ["ls-tree", "--name-only", "-z", worktree.commit, "--", *paths],
        git_dir=worktree.git_dir,
        key=repo.key,
    )
    found = set(listing.stdout.split("\0"))
    missing = [path for path in paths if path not in found]
    if listing.ok and missing:
        raise InvalidInputError(
            f"Sparse path {', '.join(map(repr, missing))} matches nothing at this commit",
            url=repo.redacted,
            commit=worktree.commit,
            hint="check the spelling; sparse paths are relative to the repository's top",
        )
