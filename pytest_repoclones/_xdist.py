"""Hooks registered only when pytest-xdist is active (pytest rejects unknown hooks otherwise)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from . import prefetch
from .store import RepoStore

__all__ = ["DECLARED_DIR", "SESSION_ID", "XdistHooks"]

#: Keys of ``workerinput``, the dict the controller hands each worker.
SESSION_ID = "repoclones_session"
DECLARED_DIR = "repoclones_declared_dir"


class XdistHooks:
    """Controller side: hand workers the run's session id, prefetch what they declare before
    any test is scheduled, gather their counters."""

    def __init__(self, session_id: str, store: RepoStore) -> None:
        self.session_id = session_id
        self.store = store
        self.worker_stats: list[dict[str, Any]] = []
        self._declared_dir: Path | None = None
        self._prefetched: set[tuple[str, str | None]] = set()

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[SESSION_ID] = self.session_id
        if self._declared_dir is None:
            self._declared_dir = Path(tempfile.mkdtemp(prefix="repoclones-declared-"))
        node.workerinput[DECLARED_DIR] = str(self._declared_dir)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # xdist schedules no test until every worker has reported its collection, and this hook
        # runs in its event loop: blocking here is what keeps workers from starting early.
        if self._declared_dir is None:
            return
        wanted = prefetch.read_declared(self._declared_dir / f"{node.gateway.id}.json")
        new: prefetch.Wanted = {}
        for url, commits in wanted.items():
            for commit in commits:
                if (url, commit) not in self._prefetched:
                    self._prefetched.add((url, commit))
                    new.setdefault(url, []).append(commit)
        prefetch.prefetch(self.store, new)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        # A crashed worker has no workeroutput: its counters are lost, the summary is not.
        output = getattr(node, "workeroutput", None) or {}
        rows = output.get("repoclones_stats")
        if isinstance(rows, list):
            self.worker_stats.extend(row for row in rows if isinstance(row, dict))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._declared_dir is not None:
            shutil.rmtree(self._declared_dir, ignore_errors=True)
