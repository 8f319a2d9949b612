"""The terminal summary: what the session's worktrees cost, from every xdist worker."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._units import format_size, tree_size

if TYPE_CHECKING:
    from .store import RepoStore

__all__ = ["collect", "write"]

_COUNTERS = ("worktrees", "clones", "fetches", "cache_hits", "reused", "submodules", "git_seconds")


def collect(
    store: RepoStore, *, cache: str | None = None, sizes: bool = False
) -> list[dict[str, Any]]:
    """This process's counters as plain builtins (sent through xdist's channels).

    ``cache`` names an xdist worker's cache that is not the controller's (another machine, a
    container's own disk): its rows are kept apart, and, with ``sizes``, the worker measures
    its repositories itself since the controller cannot.
    """
    rows: list[dict[str, Any]] = []
    for key, stats in store.stats.items():
        git_dir = store.cache_dir / "repos" / f"{key}.git"
        row: dict[str, Any] = {**stats.as_dict(), "git_dir": str(git_dir)}
        if cache is not None:
            row["cache"] = cache
            if sizes:
                row["size"] = tree_size(git_dir)
        rows.append(row)
    return rows


def _merge(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per repository entry: per git directory in the controller's cache (``cache``
    empty), per git directory and worker cache otherwise (the same path on two machines is two
    entries)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        cache = str(row.get("cache") or "")
        entry = merged.setdefault(
            (cache, row["git_dir"]),
            {"url": row["url"], "git_dir": row["git_dir"], "cache": cache, "workers": set()},
        )
        for name in _COUNTERS:
            entry[name] = entry.get(name, 0) + row.get(name, 0)
        if cache:
            # Measured by each worker using that cache at its end: the largest is the latest.
            entry["size"] = max(entry.get("size", 0), int(row.get("size") or 0))
            if row.get("worker"):
                entry["workers"].add(str(row["worker"]))
    return sorted(merged.values(), key=lambda r: (r["cache"], r["url"]))


def _count(number: int, noun: str) -> str:
    if number == 1:
        return f"1 {noun}"
    return f"{number} {noun}es" if noun.endswith("h") else f"{number} {noun}s"


def _hit_note(total: dict[str, Any]) -> str | None:
    """One line that reconciles hits with clones and fetches, when they seem not to add up.

    A worktree is a cache hit when making it needed no clone and no fetch by this process
    (counted in Checkouts.add), so worktrees = hits + those that needed the network. The
    clone and fetch counters also count what ran outside any test's worktree: prefetching
    before the tests (on the xdist controller too) and requests that failed, and one
    worktree may need both a clone and a fetch. When they exceed the worktrees that needed
    the network, "1 fetch, 3 cache hits" for 3 worktrees reads as a contradiction; this
    line says how the numbers fit.
    """
    hits = int(total["cache_hits"])
    needed = int(total["worktrees"]) - hits
    if total["clones"] + total["fetches"] <= needed:
        return None
    return (
        f"({_count(hits, 'cache hit')} + {needed} that needed a clone or fetch = "
        f"{_count(int(total['worktrees']), 'worktree')}; clones and fetches also count "
        "prefetching before the tests, failed requests, and both when one worktree needed both)"
    )


def _write_table(
    write_line: Any, repos: list[dict[str, Any]], *, reused: bool, submodules: bool = False
) -> None:
    """The -v table, a row per repository; a "reused" column only with --repo-reuse at work,
    a "submodules" column (checkouts as a submodule, among the worktrees) only with some.
    A repository in a worker's own cache is followed by the workers that used that cache."""
    for r in repos:
        r["label"] = f"{r['url']} [{','.join(sorted(r['workers']))}]" if r["cache"] else r["url"]
    width = max(len("repository"), *(len(r["label"]) for r in repos))
    extra = f" {'reused':>6}" if reused else ""
    extra += f" {'submodules':>10}" if submodules else ""
    write_line(
        f"{'repository':<{width}} {'worktrees':>9} {'clones':>6} {'fetches':>7} "
        f"{'hits':>5}{extra} {'git s':>7} {'size':>10}"
    )
    for r in repos:
        extra = f" {r['reused']:>6}" if reused else ""
        extra += f" {r['submodules']:>10}" if submodules else ""
        write_line(
            f"{r['label']:<{width}} {r['worktrees']:>9} {r['clones']:>6} {r['fetches']:>7} "
            f"{r['cache_hits']:>5}{extra} {r['git_seconds']:>7.2f} {format_size(r['size']):>10}"
        )


def _own_caches(repos: list[dict[str, Any]]) -> list[str]:
    """A line per cache of xdist workers that is not the controller's."""
    caches: dict[str, list[dict[str, Any]]] = {}
    for r in repos:
        if r["cache"]:
            caches.setdefault(r["cache"], []).append(r)
    lines = []
    for cache, rows in caches.items():
        workers = ", ".join(sorted(set().union(*(r["workers"] for r in rows)))) or "a worker"
        size = sum(r["size"] for r in rows)
        # A crashed worker never measured its cache.
        shown = format_size(size) if size else "size unknown"
        lines.append(
            f"(own cache of {workers}: {_count(sum(r['worktrees'] for r in rows), 'worktree')}, "
            f"{shown} in {cache})"
        )
    return lines


def write(
    terminalreporter: Any, config: pytest.Config, store: RepoStore | None, cache_dir: Path | None
) -> None:
    """One line by default, a table per repository with -v; nothing if no test used one."""
    rows = collect(store) if store is not None else []
    xdist = config.pluginmanager.get_plugin("repoclones-xdist")
    crashed: list[str] = []
    if xdist is not None:
        rows.extend(xdist.worker_stats)
        crashed = xdist.crashed
    repos = _merge(rows)
    if not any(r["worktrees"] for r in repos):
        return  # prefetching alone (tests skipped or deselected) is not worth a summary
    total = {name: sum(r[name] for r in repos) for name in _COUNTERS}
    local = [r for r in repos if not r["cache"]]
    for r in local:
        r["size"] = tree_size(Path(r["git_dir"]))
    write_line = terminalreporter.write_line
    terminalreporter.write_sep("-", "repoclones")
    if config.get_verbosity() > 0:
        _write_table(
            write_line, repos, reused=total["reused"] > 0, submodules=total["submodules"] > 0
        )
    where = (
        f"; cache {format_size(sum(r['size'] for r in local))} in {cache_dir}"
        if local and cache_dir is not None
        else ""
    )
    # One repository used from two caches is still one: its entry has the same name in both.
    count = len({Path(r["git_dir"]).name for r in repos})
    # Submodule checkouts are worktrees of their own entries: counted, and said apart.
    among = f" ({total['submodules']} of them submodules)" if total["submodules"] else ""
    write_line(
        f"{_count(total['worktrees'], 'worktree')}{among} from {count} "
        f"repositor{'y' if count == 1 else 'ies'}: {_count(total['clones'], 'clone')}, "
        f"{_count(total['fetches'], 'fetch')}, {_count(total['cache_hits'], 'cache hit')}, "
        f"{total['git_seconds']:.1f} s in git{where}"
    )
    for line in _own_caches(repos):
        write_line(line)
    note = _hit_note(total)
    if note:
        write_line(note)
    if total["reused"]:
        write_line(
            f"({_count(int(total['reused']), 'worktree')} of them reused a parked one: "
            "--repo-reuse)"
        )
    if crashed:
        write_line(
            f"(crashed worker{'s' if len(crashed) > 1 else ''} {', '.join(crashed)}: "
            "counted up to its last test report)"
        )
