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
    PatchError,
    PortableCacheError,
    RemoteError,
    RepoClonesError,
    WorktreeError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._chores import GitOutput
    from .factory import WorktreeFactory
    from .store import RepoStore
    from .worktree import Worktree

# Imported on first use (PEP 562): pytest imports this package for the plugin in every run,
# and a suite that never uses it should not pay for the store and everything behind it.
_LAZY = {
    "GitOutput": "._chores",
    "RepoStore": ".store",
    "Worktree": ".worktree",
    "WorktreeFactory": ".factory",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CacheCorruptError",
    "CacheWriteError",
    "CommitNotFoundError",
    "GitCommandError",
    "GitOutput",
    "GitTimeoutError",
    "InvalidInputError",
    "LockTimeoutError",
    "PatchError",
    "PortableCacheError",
    "RemoteError",
    "RepoClonesError",
    "RepoStore",
    "Worktree",
    "WorktreeError",
    "WorktreeFactory",
]
