"""Reading what ``git apply`` and ``git diff`` print: paths, failed hunks, conflicts.

Pure text, no git run: this module turns git's output (``--numstat -z`` records, the error
lines of a failed ``git apply``, C-quoted paths) into the names a ``PatchError`` reports. It is
kept apart from ``_chores`` because its rules follow git's wording, not the chores' steps, and
can be read and checked against a git version's output without a repository.
"""

from __future__ import annotations

import re

__all__ = ["failures", "numstat_paths", "rejected", "unquote", "without_searched_lines"]

_FAILED_HUNK_RE = re.compile(r"^error: patch failed: (?P<path>.+):(?P<line>\d+)$")
_CONFLICT_RE = re.compile(
    r"^(?:U (?P<path>.+)|Applied patch to '(?P<quoted>.+)' with conflicts\.)$"
)
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def numstat_paths(output: str) -> list[str]:
    """The paths in ``--numstat -z`` output: ``added\\tdeleted\\tpath`` records. ``git apply``
    (2.39) names a rename by its new path alone; ``git diff``'s form, an empty path followed by
    the old and the new path as records of their own, is read too."""
    fields = output.split("\0")
    paths: list[str] = []
    at = 0
    while at < len(fields):
        added_deleted_path = fields[at].split("\t", 2)
        at += 1
        if len(added_deleted_path) != 3:
            continue
        if added_deleted_path[2]:
            paths.append(added_deleted_path[2])
        else:
            paths.extend(name for name in fields[at : at + 2] if name)
            at += 2
    return paths


def failures(stderr: str, touched: list[str]) -> tuple[list[str], list[str]]:
    """The files and hunks git apply reported as failed, in words a report can show.

    git names a failed hunk by the file and its first line in the old file ("error: patch
    failed: src/app.py:12"); other failures as "error: <path>: <reason>" or with the path in
    quotes; 3-way conflicts as "U <path>".
    """
    files: list[str] = []
    hunks: list[str] = []

    def failed(path: str, what: str) -> None:
        if path not in files:
            files.append(path)
        if what not in hunks:
            hunks.append(what)

    known = sorted(touched, key=len, reverse=True)  # the longest name that fits wins
    for raw in stderr.splitlines():
        line = raw.strip()
        hunk = _FAILED_HUNK_RE.match(line)
        conflict = _CONFLICT_RE.match(line)
        if hunk:
            failed(hunk["path"], f"{hunk['path']}: hunk at line {hunk['line']} did not apply")
        elif conflict:
            path = unquote(conflict["path"] or conflict["quoted"])
            failed(path, f"{path}: conflicts in the 3-way merge")
        elif line.startswith("error: "):
            message = line.removeprefix("error: ")
            for path in known:
                if message.startswith(f"{path}: "):
                    reason = message[len(path) + 2 :]
                    # git's summary of a file whose failure is already listed says nothing new.
                    if reason != "patch does not apply" or path not in files:
                        failed(path, f"{path}: {reason}")
                    break
                if f"'{path}'" in message:
                    failed(path, f"{path}: {message}")
                    break
    return sorted(files), hunks


def rejected(stderr: str) -> tuple[str, str]:
    """The problem and hint of a failed ``git apply --reject``: it writes the hunks that
    apply unless the patch failed as a whole (a file missing or already there)."""
    if any(line.startswith(("Applying patch ", "Applied patch ")) for line in stderr.splitlines()):
        return (
            "Patch applied with rejected hunks",
            "the hunks that applied stay; the others are in <file>.rej beside each file",
        )
    return "Patch did not apply; nothing was written", "reset() puts the worktree back"


def without_searched_lines(stderr: str) -> str:
    """git's stderr without the lines verbose output (forced by --reject) quotes after
    "error: while searching for:": the project's text, blank lines included, up to the
    "error: patch failed: <path>:<line>" that always follows."""
    kept: list[str] = []
    quoting = False
    for line in stderr.splitlines():
        if line == "error: while searching for:":
            quoting = True
        elif not quoting or _FAILED_HUNK_RE.match(line):
            quoting = False
            kept.append(line)
    return "\n".join(kept)


def unquote(name: str) -> str:
    """A path as git prints it for people: C-quoted when it holds unusual bytes."""
    if not (len(name) >= 2 and name.startswith('"') and name.endswith('"')):
        return name
    body, out, at = name[1:-1], bytearray(), 0
    while at < len(body):
        char = body[at]
        if char == "\\" and at + 1 < len(body):
            following = body[at + 1]
            if following in _C_ESCAPES:
                out.append(_C_ESCAPES[following])
                at += 2
                continue
            if body[at + 1 : at + 4].isdigit():
                out.append(int(body[at + 1 : at + 4], 8) & 0xFF)
                at += 4
                continue
        out.extend(char.encode("utf-8", "surrogateescape"))
        at += 1
    return out.decode("utf-8", "surrogateescape")
