"""Real mounts for the tests (root only): a directory bind-mounted read-only."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only_bind(source: Path, mount_point: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``mount_point`` (`mount --bind`, then `remount,ro`);
    the test is skipped, saying why, where the machine refuses either."""
    mount_point.mkdir()
    bind = subprocess.run(
        ["mount", "--bind", str(source), str(mount_point)], capture_output=True, text=True
    )
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {bind.stderr.strip()}")
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(mount_point)], capture_output=True, text=True
        )
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {ro.stderr.strip()}")
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
