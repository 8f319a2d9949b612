"""The value a test gets back: where its checkout is and what is checked out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RepoClonesError
from .urls import redact

if TYPE_CHECKING:
    from ._chores import GitOutput

__all__ = ["Worktree"]


@dataclass(frozen=True)
class Worktree(os.PathLike[str]):
    """A git worktree on its own branch, checked out at ``commit``.

    Usable wherever a path is (``cwd=wt``, ``open(wt / "setup.py")``), immutable so that a test
    cannot confuse teardown by changing it.
    """

    path: Path
    #: The URL exactly as the test gave it.
    url: str
    #: Full hex object name of the checked-out commit.
    commit: str
    #: The unique branch the worktree is on (without ``refs/heads/``); empty for a
    #: submodule's checkout, which is on a detached HEAD as `git submodule update` leaves it.
    branch: str
    #: The store's git directory this worktree belongs to.
    git_dir: Path = field(repr=False, compare=False)
    #: The worktree's administrative directory inside ``git_dir`` (``worktrees/<id>``).
    admin_dir: Path = field(repr=False, compare=False)
    #: The ``git sparse-checkout set`` arguments, if only some paths are checked out.
    sparse: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    #: A repository of its own holding only the commit's history (``isolate=True``).
    isolated: bool = field(default=False, repr=False, compare=False)
    #: A repository of its own borrowing a read-only cache's objects: nothing registered there.
    standalone: bool = field(default=False, repr=False, compare=False)
    #: The submodules checked out inside it (``submodules=True``), each a Worktree of its own
    #: (``url`` as resolved from ``.gitmodules``, ``commit`` as the superproject records it)
    #: with its own submodules, in the order of their paths.
    submodules: tuple[Worktree, ...] = field(default=(), repr=False, compare=False)

    def __repr__(self) -> str:
        # The URL as the test gave it may carry a password: a failure report shows this.
        return (
            f"Worktree(path={self.path!r}, url={redact(self.url)!r}, commit={self.commit!r}, "
            f"branch={self.branch!r})"
        )

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        return self.path / other

    def __str__(self) -> str:
        return str(self.path)

    # Harness chores. The logic is in _chores, imported on first use: a suite that only holds
    # Worktree values (or never uses the plugin) does not import the git machinery. As for the
    # worktree fixture, an error's message says everything: the test's own line is where a
    # report shows it, not under the plugin's frames.

    def git(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> GitOutput:
        """Run ``git *args`` in the worktree through the plugin's hardened git: no prompts, no
        hooks, no inherited ``GIT_DIR``, a time limit (default 600 s).

        With ``check``, a non-zero exit raises GitCommandError with git's error lines.
        """
        from ._chores import Chores

        __tracebackhide__ = True
        try:
            return Chores(self).git(args, input=input, check=check, timeout=timeout)
        except RepoClonesError as exc:
            raise exc.with_traceback(None) from None

    def apply(
        self, patch: str | bytes, *, three_way: bool = False, reject: bool = False
    ) -> list[str]:
        """Apply a unified diff (``git diff --binary`` output included) to the working tree,
        not the index; return the sorted paths it touched.

        All or nothing: if any hunk fails, PatchError names the files and hunks and the tree is
        as it was. ``three_way`` merges hunks whose context changed (conflicts also raise and
        leave the tree as it was); ``reject`` applies what it can and leaves ``.rej`` files.
        """
        from ._chores import Chores

        __tracebackhide__ = True
        try:
            return Chores(self).apply(patch, three_way=three_way, reject=reject)
        except RepoClonesError as exc:
            raise exc.with_traceback(None) from None

    def diff(self, base: str | None = None) -> str:
        """The working tree's changes against ``base`` (default: ``commit``) as a patch that
        ``apply`` reproduces exactly: untracked files included, ignored ones not, binary
        changes too. The index the test sees is not touched."""
        from ._chores import Chores

        __tracebackhide__ = True
        try:
            return Chores(self).diff(base)
        except RepoClonesError as exc:
            raise exc.with_traceback(None) from None

    def changed_files(self, base: str | None = None) -> list[str]:
        """Sorted paths the working tree changed against ``base`` (default: ``commit``):
        added, modified, deleted, both sides of a rename, untracked files included."""
        from ._chores import Chores

        __tracebackhide__ = True
        try:
            return Chores(self).changed_files(base)
        except RepoClonesError as exc:
            raise exc.with_traceback(None) from None

    def reset(self, paths: Iterable[str] | None = None) -> None:
        """Put every file (or those under ``paths``, relative to the top) and the index back
        as ``commit`` has them, deleting untracked and ignored files the test added there.

        HEAD and branches do not move. Harnesses reset the test files before running them.
        """
        from ._chores import Chores

        __tracebackhide__ = True
        try:
            Chores(self).reset(paths)
        except RepoClonesError as exc:
            raise exc.with_traceback(None) from None
