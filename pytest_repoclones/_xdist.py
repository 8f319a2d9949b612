"""Hooks registered only when pytest-xdist is active (pytest rejects unknown hooks otherwise)."""

from __future__ import annotations

from typing import Any

__all__ = ["XdistHooks"]


class XdistHooks:
    """Controller side: hand every worker the run's session id."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["repoclones_session"] = self.session_id
