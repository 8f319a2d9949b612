"""pytest-repoclones: real git worktrees at exact commits from a shared, crash-safe clone cache."""

from __future__ import annotations

from .errors import (
    CacheCorruptError,
    CacheWriteError,
    CommitNotFoundError,
    GitCommandError,
    GitTimeoutError,
    InvalidInputError,
    LockTimeoutError,
    RemoteError,
    RepoClonesError,
    WorktreeError,
)
from .factory import WorktreeFactory
from .store import RepoStore
from .worktree import Worktree

__all__ = [
    "CacheCorruptError",
    "CacheWriteError",
    "CommitNotFoundError",
    "GitCommandError",
    "GitTimeoutError",
    "InvalidInputError",
    "LockTimeoutError",
    "RemoteError",
    "RepoClonesError",
    "RepoStore",
    "Worktree",
    "WorktreeError",
    "WorktreeFactory",
]
