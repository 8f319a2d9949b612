"""Portable caches: a warm cache saved to one file a CI cache step can store, and restored.

An export file (``pytest-repoclones export FILE [URL...]``) is an uncompressed POSIX tar (pax):
git bundles are already compressed, and any tar can list or unpack it::

    pytest-repoclones-export.json   the manifest, first: format, version, and per repository
                                    what the cache knows (URL redacted, default branch, pins)
    bundles/<key>.bundle            one full git bundle per repository

Each bundle has the upstream's shape, not the cache entry's: branches as ``refs/heads/*`` (the
entry keeps them at ``refs/remotes/origin/*``), tags, ``HEAD`` (the remote's default branch, at
``refs/repoclones/remote-head`` in the entry) and the entry's own ``refs/repoclones/pins/*`` and
``refs/repoclones/named/*``. So every bundle is also a plain git bundle that ``git clone FILE``
and ``git clone --bundle-uri=FILE URL`` (git >= 2.38) take, and ``export --bundle FILE URL``
writes just that. Worktree branches (``refs/heads/repoclones/*``) belong to the sessions of this
machine and are never exported.

Export reads the cache without its locks: objects in an entry are never deleted (gc and
pruning are off), so a bundle made from the refs as they were read is always whole, whatever
sessions fetch meanwhile. Import takes each entry's lock, like a clone: a new entry is built
in ``tmp/`` and published by a rename; an existing one gets a pack of the objects it lacks
(made beside it, moved in whole) and then every ref change in one ``update-ref`` transaction,
so a session sees the entry before or after, never between.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from ._bare import init_bare_repository
from ._defaults import DEFAULT_LOCK_TIMEOUT
from ._files import rmtree
from ._git import GitResult
from ._layout import MARKER, CacheLayout, read_marker, write_marker
from ._lock import RepoLock
from ._remote import NAMED_PREFIX, PIN_PREFIX, REMOTE_HEAD
from ._runner import GitRunner
from ._units import format_size, tree_size
from .errors import CacheWriteError, GitCommandError, RepoClonesError
from .urls import DEFAULT_PROTOCOLS, RepoURL, parse_url, redact

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "BundleHeader",
    "ExportSummary",
    "ExportedRepository",
    "PortableCache",
    "PortableCacheError",
    "Transfer",
    "file_kind",
    "read_bundle_header",
]

MANIFEST = "pytest-repoclones-export.json"
FORMAT = "pytest-repoclones-export"
#: The export file's layout; a reader refuses a newer one rather than guess at it.
VERSION = 1
#: Local git work on big repositories (bundle create, unbundle, the connectivity walk).
GIT_TIMEOUT = 3600.0

_ORIGIN = "refs/remotes/origin/"
_HEADS = "refs/heads/"
_TAGS = "refs/tags/"
_SIGNATURES = (b"# v2 git bundle\n", b"# v3 git bundle\n")
#: What RepoURL.key makes: a readable name and 16 hex digits; nothing else names a member.
_KEY_RE = re.compile(r"[A-Za-z0-9._-]{1,40}-[0-9a-f]{16}")
_OBJECT_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# A ref name as git allows it (check-ref-format), and nothing update-ref's stdin could misread.
_REF_RE = re.compile(r"refs/[^\x00-\x20\x7f~^:?*\[\\]+")
#: The longest manifest or bundle header read (a header lists every ref: ~60 bytes each).
_MAX_HEADER = 64 * 2**20
_CHUNK = 1 << 20
_INCOMPLETE = "incomplete (no completion marker): the next session that uses it clones it again"


class PortableCacheError(RepoClonesError):
    """An export file or bundle cannot be used (damaged, truncated, of a newer format, not
    one at all), or a repository cannot be exported (a partial or shallow entry)."""


@dataclass(frozen=True)
class Transfer:
    """What happened to one repository: ``exported``, ``skipped`` (an incomplete entry a
    killed clone left), ``imported`` (a new entry), ``updated``, ``up to date`` or ``failed``
    (``detail`` says why; the other repositories still go on)."""

    url: str  # redacted
    status: str
    detail: str = ""
    git_dir: Path | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


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
    #: Always None: partial clones are refused (see _refuse_partial).
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


# -- refs: the entry's names and the bundle's -------------------------------------------------


def bundle_ref(ref: str) -> str | None:
    """The name a ref of a cache entry has in a bundle (None: not exported)."""
    if ref == REMOTE_HEAD:
        return "HEAD"
    if ref.startswith(_ORIGIN):
        return _HEADS + ref[len(_ORIGIN) :]
    if ref.startswith((_TAGS, PIN_PREFIX, NAMED_PREFIX)):
        return ref
    return None  # worktree branches: they belong to the sessions of this machine


def cache_ref(ref: str) -> str | None:
    """Where a ref of a bundle goes in a cache entry (None: ignored).

    Also for bundles not made by us (``git bundle create x --all`` of an upstream mirror): a
    pull-request ref goes where a session that asked for it by name would keep it; another
    clone's remote-tracking refs name nothing of this upstream.
    """
    if ref in ("HEAD", REMOTE_HEAD):
        return REMOTE_HEAD
    if not _valid_ref(ref):
        return None
    if ref.startswith(_HEADS):
        return _ORIGIN + ref[len(_HEADS) :]
    if ref.startswith((_TAGS, PIN_PREFIX, NAMED_PREFIX)):
        return ref
    if ref.startswith(("refs/remotes/", "refs/repoclones/")):
        return None
    return NAMED_PREFIX + ref[len("refs/") :]


def _valid_ref(ref: str) -> bool:
    parts = ref.split("/")
    return (
        _REF_RE.fullmatch(ref) is not None
        and "" not in parts
        and not any(part.startswith(".") or part.endswith(".lock") for part in parts)
        and ".." not in ref
        and "@{" not in ref
        and not ref.endswith(".")
    )


@dataclass(frozen=True)
class RefChange:
    """One ref of a bundle against the entry: ``added``, ``advanced``, ``same``, ``kept``."""

    ref: str
    new: str
    old: str | None
    verdict: str


def plan_refs(
    wanted: Mapping[str, str], current: Mapping[str, str], descends: Callable[[str, str], bool]
) -> list[RefChange]:
    """What import does to each ref (``descends(old, new)``: new is old or a descendant).

    Nothing a session has seen moves backwards or sideways: a new ref is added; a pin (named by
    its own commit) is only ever added; a tag the entry has keeps its commit (no ancestry says
    which of two is newer, and sessions may have checked the entry's out); a branch, the
    default branch or a named ref moves only forward, as a fetch would move it. Nothing is
    deleted: the next online refresh prunes branches deleted upstream, as it always does.
    """
    taken = {part for ref in current for part in _prefixes(ref)}
    changes = []
    for ref, new in sorted(wanted.items()):
        old = current.get(ref)
        if old is None:
            # A ref cannot be made where a directory of refs is, or below a ref: such a clash
            # (a tag deleted upstream and replaced by tags below its name) keeps the entry's.
            clash = ref in taken or any(part in current for part in _prefixes(ref))
            verdict = "kept" if clash else "added"
        elif old == new:
            verdict = "same"
        elif ref.startswith((PIN_PREFIX, _TAGS)):
            verdict = "kept"
        else:
            verdict = "advanced" if descends(old, new) else "kept"
        changes.append(RefChange(ref, new, old, verdict))
    return changes


def _prefixes(ref: str) -> list[str]:
    """``refs/tags/a/b`` -> ``refs/tags``, ``refs/tags/a`` (every directory above it)."""
    parts = ref.split("/")
    return ["/".join(parts[:n]) for n in range(2, len(parts))]


# -- the export file --------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info


def _write_atomically(target: Path, write: Callable[[IO[bytes]], None]) -> None:
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


# -- export and import ------------------------------------------------------------------------


class PortableCache:
    """Exports the entries of one cache directory to a file and imports such files into it."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        timeout: float = GIT_TIMEOUT,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self.layout = CacheLayout(self.cache_dir)
        self.lock_timeout = lock_timeout
        self._notice = notice
        self._runner = GitRunner(DEFAULT_PROTOCOLS, timeout)

    # -- export ----------------------------------------------------------------------------

    def export(
        self,
        target: Path,
        urls: Sequence[str] = (),
        *,
        report: Callable[[Transfer], None] = lambda _: None,
    ) -> ExportSummary:
        """Write every entry (or those of ``urls``) to the export file ``target``.

        A repository that cannot be exported (not cached, incomplete, a partial clone) is
        reported as failed and left out; the file holds the others (none: an empty export,
        which imports as nothing). ``target`` is replaced whole, only at the end.
        """
        started = time.monotonic()
        summary = ExportSummary(target)

        def emit(result: Transfer) -> None:
            summary.failed += result.failed
            report(result)

        bundles: list[Path] = []
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            for shown, git_dir in self._chosen_entries(urls, emit):
                try:
                    record = self._bundle_entry(git_dir, work)
                except (RepoClonesError, OSError) as exc:
                    emit(Transfer(shown, "failed", _reason(exc), git_dir))
                    continue
                bundles.append(work / f"{record.key}.bundle")
                summary.repositories.append(record)
                summary.cache_size += tree_size(git_dir)
                emit(Transfer(record.url, "exported", _counts(record), git_dir))
            _write_atomically(target, lambda out: self._write_tar(out, summary, bundles))
        finally:
            rmtree(work)
        summary.size = target.stat().st_size
        summary.seconds = time.monotonic() - started
        return summary

    def export_bundle(self, target: Path, url: str) -> Transfer:
        """Write the plain git bundle of ``url``'s entry to ``target`` (for ``git clone
        --bundle-uri``, ``git clone``, or ``import FILE --url URL``)."""
        repo = parse_url(url)
        git_dir = self.layout.git_dir(repo.key)
        if not git_dir.is_dir():
            raise PortableCacheError(f"Not in the cache {self.cache_dir}", url=repo.redacted)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            record = self._bundle_entry(git_dir, work)
            bundle = work / f"{record.key}.bundle"
            os.replace(bundle, target)  # same directory: whole or absent
        finally:
            rmtree(work)
        return Transfer(record.url, "exported", _counts(record), git_dir)

    def _chosen_entries(
        self, urls: Sequence[str], report: Callable[[Transfer], None]
    ) -> list[tuple[str, Path]]:
        """(shown URL, git dir) of the entries to export: all, or those of ``urls``."""
        if not urls:
            complete = []
            for path in sorted(self.layout.repos.glob("*.git")):  # none if there is no cache
                if (path / MARKER).is_file():
                    complete.append((_shown_url(path), path))
                else:  # what a killed clone left: garbage to every session, not a failure
                    report(Transfer(f"(incomplete entry {path.name})", "skipped", _INCOMPLETE))
            return complete
        chosen: dict[Path, str] = {}
        for url in urls:
            try:
                repo = parse_url(url)
            except RepoClonesError as exc:
                report(Transfer(redact(url), "failed", _reason(exc)))
                continue
            git_dir = self.layout.git_dir(repo.key)
            if git_dir.is_dir():
                chosen.setdefault(git_dir, repo.redacted)
            else:
                report(Transfer(repo.redacted, "failed", f"not in the cache {self.cache_dir}"))
        return [(shown, path) for path, shown in chosen.items()]

    def _bundle_entry(self, git_dir: Path, work: Path) -> ExportedRepository:
        """Bundle one entry into ``work/<key>.bundle``, in the upstream's shape.

        The bundle is made in a scratch repository that borrows the entry's objects (git
        alternates) and holds copies of its refs under their upstream names: git bundles a
        ref under the name it has, and the entry cannot hold upstream branches at
        ``refs/heads`` (its worktrees' branches live there). Nothing is copied but refs.
        """
        marker = read_marker(git_dir)  # refuses an entry of a newer cache format
        key = git_dir.name[: -len(".git")]
        if marker is None or not isinstance(marker.get("url"), str):
            raise PortableCacheError(f"Cache entry {git_dir} is {_INCOMPLETE}")
        url = redact(marker["url"])
        _refuse_partial(url, marker.get("filter"))
        _refuse_shallow(url, git_dir)
        refs = _read_refs(self._runner, git_dir, url)
        head = refs.get(REMOTE_HEAD)
        renamed = {}
        for ref, sha in refs.items():
            name = bundle_ref(ref)
            if name is not None and name != "HEAD":
                renamed[name] = sha
        if not renamed and head is None:
            raise PortableCacheError("Cache entry has no branches, tags or pins", url=url)
        scratch = work / f"{key}.git"
        init_bare_repository(scratch, promisor_url=None, clone_filter=None)
        objects = Path(os.path.realpath(git_dir)) / "objects"
        (scratch / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        script = "".join(f"create {name} {sha}\n" for name, sha in renamed.items())
        _run(self._runner, ["update-ref", "--stdin"], scratch, url, stdin=script)
        revisions = ["--branches", "--tags", "--glob=refs/repoclones/*"]
        if head is not None:
            (scratch / "HEAD").write_text(f"{head}\n")  # detached: the bundle lists HEAD
            revisions.insert(0, "HEAD")
        bundle = work / f"{key}.bundle"
        _run(self._runner, ["bundle", "create", "--quiet", str(bundle), *revisions], scratch, url)
        rmtree(scratch)
        at_head = [name for name, sha in renamed.items() if name.startswith(_HEADS) and sha == head]
        canonical = marker.get("canonical")
        return ExportedRepository(
            key=key,
            url=url,
            canonical=redact(canonical) if isinstance(canonical, str) else url,
            head=head,
            default_branch=at_head[0][len(_HEADS) :] if len(at_head) == 1 else None,
            pins=tuple(sorted(r[len(PIN_PREFIX) :] for r in refs if r.startswith(PIN_PREFIX))),
            refs=len(renamed) + (head is not None),
            size=bundle.stat().st_size,
            sha256=_sha256(bundle),
            cache_format=int(marker.get("format", 1)),
        )

    @staticmethod
    def _write_tar(out: IO[bytes], summary: ExportSummary, bundles: Sequence[Path]) -> None:
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

    # -- import ----------------------------------------------------------------------------

    def import_file(
        self,
        source: Path,
        urls: Sequence[str] = (),
        *,
        report: Callable[[Transfer], None] = lambda _: None,
    ) -> list[Transfer]:
        """Import every repository of the export file ``source`` (or those of ``urls``).

        The whole file is checked first (manifest, every bundle's checksum): a damaged or
        truncated file raises PortableCacheError and imports nothing. Then each repository
        is imported on its own, under its entry's lock; one that fails leaves its entry as
        it was and the others still go on.
        """
        self._check_writable()
        results: list[Transfer] = []

        def emit(result: Transfer) -> None:
            results.append(result)
            report(result)

        export = ExportFile(source)
        try:
            records = self._chosen_records(export, urls, emit)
            export.check(record for record, _ in records)
            for record, repo in records:

                def extract(directory: Path, record: ExportedRepository = record) -> Path:
                    return export.extract(record, directory)

                emit(self._import_one(repo, record.url, extract))
            return results
        finally:
            export.close()

    def import_bundle(self, source: Path, url: str) -> Transfer:
        """Import the plain git bundle ``source`` as the repository ``url``."""
        self._check_writable()
        repo = parse_url(url)
        read_bundle_header(source)  # not a bundle at all: say so before taking any lock
        return self._import_one(repo, repo.redacted, lambda _: source)

    def _check_writable(self) -> None:
        if self.layout.read_only:
            raise CacheWriteError(
                f"The cache {self.cache_dir} is read-only: nothing can be imported into it",
                hint="import into a writable copy, or where the cache is mounted read-write",
            )
        self.layout.ensure()

    def _chosen_records(
        self,
        export: ExportFile,
        urls: Sequence[str],
        emit: Callable[[Transfer], None],
    ) -> list[tuple[ExportedRepository, RepoURL]]:
        """The records to import, each with the URL it is imported as: its key is computed
        here, as the sessions here compute it. In the file's order."""
        chosen: list[tuple[ExportedRepository, RepoURL]] = []
        for record in export.repositories:
            try:
                chosen.append((record, parse_url(record.url)))
            except RepoClonesError as exc:
                emit(Transfer(record.url, "failed", _reason(exc)))
        if not urls:
            return chosen
        wanted = {repo.key: repo for repo in map(parse_url, urls)}
        found = {repo.key for _, repo in chosen}
        for key, repo in wanted.items():
            if key not in found:
                emit(Transfer(repo.redacted, "failed", f"not in {export.path}"))
        return [(record, repo) for record, repo in chosen if repo.key in wanted]

    def _import_one(
        self, repo: RepoURL, shown: str, bundle_into: Callable[[Path], Path]
    ) -> Transfer:
        """Import one bundle (``bundle_into(directory)`` gives its path) as ``repo``."""
        git_dir = self.layout.git_dir(repo.key)
        lock = RepoLock(
            self.layout.lock_path(repo.key),
            timeout=self.lock_timeout,
            shown_url=shown,
            notice=self._notice,
        )
        try:
            with lock.hold(f"pytest-repoclones: import {shown}"):
                # Made again if the cache was removed meanwhile; a killed import's leftovers
                # (tmp/<key>.<pid>.<rand>: only this lock's holder builds there) go.
                self.layout.ensure_for_clone()
                self.layout.remove_stale_builds(repo.key)
                staging = self.layout.build_dir(repo.key)
                scratch = self.layout.build_dir(repo.key)
                try:
                    scratch.mkdir()
                    entry = _EntryImport(self._runner, self.layout, repo, shown, staging)
                    return entry.run(bundle_into(scratch))
                finally:
                    rmtree(staging)
                    rmtree(scratch)
        except (RepoClonesError, OSError) as exc:
            return Transfer(shown, "failed", _reason(exc), git_dir)


class _EntryImport:
    """One bundle into one entry, under the entry's lock (held by the caller).

    ``staging`` (in ``tmp/``) becomes the new entry, or, for an entry that exists, receives the
    bundle's pack with the entry's objects borrowed (alternates), so that the connectivity check
    and the ancestry questions see both; a pack of only what the entry lacks then moves in.
    """

    def __init__(
        self, runner: GitRunner, layout: CacheLayout, repo: RepoURL, shown: str, staging: Path
    ) -> None:
        self._runner = runner
        self._layout = layout
        self.repo = repo
        self.shown = shown
        self.git_dir = layout.git_dir(repo.key)
        self.staging = staging

    def run(self, bundle: Path) -> Transfer:
        header = read_bundle_header(bundle)
        if "filter" in header.capabilities:
            raise PortableCacheError(
                f"The bundle is filtered ({header.capabilities['filter']}): it lacks objects "
                "its refs reach, and a cache entry holds whole repositories",
                url=self.shown,
            )
        wanted: dict[str, str] = {}
        for sha, ref in header.refs:
            target = cache_ref(ref)
            if target is not None:
                wanted.setdefault(target, sha)
        if not wanted:
            raise PortableCacheError("The bundle holds no branch, tag or pin", url=self.shown)
        existing = read_marker(self.git_dir) is not None  # refuses a newer cache format
        init_bare_repository(self.staging, promisor_url=None, clone_filter=None)
        if existing:
            objects = Path(os.path.realpath(self.git_dir)) / "objects"
            (self.staging / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        current = _read_refs(self._runner, self.git_dir, self.shown) if existing else {}
        unbundled = not (existing and self._has_all(set(wanted.values())))
        if unbundled:
            self._unbundle(bundle, sorted(set(wanted.values())))
        changes = plan_refs(wanted, current, self._descends)
        if not existing:
            return self._publish(changes)
        return self._update(changes, current if unbundled else None)

    def _has_all(self, objects: set[str]) -> bool:
        """Whether the entry has every tip already: then the bundle's pack is not needed (it
        would only duplicate what the entry holds)."""
        result = self._runner.run(
            ["cat-file", "--batch-check=%(objecttype)"],
            git_dir=self.staging,
            stdin="".join(f"{sha}\n" for sha in sorted(objects)),
        )
        return result.ok and "missing" not in result.stdout

    def _unbundle(self, bundle: Path, tips: list[str]) -> None:
        """The bundle's pack into staging, then git's own check that every ref's history is
        all there (what a fetch checks): a bundle is a file anyone may have cut or edited."""
        result = self._runner.run(
            ["bundle", "unbundle", str(bundle)], git_dir=self.staging, url=self.shown
        )
        if not result.ok:
            raise PortableCacheError(
                "The bundle could not be unpacked: it is damaged, truncated, or needs commits "
                "the cache lacks",
                url=self.shown,
                git_error=self.repo.scrub(result.error_line),
                hint="nothing was imported for this repository",
            )
        # The same walk as a fetch's connectivity check, over the new objects only.
        result = self._runner.run(
            ["rev-list", "--objects", "--stdin", "--not", "--all", "--quiet", "--alternate-refs"],
            git_dir=self.staging,
            stdin="".join(f"{sha}\n" for sha in tips),
        )
        if not result.ok:
            raise PortableCacheError(
                "The bundle is incomplete: objects its refs reach are missing",
                url=self.shown,
                git_error=self.repo.scrub(result.error_line),
                hint="nothing was imported for this repository",
            )

    def _descends(self, old: str, new: str) -> bool:
        result = self._runner.run(["merge-base", "--is-ancestor", old, new], git_dir=self.staging)
        return result.returncode == 0

    def _publish(self, changes: list[RefChange]) -> Transfer:
        """A new entry: refs written in staging, the marker, then the rename that publishes it,
        as a clone is published (_entry.CacheEntries._clone_locked): readers see the whole
        entry or none. Not marked refreshed: the next online session fetches branches and
        tags, as after any clone of an older state."""
        _run(
            self._runner,
            ["update-ref", "--stdin"],
            self.staging,
            self.shown,
            stdin=_script(changes),
        )
        write_marker(
            self.staging, url=self.shown, canonical=self.repo.canonical, filter=None, imported=True
        )
        if self.git_dir.exists():
            # No marker: left by a process killed mid-publish, or damaged (as a clone does).
            self._layout.discard(self.git_dir)
        os.rename(self.staging, self.git_dir)
        return Transfer(self.shown, "imported", _describe(changes, new=True), self.git_dir)

    def _update(self, changes: list[RefChange], current: Mapping[str, str] | None) -> Transfer:
        """An entry in use: a pack of what it lacks moves in (``current``: its refs, if the
        bundle had to be unpacked), then every ref changes in one transaction."""
        moved = [change.new for change in changes if change.verdict in ("added", "advanced")]
        if not moved:
            return Transfer(self.shown, "up to date", _describe(changes), self.git_dir)
        if current is not None:
            self._move_in(self._pack_missing(moved, current.values()))
        _run(
            self._runner,
            ["update-ref", "--stdin"],
            self.git_dir,
            self.shown,
            stdin=_script(changes),
        )
        with contextlib.suppress(OSError):
            os.utime(self.git_dir / MARKER)  # a use, for `pytest-repoclones gc`
        return Transfer(self.shown, "updated", _describe(changes), self.git_dir)

    def _pack_missing(self, tips: Iterable[str], have: Iterable[str]) -> Path:
        """A pack of the objects ``tips`` reach and the entry's refs (``have``) do not.

        Not the bundle's own pack: it holds the whole history, which the entry mostly has
        already (moved in, it doubled the entry: 7.0 -> 14.1 MiB on the synthetic repository
        for 10 new commits). pack-objects reuses the bundle pack's deltas.
        """
        directory = self.staging / "objects" / "missing"
        directory.mkdir()
        stdin = "".join(f"{sha}\n" for sha in sorted(set(tips)))
        stdin += "--not\n" + "".join(f"{sha}\n" for sha in sorted(set(have)))
        args = ["pack-objects", "--revs", "--delta-base-offset", "--quiet", str(directory / "pack")]
        _run(self._runner, args, self.staging, self.shown, stdin=stdin)
        return directory

    def _move_in(self, directory: Path) -> None:
        """Packs of ``directory`` into the entry, each index last: git finds a pack by its
        index, so a pack is whole once it shows. Nothing is ever changed in place."""
        target = self.git_dir / "objects" / "pack"
        for pack in sorted(directory.glob("pack-*.pack")):
            with open(pack, "rb") as handle:
                if handle.read(12)[8:] == bytes(4):
                    continue  # no object: the entry had them all
            for part in (pack, pack.with_suffix(".rev"), pack.with_suffix(".idx")):
                if part.exists() and not (target / part.name).exists():
                    os.rename(part, target / part.name)


def _script(changes: Iterable[RefChange]) -> str:
    """update-ref --stdin: one transaction, each update checked against the old value."""
    lines = []
    for change in changes:
        if change.verdict == "added":
            lines.append(f"create {change.ref} {change.new}\n")
        elif change.verdict == "advanced":
            lines.append(f"update {change.ref} {change.new} {change.old}\n")
    return "".join(lines)


def _describe(changes: Sequence[RefChange], *, new: bool = False) -> str:
    count = {verdict: 0 for verdict in ("added", "advanced", "same", "kept")}
    for change in changes:
        count[change.verdict] += 1
    pins = sum(1 for c in changes if c.ref.startswith(PIN_PREFIX) and c.verdict == "added")
    if new:
        return f"{count['added']} refs ({_plural(pins, 'pinned commit')})"
    parts = []
    if count["added"]:
        parts.append(f"{count['added']} refs added ({_plural(pins, 'pinned commit')})")
    if count["advanced"]:
        parts.append(f"{count['advanced']} moved forward")
    if count["same"] and not parts:
        parts.append(f"{count['same']} refs already there")
    if count["kept"]:
        parts.append(
            f"{count['kept']} kept as the cache has them (newer or diverged branches, "
            "other tags, name clashes)"
        )
    return "; ".join(parts)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _counts(record: ExportedRepository) -> str:
    pins = _plural(len(record.pins), "pinned commit")
    return f"{record.refs} refs, {pins}, {format_size(record.size)}"


def _refuse_partial(url: str, clone_filter: object) -> None:
    """A partial clone cannot be bundled whole without the network (measured on git 2.39).

    ``git bundle create`` in it has pack-objects fetch every missing blob from the remote (one
    ``git fetch origin --filter=...``), which turns the entry into a full clone and fails
    offline ("could not fetch ... from promisor remote"); ``--filter`` makes a v3 bundle without
    them, and an entry imported from that could check nothing out offline, which is what an
    exported cache is for.
    """
    if clone_filter:
        raise PortableCacheError(
            f"Cannot export a partial clone (filter {clone_filter}): it lacks the objects the "
            "filter left out, and a bundle must hold every object its refs reach; git would "
            "fetch each missing one from the remote (and fail offline), and a filtered bundle "
            "would give an entry that cannot check anything out offline",
            url=url,
            hint="export the other repositories by URL, or prefetch this one without --filter "
            "(into another --cache-dir) and export that",
        )


def _refuse_shallow(url: str, git_dir: Path) -> None:
    """A shallow entry (``--repo-shallow``) holds commits without their parents, which a
    bundle cannot say: git 2.39 bundles it all the same, and the repository unbundled from it
    names parents it lacks (import's connectivity check refuses such a bundle)."""
    if (git_dir / "shallow").exists():
        raise PortableCacheError(
            "Cannot export a shallow entry: it holds commits without their history, and a git "
            "bundle has no way to say so (the imported repository would lack the parents its "
            "commits name)",
            url=url,
            hint="export the other repositories by URL; a shallow entry is quick to make again",
        )


def _read_refs(runner: GitRunner, git_dir: Path, url: str) -> dict[str, str]:
    result = _run(runner, ["for-each-ref", "--format=%(objectname) %(refname)"], git_dir, url)
    refs = {}
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition(" ")
        refs[ref] = sha
    return refs


def _run(
    runner: GitRunner, args: list[str], git_dir: Path, url: str, *, stdin: str | None = None
) -> GitResult:
    result = runner.run(args, git_dir=git_dir, stdin=stdin, url=url)
    if not result.ok:
        raise GitCommandError(
            f"git {args[0]} {args[1] if args[1:] else ''}".rstrip() + " failed",
            url=url,
            git_error=result.error_line,
        )
    return result


def _shown_url(git_dir: Path) -> str:
    url = (read_marker(git_dir, check=False) or {}).get("url")
    return redact(url) if isinstance(url, str) else f"(entry {git_dir.name})"


def _reason(exc: BaseException) -> str:
    """One line for a failed repository: the problem, git's line, the hint."""
    if isinstance(exc, RepoClonesError):
        git = "; ".join(line.strip() for line in (exc.git_error or "").splitlines() if line.strip())
        return (
            exc.problem + (f" (git: {git})" if git else "") + (f"; {exc.hint}" if exc.hint else "")
        )
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)
