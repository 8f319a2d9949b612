"""The cache administered (or destroyed, or filled) while a session uses it (issue 9)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.messages import message_of, raises_saying
from upstream import Upstream

from pytest_repoclones import CacheWriteError, RemoteError, RepoClonesError, RepoStore

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def clearing_in_a_loop(cache_dir: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """`pytest-repoclones clear --all` and `gc --max-size 0`, again and again, in another
    process, as a cron job would while suites run."""
    code = (
        "import sys, time\n"
        "from pytest_repoclones import cli\n"
        "end = time.monotonic() + float(sys.argv[2])\n"
        "n = 0\n"
        "while time.monotonic() < end:\n"
        "    cli.main(['--cache-dir', sys.argv[1], 'clear', '--all'] if n % 2 else\n"
        "             ['--cache-dir', sys.argv[1], 'gc', '--max-size', '0'])\n"
        "    n += 1\n"
        "print('rounds', n)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(cache_dir), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_lookups_survive_clear_and_gc_in_a_loop(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """Branches, tags and abbreviations resolved while the entry is removed again and again:
    about 7% used to fail with a bare FileNotFoundError or a false 'No such branch or tag'."""
    expected = {
        "main": upstream.rev("main"),
        "feature": upstream.rev("feature"),
        "v1.0": upstream.rev("v1.0^{commit}"),
        "v1.1": upstream.rev("v1.1"),
        upstream.rev("v1.1")[:10]: upstream.rev("v1.1"),
    }
    failures: list[str] = []
    calls = 0
    RepoStore(cache_dir).clone(upstream.url)
    with clearing_in_a_loop(cache_dir, 8) as admin:
        end = time.monotonic() + 8
        while time.monotonic() < end:
            store = RepoStore(cache_dir, timeout=60, lock_timeout=60)  # a new session each time
            for name, sha in expected.items():
                calls += 1
                try:
                    got = store.resolve(upstream.url, name)
                except Exception as exc:  # noqa: BLE001 - counting every kind is the point
                    failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    continue
                if got != sha:
                    failures.append(f"{name}: {got} != {sha}")
        admin.wait(timeout=30)
        assert admin.stdout is not None
        rounds = int(admin.stdout.read().split("rounds ")[-1].strip() or 0)
    assert rounds > 5, "the admin loop hardly ran"
    assert calls > 20
    assert failures == [], f"{len(failures)} of {calls} failed: {failures[:3]}"


def test_cache_directory_removed_mid_session_is_made_again(
    upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    """`rm -rf` of the whole cache while a session runs: every later test used to fail with
    FileNotFoundError (repos/ was never made again)."""
    store = RepoStore(cache_dir, timeout=60)
    first = store.add_worktree(upstream.url, "v1.0", tmp_path / "one")
    store.remove_worktree(first)
    shutil.rmtree(cache_dir)
    assert store.test_branches(upstream.url) == []  # not cached: nothing, not an OSError
    again = store.add_worktree(upstream.url, "v1.1", tmp_path / "two")
    assert (again.path / "run.sh").is_file()
    assert (cache_dir / "CACHEDIR.TAG").is_file()
    assert store.resolve(upstream.url, "main") == upstream.rev("main")
    store.remove_worktree(again)
    shutil.rmtree(cache_dir)
    assert store.resolve(upstream.url, upstream.rev("v1.0^{commit}")) == upstream.rev(
        "v1.0^{commit}"
    )


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a cache whose disk can really fill up."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_while_writing_the_refresh_marker(
    upstream: Upstream, tiny_tmpfs: Path, tmp_path: Path
) -> None:
    """ENOSPC writing the refresh marker used to surface as OSError(28) and leave a
    `.repoclones-refreshed.*.tmp` in the entry."""
    cache_dir = tiny_tmpfs / "cache"
    git_dir = RepoStore(cache_dir, session_id="warm").clone(upstream.url)
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    store = RepoStore(cache_dir, session_id="full")
    with pytest.raises(CacheWriteError) as caught:
        store.resolve(upstream.url, "main")  # refreshes, then records the session
    message = str(caught.value)
    assert "No space left" in message_of(caught.value).splitlines()[0]
    assert upstream.url in message
    assert "'main'" in message_of(caught.value)
    assert [p.name for p in git_dir.iterdir() if p.name.endswith(".tmp")] == []
    assert list(cache_dir.rglob("*.tmp")) == []  # nor the lock's owner note
    assert list(cache_dir.rglob("tmp_obj_*")) == []
    assert isinstance(caught.value, RepoClonesError)
    filler.unlink()
    assert store.resolve(upstream.url, "main") == upstream.rev("main")  # recovers


def test_full_disk_while_cloning_blames_the_disk_not_the_remote(
    make_upstream: Callable[..., Upstream], tiny_tmpfs: Path
) -> None:
    """git's "No space left on device" in a clone used to read "Could not clone" (RemoteError),
    blaming the remote; nothing half-made may stay in the cache."""
    big_upstream = make_upstream("incompressible")
    big_upstream.commit({f"f{i}": os.urandom(2048).hex() for i in range(100)}, "400 KB of noise")
    cache_dir = tiny_tmpfs / "cache"
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    filler.write_bytes(b"\0" * (filler.stat().st_size - 96 * 1024))  # room for the layout
    with raises_saying(CacheWriteError, "No space left") as caught:
        RepoStore(cache_dir, timeout=60).clone(big_upstream.url)
    assert big_upstream.url in str(caught.value)
    assert "No space left" in message_of(caught.value).splitlines()[0]
    assert not isinstance(caught.value, RemoteError)
    assert list((cache_dir / "tmp").iterdir()) == []
    assert list((cache_dir / "repos").iterdir()) == []
    assert list(cache_dir.rglob("*.tmp")) == []
