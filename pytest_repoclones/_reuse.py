"""Worktree reuse (``--repo-reuse``): a removed worktree is parked, then moved to the next
commit asked for in the same repository, writing only the files that differ.

Whatever a test did to its worktree (untracked files, index flags, a detached HEAD, modes,
read-only directories), the moved worktree must be indistinguishable from a fresh checkout;
anything odd makes the store fall back to a fresh worktree instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ._files import (
    clear_worktree_state,
    make_deletable,
    normalize_modes,
    read_stripped,
    write_atomically,
)
from ._git import GitResult
from ._layout import key_of
from ._lock import RepoLock
from ._ownership import Owner
from ._registry import WorktreeRegistry
from .errors import RepoClonesError, WorktreeError
from .revisions import Revision
from .urls import RepoURL
from .worktree import Worktree

__all__ = ["Parking"]

log = logging.getLogger("pytest_repoclones")


class _RunInWorktree(Protocol):
    def __call__(
        self,
        repo: RepoURL,
        worktree: Worktree,
        args: list[str],
        *,
        check: bool = True,
        stdin: str | None = None,
    ) -> GitResult: ...


class Parking:
    """Parked worktrees of one store, by repository, and moving them on."""

    def __init__(
        self,
        *,
        owner: Owner,
        registry: WorktreeRegistry,
        lock: Callable[[RepoURL], RepoLock],
        run: _RunInWorktree,
        check_damage: Callable[[RepoURL, Path, str], None],
        resolve_object: Callable[[RepoURL, Path, Revision], str],
        branch_commit: Callable[[Path, str], str],
        remove: Callable[[Worktree], None],
    ) -> None:
        self._owner = owner
        self._registry = registry
        self._lock = lock
        self._run = run
        self._check_damage = check_damage
        self._resolve_object = resolve_object
        self._branch_commit = branch_commit
        self._remove = remove
        self._mutex = threading.Lock()
        self._parked: dict[str, list[Worktree]] = {}

    def park(self, worktree: Worktree) -> None:
        with self._mutex:
            self._parked.setdefault(key_of(worktree.git_dir), []).append(worktree)

    def drain(self, key: str | None = None) -> list[Worktree]:
        """Take the parked worktrees (of one repository, or all) out of the parking."""
        with self._mutex:
            if key is not None:
                return self._parked.pop(key, [])
            parked = [wt for items in self._parked.values() for wt in items]
            self._parked.clear()
            return parked

    def parkable(self, worktree: Worktree) -> bool:
        """Only an intact, full (not sparse, not isolated) checkout is worth moving on."""
        if worktree.sparse or worktree.isolated:
            return False
        return read_stripped(worktree.path / ".git") == f"gitdir: {worktree.admin_dir}"

    def take(
        self, repo: RepoURL, revision: Revision, start: str, target: Path, branch: str, url: str
    ) -> Worktree | None:
        """Move a parked worktree to ``target`` and check out ``start`` there; None if none.

        Only files that differ are written: this is what makes reuse fast. Anything odd
        (a test broke its worktree) makes us fall back to a fresh worktree.
        """
        __tracebackhide__ = True  # its arguments may hold a secret
        with self._mutex:
            candidates = self._parked.get(repo.key)
            parked = candidates.pop() if candidates else None
        if parked is None:
            return None
        try:
            return self._move_parked(parked, repo, revision, start, target, branch, url)
        except (OSError, RepoClonesError) as exc:
            log.info("repoclones: could not reuse %s (%s); making a new worktree", parked.path, exc)
            with contextlib.suppress(OSError, RepoClonesError):
                self._remove(parked)
            return None

    def _move_parked(
        self,
        parked: Worktree,
        repo: RepoURL,
        revision: Revision,
        start: str,
        target: Path,
        branch: str,
        url: str,
    ) -> Worktree:
        __tracebackhide__ = True  # its arguments may hold a secret
        git_dir = parked.git_dir
        if target.exists():
            target.rmdir()  # validated empty
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(repo).hold(f"worktree reuse {target}"):
            # What `git worktree move` does, without a process: rename, then repoint the entry.
            os.rename(parked.path, target)
            write_atomically(parked.admin_dir / "gitdir", f"{target / '.git'}\n")
            write_atomically(parked.admin_dir / "locked", self._owner.reason(branch))
            clear_worktree_state(parked.admin_dir)
        moved = Worktree(
            path=target,
            url=url,
            commit=parked.commit,
            branch=parked.branch,
            git_dir=git_dir,
            admin_dir=parked.admin_dir,
        )
        try:
            self._reset_parked(repo, moved, revision, start, branch)
        except BaseException:
            with contextlib.suppress(OSError, RepoClonesError):
                self._remove(moved)
            raise
        lock = self._lock(repo)
        with lock.hold(f"worktree reuse {target}"):
            self._registry.delete_branch(lock, git_dir, parked.branch)
        return Worktree(
            path=target,
            url=url,
            commit=self._branch_commit(git_dir, branch),
            branch=branch,
            git_dir=git_dir,
            admin_dir=parked.admin_dir,
        )

    def _reset_parked(
        self, repo: RepoURL, moved: Worktree, revision: Revision, start: str, branch: str
    ) -> None:
        """Make a parked worktree indistinguishable from a fresh checkout of ``start``."""
        # First what would leak into the checkout itself: untracked files (a stray
        # .gitattributes applies to it; -ff also takes nested repositories, -x ignored files)
        # and index flags a test set (skip-worktree, assume-unchanged hide files from git).
        # A directory the test made read-only stops clean and checkout for any user but
        # root: every directory gets u+rwx back first (normalize_modes sets modes after).
        make_deletable(moved.path)
        self._run(repo, moved, ["clean", "--quiet", "-ffdx"])
        self._clear_index_flags(repo, moved)
        # -b, not -B: an existing branch of that name is an error, never silently moved.
        checkout = ["checkout", "--quiet", "--force", "--no-recurse-submodules", "-b", branch]
        result = self._run(repo, moved, [*checkout, start], check=False)
        if not result.ok:
            self._check_damage(repo, moved.git_dir, result.stderr)
        if not result.ok and revision.kind == "full" and "already exists" not in result.stderr:
            start = self._resolve_object(repo, moved.git_dir, revision)
            result = self._run(repo, moved, [*checkout, start], check=False)
        if not result.ok:
            raise WorktreeError(
                "Could not move a reused worktree to the commit",
                url=repo.redacted,
                commit=revision.text,
                git_error=repo.scrub(result.error_line),
            )
        try:
            # git 2.39's checkout exits 0 after "error: Could not read <tree>", having deleted
            # the old commit's files and written none of the new one's.
            self._check_damage(repo, moved.git_dir, result.stderr)
            # Files the old commit tracked and the new one ignores stay behind as ignored.
            self._run(repo, moved, ["clean", "--quiet", "-ffdx"])
            normalize_modes(moved.path)
        except BaseException:
            # The caller removes the worktree with its old branch; this one is ours too.
            lock = self._lock(repo)
            with lock.hold(f"worktree reuse {moved.path}"):
                self._registry.delete_branch(lock, moved.git_dir, branch)
            raise

    def _clear_index_flags(self, repo: RepoURL, worktree: Worktree) -> None:
        listing = self._run(repo, worktree, ["ls-files", "-v", "-z"]).stdout
        skip, assume = [], []
        for entry in listing.split("\0"):
            tag, _, path = entry.partition(" ")
            if tag.upper() == "S":
                skip.append(path)
            if tag.islower():  # lowercase: assume-unchanged (``s``: both flags)
                assume.append(path)
        for flag, paths in (("--no-skip-worktree", skip), ("--no-assume-unchanged", assume)):
            if paths:
                # One flag per call: update-index applies only the last one to --stdin paths.
                _run = self._run
                _run(
                    repo, worktree, ["update-index", flag, "-z", "--stdin"], stdin="\0".join(paths)
                )
