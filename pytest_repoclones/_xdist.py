"""Hooks registered only when pytest-xdist is active (pytest rejects unknown hooks otherwise)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import prefetch
from ._files import read_json
from .settings import EXCHANGE_DIR, SESSION_ID

if TYPE_CHECKING:
    from .plugin import StoreSlot

__all__ = ["EXCHANGE_DIR", "SESSION_ID", "XdistHooks", "declared_file", "stats_file"]


def declared_file(exchange: Path, worker: str) -> Path:
    """The (url, commit) pairs a worker's markers declare, for the controller to prefetch."""
    return exchange / f"{worker}.declared.json"


def stats_file(exchange: Path, worker: str) -> Path:
    """A worker's counters so far: what the summary gets from a worker that crashed."""
    return exchange / f"{worker}.stats.json"


class XdistHooks:
    """Controller side: hand workers the run's session id, prefetch what they declare before
    any test is scheduled, gather their counters (from the file of a crashed one).

    The exchange directory also holds the remotes that did not answer (see
    ``_remote_failures``): the controller's prefetch and every worker share them, so a stalled
    remote costs one time limit per run, not one per process.
    """

    def __init__(
        self,
        session_id: str,
        slot: StoreSlot,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.session_id = session_id
        #: Where prefetch failures are said (the terminal), once per (url, commit).
        self._report = report
        #: The controller's store, made only if it has something to prefetch.
        self._slot = slot
        self.worker_stats: list[dict[str, Any]] = []
        #: Workers that ended without their final counters; the summary says so.
        self.crashed: list[str] = []
        self._exchange: Path | None = None
        self._prefetched: set[tuple[str, prefetch.Want]] = set()

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[SESSION_ID] = self.session_id
        if self._exchange is None:
            # Made for the first worker (a run with xdist loaded but no workers makes none),
            # before any worker starts and before the controller prefetches: everything that
            # fails to answer from now on is recorded where every process of the run looks.
            self._exchange = Path(tempfile.mkdtemp(prefix="repoclones-xdist-"))
            self._slot.share_failures(self._exchange)
        node.workerinput[EXCHANGE_DIR] = str(self._exchange)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # xdist schedules no test until every worker has reported its collection, and this hook
        # runs in its event loop: blocking here is what keeps workers from starting early.
        if self._exchange is None or not self._slot.available:
            return
        wanted = prefetch.read_declared(declared_file(self._exchange, node.gateway.id))
        new: prefetch.Wanted = {}
        for url, wants in wanted.items():
            for want in wants:
                if (url, want) not in self._prefetched:
                    self._prefetched.add((url, want))
                    new.setdefault(url, []).append(want)
        if new:
            prefetch.prefetch(self._slot.get(), new, report=self._report)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        if not self._slot.available:
            return  # no cache: workers counted nothing, and no summary is written
        output = getattr(node, "workeroutput", None) or {}
        rows = output.get("repoclones_stats")
        if not isinstance(rows, list) and self._exchange is not None:
            # Crashed: no workeroutput, only the counters it wrote after its last report.
            self.crashed.append(node.gateway.id)
            rows = read_json(stats_file(self._exchange, node.gateway.id))
        if isinstance(rows, list):
            self.worker_stats.extend(row for row in rows if isinstance(row, dict))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._exchange is not None:
            shutil.rmtree(self._exchange, ignore_errors=True)
