"""A sparse path that matches nothing at the commit is an error, not a near-empty worktree."""

from __future__ import annotations

from pathlib import Path

import pytest
from upstream import Upstream

from pytest_repoclones import InvalidInputError, RepoStore


@pytest.mark.parametrize(
    ("sparse", "named"),
    [(["scr/"], "'scr'"), (["src/", "nope.txt"], "'nope.txt'"), (["src/app.pyy"], "'src/app.pyy'")],
)
def test_sparse_path_matching_nothing_is_refused(
    upstream: Upstream, store: RepoStore, tmp_path: Path, sparse: list[str], named: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.add_worktree(upstream.url, "main", tmp_path / "wt", sparse=sparse)
    problem = caught.value.problem
    assert f"Sparse path {named} matches nothing at this commit" == problem
    assert caught.value.commit == upstream.rev("main")
    assert not (tmp_path / "wt").exists() or not any((tmp_path / "wt").iterdir())
    assert store.test_branches(upstream.url) == []


@pytest.mark.parametrize("sparse", [["src/"], ["src/app.py", "README.md"], ["src/*.py"]])
def test_sparse_paths_that_exist_still_work(
    upstream: Upstream, store: RepoStore, tmp_path: Path, sparse: list[str]
) -> None:
    wt = store.add_worktree(upstream.url, "main", tmp_path / "wt", sparse=sparse)
    assert (wt.path / "src" / "app.py").is_file()
    store.remove_worktree(wt)
