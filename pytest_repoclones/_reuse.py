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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from ._files import (
    INDEX_SNAPSHOT,
    clear_worktree_state,
    make_deletable,
    read_stripped,
    write_atomically,
)
from ._git import GitResult
from ._layout import key_of
from ._lock import RepoLock
from ._modes import fix_modes, odd_modes
from ._ownership import Owner
from ._registry import WorktreeRegistry
from .errors import RepoClonesError, WorktreeError
from .revisions import Revision
from .urls import RepoURL
from .worktree import Worktree

__all__ = ["Parking", "RunInWorktree", "remember_index"]

log = logging.getLogger("pytest_repoclones")


class RunInWorktree(Protocol):
    """``Checkouts.run_in_worktree``: git in a worktree, with the store's access to its remote."""

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
        run: RunInWorktree,
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
        """Only an intact, full (not sparse, not isolated) checkout without submodules is
        worth moving on."""
        if worktree.sparse or worktree.isolated or worktree.submodules:
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
        lock = self._lock(repo)
        with lock.hold(f"worktree reuse {target}"):
            # What `git worktree move` does, without a process: rename, then repoint the entry.
            os.rename(parked.path, target)
            write_atomically(parked.admin_dir / "gitdir", f"{target / '.git'}\n")
            write_atomically(parked.admin_dir / "locked", self._owner.reason(branch))
            clear_worktree_state(parked.admin_dir)
            # The old branch goes now, in this hold: HEAD names a branch that is not born
            # until the checkout below creates the new one (git allows that, as in a new
            # repository), and the removal on failure deletes a missing branch without error.
            self._registry.delete_branch(lock, git_dir, parked.branch)
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
        """Make a parked worktree indistinguishable from a fresh checkout of ``start``.

        The index our own checkout wrote (kept as INDEX_SNAPSHOT) goes back in place of the one
        the test left: no staged entries, no conflicts, no skip-worktree or assume-unchanged
        flags, every file's stat data as we wrote it. A forced checkout then writes what
        differs between the commits and whatever the test changed, and one clean takes what
        it added: git's own in-place floor. The one pass git has no equivalent for, the
        permission bits (see ``_modes``), runs in a thread meanwhile.
        """
        os.replace(moved.admin_dir / INDEX_SNAPSHOT, moved.admin_dir / "index")
        with ThreadPoolExecutor(1, thread_name_prefix="repoclones-modes") as pool:
            survey = pool.submit(self._survey_modes, repo, moved)
            self._check_out_commit(repo, moved, revision, start, branch)
            try:
                self._clean(repo, moved, revision)
                fix_modes(survey.result())
                remember_index(moved.admin_dir)
            except BaseException:
                self._delete_new_branch(repo, moved, branch)
                raise

    def _survey_modes(self, repo: RepoURL, moved: Worktree) -> list[str]:
        # Reads whichever index is in place (the snapshot, or the checkout's once renamed in):
        # a path of both commits is in either, and a path of one only is git's to write.
        listing = self._run(repo, moved, ["ls-files", "-z"]).stdout
        return odd_modes(moved.path, listing.split("\0"))

    def _check_out_commit(
        self, repo: RepoURL, moved: Worktree, revision: Revision, start: str, branch: str
    ) -> None:
        result = self._checkout(repo, moved, start, branch)
        if not result.ok and "already exists" not in result.stderr:
            self._check_damage(repo, moved.git_dir, result.stderr)
            # A directory the test made read-only stops git for any user but root; a commit
            # only under refs/pull/* (say) must be fetched first.
            make_deletable(moved.path)
            if revision.kind == "full":
                start = self._resolve_object(repo, moved.git_dir, revision)
            result = self._checkout(repo, moved, start, branch)
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
        except BaseException:
            self._delete_new_branch(repo, moved, branch)
            raise

    def _delete_new_branch(self, repo: RepoURL, moved: Worktree, branch: str) -> None:
        # The caller removes the worktree with its old branch; the new one is ours too.
        lock = self._lock(repo)
        with lock.hold(f"worktree reuse {moved.path}"):
            self._registry.delete_branch(lock, moved.git_dir, branch)

    def _checkout(self, repo: RepoURL, moved: Worktree, start: str, branch: str) -> GitResult:
        # -b, not -B: an existing branch of that name is an error, never silently moved.
        args = ["checkout", "--quiet", "--force", "--no-recurse-submodules", "-b", branch, start]
        return self._run(repo, moved, args, check=False)

    def _clean(self, repo: RepoURL, moved: Worktree, revision: Revision) -> None:
        """Delete what the test added: untracked and ignored files, nested repositories."""
        clean = ["-c", "core.quotePath=false", "clean", "-ffdx"]
        result = self._run(repo, moved, clean, check=False)
        removed = result.stdout
        if not result.ok:  # a read-only directory, for any user but root
            make_deletable(moved.path)
            removed += self._run(repo, moved, clean).stdout
        stray = [_removed_gitattributes(line) for line in removed.splitlines()]
        self._check_out_again(repo, moved, revision, [d for d in stray if d is not None])

    def _check_out_again(
        self, repo: RepoURL, moved: Worktree, revision: Revision, directories: list[str]
    ) -> None:
        """Write the files under ``directories`` again, now that no stray attributes apply.

        git reads a worktree's .gitattributes where the commit has none in a directory, also
        an untracked one, while the checkout writes the files beside it and below: those
        files may be converted (line endings, ident, filters) as a fresh checkout's are not.
        """
        if not directories:
            return
        if any(d.startswith('"') for d in directories):  # a name git had to quote
            raise WorktreeError(
                "An untracked .gitattributes applied to the reused worktree's checkout",
                url=repo.redacted,
                commit=revision.text,
            )
        pathspecs = [d or "." for d in directories]
        literal = ["--literal-pathspecs"]
        listing = self._run(repo, moved, [*literal, "ls-files", "-z", "--", *pathspecs]).stdout
        for path in filter(None, listing.split("\0")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(moved.path / path)
        self._run(repo, moved, [*literal, "checkout", "--quiet", "--", *pathspecs])


def _removed_gitattributes(clean_line: str) -> str | None:
    """The directory of a ``.gitattributes`` file a ``git clean`` line ("Removing <path>")
    names, relative ("" at the top), or None.

    A removed directory is named whole ("Removing dir/"): it held no tracked file, so no
    file the checkout wrote was beside its attributes.
    """
    path = clean_line.removeprefix("Removing ").rstrip("\n")
    parent, _, name = path.rpartition("/")
    return parent if name in (".gitattributes", '.gitattributes"') else None


def remember_index(admin_dir: Path) -> None:
    """Keep the index a checkout of ours just wrote, for the next move of this worktree.

    A hard link costs nothing: git replaces its index by renaming a new file over it and
    never writes one in place, so the linked file stays as it is now.
    """
    snapshot = admin_dir / INDEX_SNAPSHOT
    tmp = snapshot.with_name(f"{INDEX_SNAPSHOT}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.link(admin_dir / "index", tmp)
    os.replace(tmp, snapshot)
