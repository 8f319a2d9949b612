"""Hooks registered only when pytest-xdist is active (pytest rejects unknown hooks otherwise)."""

from __future__ import annotations

from typing import Any

__all__ = ["XdistHooks"]


class XdistHooks:
    """Controller side: hand workers the run's session id, gather their counters."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.worker_stats: list[dict[str, Any]] = []

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["repoclones_session"] = self.session_id

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        # A crashed worker has no workeroutput: its counters are lost, the summary is not.
        output = getattr(node, "workeroutput", None) or {}
        rows = output.get("repoclones_stats")
        if isinstance(rows, list):
            self.worker_stats.extend(row for row in rows if isinstance(row, dict))
