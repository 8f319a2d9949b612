"""One cache entry made into a git bundle, and one git bundle brought into a cache entry.

The git work ``export`` and ``import`` do on a single entry, apart from choosing the entries,
taking their locks and reporting (_portable.py), because the guarantees live here:

- export reads an entry without its lock: objects in an entry are never deleted (gc and
  pruning are off), so a bundle made from the refs as they were read is always whole, whatever
  sessions fetch meanwhile;
- import runs under the entry's lock, like a clone: a new entry is built in ``tmp/`` and
  published by a rename; an existing one gets a pack of the objects it lacks (made beside it,
  moved in whole) and then every ref change in one ``update-ref`` transaction, so a session
  sees the entry before or after, never between.

Which refs travel, under which names, and which may move is _ref_plan.py's to say.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ._bare import init_bare_repository
from ._export_file import ExportedRepository, file_sha256, read_bundle_header
from ._files import rmtree
from ._git import GitResult
from ._layout import MARKER, CacheLayout, read_marker, write_marker
from ._lock import RepoLock
from ._ref_plan import HEADS, RefChange, bundle_ref, cache_ref, plan_refs, update_script
from ._remote import PIN_PREFIX, REMOTE_HEAD
from ._runner import GitRunner
from .errors import GitCommandError, PortableCacheError
from .urls import RepoURL, redact

__all__ = ["INCOMPLETE", "EntryImport", "bundle_entry"]

INCOMPLETE = "incomplete (no completion marker): the next session that uses it clones it again"


def bundle_entry(runner: GitRunner, git_dir: Path, work: Path) -> ExportedRepository:
    """Bundle one entry into ``work/<key>.bundle``, in the upstream's shape.

    The bundle is made in a scratch repository that borrows the entry's objects (git
    alternates) and holds copies of its refs under their upstream names: git bundles a
    ref under the name it has, and the entry cannot hold upstream branches at
    ``refs/heads`` (its worktrees' branches live there). Nothing is copied but refs.
    """
    marker = read_marker(git_dir)  # refuses an entry of a newer cache format
    key = git_dir.name[: -len(".git")]
    if marker is None or not isinstance(marker.get("url"), str):
        raise PortableCacheError(f"Cache entry {git_dir} is {INCOMPLETE}")
    url = redact(marker["url"])
    _refuse_partial(url, marker.get("filter"))
    _refuse_shallow(url, git_dir)
    refs = _read_refs(runner, git_dir, url)
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
    _run(runner, ["update-ref", "--stdin"], scratch, url, stdin=script)
    revisions = ["--branches", "--tags", "--glob=refs/repoclones/*"]
    if head is not None:
        (scratch / "HEAD").write_text(f"{head}\n")  # detached: the bundle lists HEAD
        revisions.insert(0, "HEAD")
    bundle = work / f"{key}.bundle"
    _run(runner, ["bundle", "create", "--quiet", str(bundle), *revisions], scratch, url)
    rmtree(scratch)
    at_head = [name for name, sha in renamed.items() if name.startswith(HEADS) and sha == head]
    canonical = marker.get("canonical")
    return ExportedRepository(
        key=key,
        url=url,
        canonical=redact(canonical) if isinstance(canonical, str) else url,
        head=head,
        default_branch=at_head[0][len(HEADS) :] if len(at_head) == 1 else None,
        pins=tuple(sorted(r[len(PIN_PREFIX) :] for r in refs if r.startswith(PIN_PREFIX))),
        refs=len(renamed) + (head is not None),
        size=bundle.stat().st_size,
        sha256=file_sha256(bundle),
        cache_format=int(marker.get("format", 1)),
    )


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


class EntryImport:
    """One bundle into one entry, under the entry's lock (``lock``: held by the caller).

    ``staging`` (in ``tmp/``) becomes the new entry, or, for an entry that exists, receives the
    bundle's pack with the entry's objects borrowed (alternates), so that the connectivity check
    and the ancestry questions see both; a pack of only what the entry lacks then moves in.
    """

    def __init__(
        self,
        runner: GitRunner,
        layout: CacheLayout,
        lock: RepoLock,
        repo: RepoURL,
        shown: str,
        staging: Path,
    ) -> None:
        self._runner = runner
        self._layout = layout
        self._lock = lock
        self.repo = repo
        self.shown = shown
        self.git_dir = layout.git_dir(repo.key)
        self.staging = staging

    def run(self, bundle: Path) -> tuple[str, list[RefChange]]:
        """Import ``bundle``: ``imported`` (a new entry), ``updated`` or ``up to date``, with
        what happened to each of its refs; or raise, the entry left as it was."""
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

    def _publish(self, changes: list[RefChange]) -> tuple[str, list[RefChange]]:
        """A new entry: refs written in staging, the marker, then the rename that publishes it,
        as a clone is published (CacheLayout.publish). Not marked refreshed: the next online
        session fetches branches and tags, as after any clone of an older state."""
        _run(
            self._runner,
            ["update-ref", "--stdin"],
            self.staging,
            self.shown,
            stdin=update_script(changes),
        )
        write_marker(
            self.staging, url=self.shown, canonical=self.repo.canonical, filter=None, imported=True
        )
        self._layout.publish(self.staging, self.git_dir, self._lock)
        return "imported", changes

    def _update(
        self, changes: list[RefChange], current: Mapping[str, str] | None
    ) -> tuple[str, list[RefChange]]:
        """An entry in use: a pack of what it lacks moves in (``current``: its refs, if the
        bundle had to be unpacked), then every ref changes in one transaction."""
        moved = [change.new for change in changes if change.verdict in ("added", "advanced")]
        if not moved:
            return "up to date", changes
        if current is not None:
            self._move_in(self._pack_missing(moved, current.values()))
        _run(
            self._runner,
            ["update-ref", "--stdin"],
            self.git_dir,
            self.shown,
            stdin=update_script(changes),
        )
        with contextlib.suppress(OSError):
            os.utime(self.git_dir / MARKER)  # a use, for `pytest-repoclones gc`
        return "updated", changes

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


def _read_refs(runner: GitRunner, git_dir: Path, url: str) -> dict[str, str]:
    """Every ref of ``git_dir`` and its object."""
    result = _run(runner, ["for-each-ref", "--format=%(objectname) %(refname)"], git_dir, url)
    refs = {}
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition(" ")
        refs[ref] = sha
    return refs


def _run(
    runner: GitRunner, args: list[str], git_dir: Path, url: str, *, stdin: str | None = None
) -> GitResult:
    """Run git in ``git_dir``; a failure (unexpected here: local git work) raises."""
    result = runner.run(args, git_dir=git_dir, stdin=stdin, url=url)
    if not result.ok:
        raise GitCommandError(
            f"git {args[0]} {args[1] if args[1:] else ''}".rstrip() + " failed",
            url=url,
            git_error=result.error_line,
        )
    return result
