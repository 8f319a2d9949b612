"""Declarative use: ``@pytest.mark.worktree(url, commit)`` and the ``repo_worktree`` fixture."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

__all__ = ["declarations", "declared", "parametrize_commits"]

_OPTIONS = ("sparse", "isolate", "history", "submodules")


def _parse(marker: pytest.Mark) -> tuple[Any, Any, dict[str, Any]]:
    """(url, commit, options), or TypeError if the marker is malformed."""
    args = list(marker.args)
    url = args.pop(0) if args else marker.kwargs.get("url")
    commit = args.pop(0) if args else marker.kwargs.get("commit")
    unknown = set(marker.kwargs) - {"url", "commit", *_OPTIONS}
    if url is None or args or unknown:
        raise TypeError(
            "@pytest.mark.worktree takes (url, commit=None, *, sparse=None, isolate=False, "
            "history=True, submodules=None); "
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


def declarations(
    items: Iterable[pytest.Item],
) -> Iterator[tuple[str, str | None, bool | None]]:
    """Every (url, commit, submodules) the markers of ``items`` declare, a list of commits
    unrolled (``submodules`` None where the marker leaves it to the ini default).

    Malformed markers and commits that are not strings are skipped: the test reports them.
    So are tests marked ``skip``, which never run (``skipif`` is only decided at setup).
    """
    for item in items:
        if item.get_closest_marker("skip") is not None:
            continue
        for marker in item.iter_markers("worktree"):
            try:
                url, commit, options = _parse(marker)
            except TypeError:
                continue
            wanted = options.get("submodules")
            submodules = None if wanted is None else bool(wanted)
            for one in _commits(commit):
                if one is None or isinstance(one, str):
                    yield str(url), one, submodules
