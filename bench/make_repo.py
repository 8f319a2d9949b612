"""Deterministic generator of a synthetic upstream: a bare repository of source-like files.

One ``git fast-import`` stream builds the whole history (fixed identity and dates, seeded random),
so the same arguments always give the same object names. The first commit adds every file; each
later commit edits a handful of files (and now and then adds or deletes one). A few commits are
reachable only from ``refs/pull/<n>/head``, like pull requests on a forge: a clone of branches
and tags does not have them, so a tool must fetch them by object name.

    python bench/make_repo.py OUT.git                  # ~6,000 files, ~15 MB, 200 commits
    python bench/make_repo.py --small OUT.git          # ~100 files
    python bench/make_repo.py --files 500 --size-mb 2 --commits 50 OUT.git
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IDENTITY = {
    "GIT_AUTHOR_NAME": "Bench Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Bench Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
}
EPOCH = 1_600_000_000
STEP = 3_600

_WORDS = (
    "self",
    "value",
    "result",
    "data",
    "items",
    "index",
    "count",
    "name",
    "path",
    "config",
    "options",
    "buffer",
    "handle",
    "state",
    "context",
    "request",
    "response",
    "client",
    "server",
    "session",
    "token",
    "parser",
    "reader",
    "writer",
    "stream",
    "node",
    "tree",
    "entry",
    "cache",
    "store",
    "lock",
    "error",
    "message",
    "status",
    "offset",
    "length",
    "size",
    "limit",
    "timeout",
    "retry",
    "key",
    "hash",
    "commit",
    "branch",
    "remote",
    "worker",
    "queue",
    "event",
    "callback",
    "manager",
    "factory",
    "builder",
    "update",
    "create",
    "delete",
    "insert",
    "select",
    "filter",
    "reduce",
    "append",
    "extend",
    "format",
    "encode",
    "decode",
)
_TYPES = ("int", "str", "bytes", "float", "bool", "list", "dict", "Path", "None")
_KEYWORDS = ("if", "elif", "while", "for", "return", "raise", "yield", "assert")
_EXTENSIONS = (".py", ".py", ".py", ".c", ".h", ".js", ".md", ".txt", ".json", ".toml")


@dataclass(frozen=True)
class Spec:
    files: int
    size_mb: float
    commits: int
    pull_refs: int
    seed: int


DEFAULT = Spec(files=6000, size_mb=15.0, commits=200, pull_refs=10, seed=20240601)
SMALL = Spec(files=100, size_mb=0.4, commits=200, pull_refs=10, seed=20240601)


def _ident(rng: random.Random) -> str:
    return "_".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))


def _line(rng: random.Random, indent: int) -> str:
    pad = "    " * indent
    kind = rng.random()
    if kind < 0.30:
        return f"{pad}{_ident(rng)} = {_ident(rng)}({_ident(rng)}, {rng.randint(0, 999)})"
    if kind < 0.45:
        op = rng.choice(("==", "!=", "<", ">", "is", "in"))
        return f"{pad}{rng.choice(_KEYWORDS)} {_ident(rng)} {op} {_ident(rng)}:"
    if kind < 0.60:
        return f"{pad}# {' '.join(rng.choice(_WORDS) for _ in range(rng.randint(3, 10)))}"
    if kind < 0.75:
        args = ", ".join(f"{_ident(rng)}: {rng.choice(_TYPES)}" for _ in range(rng.randint(0, 3)))
        return f"{pad}def {_ident(rng)}({args}) -> {rng.choice(_TYPES)}:"
    if kind < 0.85:
        return (
            f'{pad}log.debug("{" ".join(rng.choice(_WORDS) for _ in range(4))} %s", {_ident(rng)})'
        )
    if kind < 0.92:
        return ""
    return f"{pad}{_ident(rng)}.{_ident(rng)}({_ident(rng)}={rng.randint(0, 99)!r})"


def _content(rng: random.Random, size: int) -> list[str]:
    lines: list[str] = []
    total = 0
    indent = 0
    while total < size:
        line = _line(rng, indent)
        indent = max(0, min(4, indent + (1 if line.endswith(":") else -rng.randint(0, 1))))
        lines.append(line)
        total += len(line) + 1
    return lines


def _paths(rng: random.Random, count: int) -> list[str]:
    tops = max(1, count // 400)
    paths: set[str] = set()
    while len(paths) < count:
        top = f"pkg{rng.randrange(tops):02d}"
        sub = f"{rng.choice(_WORDS)}{rng.randrange(8)}"
        name = f"{_ident(rng)}_{rng.randrange(10_000):04d}{rng.choice(_EXTENSIONS)}"
        paths.add(f"src/{top}/{sub}/{name}")
    return sorted(paths)


def _sizes(rng: random.Random, count: int, total: int) -> list[int]:
    raw = [rng.lognormvariate(0.0, 0.9) for _ in range(count)]
    scale = total / sum(raw)
    return [max(40, int(value * scale)) for value in raw]


class _Stream:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.mark = 0

    def data(self, payload: bytes) -> None:
        self.parts.append(f"data {len(payload)}\n".encode())
        self.parts.append(payload)
        self.parts.append(b"\n")

    def commit(
        self,
        ref: str,
        when: int,
        message: str,
        parent: int | None,
        changes: Sequence[tuple[str, bytes | None]],
    ) -> int:
        self.mark += 1
        self.parts.append(f"commit {ref}\nmark :{self.mark}\n".encode())
        for role in ("author", "committer"):
            name = IDENTITY[f"GIT_{role.upper()}_NAME"]
            email = IDENTITY[f"GIT_{role.upper()}_EMAIL"]
            self.parts.append(f"{role} {name} <{email}> {when} +0000\n".encode())
        self.data(message.encode())
        if parent is not None:
            self.parts.append(f"from :{parent}\n".encode())
        for path, content in changes:
            if content is None:
                self.parts.append(f"D {path}\n".encode())
            else:
                self.parts.append(f"M 100644 inline {path}\n".encode())
                self.data(content)
        self.parts.append(b"\n")
        return self.mark


def _edit(rng: random.Random, lines: list[str]) -> list[str]:
    lines = list(lines)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(lines) + 1)
        if rng.random() < 0.6 or not lines:
            lines[at:at] = _content(rng, rng.randint(40, 400))
        else:
            del lines[at : at + rng.randint(1, 5)]
    return lines


def build_stream(spec: Spec) -> bytes:
    rng = random.Random(spec.seed)
    paths = _paths(rng, spec.files)
    sizes = _sizes(rng, spec.files, int(spec.size_mb * 1024 * 1024))
    files = {path: _content(rng, size) for path, size in zip(paths, sizes, strict=True)}
    stream = _Stream()

    def encode(lines: list[str]) -> bytes:
        return ("\n".join(lines) + "\n").encode()

    initial = [(path, encode(lines)) for path, lines in files.items()]
    initial.append(("README.md", b"# Synthetic benchmark repository\n"))
    mainline = [stream.commit("refs/heads/main", EPOCH, "Initial import\n", None, initial)]
    when = EPOCH
    pull_at = set(rng.sample(range(1, spec.commits), min(spec.pull_refs, spec.commits - 1)))
    pulls = 0
    for number in range(1, spec.commits):
        when += STEP
        changes: list[tuple[str, bytes | None]] = []
        for path in rng.sample(sorted(files), min(len(files), rng.randint(2, 8))):
            files[path] = _edit(rng, files[path])
            changes.append((path, encode(files[path])))
        roll = rng.random()
        if roll < 0.05:
            new = f"src/added/{_ident(rng)}_{number:04d}.py"
            files[new] = _content(rng, rng.randint(200, 4000))
            changes.append((new, encode(files[new])))
        elif roll < 0.08 and len(files) > 10:
            gone = rng.choice(sorted(files))
            del files[gone]
            changes.append((gone, None))
        mainline.append(
            stream.commit("refs/heads/main", when, f"Change {number}\n", mainline[-1], changes)
        )
        if number in pull_at:
            # A pull request: one commit on top of this one, reachable only from its pull ref.
            pulls += 1
            path = rng.choice(sorted(files))
            edited = encode(_edit(rng, files[path]))
            stream.commit(
                f"refs/pull/{pulls}/head",
                when + 60,
                f"Pull request {pulls}\n",
                mainline[-1],
                [(path, edited)],
            )
    # Tags every 50 commits; `reset` leaves the branch where it is.
    for index in range(0, len(mainline), 50):
        stream.parts.append(
            f"reset refs/tags/v{index // 50}.0\nfrom :{mainline[index]}\n\n".encode()
        )
    return b"".join(stream.parts)


def git_env() -> dict[str, str]:
    """No user or system config, fixed identity."""
    env = dict(os.environ)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_TRACE2_EVENT"):
        env.pop(name, None)
    env.setdefault("GIT_CONFIG_GLOBAL", os.devnull)
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env.update(IDENTITY)
    return env


def make_repo(out: Path, spec: Spec) -> Path:
    """Write the repository to ``out`` (replacing it); return ``out``."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    env = git_env()

    def git(*args: str, data: bytes | None = None) -> None:
        subprocess.run(["git", f"--git-dir={tmp}", *args], input=data, env=env, check=True)

    subprocess.run(
        ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(tmp)], env=env, check=True
    )
    git("fast-import", "--quiet", data=build_stream(spec))
    # Packed the way a forge serves it: fresh deltas and a bitmap.
    git("repack", "-a", "-d", "-f", "-b", "-q", "--window=50")
    git("pack-refs", "--all")
    git("symbolic-ref", "HEAD", "refs/heads/main")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="path of the bare repository to write")
    parser.add_argument("--small", action="store_true", help="preset: ~100 files")
    parser.add_argument("--files", type=int, help=f"number of files (default {DEFAULT.files})")
    parser.add_argument("--size-mb", type=float, help=f"tree size (default {DEFAULT.size_mb})")
    parser.add_argument("--commits", type=int, help=f"mainline commits (default {DEFAULT.commits})")
    parser.add_argument("--pull-refs", type=int, help="commits only on refs/pull/*/head")
    parser.add_argument("--seed", type=int, help="random seed")
    args = parser.parse_args(argv)
    base = SMALL if args.small else DEFAULT
    spec = Spec(
        files=args.files if args.files is not None else base.files,
        size_mb=args.size_mb if args.size_mb is not None else base.size_mb,
        commits=args.commits if args.commits is not None else base.commits,
        pull_refs=args.pull_refs if args.pull_refs is not None else base.pull_refs,
        seed=args.seed if args.seed is not None else base.seed,
    )
    if spec.files < 1 or spec.commits < 1 or spec.size_mb <= 0:
        parser.error("--files, --commits and --size-mb must be positive")
    make_repo(args.out.absolute(), spec)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
