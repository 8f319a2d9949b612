"""An inner pytest run as users start it (the plugin loads from its entry point), and what its
tests recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

__all__ = ["records", "run"]


def records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    """The rows inner tests appended to ``records.jsonl`` (one JSON object per line)."""
    log = pytester.path / "records.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run(pytester: pytest.Pytester, cache_dir: Path, *args: str) -> pytest.RunResult:
    # One argument: pytest looks for its ini file before the plugin's options are known, and
    # would take a separate, existing cache path for a test path (and miss pytester's ini).
    # Unrelated plugins that happen to be installed only slow every inner start down.
    return pytester.runpytest_subprocess(
        f"--repo-cache-dir={cache_dir}",
        *("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark"),
        *args,
        timeout=180,
    )
