"""What both stress scripts share: a git environment free of the user's config, and the
entry point of their child processes."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from upstream import IDENTITY


def isolate_git(work: Path) -> None:
    """Make every git of this process and its children ignore the user's configuration."""
    empty_config = work / "gitconfig"
    empty_config.write_text("")
    os.environ.update(
        {"GIT_CONFIG_GLOBAL": str(empty_config), "GIT_CONFIG_NOSYSTEM": "1", **IDENTITY}
    )
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_TRACE2_EVENT"):
        os.environ.pop(name, None)


def run_child(handler: Callable[[dict[str, Any]], object], payload: str) -> int:
    """Run a child's work; print its traceback for the parent's log before failing."""
    try:
        handler(json.loads(payload))
    except BaseException:
        traceback.print_exc()
        raise
    return 0


def child_requested() -> bool:
    return len(sys.argv) > 1 and sys.argv[1] == "--child"
