"""The export file's format: what ``pytest-repoclones export`` writes and ``import`` reads.

An export file is an uncompressed POSIX tar (pax): git bundles are already compressed, and any
tar can list or unpack it::

    pytest-repoclones-export.json   the manifest, first: format, version, and per repository
                                    what the cache knows (URL redacted, default branch, pins)
    bundles/<key>.bundle            one full git bundle per repository

Kept apart from the git work (_entry_bundles.py) and the orchestration (_portable.py): an
export file is a file anyone may have cut, edited or made with a newer version, and what can be
checked of it without git (the manifest's records, every bundle's checksum, a bundle header's
signature and refs) is checked here, before any entry's lock is taken.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from .errors import PortableCacheError
from .urls import redact

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "BundleHeader",
    "ExportFile",
    "ExportSummary",
    "ExportedRepository",
    "file_kind",
    "file_sha256",
    "read_bundle_header",
    "write_export",
    "write_whole",
]

MANIFEST = "pytest-repoclones-export.json"
FORMAT = "pytest-repoclones-export"
#: The export file's layout; a reader refuses a newer one rather than guess at it.
VERSION = 1

_SIGNATURES = (b"# v2 git bundle\n", b"# v3 git bundle\n")
#: What RepoURL.key makes: a readable name and 16 hex digits; nothing else names a member.
_KEY_RE = re.compile(r"[A-Za-z0-9._-]{1,40}-[0-9a-f]{16}")
_OBJECT_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
#: The longest manifest or bundle header read (a header lists every ref: ~60 bytes each).
_MAX_HEADER = 64 * 2**20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportedRepository:
    """One repository of an export file, as its manifest records it."""

    key: str
    #: As the cache recorded it: redacted (and redacted again here: a marker can be edited).
    url: str
    canonical: str
    #: The remote's default branch: its commit (the bundle's HEAD), and its name when exactly
    #: one branch is at that commit (the cache keeps the commit, not the name).
    head: str | None
    default_branch: str | None
    pins: tuple[str, ...]
    refs: int
    size: int
    sha256: str
    #: The cache entry's layout (its marker's format), for a later reader's benefit.
    cache_format: int
    #: Always None: partial clones are refused (see _entry_bundles._refuse_partial).
    filter: str | None = None

    @property
    def bundle(self) -> str:
        return f"bundles/{self.key}.bundle"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "url": self.url,
            "canonical": self.canonical,
            "head": self.head,
            "default_branch": self.default_branch,
            "pins": list(self.pins),
            "refs": self.refs,
            "filter": self.filter,
            "bundle": self.bundle,
            "size": self.size,
            "sha256": self.sha256,
            "cache_format": self.cache_format,
        }

    @classmethod
    def from_dict(cls, data: object, where: str) -> ExportedRepository:
        """Validate one manifest record: every field that names a file or reaches git."""

        def bad(why: str) -> PortableCacheError:
            return PortableCacheError(f"{where} has a malformed repository record: {why}")

        if not isinstance(data, dict):
            raise bad("not an object")
        text = {name: data.get(name) for name in ("key", "url", "canonical", "sha256")}
        for name, value in text.items():
            if not isinstance(value, str):
                raise bad(f"{name} is missing")
        key, url, canonical, sha256 = (str(text[name]) for name in text)
        if not _KEY_RE.fullmatch(key) or data.get("bundle") != f"bundles/{key}.bundle":
            raise bad(f"key {key!r} or its bundle name is not one the cache makes")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise bad(f"sha256 of {key} is not a SHA-256")
        counts = [data.get("size"), data.get("refs"), data.get("cache_format", 1)]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise bad(f"size, refs or cache_format of {key} is not a count")
        size, refs, cache_format = (int(n) for n in counts)
        head, branch, pins = data.get("head"), data.get("default_branch"), data.get("pins", [])
        if head is not None and not (isinstance(head, str) and _OBJECT_RE.fullmatch(head)):
            raise bad(f"head of {key} is not an object name")
        if not isinstance(pins, list) or not all(isinstance(p, str) for p in pins):
            raise bad(f"pins of {key} are not a list of object names")
        if data.get("filter") is not None:
            raise bad(f"{key} was exported with filter {data.get('filter')!r}: not supported")
        return cls(
            key=key,
            url=redact(url),
            canonical=redact(canonical),
            head=head,
            default_branch=branch if isinstance(branch, str) else None,
            pins=tuple(pins),
            refs=refs,
            size=size,
            sha256=sha256,
            cache_format=cache_format,
        )


@dataclass
class ExportSummary:
    """An export as a whole: where it went, how big it is against the cache it came from."""

    path: Path
    repositories: list[ExportedRepository] = field(default_factory=list)
    failed: int = 0
    size: int = 0
    #: On-disk size of the cache entries exported (their bare repositories).
    cache_size: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class BundleHeader:
    """What a git bundle says before its pack (gitformat-bundle): the capabilities of a v3
    bundle (``filter``, ``object-format``) and its refs. Prerequisites (an incremental bundle)
    are git's to check: unbundling says which commits the cache lacks."""

    capabilities: Mapping[str, str]
    refs: tuple[tuple[str, str], ...]  # (object name, ref name), as listed


def read_bundle_header(path: Path) -> BundleHeader:
    """Parse the header of the git bundle at ``path`` (no git process: a few lines of text)."""
    with open(path, "rb") as handle:
        first = handle.readline(64)
        if first not in _SIGNATURES:
            raise PortableCacheError(f"{path} is not a git bundle (v2 or v3)")
        capabilities: dict[str, str] = {}
        refs: list[tuple[str, str]] = []
        read = len(first)
        while True:
            raw = handle.readline(_MAX_HEADER)
            read += len(raw)
            if not raw.endswith(b"\n") or read > _MAX_HEADER:
                raise PortableCacheError(f"The git bundle {path} is truncated in its header")
            line = raw[:-1].decode("utf-8", "replace")
            if not line:
                break
            if line.startswith("@"):
                name, _, value = line[1:].partition("=")
                capabilities[name] = value
            elif not line.startswith("-"):
                name, _, ref = line.partition(" ")
                if not _OBJECT_RE.fullmatch(name):
                    raise PortableCacheError(f"The git bundle {path} has a malformed header")
                refs.append((name, ref))
    return BundleHeader(capabilities, tuple(refs))


def file_kind(path: Path) -> str:
    """``export`` (a tar, as ``export`` writes), ``bundle`` (a plain git bundle), or raise."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(512)
    except OSError as exc:
        raise PortableCacheError(f"Cannot read {path}: {exc.strerror or exc}") from None
    if start.startswith(_SIGNATURES):
        return "bundle"
    if len(start) == 512 and start[257:262] == b"ustar":
        return "export"
    raise PortableCacheError(
        f"{path} is neither a pytest-repoclones export file (a tar) nor a git bundle"
        + (" (it is empty)" if not start else ""),
        hint="make one with `pytest-repoclones export FILE` or `export --bundle FILE URL`",
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info


def write_whole(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``target`` whole or not at all: a killed export never leaves half a file there for a
    CI cache step to store."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _producer() -> str:
    try:
        return f"pytest-repoclones {metadata.version('pytest-repoclones')}"
    except metadata.PackageNotFoundError:
        return "pytest-repoclones"


def write_export(out: IO[bytes], summary: ExportSummary, bundles: Sequence[Path]) -> None:
    """The export file into ``out``: the manifest of ``summary``, then ``bundles`` (one per
    repository of ``summary``, in its order)."""
    now = time.time()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": now,
        "producer": _producer(),
        "repositories": [record.as_dict() for record in summary.repositories],
    }
    data = (json.dumps(manifest, indent=1) + "\n").encode()
    # pax: no 8 GiB limit on a member, unlike ustar; any tar reads it.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        # The manifest first: `tar -xOf FILE pytest-repoclones-export.json` stops there.
        tar.addfile(_member(MANIFEST, len(data), now), io.BytesIO(data))
        for record, bundle in zip(summary.repositories, bundles, strict=True):
            with open(bundle, "rb") as handle:
                tar.addfile(_member(record.bundle, record.size, now), handle)


class ExportFile:
    """An export file opened for import: manifest read and checked, members checked whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise self._damaged(str(exc)) from None
        try:
            self.repositories = self._read_manifest()
        except (tarfile.TarError, OSError, EOFError) as exc:
            self._tar.close()
            raise self._damaged(str(exc)) from None
        except BaseException:
            self._tar.close()
            raise

    def close(self) -> None:
        self._tar.close()

    def _damaged(self, why: str, record: ExportedRepository | None = None) -> PortableCacheError:
        return PortableCacheError(
            f"{self.path} is damaged or truncated: {why}",
            url=None if record is None else record.url,
            hint="nothing was imported; make the file again with `pytest-repoclones export`",
        )

    def _read_manifest(self) -> list[ExportedRepository]:
        try:
            info = self._tar.getmember(MANIFEST)
        except KeyError:
            raise self._damaged(f"it has no {MANIFEST}") from None
        handle = self._tar.extractfile(info) if info.isfile() else None
        if handle is None or info.size > _MAX_HEADER:
            raise self._damaged(f"{MANIFEST} is not a readable file")
        try:
            document = json.loads(handle.read())
        except ValueError as exc:
            raise self._damaged(f"{MANIFEST} is not JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise PortableCacheError(f"{self.path} is not a pytest-repoclones export file")
        version = document.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise PortableCacheError(
                f"{self.path} was written by a newer pytest-repoclones (export format "
                f"{version!r}; this version reads {VERSION})",
                hint="upgrade pytest-repoclones where you import it",
            )
        records = document.get("repositories")
        if not isinstance(records, list):
            raise self._damaged(f"{MANIFEST} lists no repositories")
        return [ExportedRepository.from_dict(record, str(self.path)) for record in records]

    def check(self, records: Iterable[ExportedRepository]) -> None:
        """Every bundle there, whole and unchanged, before anything is imported: a truncated
        or damaged file imports nothing at all."""
        for record in records:
            digest = hashlib.sha256()
            self._copy(record, digest.update)
            if digest.hexdigest() != record.sha256:
                raise self._damaged(f"{record.bundle} does not match its checksum", record)

    def extract(self, record: ExportedRepository, directory: Path) -> Path:
        """Copy ``record``'s bundle into ``directory`` (git reads bundles from files only),
        checking its checksum again: the file may have changed since :meth:`check`."""
        target = directory / f"{record.key}.bundle"
        digest = hashlib.sha256()
        with open(target, "wb") as out:

            def write(chunk: bytes) -> None:
                digest.update(chunk)
                out.write(chunk)

            self._copy(record, write)
        if digest.hexdigest() != record.sha256:
            raise self._damaged(f"{record.bundle} does not match its checksum", record)
        return target

    def _copy(self, record: ExportedRepository, sink: Callable[[bytes], object]) -> None:
        try:
            info = self._tar.getmember(record.bundle)
            handle = self._tar.extractfile(info) if info.isfile() else None
            if handle is None or info.size != record.size:
                why = f"{record.bundle} is missing or not {record.size} bytes"
                raise self._damaged(why, record)
            while chunk := handle.read(_CHUNK):
                sink(chunk)
        except KeyError:
            raise self._damaged(f"{record.bundle} is missing", record) from None
        except (tarfile.TarError, EOFError) as exc:  # "unexpected end of data"
            raise self._damaged(f"{record.bundle}: {exc}", record) from None
