"""The ``pytest-repoclones`` command (also ``python -m pytest_repoclones``): manage the cache.

Parsing and printing only; what each command does to the cache is in cache_admin.py. Results go
to stdout, problems to stderr; the exit status is 0 on success, 1 when the operation failed and
2 for a usage error, as argparse and most Unix tools do.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TextIO

from ._export_file import file_kind
from ._portable import PortableCache, Transfer
from ._units import format_age, format_size, parse_duration, parse_size
from .cache_admin import CacheAdmin, resolve_cache_dir
from .cache_records import Entry, Prefetched, Removal
from .errors import RepoClonesError
from .settings import CACHE_DIR_ENV, ProjectConfigError
from .urls import redact

__all__ = ["main"]

PROG = "pytest-repoclones"

_DESCRIPTION = f"""\
Manage the shared clone cache of pytest-repoclones: see what it holds, warm it for CI images,
save it to one file for a CI cache step and restore it, prune it, check it, empty it. Safe
while test sessions run: an entry a session is using is never removed.

The cache directory is --cache-dir, else ${CACHE_DIR_ENV}, else the pytest ini option
repo_cache_dir of the project in the current directory (read from the configuration file pytest
would use: pytest.toml, pytest.ini, pyproject.toml, tox.ini or setup.cfg, the first with a
pytest section walking up; a relative path is relative to that file), else the user cache
directory (~/.cache/pytest-repoclones, or $XDG_CACHE_HOME/pytest-repoclones), as in the
plugin. Every command says which one it uses and why."""

_EPILOG = """\
exit status: 0 success; 1 the operation failed (prefetch could not fetch, export or import
failed for a repository, verify left a damaged entry, clear found an entry in use or not
cached); 2 usage error.

Run '%(prog)s COMMAND --help' for the options of a command."""

_CACHE_DIR_HELP = (
    f"the cache directory (default: ${CACHE_DIR_ENV}, else the project's pytest ini option "
    "repo_cache_dir, else the user cache directory)"
)
_FORCE_HELP = (
    "also remove repositories that only worktrees kept by --repo-keep hold, with those "
    "worktrees (never one a running session uses)"
)
_SIZE_HELP = "sizes: bytes, or with a binary unit: 10K, 500M, 1.5G, 5G (K = 1024)"
_DURATION_HELP = "durations: a number and a unit: 90m, 12h, 30d, 2w (also s)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (the console script exits with it)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        check: Callable[[argparse.Namespace], None] | None = getattr(args, "check", None)
        if check is not None:
            check(args)  # cross-option rules, failing as usage errors too
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        cache_dir, source = resolve_cache_dir(args.cache_dir)
    except ProjectConfigError as exc:
        # pytest would refuse this file too; an explicit directory does not need it.
        _warn(f"{PROG}: error: {exc.problem}\n  hint: fix it, or pass --cache-dir PATH")
        return 2
    except (RepoClonesError, RuntimeError) as exc:
        # No home directory (HOME unset under a uid without a passwd entry, as in containers
        # run with an arbitrary uid): a usage error that says what to set, not a traceback.
        # RuntimeError is pathlib's, for a "~" that cannot be expanded.
        why = exc.problem if isinstance(exc, RepoClonesError) else f"cannot expand ~: {exc}"
        _warn(
            f"{PROG}: error: {why}\n  hint: pass --cache-dir PATH, or set {CACHE_DIR_ENV}, "
            "XDG_CACHE_HOME or HOME"
        )
        return 2
    if cache_dir.exists() and not cache_dir.is_dir():
        # Not "no cached repositories": that would tell a wrong setting from an empty cache.
        _warn(f"{PROG}: error: the cache directory {cache_dir} (from {source}) is not a directory")
        return 2
    # Progress of long clones and fetches, for a person watching (not for CI logs).
    progress = _warn if sys.stderr.isatty() else None
    admin = CacheAdmin(cache_dir, notice=_warn, progress=progress)
    command: Callable[[argparse.Namespace, CacheAdmin, str], int] = args.run
    try:
        return command(args, admin, source)
    except BrokenPipeError:
        # Output piped into `head`: stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (RepoClonesError, OSError) as exc:
        _warn(f"{PROG}: error: {exc}")
        return 1
    except KeyboardInterrupt:
        _warn(f"{PROG}: interrupted")
        return 130


# -- commands --------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace, admin: CacheAdmin, source: str) -> int:
    entries = admin.entries()
    total = sum(entry.size for entry in entries)
    if args.json:
        document = {
            "cache_dir": str(admin.cache_dir),
            "cache_dir_source": source,
            "repositories": [entry.as_dict() for entry in entries],
            "total_size": total,
        }
        print(json.dumps(document, indent=2))
        return 0
    _header(admin, source)
    if not entries:
        print("no cached repositories")
        return 0
    now = time.time()
    rows = [("URL", "SIZE", "LAST USED", "PINNED", "NOTES")]
    for entry in entries:
        rows.append(
            (
                entry.shown_url,
                format_size(entry.size),
                f"{_date(entry.last_used)} ({format_age(now - entry.last_used)})",
                "?" if entry.pins is None else str(entry.pins),
                _notes(entry),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for url, size, used, pins, notes in rows:
        line = f"{url:<{widths[0]}}  {size:>{widths[1]}}  {used:<{widths[2]}}  {pins:>{widths[3]}}"
        print(f"{line}  {notes}".rstrip())
    count = len(entries)
    print(f"total: {count} repositor{'y' if count == 1 else 'ies'}, {format_size(total)}")
    return 0


def _cmd_prefetch(args: argparse.Namespace, admin: CacheAdmin, source: str) -> int:
    requests: list[tuple[str, list[str]]] = []
    if args.url is not None:
        requests.append((args.url, args.commits))
    for url, *commits in args.more or []:
        requests.append((url, commits))
    _header(admin, source, sys.stderr)
    failed = total = 0
    for step in admin.prefetch(requests, clone_filter=args.filter, submodules=args.submodules):
        _print_prefetched(step)
        if step.commit is not None:  # a failed clone fails each of its commits too
            total += 1
            failed += step.failed
    if failed:
        _warn(f"{PROG}: error: {failed} of {total} commits could not be prefetched (see above)")
        return 1
    return 0


def _print_prefetched(step: Prefetched) -> None:
    """One line per repository and per commit, flushed: a CI log shows how far it got."""
    if step.commit is None:
        if step.failed:
            print(f"FAILED {step.url}: {step.detail}", flush=True)
            # Also where errors go: a log of stderr alone must say which remote failed.
            _warn(f"{PROG}: error: {step.detail} (repository {step.url})")
        else:
            done = "cloned" if step.status == "fetched" else "already cached"
            print(f"cached {step.url} in {step.git_dir} ({done})", flush=True)
        return
    if step.failed:
        print(f"  FAILED  {step.commit}: {step.detail}", flush=True)
        return
    done = "fetched" if step.status == "fetched" else "already cached"
    # Like git ls-remote: object name, then what named it (unless it was the name itself).
    named = "" if step.commit == step.sha else f"  {step.commit}"
    print(f"  {step.sha}{named}  ({done})", flush=True)


def _cmd_gc(args: argparse.Namespace, admin: CacheAdmin, source: str) -> int:
    _header(admin, source, sys.stderr)
    report = admin.gc(
        older_than=args.older_than,
        max_size=args.max_size,
        dry_run=args.dry_run,
        force=args.force,
    )
    verb = "would remove" if args.dry_run else "removed"
    for path, size in report.leftovers:
        print(f"{verb} leftover {path} ({format_size(size)})")
    for removal in report.removals:
        _print_removal(removal, verb)
    skipped = sum(1 for removal in report.removals if not removal.removed)
    count = report.remaining_count
    print(
        f"{'would free' if args.dry_run else 'freed'} {format_size(report.freed)}; "
        f"{count} repositor{'y' if count == 1 else 'ies'} left, "
        f"{format_size(report.remaining_size)}"
        + (f" ({skipped} in use, skipped)" if skipped else "")
    )
    if args.max_size is not None and report.remaining_size > args.max_size:
        _warn(
            f"{PROG}: note: still above {format_size(args.max_size)}: "
            "what is left is in use or was used meanwhile"
        )
    return 0


def _cmd_verify(args: argparse.Namespace, admin: CacheAdmin, source: str) -> int:
    _header(admin, source, sys.stderr)
    targets: list[tuple[Entry, str | None]] = []
    status = 0
    for url in args.urls:
        entry = admin.entry(url)
        if entry is None:
            _warn(f"{PROG}: error: not in the cache {admin.cache_dir}: {_shown(url)}")
            status = 1
        else:
            targets.append((entry, url))
    if not args.urls:
        targets = [(entry, None) for entry in admin.entries()]
        if not targets:
            print(f"no cached repositories in {admin.cache_dir}")
    for entry, url in targets:
        result = admin.verify(entry, full=args.full, url=url)
        label = "DAMAGED" if result.failed else result.status
        detail = f": {result.detail}" if result.detail else ""
        print(f"{label:<9} {entry.shown_url}{detail}")
        if result.failed:
            status = 1
    return status


def _cmd_clear(args: argparse.Namespace, admin: CacheAdmin, source: str) -> int:
    _header(admin, source, sys.stderr)
    verb = "would remove" if args.dry_run else "removed"
    status = 0
    if args.all:
        entries = admin.entries()
        for path, size in admin.clean_leftovers(dry_run=args.dry_run):
            print(f"{verb} leftover {path} ({format_size(size)})")
    else:
        entries = []
        for url in args.urls:
            entry = admin.entry(url)
            if entry is None:
                _warn(f"{PROG}: error: not in the cache {admin.cache_dir}: {_shown(url)}")
                status = 1
            else:
                entries.append(entry)
    removals = admin.clear(entries, dry_run=args.dry_run, force=args.force)
    for removal in removals:
        _print_removal(removal, verb)
        if not removal.removed and not args.all:
            status = 1  # a named entry could not be removed
    freed = sum(removal.entry.size for removal in removals if removal.removed)
    print(f"{'would free' if args.dry_run else 'freed'} {format_size(freed)}")
    return status


def _cmd_export(args: argparse.Namespace, admin: CacheAdmin, source: str) -> int:
    _header(admin, source, sys.stderr)
    portable = PortableCache(admin.cache_dir, notice=_warn)
    target = Path(args.file).expanduser().absolute()
    if args.bundle:
        _print_transfer(portable.export_bundle(target, args.urls[0]))
        print(f"wrote {target}: a git bundle, {format_size(target.stat().st_size)}")
        return 0
    summary = portable.export(target, args.urls, report=_print_transfer)
    count = len(summary.repositories)
    print(
        f"wrote {target}: {count} repositor{'y' if count == 1 else 'ies'}, "
        f"{format_size(summary.size)} (their cache entries: {format_size(summary.cache_size)}) "
        f"in {summary.seconds:.1f} s",
        flush=True,
    )
    if summary.failed:
        failed = summary.failed
        _warn(
            f"{PROG}: error: {failed} repositor{'y' if failed == 1 else 'ies'} could not be "
            "exported (see above)"
        )
        return 1
    return 0


def _cmd_import(args: argparse.Namespace, admin: CacheAdmin, source: str) -> int:
    _header(admin, source, sys.stderr)
    portable = PortableCache(admin.cache_dir, notice=_warn)
    path = Path(args.file).expanduser().absolute()
    started = time.monotonic()
    if file_kind(path) == "bundle":
        if len(args.urls) != 1:
            # Only the URL says which cache entry a plain bundle is: nothing in it names one.
            _warn(
                f"{PROG}: error: {path} is a plain git bundle: name the repository it holds "
                "with --url URL (once)"
            )
            return 2
        results = [portable.import_bundle(path, args.urls[0])]
        _print_transfer(results[0])
    else:
        results = portable.import_file(path, args.urls, report=_print_transfer)
        if not results:
            print(f"no repositories in {path}")
    failed = sum(result.failed for result in results)
    if results:
        counts = {status: 0 for status in ("imported", "updated", "up to date", "failed")}
        for result in results:
            counts[result.status] += 1
        done = ", ".join(f"{count} {status}" for status, count in counts.items())
        print(f"{path}: {done} in {time.monotonic() - started:.1f} s", flush=True)
    if failed:
        _warn(f"{PROG}: error: {failed} of {len(results)} repositories could not be imported")
        return 1
    return 0


def _print_transfer(result: Transfer) -> None:
    """One line per repository, flushed as it ends (a CI log shows how far it got)."""
    if result.failed:
        print(f"FAILED {result.url}: {result.detail}", flush=True)
        _warn(f"{PROG}: error: {result.detail} (repository {result.url})")
        return
    where = f" into {result.git_dir}" if result.status == "imported" else ""
    print(f"{result.status} {result.url}{where}: {result.detail}", flush=True)


# -- output ----------------------------------------------------------------------------------


def _header(admin: CacheAdmin, source: str, stream: TextIO | None = None) -> None:
    """Which cache, and which setting chose it: a project's ini file, the environment and the
    default can each point elsewhere, and the wrong cache looks just like an empty one.

    On stdout for ``list`` (it is part of the listing); on stderr for the commands whose stdout
    is one result line per repository or commit, which scripts read.
    """
    print(f"cache: {admin.cache_dir} (from {source})", file=stream or sys.stdout, flush=True)


def _print_removal(removal: Removal, verb: str) -> None:
    entry = removal.entry
    if removal.removed:
        print(f"{verb} {entry.shown_url} ({format_size(entry.size)}): {removal.why}")
        for tree in removal.kept:
            print(f"  with its kept worktree {tree}")
    else:
        print(f"skipped {entry.shown_url}: {removal.skipped}")


def _notes(entry: Entry) -> str:
    notes = []
    if not entry.complete:
        notes.append("incomplete (next use re-clones it)")
    if entry.clone_filter:
        notes.append(f"filter {entry.clone_filter}")
    if entry.submodule_of:
        notes.append(f"submodule of {entry.submodule_of}")
    if entry.worktrees:
        notes.append(f"{entry.worktrees} worktree{'s' if entry.worktrees != 1 else ''}")
    return ", ".join(notes)


def _date(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _shown(url: str) -> str:
    return redact(url)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- parsing ---------------------------------------------------------------------------------


def _argument_type(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


def _version() -> str:
    try:
        return metadata.version("pytest-repoclones")
    except metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cache-dir",
        metavar="PATH",
        default=None,
        help=_CACHE_DIR_HELP,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # Also accepted after the command ('list --cache-dir X'); SUPPRESS keeps the global one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=_CACHE_DIR_HELP,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=_EPILOG.split("\n\n")[0],
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    sub = command(
        "list",
        "show each cached repository: URL, size, last use, pinned commits",
        "Show each cached repository: its URL (password redacted), size on disk, when a test\n"
        "session last used it, how many commits are pinned (fetched by object name), and\n"
        "notes (partial-clone filter, registered worktrees); then the total.",
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output (sizes in bytes)")
    sub.set_defaults(run=_cmd_list)

    sub = command(
        "prefetch",
        "clone a repository and fetch commits into the cache (warm it for CI)",
        "Clone URL into the cache if it is not there, and fetch each COMMIT (a full or\n"
        "abbreviated object name, a branch, a tag or a ref; default: the default branch),\n"
        "so that later sessions, even with --repo-offline, find them. Contacts the remote.\n"
        "More repositories: --url URL [COMMIT...], once for each. One line per repository\n"
        "and per commit (fetched, already cached, or FAILED and why); a failure does not\n"
        "stop the others, and makes the exit status 1.",
    )
    sub.add_argument("url", metavar="URL", nargs="?", help="repository URL or local path")
    sub.add_argument("commits", metavar="COMMIT", nargs="*", help="commits to fetch")
    sub.add_argument(
        "--url",
        dest="more",
        metavar=("URL", "COMMIT"),
        nargs="+",
        action="append",
        help="one more repository and its commits (repeat for each)",
    )
    sub.add_argument(
        "--filter",
        metavar="SPEC",
        default=None,
        help="partial-clone filter for a new clone: blob:none, blob:limit=<n>[kmg], tree:<n>",
    )
    sub.add_argument(
        "--submodules",
        action="store_true",
        help="also clone every submodule each commit records (recursively) and fetch the "
        "commits it records, as a worktree with submodules=True needs",
    )
    sub.set_defaults(run=_cmd_prefetch, check=functools.partial(_check_prefetch, sub))

    sub = command(
        "export",
        "save the cache, or some repositories, to one file (for a CI cache step)",
        "Write every cached repository, or those of the URLs given, to FILE: an uncompressed\n"
        "tar of one git bundle per repository (branches, tags, the default branch, pinned\n"
        "and named refs) and a JSON manifest (URL with passwords redacted, default branch,\n"
        "pins). `pytest-repoclones import FILE` restores it, even into a cache in use.\n"
        "FILE is replaced whole at the end. Reads the cache without locking it. A partial\n"
        "clone (--filter) or a shallow entry cannot be exported. One line per repository;\n"
        "a failure does not stop the others, and makes the exit status 1.\n\n"
        "With --bundle: FILE is the plain git bundle of the one URL given, for\n"
        "`git clone --bundle-uri=FILE URL` (git >= 2.38), `git clone FILE`, or\n"
        "`pytest-repoclones import FILE --url URL`.",
    )
    sub.add_argument("file", metavar="FILE", help="the file to write (replaced)")
    sub.add_argument("urls", metavar="URL", nargs="*", help="only these repositories")
    sub.add_argument(
        "--bundle",
        action="store_true",
        help="write a plain git bundle of the one repository URL",
    )
    sub.set_defaults(run=_cmd_export, check=functools.partial(_check_export, sub))

    sub = command(
        "import",
        "restore an export file (or a plain git bundle) into the cache",
        "Add the repositories of FILE (written by `pytest-repoclones export`) to the cache,\n"
        "safely while sessions use it: a new repository is built aside and appears whole; a\n"
        "cached one gets what it lacks, in one step under its lock. Refs never move back:\n"
        "new refs and pins are added, branches only move forward, existing tags stay.\n"
        "The whole file is checked first: a damaged or truncated one imports nothing.\n"
        "FILE may also be a plain git bundle of one repository: then give --url URL.\n"
        "One line per repository (imported, updated, up to date, FAILED and why); a\n"
        "failure does not stop the others, and makes the exit status 1.",
    )
    sub.add_argument("file", metavar="FILE", help="an export file or a git bundle")
    sub.add_argument(
        "--url",
        dest="urls",
        metavar="URL",
        action="append",
        default=[],
        help="only this repository of an export file (repeat for more); for a plain bundle, "
        "the repository it holds",
    )
    sub.set_defaults(run=_cmd_import)

    sub = command(
        "gc",
        "remove repositories unused for a while, then the least recently used over a size",
        "Remove the repositories not used for --older-than, then, while the cache is above\n"
        "--max-size, the least recently used ones. Also removes what killed processes left\n"
        "(unfinished clones in tmp/, incomplete entries); with neither option, only that.\n"
        "A repository in use by a running session (its lock is held, or a live process has\n"
        "a worktree of it) is skipped and reported, never waited for.\n\n"
        f"{_DURATION_HELP}\n{_SIZE_HELP}",
    )
    sub.add_argument(
        "--older-than",
        metavar="DURATION",
        type=_argument_type(parse_duration, "duration"),
        default=None,
        help="remove repositories whose last use is older than this (e.g. 30d)",
    )
    sub.add_argument(
        "--max-size",
        metavar="SIZE",
        type=_argument_type(parse_size, "size"),
        default=None,
        help="then remove the least recently used until the total is at most this (e.g. 5G)",
    )
    sub.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    sub.add_argument("--force", action="store_true", help=_FORCE_HELP)
    sub.set_defaults(run=_cmd_gc)

    sub = command(
        "verify",
        "check integrity; rebuild damaged repositories from their remote",
        "Check each cached repository (or those of the URLs given): required files, pack\n"
        "checksums, every ref's tree; with --full also 'git fsck --connectivity-only'.\n"
        "A damaged one is rebuilt from its remote; if that fails (remote unreachable) or a\n"
        "live process uses it, it is left alone and its path is printed for you to delete.\n"
        "An incomplete entry (no completion marker) is removed: its next use clones it again.\n"
        "Exits 1 if anything is left damaged.",
    )
    sub.add_argument(
        "urls",
        metavar="URL",
        nargs="*",
        help="only these repositories; also the URL to rebuild from (with credentials)",
    )
    sub.add_argument(
        "--full", action="store_true", help="also run git fsck (slow on large repositories)"
    )
    sub.set_defaults(run=_cmd_verify)

    sub = command(
        "clear",
        "remove the given repositories, or all (--all)",
        "Remove the cached repositories of the URLs given, or with --all every one not in\n"
        "use. A repository in use by a running session is not removed: for a URL given,\n"
        "that makes the exit status 1.",
    )
    sub.add_argument("urls", metavar="URL", nargs="*", help="repositories to remove")
    sub.add_argument("--all", action="store_true", help="remove every repository not in use")
    sub.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    sub.add_argument("--force", action="store_true", help=_FORCE_HELP)
    sub.set_defaults(run=_cmd_clear, check=functools.partial(_check_clear, sub))
    return parser


def _check_prefetch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.url is None and not args.more:
        parser.error("give the URL to prefetch (more with --url URL [COMMIT...])")


def _check_export(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.bundle and len(args.urls) != 1:
        parser.error("--bundle writes the bundle of one repository: give exactly one URL")


def _check_clear(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.all and args.urls:
        parser.error("give URLs or --all, not both")
    if not args.all and not args.urls:
        parser.error("give the URLs to remove, or --all to remove everything not in use")
