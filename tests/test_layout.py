"""The cache's format version, and a cache made by the first release (format 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from upstream import Upstream, git

from pytest_repoclones import CacheCorruptError, RepoStore
from pytest_repoclones._layout import CACHE_FORMAT, MARKER, CacheLayout, key_of


def make_format_1_entry(store: RepoStore, upstream: Upstream) -> Path:
    """What 0.1.0 left on disk: marker format 1, the remote's HEAD at origin/HEAD."""
    git_dir = store.clone(upstream.url)
    marker = json.loads((git_dir / MARKER).read_text())
    marker["format"] = 1
    (git_dir / MARKER).write_text(json.dumps(marker))
    head = (git_dir / "refs/repoclones/remote-head").read_text()
    (git_dir / "refs/repoclones/remote-head").unlink()
    (git_dir / "refs/remotes/origin/HEAD").write_text(head)
    return git_dir


def test_cache_of_format_1_is_used_and_upgraded(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    git_dir = make_format_1_entry(RepoStore(cache_dir), upstream)
    offline = RepoStore(cache_dir, offline=True)
    assert offline.resolve(upstream.url, None) == upstream.rev("main")  # the old HEAD ref
    wt = offline.add_worktree(upstream.url, "v1.1", tmp_path / "wt")
    assert json.loads((git_dir / MARKER).read_text())["format"] == CACHE_FORMAT
    offline.remove_worktree(wt)
    online = RepoStore(cache_dir)
    assert online.resolve(upstream.url, None) == upstream.rev("main")
    assert (git_dir / "refs/repoclones/remote-head").is_file()  # the refresh wrote it


@pytest.mark.parametrize("offline", [False, True])
def test_cache_of_a_newer_format_is_refused(
    upstream: Upstream, cache_dir: Path, tmp_path: Path, offline: bool
) -> None:
    git_dir = RepoStore(cache_dir).clone(upstream.url)
    marker = json.loads((git_dir / MARKER).read_text())
    marker["format"] = CACHE_FORMAT + 1
    (git_dir / MARKER).write_text(json.dumps(marker))
    before = (git_dir / MARKER).read_text()
    with pytest.raises(CacheCorruptError) as caught:
        RepoStore(cache_dir, offline=offline).add_worktree(upstream.url, "main", tmp_path / "w")
    problem = caught.value.problem
    assert f"cache format {CACHE_FORMAT + 1}" in problem
    assert f"reads format {CACHE_FORMAT} and older" in problem
    assert "upgrade pytest-repoclones" in (caught.value.hint or "")
    assert (git_dir / MARKER).read_text() == before  # left as it is, not rebuilt
    refs = git(f"--git-dir={git_dir}", "for-each-ref", "refs/heads/")
    assert refs == ""


def test_layout_paths_and_keys(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path / "c")
    assert layout.git_dir("proj-0123") == tmp_path / "c" / "repos" / "proj-0123.git"
    assert key_of(layout.git_dir("proj-0123")) == "proj-0123"
    assert key_of(layout.build_dir("proj-0123")) == "proj-0123"
    assert key_of(layout.build_dir("a.b-0123")) == "a.b-0123"
    assert layout.trash_path().name.startswith("trash.")
    assert not layout.read_only  # does not exist yet: will be made
