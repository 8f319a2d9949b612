"""Portable caches: a warm cache saved to one file a CI cache step can store, and restored.

``pytest-repoclones export FILE [URL...]`` writes one export file (its format: _export_file.py)
holding a git bundle per repository; ``import FILE`` brings them back. Each bundle has the
upstream's shape, not the cache entry's: branches as ``refs/heads/*`` (the entry keeps them at
``refs/remotes/origin/*``), tags, ``HEAD`` (the remote's default branch, at
``refs/repoclones/remote-head`` in the entry) and the entry's own ``refs/repoclones/pins/*`` and
``refs/repoclones/named/*``. So every bundle is also a plain git bundle that ``git clone FILE``
and ``git clone --bundle-uri=FILE URL`` (git >= 2.38) take, and ``export --bundle FILE URL``
writes just that. Worktree branches (``refs/heads/repoclones/*``) belong to the sessions of this
machine and are never exported.

This module is the orchestration: which entries or records, the file written whole or not at
all, each entry's lock taken for its import, one repository failing while the others go on, and
what is reported. The git work on one entry is _entry_bundles.py's; which refs move is
_ref_plan.py's.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._defaults import DEFAULT_LOCK_TIMEOUT
from ._entry_bundles import INCOMPLETE, EntryImport, bundle_entry
from ._export_file import (
    ExportedRepository,
    ExportFile,
    ExportSummary,
    read_bundle_header,
    write_export,
    write_whole,
)
from ._files import rmtree
from ._layout import MARKER, CacheLayout, read_marker
from ._lock import RepoLock
from ._ref_plan import RefChange
from ._remote import PIN_PREFIX
from ._runner import GitRunner
from ._units import format_size, tree_size
from .errors import CacheWriteError, PortableCacheError, RepoClonesError
from .urls import DEFAULT_PROTOCOLS, RepoURL, parse_url, redact

__all__ = ["GIT_TIMEOUT", "PortableCache", "Transfer"]

#: Local git work on big repositories (bundle create, unbundle, the connectivity walk).
GIT_TIMEOUT = 3600.0


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
                    record = bundle_entry(self._runner, git_dir, work)
                except (RepoClonesError, OSError) as exc:
                    emit(Transfer(shown, "failed", _reason(exc), git_dir))
                    continue
                bundles.append(work / f"{record.key}.bundle")
                summary.repositories.append(record)
                summary.cache_size += tree_size(git_dir)
                emit(Transfer(record.url, "exported", _counts(record), git_dir))
            write_whole(target, lambda out: write_export(out, summary, bundles))
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
            record = bundle_entry(self._runner, git_dir, work)
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
                    report(Transfer(f"(incomplete entry {path.name})", "skipped", INCOMPLETE))
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
                    entry = EntryImport(self._runner, self.layout, lock, repo, shown, staging)
                    status, changes = entry.run(bundle_into(scratch))
                    detail = _describe(changes, new=status == "imported")
                    return Transfer(shown, status, detail, git_dir)
                finally:
                    rmtree(staging)
                    rmtree(scratch)
        except (RepoClonesError, OSError) as exc:
            return Transfer(shown, "failed", _reason(exc), git_dir)


def _describe(changes: Sequence[RefChange], *, new: bool = False) -> str:
    """What an import did to an entry's refs (``new``: a new entry, all of them added)."""
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
