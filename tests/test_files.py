"""Deleting what a test locked down (``_files.rmtree``, ``_files.make_deletable``), where the
permissions are really enforced.

Root ignores permission bits (CAP_DAC_OVERRIDE), so as root the permission retries would never
run. Each case therefore runs in a child that first drops every capability it has: as root it
stays uid 0, the owner of the files, and meets the same refusals as an ordinary user; as an
ordinary user nothing changes. The child proves the refusals happen before it deletes anything.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="capabilities and capset(2) are Linux's"
)

_CHILD = r"""
import ctypes, json, os, shutil, stat, sys
from pathlib import Path
from pytest_repoclones import _files

# capset(2), version 3, this process: no effective, permitted or inheritable capability left.
header = (ctypes.c_uint32 * 2)(0x20080522, 0)
if ctypes.CDLL(None, use_errno=True).capset(header, (ctypes.c_uint32 * 6)()) != 0:
    sys.exit(f"capset failed: errno {ctypes.get_errno()}")

operation, victim = sys.argv[1], Path(sys.argv[2])
probes = {
    "create in a read-only directory": lambda: os.mkdir(victim / "readonly" / "probe"),
    "list a directory without read permission": lambda: os.listdir(victim / "unreadable"),
    "look into a directory without search permission": lambda: os.lstat(
        victim / "unsearchable" / "f"
    ),
    "open a directory with no permission at all": lambda: os.listdir(victim / "closed"),
}
enforced = []
for name, probe in probes.items():
    try:
        probe()
    except PermissionError:
        enforced.append(name)
modes = {}
if operation == "rmtree":
    _files.rmtree(victim)
else:
    _files.make_deletable(victim)
    for path in [victim, *victim.rglob("*")]:
        modes[str(path.relative_to(victim))] = oct(stat.S_IMODE(path.lstat().st_mode))
    shutil.rmtree(victim)  # no error handler: every directory must be deletable now
print(json.dumps({"enforced": enforced, "modes": modes}))
"""

PROBES = 4


def _lock_down(victim: Path, outside: Path, top_mode: int) -> None:
    """A tree as a test may leave it: read-only, unreadable and unsearchable directories, a
    read-only file, and a symlink to a locked directory outside that must not be touched."""
    outside.mkdir()
    (outside / "precious.txt").write_text("keep\n")
    outside.chmod(0o500)
    victim.mkdir()
    (victim / "plain.txt").write_text("x\n")
    (victim / "link").symlink_to(outside)
    readonly = victim / "readonly"
    (readonly / "sub").mkdir(parents=True)
    (readonly / "sub" / "file").write_text("x\n")
    (readonly / "locked.txt").write_text("x\n")
    (readonly / "locked.txt").chmod(0o400)
    (readonly / "closed-inside" / "deeper").mkdir(parents=True)
    (readonly / "closed-inside" / "deeper" / "f").write_text("x\n")
    (readonly / "closed-inside").chmod(0o000)
    readonly.chmod(0o500)
    (victim / "unreadable").mkdir()
    (victim / "unreadable" / "f").write_text("x\n")
    (victim / "unreadable").chmod(0o300)
    (victim / "unsearchable" / "d").mkdir(parents=True)
    (victim / "unsearchable" / "f").write_text("x\n")
    (victim / "unsearchable").chmod(0o600)
    (victim / "closed" / "nested").mkdir(parents=True)
    (victim / "closed" / "nested" / "f").write_text("x\n")
    (victim / "closed").chmod(0o000)
    victim.chmod(top_mode)


def _run_without_capabilities(operation: str, victim: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, operation, str(victim)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "outside"
    yield path
    if path.exists():
        path.chmod(0o700)  # for pytest's own clean-up


@pytest.mark.parametrize("top_mode", [0o755, 0o500, 0o000], ids=oct)
def test_rmtree_deletes_what_a_test_locked_down(
    tmp_path: Path, outside: Path, top_mode: int
) -> None:
    victim = tmp_path / "victim"
    _lock_down(victim, outside, top_mode)
    report = _run_without_capabilities("rmtree", victim)
    # The fault is real: every refusal happened, so every retry of rmtree was needed.
    assert len(report["enforced"]) == PROBES, report  # type: ignore[arg-type]
    assert not victim.exists()
    assert not victim.is_symlink()
    # What the symlink pointed to is neither followed nor changed.
    assert stat.S_IMODE(outside.stat().st_mode) == 0o500
    assert (outside / "precious.txt").read_text() == "keep\n"


def test_rmtree_of_what_is_not_there_is_no_error(tmp_path: Path) -> None:
    from pytest_repoclones._files import rmtree

    rmtree(tmp_path / "missing")
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    rmtree(link)
    assert not link.is_symlink()


def test_make_deletable_opens_directories_only(tmp_path: Path, outside: Path) -> None:
    victim = tmp_path / "victim"
    _lock_down(victim, outside, 0o500)
    report = _run_without_capabilities("make-deletable", victim)
    assert len(report["enforced"]) == PROBES, report  # type: ignore[arg-type]
    modes = report["modes"]
    assert isinstance(modes, dict)
    # Every directory can be entered and written; files keep their modes; links are links.
    for name in (".", "readonly", "readonly/closed-inside", "unreadable", "unsearchable", "closed"):
        assert int(modes[name], 8) & 0o700 == 0o700, (name, modes[name])
    assert modes["readonly/locked.txt"] == oct(0o400)
    assert modes["link"] == oct(0o777)
    assert not victim.exists()
    assert stat.S_IMODE(outside.stat().st_mode) == 0o500
    assert (outside / "precious.txt").read_text() == "keep\n"
