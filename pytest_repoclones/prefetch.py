"""Warm the cache with every (url, commit) that markers declare, once, before any test runs; and
the CI cache key those declarations make.

Without xdist the session prefetches right after collection. Under xdist each worker decides
for itself (see _xdist.py): a worker whose cache is the controller's hands what it collected to
the controller over its execnet channel, and the controller, told by xdist that the worker's
collection is finished, fetches what is new before it schedules a single test (workers wait
idle meanwhile rather than race each other for the same repository's lock); a worker with a
cache of its own (another machine, a container) warms it itself before it reports its
collection, which holds back scheduling just the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import pytest

from .errors import RepoClonesError
from .markers import declarations
from .urls import parse_url, redact

if TYPE_CHECKING:
    from .store import RepoStore

__all__ = [
    "KeyPair",
    "Unfetched",
    "Wanted",
    "cache_key",
    "declared",
    "key_lines",
    "key_pairs",
    "parse_declared",
    "parse_key_pairs",
    "prefetch",
]

log = logging.getLogger("pytest_repoclones")

#: url -> commits (``None`` for the remote's default branch), in the order first declared.
Wanted = dict[str, list[str | None]]

#: (cache entry name of the repository, commit as declared): what the cache key is made of.
KeyPair = tuple[str, str | None]

#: Repositories warmed at once; each is a git process or two, mostly waiting on the network.
PARALLEL_REPOSITORIES = 8

#: Changes every key when what goes into it changes, so old caches are not restored by mistake.
_KEY_VERSION = "repoclones-key-v1"


class Unfetched(NamedTuple):
    """A declared commit prefetch could not get, as the terminal is told of it."""

    url: str  # redacted
    commit: str | None
    line: str


def declared(items: Iterable[pytest.Item]) -> Wanted:
    """What the markers of ``items`` ask for; malformed markers are that test's error."""
    wanted: Wanted = {}
    for url, commit in declarations(items):
        commits = wanted.setdefault(url, [])
        if commit not in commits:
            commits.append(commit)
    return wanted


def prefetch(
    store: RepoStore,
    wanted: Mapping[str, Sequence[str | None]],
    report: Callable[[Unfetched], None] | None = None,
) -> None:
    """Clone and fetch everything in ``wanted``, repositories in parallel, each commit once.

    Failures are logged and, with ``report``, told once per (url, commit), never raised:
    prefetching only saves time, and the test that needs the commit reports the error with
    its own context when it runs. Saying it early tells the user why a whole batch of tests
    is about to fail, before the first of them does.
    """
    if not wanted:
        return

    def warm(url: str) -> None:
        for commit in wanted[url]:
            try:
                store.resolve(url, commit)
            except Exception as exc:  # noqa: BLE001 - on the controller, raising would end the run
                log.warning("repoclones: prefetch of %s failed: %s", commit, exc)
                if report is not None:
                    report(Unfetched(redact(url), commit, _failure_line(url, commit, exc)))

    with ThreadPoolExecutor(max_workers=min(PARALLEL_REPOSITORIES, len(wanted))) as pool:
        list(pool.map(warm, wanted))


def _failure_line(url: str, commit: str | None, exc: Exception) -> str:
    name = "the default branch" if commit is None else commit
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"repoclones: could not prefetch {name} of {redact(url)}; the tests that declare it "
        f"will fail: {first}"
    )


def parse_declared(data: object) -> Wanted:
    """``data`` as a :data:`Wanted`, from another process; what is not one is left out."""
    if not isinstance(data, dict):
        return {}
    return {
        url: [c for c in commits if c is None or isinstance(c, str)]
        for url, commits in data.items()
        if isinstance(url, str) and isinstance(commits, list)
    }


# -- the CI cache key ---------------------------------------------------------------------------


def key_pairs(wanted: Mapping[str, Sequence[str | None]]) -> list[KeyPair]:
    """The sorted, distinct (repository, commit) pairs of ``wanted``.

    A repository is named by its cache entry (see urls.RepoURL.key): a hash of the URL's
    canonical form, so spellings of one repository (``.git`` or not, the host's case, a token
    that was rotated) give the same pair and no credential goes into the key or is shown.
    """
    pairs: set[KeyPair] = set()
    for url, commits in wanted.items():
        try:
            name = parse_url(url).key
        except RepoClonesError:
            name = redact(url)  # the test that declares it fails; the key stays deterministic
        pairs.update((name, commit) for commit in commits)
    return sorted(pairs, key=lambda pair: (pair[0], pair[1] is not None, pair[1] or ""))


def parse_key_pairs(data: object) -> list[KeyPair]:
    """Pairs another process sent (as lists); what is not a pair is left out."""
    if not isinstance(data, list):
        return []
    return [
        (item[0], item[1])
        for item in data
        if isinstance(item, (list, tuple))
        and len(item) == 2
        and isinstance(item[0], str)
        and (item[1] is None or isinstance(item[1], str))
    ]


def cache_key(pairs: Iterable[KeyPair]) -> str:
    """The hex digest a CI cache step stores the clone cache under.

    Made from the distinct pairs in sorted order, so it depends only on what the selected tests
    declare: not on their order, on which worker collected them, nor on ``-n``.
    """
    ordered = sorted(set(pairs), key=lambda pair: (pair[0], pair[1] is not None, pair[1] or ""))
    text = json.dumps([_KEY_VERSION, [list(pair) for pair in ordered]], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def key_lines(pairs: Sequence[KeyPair], *, verbose: bool) -> list[str]:
    """``repoclones-key: <hex>``, then with ``verbose`` a ``repoclones-key input:`` line per
    pair (which ``grep '^repoclones-key:'`` does not match: a CI step finds one line)."""
    lines = [f"repoclones-key: {cache_key(pairs)}"]
    if verbose:
        lines.extend(
            f"repoclones-key input: {name} {commit or '(default branch)'}" for name, commit in pairs
        )
    return lines
