"""Packs of one commit's objects, made once from a cache entry and shared by every isolated
repository at that commit.

An isolated repository (``isolate=True``) must hold the commit's ancestors and nothing else.
Fetching them over git's local transport makes ``index-pack`` hash every object again, per
repository; ``pack-objects --revs`` writes the same objects with their index straight from the
cache's packs, reusing its deltas, several times cheaper. The pack is made once per commit
and hard-linked into each repository: git never rewrites a pack in place (a repack writes new
files and unlinks the old ones), so one copy on disk serves them all. A history-free pack
(``history=False``) holds the commit's tree alone, plus one new parentless commit of it.

Packs live in the entry (``<git_dir>/repoclones-packs/<sha>[-tree]/``), are built aside and
renamed into place (a reader never sees half a pack; of two builders, one wins), are checked by
size and trailing checksum before each use (a test that wrote through its hard link is caught),
and only the KEPT most recently used packs of an entry stay.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ._files import read_json, rmtree
from ._git import GitResult
from ._runner import GitRunner

__all__ = ["KEPT", "PACKS_DIR", "HistoryPacks", "Pack", "history_free_commit", "link_pack"]

PACKS_DIR = "repoclones-packs"
#: Packs kept per cache entry (the most recently used): each may be as large as the whole
#: history up to its commit, and a suite of many tasks reuses one per task commit.
KEPT = 32
#: A staging directory older than this was left by a killed build (builds take seconds).
_STALE_STAGING = 3600.0
_RECORD = "pack.json"
_COMMIT = "commit"


@dataclass(frozen=True)
class Pack:
    #: The pack's files by suffix: ".pack", ".idx", and ".rev" where git writes one.
    files: dict[str, Path]
    #: History-free packs: the new commit's whole object ("commit <size>\\0..."), written loose.
    commit: bytes | None = None


class HistoryPacks:
    """The packs of one store, made with its hardened git."""

    def __init__(self, runner: GitRunner) -> None:
        self._runner = runner

    def shared(
        self, git_dir: Path, sha: str, *, history: bool, key: str, shallow: bool = False
    ) -> Pack | GitResult:
        """The entry's pack of ``sha``'s history (or tree, or with ``shallow`` the commit
        alone with its tree), made if need be; git's failure."""
        kind = "" if history else "-shallow" if shallow else "-tree"
        home = git_dir / PACKS_DIR / f"{sha}{kind}"
        found = _intact(home)
        if found is not None:
            with contextlib.suppress(OSError):
                os.utime(home)  # most recently used: evicted last
            return found
        rmtree(home)  # a damaged one, if any
        staging = home.with_name(f".{home.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        staging.mkdir(parents=True)
        try:
            made = self.build(git_dir, sha, staging, history=history, key=key, shallow=shallow)
            if isinstance(made, GitResult):
                return made
            (staging / _RECORD).write_text(json.dumps(_fingerprint(made)))
            try:
                os.rename(staging, home)
            except OSError:
                found = _intact(home)  # another process published the same pack first
                if found is None:
                    raise
                return found
        finally:
            rmtree(staging)
        _evict(home.parent, keep=home)
        return _read(home)

    def build(
        self,
        git_dir: Path,
        sha: str,
        directory: Path,
        *,
        history: bool,
        key: str,
        objects: Path | None = None,
        shallow: bool = False,
    ) -> Pack | GitResult:
        """Write the pack of ``sha``'s history (or tree) into ``directory``; git's failure.

        git writes its temporary files into the object directory it works in: for a cache it
        must not write into (read-only), ``objects`` names another one, and the cache's
        objects are read through it as alternates. ``shallow`` (without ``history``): the
        commit itself, unchanged, and its tree, none of its parents; what upload-pack sends
        for a clone of depth 1 (a submodule must keep the commit its superproject records).
        """
        env = None
        if objects is not None:
            env = {
                "GIT_OBJECT_DIRECTORY": str(objects),
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(git_dir / "objects"),
            }
        commit = None
        if shallow and not history:
            revisions = f"--shallow {sha}\n{sha}\n"  # the parents are where the walk stops
        elif not history:
            shown = self._runner.run(["cat-file", "commit", sha], git_dir=git_dir, key=key)
            if not shown.ok:
                return shown
            commit = history_free_commit(shown.stdout.encode("utf-8", "surrogateescape"))
            (directory / _COMMIT).write_bytes(commit)
            revisions = f"{sha}^{{tree}}\n"
        else:
            revisions = f"{sha}\n"
        result = self._runner.run(
            ["pack-objects", "--revs", "--delta-base-offset", "--quiet", str(directory / "pack")],
            git_dir=git_dir,
            stdin=revisions,
            key=key,
            extra_env=env,
        )
        return result if not result.ok else Pack(_pack_files(directory), commit)


def history_free_commit(base: bytes) -> bytes:
    """A parentless commit of ``base``'s tree, with its author, committer and message: the
    object a history-free repository holds instead of the base commit and its past."""
    header, _, message = base.partition(b"\n\n")
    kept, keeping = [], False
    for line in header.split(b"\n"):
        if not line.startswith(b" "):  # a continuation line (a signature) follows its field
            keeping = line.split(b" ", 1)[0] in (b"tree", b"author", b"committer", b"encoding")
        if keeping:
            kept.append(line)
    body = b"\n".join(kept) + b"\n\n" + message
    return b"commit %d\0" % len(body) + body


def link_pack(pack: Pack, pack_dir: Path) -> None:
    """Put a pack's files into a repository's ``objects/pack``: a hard link where the file
    system allows one, else a copy (another file system: correct, only not free)."""
    pack_dir.mkdir(parents=True, exist_ok=True)
    # The index last: git finds packs by their .idx, so it never sees one half there.
    for suffix in sorted(pack.files, key=lambda s: s == ".idx"):
        source = pack.files[suffix]
        target = pack_dir / source.name
        if target == source:
            continue  # built in place (a read-only cache's isolated repository)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
            os.chmod(target, 0o444)


def _pack_files(directory: Path) -> dict[str, Path]:
    files = {path.suffix: path for path in directory.glob("pack-*")}
    if ".pack" not in files or ".idx" not in files:
        raise FileNotFoundError(f"no whole pack in {directory}")
    return files


def _read(home: Path) -> Pack:
    commit = home / _COMMIT
    return Pack(_pack_files(home), commit.read_bytes() if commit.exists() else None)


def _fingerprint(pack: Pack) -> dict[str, list[object]]:
    """Size and trailing checksum of each file: what a write through a hard link (a
    truncation, a rewrite) changes. Not the mtime: git "freshens" a pack it finds an object
    in (``git add`` of an existing blob touches it), and every new link moves the ctime."""
    record: dict[str, list[object]] = {}
    for path in pack.files.values():
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(size - 32, 0))
            record[path.name] = [size, handle.read().hex()]
    return record


def _intact(home: Path) -> Pack | None:
    """The pack at ``home`` if it is whole and unchanged since it was made."""
    try:
        pack = _read(home)
        if read_json(home / _RECORD) == _fingerprint(pack):
            return pack
    except (OSError, ValueError):
        pass
    return None


def _evict(packs_dir: Path, *, keep: Path) -> None:
    """Drop all but the KEPT most recently used packs, and builds a killed process left.

    Repositories already linked to a dropped pack keep it (a hard link); one being linked at
    this moment fails and builds anew.
    """
    homes = []
    for entry in packs_dir.iterdir():
        with contextlib.suppress(OSError):
            mtime = entry.stat().st_mtime_ns
            if entry.name.startswith("."):
                if time.time() - mtime / 1e9 > _STALE_STAGING:
                    rmtree(entry)
            elif entry != keep:
                homes.append((mtime, entry))
    homes.sort(reverse=True)
    for _, home in homes[KEPT - 1 :]:
        rmtree(home)
