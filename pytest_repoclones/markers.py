"""Declarative use: ``@pytest.mark.worktree(url, commit)`` and prefetching what it declares."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .errors import RepoClonesError
from .store import RepoStore

__all__ = ["declared", "parametrize_commits", "prefetch"]

log = logging.getLogger("pytest_repoclones")
_OPTIONS = ("sparse", "isolate")


def _parse(marker: pytest.Mark) -> tuple[Any, Any, dict[str, Any]]:
    """(url, commit, options), or TypeError if the marker is malformed."""
    args = list(marker.args)
    url = args.pop(0) if args else marker.kwargs.get("url")
    commit = args.pop(0) if args else marker.kwargs.get("commit")
    unknown = set(marker.kwargs) - {"url", "commit", *_OPTIONS}
    if url is None or args or unknown:
        raise TypeError(
            "@pytest.mark.worktree takes (url, commit=None, *, sparse=None, isolate=False); "
            f"got args={marker.args!r} kwargs={marker.kwargs!r}"
        )
    options = {name: marker.kwargs[name] for name in _OPTIONS if name in marker.kwargs}
    return url, commit, options


def _commits(commit: Any) -> list[Any]:
    return list(commit) if isinstance(commit, (list, tuple)) else [commit]


def parametrize_commits(metafunc: pytest.Metafunc) -> None:
    """A list of commits in the marker makes one test per commit, ids named after them."""
    if "repo_worktree" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("worktree")
    if marker is None:
        return
    try:
        _, commit, _ = _parse(marker)
    except TypeError:
        return  # repo_worktree reports it when that test runs; other tests are unaffected
    if isinstance(commit, (list, tuple)):
        metafunc.parametrize(
            "repo_worktree",
            list(commit),
            indirect=True,
            ids=[str(c) if c is not None else "default" for c in commit],
        )


def declared(request: pytest.FixtureRequest) -> tuple[Any, Any, dict[str, Any]]:
    """(url, commit, options) for the requesting test, from its marker and parameter."""
    marker = request.node.get_closest_marker("worktree")
    if marker is None:
        pytest.fail(
            "repo_worktree needs @pytest.mark.worktree(url, commit) on the test", pytrace=False
        )
    try:
        url, commit, options = _parse(marker)
    except TypeError as exc:
        pytest.fail(str(exc), pytrace=False)
    if hasattr(request, "param"):
        commit = request.param
    return url, commit, options


def _declared_pairs(items: Iterable[pytest.Item]) -> dict[str, list[Any]]:
    wanted: dict[str, list[Any]] = {}
    for item in items:
        for marker in item.iter_markers("worktree"):
            try:
                url, commit, _ = _parse(marker)
            except TypeError:
                continue  # reported as that test's error
            commits = wanted.setdefault(str(url), [])
            commits.extend(c for c in _commits(commit) if c not in commits)
    return wanted


def prefetch(store: RepoStore, items: Iterable[pytest.Item]) -> None:
    """Clone and fetch every declared (url, commit) once before tests run, repositories in
    parallel, so that tests never wait on each other's network traffic.

    Under xdist every worker collects and calls this; the per-repository lock and the
    re-check after taking it make the clone and each fetch happen once all the same.
    """
    wanted = _declared_pairs(items)
    if not wanted:
        return

    def warm(url: str) -> None:
        for commit in wanted[url]:
            try:
                store.resolve(url, commit)
            except RepoClonesError as exc:
                # The test that needs it reports this properly; do not fail collection.
                log.warning("repoclones: prefetch of %s failed: %s", commit, exc)

    with ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
        list(pool.map(warm, wanted))
