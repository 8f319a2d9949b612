"""Instrumentation of the plugin: timing wrappers around its git calls, tree deletions and lock
acquisitions, put in place for a ``with Probe(...)`` block and removed after it. Nothing changes
in behaviour.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import perf, read_trace

import pytest_repoclones
from pytest_repoclones import _files as files_module
from pytest_repoclones import _git as git_module
from pytest_repoclones._lock import RepoLock


def rmtree_users(rmtree_original: Callable[[Path], None]) -> list[types.ModuleType]:
    """Every module of the plugin that deletes trees: each imported ``rmtree`` by name."""
    return [
        module
        for module in vars(pytest_repoclones).values()
        if isinstance(module, types.ModuleType)
        and getattr(module, "rmtree", None) is not None
        and module.rmtree is rmtree_original
    ]


class Probe:
    """Times the plugin's git processes, file deletions and lock acquisitions per phase."""

    def __init__(self, trace_dir: Path) -> None:
        self.trace_dir = trace_dir
        self.phases: dict[str, float] = {}
        self.calls: list[tuple[str, float, float]] = []  # label, wall, git's own run time
        self._saved: list[tuple[Any, str, Any]] = []
        self._serial = 0

    def _add(self, label: str, seconds: float) -> None:
        self.phases[label] = self.phases.get(label, 0.0) + seconds

    def reset(self) -> None:
        self.phases = {}
        self.calls = []

    def _timed_run_git(self, run_git: Callable[..., Any]) -> Callable[..., Any]:
        probe = self

        def timed_run_git(args: Sequence[str], **kwargs: Any) -> Any:
            probe._serial += 1
            trace = probe.trace_dir / f"call-{probe._serial}.json"
            kwargs["extra_env"] = {
                **(kwargs.get("extra_env") or {}),
                "GIT_TRACE2_EVENT": str(trace),
            }
            start = perf()
            try:
                return run_git(args, **kwargs)
            finally:
                wall = perf() - start
                own = sum(p.seconds for p in read_trace(trace) if p.top_level)
                trace.unlink(missing_ok=True)
                label = f"git {args[0]}" + (f" {args[1]}" if args[0] == "worktree" else "")
                probe._add(label, wall)
                probe._add("(process start/wait overhead)", max(0.0, wall - own))
                probe.calls.append((label, wall, own))

        return timed_run_git

    def _timed_rmtree(self, rmtree_original: Callable[[Path], None]) -> Callable[[Path], None]:
        probe = self

        def timed_rmtree(path: Path) -> None:
            start = perf()
            try:
                rmtree_original(path)
            finally:
                inside = "worktrees" in path.parts and path.parent.name == "worktrees"
                probe._add(
                    "rmtree admin dir" if inside else "rmtree worktree files", perf() - start
                )

        return timed_rmtree

    def _timed_acquire(self, acquire: Callable[[RepoLock, str], None]) -> Callable[..., None]:
        probe = self

        def timed_acquire(lock: RepoLock, purpose: str) -> None:
            start = perf()
            try:
                acquire(lock, purpose)
            finally:
                probe._add("lock acquire (+ owner file)", perf() - start)

        return timed_acquire

    def __enter__(self) -> Probe:
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        run_git = git_module.run_git  # the one place every git call goes through
        rmtree_original = files_module.rmtree  # the one definition; modules import it by name
        acquire = RepoLock._acquire
        timed_rmtree = self._timed_rmtree(rmtree_original)
        for owner, name, value in (
            (git_module, "run_git", self._timed_run_git(run_git)),
            *((module, "rmtree", timed_rmtree) for module in rmtree_users(rmtree_original)),
            (RepoLock, "_acquire", self._timed_acquire(acquire)),
        ):
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)
        self._saved = []
