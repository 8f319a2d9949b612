"""A pre-warmed cache on a read-only mount (a CI image, a shared volume mounted ro) is served
as it is: worktrees at cached commits, nothing written into it (issue 9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.messages import message_of, raises_saying, without_paths
from helpers.mounts import read_only_bind
from upstream import Upstream, git

from pytest_repoclones import CacheWriteError, RepoStore, cli

pytestmark = pytest.mark.slow


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in root.rglob("*")
    }


@pytest.fixture
def read_only_cache(upstream: Upstream, tmp_path: Path) -> Iterator[Path]:
    """A warm cache (clone, a pull-request commit fetched by name), bind-mounted read-only."""
    source = tmp_path / "cache-rw"
    warm = RepoStore(source)
    warm.resolve(upstream.url, upstream.rev("refs/pull/7/head"))
    wt = warm.add_worktree(upstream.url, "main", tmp_path / "warm-wt")
    warm.remove_worktree(wt)
    with read_only_bind(source, tmp_path / "cache-ro") as mount_point:
        yield mount_point


def test_worktrees_from_a_read_only_cache(
    upstream: Upstream, read_only_cache: Path, tmp_path: Path
) -> None:
    before = snapshot(read_only_cache)
    store = RepoStore(read_only_cache)
    assert store.read_only
    pr = upstream.rev("refs/pull/7/head")
    wt = store.add_worktree(upstream.url, pr, tmp_path / "pr")
    assert (wt.path / "pr.txt").read_text() == "pull request\n"
    assert git("-C", str(wt.path), "rev-parse", "HEAD") == pr
    assert git("-C", str(wt.path), "status", "--porcelain") == ""
    # What a worktree shows: the cache's tags and upstream branches, history included.
    assert "v1.0" in git("-C", str(wt.path), "tag").split()
    assert git("-C", str(wt.path), "rev-parse", "origin/main") == upstream.rev("main")
    git("-C", str(wt.path), "log", "--all", "--oneline")
    # Names resolve to what the cache holds (no refresh possible), without --repo-offline.
    by_name = store.add_worktree(upstream.url, "v1.1", tmp_path / "tag")
    assert by_name.commit == upstream.rev("v1.1")
    default = store.add_worktree(upstream.url, None, tmp_path / "default")
    assert default.commit == upstream.rev("main")
    isolated = store.add_worktree(upstream.url, "v1.0", tmp_path / "iso", isolate=True)
    assert (isolated.path / "README.md").is_file()
    sparse = store.add_worktree(upstream.url, "main", tmp_path / "sparse", sparse=["src/app.py"])
    assert (sparse.path / "src" / "app.py").is_file()
    assert not (sparse.path / "CHANGES").exists()
    for made in (wt, by_name, default, isolated, sparse):
        store.remove_worktree(made)
        assert not made.path.exists()
    assert snapshot(read_only_cache) == before


def test_what_needs_a_write_says_the_cache_is_read_only(
    upstream: Upstream, make_upstream, read_only_cache: Path, tmp_path: Path
) -> None:
    store = RepoStore(read_only_cache, timeout=30)
    new = upstream.commit({"later.txt": "x\n"}, "after the image was baked")
    with pytest.raises(CacheWriteError) as missing:
        store.add_worktree(upstream.url, new, tmp_path / "new")
    text = str(missing.value)
    assert "read-only" in message_of(missing.value).splitlines()[0]
    assert new in text
    assert upstream.url in text
    assert "prefetch" in message_of(missing.value)  # what to do
    other = make_upstream("other")
    other.commit({"a": "1\n"})
    with raises_saying(CacheWriteError, "read-only and does not hold this repository"):
        store.add_worktree(other.url, "main", tmp_path / "other")
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_plugin_suite_on_a_read_only_cache(
    upstream: Upstream, read_only_cache: Path, pytester: pytest.Pytester
) -> None:
    """What a CI image user runs: a suite with -n 2 against the baked cache, no options."""
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.parametrize("commit", ["v1.0", "v1.1", "main", {upstream.rev("v1.1")!r}])
        def test_checkout(worktree, commit):
            wt = worktree({upstream.url!r}, commit)
            assert (wt / "README.md").is_file()
        """
    )
    before = snapshot(read_only_cache)
    result = pytester.runpytest_subprocess("-n", "2", f"--repo-cache-dir={read_only_cache}")
    result.assert_outcomes(passed=4)
    assert snapshot(read_only_cache) == before


def test_cli_on_a_read_only_cache(
    read_only_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`verify` and `gc` used to print a bare "[Errno 30] Read-only file system"."""
    assert cli.main(["--cache-dir", str(read_only_cache), "list"]) == 0
    for command in (["verify"], ["gc", "--max-size", "0"], ["clear", "--all"]):
        status = cli.main(["--cache-dir", str(read_only_cache), *command])
        out, err = capsys.readouterr()
        assert "Errno" not in out + err, command
        assert "Traceback" not in out + err, command
        assert status in (0, 1), command
        if command[0] != "verify":
            assert "read-only" in without_paths(out + err), command
