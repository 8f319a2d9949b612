"""The value a test gets back: where its checkout is and what is checked out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .urls import redact

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
