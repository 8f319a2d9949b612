"""Local upstream repositories for tests, served as ``file://`` URLs like a real remote.

Commits are written with ``git fast-import`` (one process per commit, fixed dates), so a test
can build a history in milliseconds and the same history always has the same object names.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

IDENTITY = {
    "GIT_AUTHOR_NAME": "Upstream Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Upstream Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
}

FileContent = str | bytes | tuple[str | bytes, str] | None
#: The mode of a gitlink: ``{"lib": (sha, GITLINK)}`` records a submodule at that commit.
GITLINK = "160000"


def git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> str:
    """Run git for a test's own purposes (not through the plugin); return stdout."""
    env = {**os.environ, **IDENTITY}
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.decode()}"
        )
    return result.stdout.decode().strip()


class Upstream:
    """A bare repository standing in for a remote: build history, then point the store at it."""

    def __init__(self, path: Path, default_branch: str = "main") -> None:
        self.path = path
        git("init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path))
        # A real forge lets clients fetch any object by name and with filters.
        self.git("config", "uploadpack.allowAnySHA1InWant", "true")
        self.git("config", "uploadpack.allowFilter", "true")
        self._clock = 1_700_000_000

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str, input: bytes | None = None) -> str:
        return git(f"--git-dir={self.path}", *args, input=input)

    def rev(self, expr: str) -> str:
        return self.git("rev-parse", "--verify", "--end-of-options", expr)

    def commit(
        self,
        files: Mapping[str, FileContent],
        message: str = "change",
        *,
        branch: str = "main",
        parent: str | None = None,
        ref: str | None = None,
    ) -> str:
        """Commit ``files`` (None deletes, (content, "100755") sets a mode, (sha, GITLINK)
        records a submodule) on top of ``parent``.

        The parent defaults to the branch tip; ``ref`` writes the commit to another ref instead
        of the branch (a pull-request ref, say).
        """
        target = ref or f"refs/heads/{branch}"
        if parent is None:
            try:
                parent = self.rev(f"refs/heads/{branch}")
            except AssertionError:
                parent = None
        self._clock += 60
        stream = [f"commit {target}\n".encode()]
        stream.append(f"committer C <c@example.com> {self._clock} +0000\n".encode())
        stream.extend(_data(message.encode()))
        if parent:
            stream.append(f"from {parent}\n".encode())
        for name, content in files.items():
            if content is None:
                stream.append(f"D {name}\n".encode())
                continue
            mode = "100644"
            if isinstance(content, tuple):
                content, mode = content
            if mode == GITLINK:  # a submodule: the content is the commit it records
                sha = content.decode() if isinstance(content, bytes) else content
                stream.append(f"M {GITLINK} {sha} {name}\n".encode())
                continue
            data = content.encode() if isinstance(content, str) else content
            stream.append(f"M {mode} inline {name}\n".encode())
            stream.extend(_data(data))
        self.git("fast-import", "--quiet", "--force", input=b"".join(stream))
        return self.rev(target)

    def tag(self, name: str, commit: str, message: str | None = None) -> str:
        """A lightweight tag, or annotated when ``message`` is given; returns the tag's object."""
        if message is None:
            self.git("update-ref", f"refs/tags/{name}", commit)
        else:
            self.git("tag", "-a", "-m", message, name, commit)
        return self.rev(f"refs/tags/{name}")

    def set_ref(self, ref: str, commit: str) -> None:
        self.git("update-ref", ref, commit)

    def delete_ref(self, ref: str) -> None:
        self.git("update-ref", "-d", ref)

    def set_head(self, branch: str) -> None:
        self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")


def _data(payload: bytes) -> list[bytes]:
    return [f"data {len(payload)}\n".encode(), payload, b"\n"]


def trace_events(trace: Path) -> Iterator[dict[str, Any]]:
    """The events of a GIT_TRACE2_EVENT log (none if it does not exist); torn lines skipped."""
    if not trace.exists():
        return
    for line in trace.read_text().splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def count_git_commands(trace: Path, name: str) -> int:
    """How many git processes of command ``name`` (``upload-pack``, ``fetch``...) ran, in any
    process, according to a GIT_TRACE2_EVENT log."""
    return sum(
        1 for e in trace_events(trace) if e.get("event") == "cmd_name" and e.get("name") == name
    )


def upload_packs(trace: Path, served: Path) -> int:
    """How many ``git upload-pack`` processes served the repository at ``served`` (the network,
    for a ``file://`` upstream; a local fetch from the cache runs one too, serving the cache)."""
    count = 0
    for event in trace_events(trace):
        argv = event.get("argv") or []
        if event.get("event") != "start" or not any("upload-pack" in arg for arg in argv):
            continue
        if Path(argv[-1].strip("'")).resolve() == served.resolve():
            count += 1
    return count


def truncate_pack(git_dir: Path) -> None:
    """Cut a repository's only pack in half, as a full disk or a killed copy would."""
    (pack,) = (git_dir / "objects" / "pack").glob("*.pack")
    pack.chmod(0o644)
    with open(pack, "r+b") as handle:
        handle.truncate(pack.stat().st_size // 2)
