"""Warm the cache with every (url, commit) that markers declare, once, before any test runs.

Without xdist the session prefetches right after collection. Under xdist the controller does
it: it collects nothing itself, so each worker writes what it collected to a file in a
directory the controller handed out, and the controller, told by xdist that the worker's
collection is finished, fetches what is new before it schedules a single test. Workers wait
idle meanwhile rather than race each other for the same repository's lock.

That file lives in ``$TMPDIR`` and outlives a SIGKILLed run, so a URL carrying a secret (a
password, an http token) never goes into it: the worker prefetches those itself (see
:func:`split_secret`), as a run without xdist does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._files import read_json, write_atomically
from .markers import declarations
from .urls import carries_secret, redact

if TYPE_CHECKING:
    from .store import RepoStore

__all__ = [
    "Want",
    "Wanted",
    "declared",
    "prefetch",
    "read_declared",
    "split_secret",
    "write_declared",
]

log = logging.getLogger("pytest_repoclones")

#: A declared commit (``None`` for the remote's default branch), or ``(commit, submodules)``
#: when the marker says whether its submodules are wanted too (else the ini default decides).
Want = str | None | tuple[str | None, bool]
#: url -> what is declared of it, in the order first declared.
Wanted = dict[str, list[Want]]

#: Repositories warmed at once; each is a git process or two, mostly waiting on the network.
PARALLEL_REPOSITORIES = 8


def declared(items: Iterable[pytest.Item]) -> Wanted:
    """What the markers of ``items`` ask for; malformed markers are that test's error."""
    wanted: Wanted = {}
    for url, commit, submodules in declarations(items):
        commits = wanted.setdefault(url, [])
        want: Want = commit if submodules is None else (commit, submodules)
        if want not in commits:
            commits.append(want)
    return wanted


def prefetch(
    store: RepoStore,
    wanted: Mapping[str, Sequence[Want]],
    report: Callable[[str], None] | None = None,
) -> None:
    """Clone and fetch everything in ``wanted``, repositories in parallel, each commit once.

    Failures are logged and, with ``report``, said on the terminal once per (url, commit),
    never raised: prefetching only saves time, and the test that needs the commit reports
    the error with its own context when it runs. Saying it early tells the user why a whole
    batch of tests is about to fail, before the first of them does.
    """
    if not wanted:
        return

    def warm(url: str) -> None:
        for want in wanted[url]:
            commit, submodules = want if isinstance(want, tuple) else (want, None)
            try:
                # A worktree with submodules needs them too: warmed now, before any test.
                store.resolve(
                    url, commit, submodules=store.submodules if submodules is None else submodules
                )
            except Exception as exc:  # noqa: BLE001 - on the controller, raising would end the run
                log.warning("repoclones: prefetch of %s failed: %s", commit, exc)
                if report is not None:
                    report(_failure_line(url, commit, exc))

    with ThreadPoolExecutor(max_workers=min(PARALLEL_REPOSITORIES, len(wanted))) as pool:
        list(pool.map(warm, wanted))


def _failure_line(url: str, commit: str | None, exc: Exception) -> str:
    name = "the default branch" if commit is None else commit
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"repoclones: could not prefetch {name} of {redact(url)}; the tests that declare it "
        f"will fail: {first}"
    )


def split_secret(wanted: Wanted) -> tuple[Wanted, Wanted]:
    """``wanted`` as (what may be written to disk, what carries a secret in its URL)."""
    public: Wanted = {}
    secret: Wanted = {}
    for url, commits in wanted.items():
        (secret if carries_secret(url) else public)[url] = commits
    return public, secret


def write_declared(path: Path, wanted: Wanted) -> bool:
    """Hand ``wanted`` to the controller; False if the file could not be written.

    URLs carrying a secret are left out even if a caller passes them (the caller prefetches
    them itself, having split them off with :func:`split_secret`): no secret is ever stored.
    """
    public, _ = split_secret(wanted)
    try:
        write_atomically(path, json.dumps(public))
    except OSError as exc:
        log.warning("repoclones: cannot hand declared commits to the controller: %s", exc)
        return False
    return True


def read_declared(path: Path) -> Wanted:
    """What a worker wrote with :func:`write_declared`; empty if it wrote nothing usable."""
    data = read_json(path)
    if not isinstance(data, dict):
        log.warning("repoclones: no declared commits in %s", path.name)
        return {}
    return {
        url: [want for item in commits for want in _want(item)]
        for url, commits in data.items()
        if isinstance(url, str) and isinstance(commits, list)
    }


def _want(item: object) -> list[Want]:
    """One declared item as written to JSON (a pair became a list); none if odd."""
    if item is None or isinstance(item, str):
        return [item]
    if isinstance(item, list) and len(item) == 2 and isinstance(item[1], bool):
        commit = item[0]
        if commit is None or isinstance(commit, str):
            return [(commit, item[1])]
    return []
