"""Per-repository counters: what a session cost, for the summary and the benchmarks."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["RepoStats"]


@dataclass
class RepoStats:
    """What one process did with one cached repository."""

    url: str
    worktrees: int = 0
    clones: int = 0
    fetches: int = 0
    cache_hits: int = 0
    #: Worktrees made by moving a parked one to the commit (``--repo-reuse``).
    reused: int = 0
    #: Of the worktrees, those checked out as a superproject's submodule (``submodules=True``).
    submodules: int = 0
    git_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """Plain builtins, fit to send through xdist's workeroutput."""
        return asdict(self)
