"""The package's shape: no import cycle, and nothing below the RepoStore facade imports it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_repoclones"
#: What builds on the facade (the pytest plugin and the cache CLI); everything else is below.
ABOVE_THE_FACADE = {"__init__", "plugin", "factory", "prefetch", "summary", "_xdist", "cli",
                    "cache_admin", "__main__", "markers", "store"}  # fmt: skip


def imports() -> dict[str, set[str]]:
    """Module -> package modules it imports at run time (TYPE_CHECKING blocks left out)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
        graph[path.stem] = found
    return graph


def test_no_import_cycle() -> None:
    graph = imports()
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*trail, target])}")
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_nothing_below_the_facade_imports_it() -> None:
    offenders = {
        module: sorted(targets & {"store"})
        for module, targets in imports().items()
        if module not in ABOVE_THE_FACADE and "store" in targets
    }
    assert offenders == {}
