"""Start store_worker.py children, talk to them line by line with deadlines, always reap them.

Nothing here blocks without a bound: reads use select() with a deadline, and ChildGroup kills
whatever is still running when the test ends, passed or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

WORKER = Path(__file__).with_name("store_worker.py")


class LineChild:
    """A child process spoken to line by line; every read has a deadline, kill() reaps it.

    Shared by the pytest tests (store_worker.py children) and the stress scripts.
    """

    def __init__(
        self,
        argv: list[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        label: str = "child",
    ) -> None:
        self.label = label
        self.log = log
        self.lines: list[str] = []
        with open(log, "wb") as stderr:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=dict(env) if env is not None else None,
            )
        self._buffer = b""
        self._eof = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def describe(self) -> str:
        return f"{self.label} pid {self.pid} (status {self.proc.poll()}): {self.stderr()}"

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def read_line(self, timeout: float) -> str | None:
        """The next stdout line, None at end of output; AssertionError after ``timeout``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer and not self._eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no output within {timeout:.1f} s from {self.describe()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                self._buffer += chunk
                self._eof = not chunk
        if b"\n" not in self._buffer:
            return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.lines.append(line.decode())
        return self.lines[-1]

    def expect(self, word: str, timeout: float) -> str:
        """Wait for a line starting with ``word``; return what follows it."""
        line = self.read_line(timeout)
        if line is None or not line.startswith(word):
            raise AssertionError(f"expected {word!r}, got {line!r} from {self.describe()}")
        return line[len(word) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        """Close stdin, wait for a clean exit and return the child's ``result`` record."""
        assert self.proc.stdin is not None
        deadline = time.monotonic() + timeout
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        result: dict[str, Any] | None = None
        while (line := self.read_line(max(deadline - time.monotonic(), 0.01))) is not None:
            if line.startswith("result "):
                result = json.loads(line[len("result ") :])
        try:
            status = self.proc.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout} s: {self.describe()}") from None
        if status != 0 or result is None:
            raise AssertionError(f"failed: {self.describe()}")
        return result

    def kill(self, *, reap: bool = True) -> None:
        """SIGKILL (as a crash would) and reap; without ``reap`` it stays a zombie until the
        next ``kill()``, as a worker whose parent (a container's init, say) does not reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if not reap:
            wait_until(lambda: _state(self.proc.pid) == "Z", timeout=10, what="a zombie")
            return
        try:
            self.proc.wait(10)
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


class Child(LineChild):
    """One store_worker.py process."""

    def __init__(
        self,
        mode: str,
        args: Mapping[str, Any],
        log: Path,
        env: Mapping[str, str] | None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        # ``prefix``: e.g. ``unshare --pid --fork ...``, to run the child in other namespaces.
        argv = [*prefix, sys.executable, str(WORKER), mode, json.dumps(dict(args))]
        super().__init__(argv, log, env, f"{mode} child")
        self.mode = mode

    def wait_ready(self, timeout: float = 30) -> str:
        """Wait for the child's ``ready`` line; return what follows the word."""
        return self.expect("ready", timeout)


class ChildGroup:
    """Children of one test; leaving the ``with`` block kills and reaps those still running."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def __enter__(self) -> ChildGroup:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for child in self.children:
            child.kill()

    def start(
        self,
        mode: str,
        args: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> Child:
        log = self.log_dir / f"{mode}-{len(self.children)}.stderr"
        child = Child(mode, args, log, env, prefix)
        self.children.append(child)
        return child

    def start_together(
        self, mode: str, args: list[dict[str, Any]], env: Mapping[str, str] | None = None
    ) -> list[Child]:
        """Start one child per ``args``, wait until all are set up, then release them at once."""
        started = [self.start(mode, item, env) for item in args]
        for child in started:
            child.wait_ready(timeout=60)
        for child in started:
            child.send("go")
        return started


# -- looking at processes through /proc ------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # The command name (field 2) may contain spaces: split after its closing ')'.
            return handle.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def is_running(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (PID 1 here may never reap orphans)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """Running processes below ``pid`` (children, grandchildren...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and fields[0] not in ("Z", "X"):
                parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [arg.decode(errors="replace") for arg in handle.read().split(b"\0") if arg]
    except OSError:
        return []


def processes_using(path: Path) -> list[tuple[int, list[str]]]:
    """Running processes whose arguments mention ``path`` or whose cwd is inside it."""
    text = str(path)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not is_running(int(entry)):
            continue
        pid = int(entry)
        args = cmdline(pid)
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if any(text in arg for arg in args) or cwd == text or cwd.startswith(text + "/"):
            found.append((pid, args))
    return found


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _state(pid: int) -> str:
    """The process state letter from /proc (Z: zombie), or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def pack_objects_hook(directory: Path, *, delay: float = 0.0, hold: bool = False) -> Path:
    """A git config file (for GIT_CONFIG_GLOBAL) that slows down or stops every upload.

    ``uploadpack.packObjectsHook`` runs in the serving upload-pack right before the pack is made,
    so a client is provably in the middle of its clone or fetch while the hook runs. git reads
    the setting only from global or system config, hence a file meant for one child's
    GIT_CONFIG_GLOBAL. With ``hold``, the hook writes its pid to ``directory/started`` and waits
    (at most 60 s) for ``directory/release`` to exist.
    """
    directory.mkdir(parents=True, exist_ok=True)
    hook = directory / "pack-objects-hook"
    lines = ["#!/bin/sh", f"sleep {delay}"]
    if hold:
        lines += [
            f"echo $$ > '{directory}/started'",
            "i=0",
            f"while [ ! -e '{directory}/release' ] && [ $i -lt 600 ]; do",
            "  sleep 0.1; i=$((i + 1))",
            "done",
        ]
    lines.append('exec "$@"')
    hook.write_text("\n".join(lines) + "\n")
    hook.chmod(0o755)
    config = directory / "gitconfig"
    config.write_text(f"[uploadpack]\n\tpackObjectsHook = {hook}\n")
    return config


def child_env(global_config: Path) -> dict[str, str]:
    """This process's environment (isolated by conftest) with another global git config."""
    return {**os.environ, "GIT_CONFIG_GLOBAL": str(global_config)}
