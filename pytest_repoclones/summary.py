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


def collect(store: RepoStore) -> list[dict[str, Any]]:
    """This process's counters as plain builtins (sent through xdist's ``workeroutput``)."""
    return [
        {**stats.as_dict(), "git_dir": str(store.cache_dir / "repos" / f"{key}.git")}
        for key, stats in store.stats.items()
    ]


def _merge(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = merged.setdefault(row["git_dir"], {"url": row["url"], "git_dir": row["git_dir"]})
        for name in _COUNTERS:
            entry[name] = entry.get(name, 0) + row.get(name, 0)
    return sorted(merged.values(), key=lambda r: r["url"])


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
    write_line: Any,
    repos: list[dict[str, Any]],
    sizes: dict[str, int],
    *,
    reused: bool,
    submodules: bool = False,
) -> None:
    """The -v table, a row per repository; a "reused" column only with --repo-reuse at work,
    a "submodules" column (checkouts as a submodule, among the worktrees) only with some."""
    width = max(len("repository"), *(len(r["url"]) for r in repos))
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
            f"{r['url']:<{width}} {r['worktrees']:>9} {r['clones']:>6} {r['fetches']:>7} "
            f"{r['cache_hits']:>5}{extra} {r['git_seconds']:>7.2f} "
            f"{format_size(sizes[r['git_dir']]):>10}"
        )


def write(
    terminalreporter: Any, config: pytest.Config, store: RepoStore | None, cache_dir: Path
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
    sizes = {r["git_dir"]: tree_size(Path(r["git_dir"])) for r in repos}
    write_line = terminalreporter.write_line
    terminalreporter.write_sep("-", "repoclones")
    if config.get_verbosity() > 0:
        _write_table(
            write_line, repos, sizes, reused=total["reused"] > 0, submodules=total["submodules"] > 0
        )
    # Submodule checkouts are worktrees of their own entries: counted, and said apart.
    among = f" ({total['submodules']} of them submodules)" if total["submodules"] else ""
    write_line(
        f"{_count(total['worktrees'], 'worktree')}{among} from {len(repos)} "
        f"repositor{'y' if len(repos) == 1 else 'ies'}: {_count(total['clones'], 'clone')}, "
        f"{_count(total['fetches'], 'fetch')}, {_count(total['cache_hits'], 'cache hit')}, "
        f"{total['git_seconds']:.1f} s in git; cache {format_size(sum(sizes.values()))} "
        f"in {cache_dir}"
    )
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
