"""Warm the cache with every (url, commit) that markers declare, once, before any test runs
(with the commit's submodules where the marker or the ini asks for them); and the CI cache key
those declarations make.

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
    "Want",
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

#: A declared commit (``None`` for the remote's default branch), or ``(commit, submodules)``
#: when the marker says whether its submodules are wanted too (else the ini default decides).
Want = str | None | tuple[str | None, bool]
#: url -> what is declared of it, in the order first declared.
Wanted = dict[str, list[Want]]

#: (cache entry name of the repository, commit as declared, with its submodules): what the
#: cache key is made of (still called a pair: the submodules flag only refines the commit).
KeyPair = tuple[str, str | None, bool]

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
    for url, commit, submodules in declarations(items):
        commits = wanted.setdefault(url, [])
        want: Want = commit if submodules is None else (commit, submodules)
        if want not in commits:
            commits.append(want)
    return wanted


def prefetch(
    store: RepoStore,
    wanted: Mapping[str, Sequence[Want]],
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
        for want in wanted[url]:
            commit, submodules = _parts(want)
            try:
                # A worktree with submodules needs them too: warmed now, before any test.
                store.resolve(
                    url, commit, submodules=store.submodules if submodules is None else submodules
                )
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
        url: [want for item in commits for want in _want(item)]
        for url, commits in data.items()
        if isinstance(url, str) and isinstance(commits, list)
    }


def _want(item: object) -> list[Want]:
    """One declared item as another process sent it (a pair may arrive as a list); none if
    odd."""
    if item is None or isinstance(item, str):
        return [item]
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], bool):
        commit = item[0]
        if commit is None or isinstance(commit, str):
            return [(commit, item[1])]
    return []


def _parts(want: Want) -> tuple[str | None, bool | None]:
    """(commit, submodules) of a declared item; submodules None where the ini decides."""
    return want if isinstance(want, tuple) else (want, None)


# -- the CI cache key ---------------------------------------------------------------------------


def key_pairs(wanted: Mapping[str, Sequence[Want]], *, submodules: bool = False) -> list[KeyPair]:
    """The sorted, distinct (repository, commit, submodules) items of ``wanted``.

    A repository is named by its cache entry (see urls.RepoURL.key): a hash of the URL's
    canonical form, so spellings of one repository (``.git`` or not, the host's case, a token
    that was rotated) give the same pair and no credential goes into the key or is shown.

    Whether a commit's submodules are wanted is part of the key (``submodules``, the ini
    default, where the marker leaves it open): with them the cache holds an entry per submodule
    as well, so a cache saved without them must not be restored as if it had them (a CI run
    ``--repo-offline`` from it would fail). Without submodules an item weighs in the digest as
    it did before they existed: keys of suites that never ask for them do not change.
    """
    pairs: set[KeyPair] = set()
    for url, wants in wanted.items():
        try:
            name = parse_url(url).key
        except RepoClonesError:
            name = redact(url)  # the test that declares it fails; the key stays deterministic
        for want in wants:
            commit, wanted_submodules = _parts(want)
            with_submodules = submodules if wanted_submodules is None else wanted_submodules
            pairs.add((name, commit, with_submodules))
    return sorted(pairs, key=_pair_order)


def _pair_order(pair: KeyPair) -> tuple[str, bool, str, bool]:
    return pair[0], pair[1] is not None, pair[1] or "", pair[2]


def parse_key_pairs(data: object) -> list[KeyPair]:
    """Pairs another process sent (as lists); what is not a pair is left out."""
    if not isinstance(data, list):
        return []
    return [
        (item[0], item[1], len(item) == 3 and item[2] is True)
        for item in data
        if isinstance(item, (list, tuple))
        and len(item) in (2, 3)
        and isinstance(item[0], str)
        and (item[1] is None or isinstance(item[1], str))
        and (len(item) == 2 or isinstance(item[2], bool))
    ]


def cache_key(pairs: Iterable[KeyPair]) -> str:
    """The hex digest a CI cache step stores the clone cache under.

    Made from the distinct pairs in sorted order, so it depends only on what the selected tests
    declare: not on their order, on which worker collected them, nor on ``-n``. An item with
    submodules adds a third field (see :func:`key_pairs`).
    """
    ordered = sorted(set(pairs), key=_pair_order)
    items = [[name, commit, True] if sub else [name, commit] for name, commit, sub in ordered]
    text = json.dumps([_KEY_VERSION, items], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def key_lines(pairs: Sequence[KeyPair], *, verbose: bool) -> list[str]:
    """``repoclones-key: <hex>``, then with ``verbose`` a ``repoclones-key input:`` line per
    pair (which ``grep '^repoclones-key:'`` does not match: a CI step finds one line)."""
    lines = [f"repoclones-key: {cache_key(pairs)}"]
    if verbose:
        lines.extend(
            f"repoclones-key input: {name} {commit or '(default branch)'}"
            + (" with submodules" if sub else "")
            for name, commit, sub in pairs
        )
    return lines
