"""The ``pytest-repoclones`` command: list, prefetch, gc, verify, clear, against real git.

Most cases run ``cli.main`` in this process (fast, output through capsys); a few run it as
``python -m pytest_repoclones`` to check what a shell sees: help, exit statuses, the env var.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Run
from helpers.children import ChildGroup
from helpers.messages import without_paths
from upstream import Upstream, git, truncate_pack

from pytest_repoclones import RepoStore, cli
from pytest_repoclones._layout import MARKER
from pytest_repoclones._remote import PIN_PREFIX
from pytest_repoclones.cache_admin import (
    format_age,
    format_size,
    parse_duration,
    parse_size,
    resolve_cache_dir,
)

DAY = 86400.0
DEAD_PID = 99_999_999  # above any pid_max: never a live process


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_repoclones", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def listing(run: Run) -> dict[str, Any]:
    status, out, _ = run("list", "--json")
    assert status == 0
    document: dict[str, Any] = json.loads(out)
    return document


def urls_in_cache(run: Run) -> list[str]:
    return sorted(repo["url"] for repo in listing(run)["repositories"])


def set_last_use(git_dir: Path, days_ago: float) -> None:
    when = time.time() - days_ago * DAY
    os.utime(git_dir / MARKER, (when, when))


def small_upstream(make_upstream: Callable[..., Upstream], name: str) -> Upstream:
    up = make_upstream(name)
    up.commit({"README.md": f"# {name}\n"}, "initial")
    return up


# -- parsing and formatting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("10K", 10240),
        ("500M", 500 * 2**20),
        ("1.5G", 3 * 2**29),
        ("5gib", 5 * 2**30),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("90m", 5400), ("12h", 43200), ("30d", 30 * DAY), ("2w", 14 * DAY)]
)
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5X", "-1G", "G", "1.2.3M"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["30", "3x", "d", "-1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_human_formats() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(5 * 2**30) == "5.0 GiB"
    assert format_age(10) == "just now"
    assert format_age(2 * 3600 + 5) == "2 hours ago"
    assert format_age(45 * DAY) == "45 days ago"
    assert format_age(DAY) == "1 day ago"


def test_cache_dir_comes_from_option_then_env_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_REPO_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(str(tmp_path / "opt")) == (tmp_path / "opt", "--cache-dir")
    assert resolve_cache_dir(None) == (tmp_path / "env", "env PYTEST_REPO_CACHE_DIR")
    monkeypatch.delenv("PYTEST_REPO_CACHE_DIR")
    path, source = resolve_cache_dir(None)
    assert path == Path(os.environ["XDG_CACHE_HOME"]) / "pytest-repoclones"
    assert source == "default user cache directory"


# -- as a shell runs it ------------------------------------------------------------------------


def test_help_and_usage_errors_as_a_real_process(tmp_path: Path) -> None:
    result = run_module("--help")
    assert result.returncode == 0, result.stderr
    for word in ("list", "prefetch", "gc", "verify", "clear", "PYTEST_REPO_CACHE_DIR"):
        assert word in result.stdout
    assert "ini option" in result.stdout
    assert "repo_cache_dir of the project" in result.stdout

    result = run_module("gc", "--help")
    assert result.returncode == 0
    assert "--older-than" in result.stdout
    assert "--max-size" in result.stdout

    for bad in (["gc", "--bogus"], ["gc", "--max-size", "5X"], ["clear"], [], ["frobnicate"]):
        result = run_module("--cache-dir", str(tmp_path / "cache"), *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert "usage:" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists(), "a usage error must not touch the cache"


def test_console_script_and_env_cache_dir(tmp_path: Path, upstream: Upstream) -> None:
    script = Path(sys.executable).with_name("pytest-repoclones")
    if not script.exists():
        script = Path(shutil.which("pytest-repoclones") or "")
    if not script.is_file():
        pytest.skip("the pytest-repoclones script is not installed (pip install -e .)")
    env = {**os.environ, "PYTEST_REPO_CACHE_DIR": str(tmp_path / "envcache")}
    result = subprocess.run(
        [str(script), "prefetch", upstream.url, "v1.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert upstream.rev("v1.0^{commit}") in result.stdout

    result = run_module("list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["cache_dir"] == str(tmp_path / "envcache")
    assert document["cache_dir_source"] == "env PYTEST_REPO_CACHE_DIR"
    assert [repo["url"] for repo in document["repositories"]] == [upstream.url]


def test_failure_is_one_line_on_stderr_with_status_1(run: Run, tmp_path: Path) -> None:
    status, _out, err = run("prefetch", str(tmp_path / "no-such-repo"))
    assert status == 1
    assert "error: Could not clone" in err
    assert "Traceback" not in err

    # Credentials never reach the output, even in git's error line.
    status, _, err = run("prefetch", "https://user:s3cret-token@127.0.0.1:1/org/repo.git")
    assert status == 1
    assert "s3cret-token" not in err
    assert "user:***@127.0.0.1" in err


# -- list and prefetch -------------------------------------------------------------------------


def test_prefetch_warms_the_cache_for_offline_sessions(
    run: Run, upstream: Upstream, cache_dir: Path
) -> None:
    pr_commit = upstream.rev("refs/pull/7/head")  # on no branch: fetched by name, then pinned
    status, out, err = run("prefetch", upstream.url, "v1.0", pr_commit, "feature")
    assert status == 0, err
    assert f"cached {upstream.url}" in out
    assert f"{upstream.rev('v1.0^{commit}')}  v1.0" in out
    assert pr_commit in out
    assert f"{upstream.rev('feature')}  feature" in out

    status, out, _ = run("prefetch", upstream.url)  # the default branch
    assert status == 0
    assert f"{upstream.rev('main')}  (default branch)" in out

    offline = RepoStore(cache_dir, offline=True)
    assert offline.resolve(upstream.url, pr_commit) == pr_commit
    assert offline.resolve(upstream.url, "v1.1") == upstream.rev("v1.1")

    (repo,) = listing(run)["repositories"]
    assert repo["pinned"] == 1
    assert repo["complete"] is True
    assert repo["filter"] is None


def test_prefetch_with_a_filter_makes_a_partial_clone(run: Run, upstream: Upstream) -> None:
    status, _, err = run("prefetch", "--filter", "blob:none", upstream.url)
    assert status == 0, err
    (repo,) = listing(run)["repositories"]
    assert repo["filter"] == "blob:none"
    status, out, _ = run("list")
    assert "filter blob:none" in out


def test_list_shows_size_last_use_and_total(
    run: Run, make_upstream: Callable[..., Upstream], cache_dir: Path
) -> None:
    status, out, _ = run("list")
    assert status == 0
    assert "no cached repositories" in out
    assert not cache_dir.exists(), "listing must not create the cache"

    ups = [small_upstream(make_upstream, name) for name in ("alpha", "beta")]
    store = RepoStore(cache_dir)
    for up in ups:
        store.clone(up.url)
    set_last_use(store.git_dir(ups[0].url), 3)

    status, out, _ = run("list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"cache: {cache_dir} (from --cache-dir)"
    assert lines[1].split() == ["URL", "SIZE", "LAST", "USED", "PINNED", "NOTES"]
    # Most recently used first.
    assert lines[2].startswith(ups[1].url)
    assert "just now" in lines[2]
    assert lines[3].startswith(ups[0].url)
    assert "(3 days ago)" in lines[3]
    assert time.strftime("%Y-%m-%d", time.localtime(time.time() - 3 * DAY)) in lines[3]
    assert lines[4].startswith("total: 2 repositories, ")

    document = listing(run)
    sizes = [repo["size"] for repo in document["repositories"]]
    assert all(size > 500 for size in sizes)
    assert document["total_size"] == sum(sizes)
    assert document["repositories"][1]["last_used"] == pytest.approx(time.time() - 3 * DAY, abs=60)


def test_list_redacts_passwords_even_from_a_hand_edited_marker(
    run: Run, upstream: Upstream, cache_dir: Path
) -> None:
    git_dir = RepoStore(cache_dir).clone(upstream.url)
    marker = json.loads((git_dir / MARKER).read_text())
    marker["url"] = "https://deploy:hunter2@git.example.com/org/project.git"
    (git_dir / MARKER).write_text(json.dumps(marker))

    for args in (["list"], ["list", "--json"]):
        status, out, _ = run(*args)
        assert status == 0
        assert "hunter2" not in out
        assert "https://deploy:***@git.example.com/org/project.git" in out


def test_list_shows_an_incomplete_entry(run: Run, upstream: Upstream, cache_dir: Path) -> None:
    git_dir = RepoStore(cache_dir).clone(upstream.url)
    (git_dir / MARKER).unlink()
    status, out, _ = run("list")
    assert status == 0
    assert f"(incomplete entry {git_dir.name})" in out
    assert "incomplete (next use re-clones it)" in out


# -- gc ----------------------------------------------------------------------------------------


def test_gc_by_age_and_dry_run(
    run: Run, make_upstream: Callable[..., Upstream], cache_dir: Path
) -> None:
    old, recent = (small_upstream(make_upstream, name) for name in ("old", "recent"))
    store = RepoStore(cache_dir)
    for up in (old, recent):
        store.clone(up.url)
    set_last_use(store.git_dir(old.url), 40)
    set_last_use(store.git_dir(recent.url), 20)

    status, out, _ = run("gc", "--older-than", "30d", "--dry-run")
    assert status == 0
    assert f"would remove {old.url} (" in out
    assert "unused for 40 days" in out
    assert "would free " in out
    assert urls_in_cache(run) == sorted([old.url, recent.url]), "a dry run removes nothing"

    size = next(r["size"] for r in listing(run)["repositories"] if r["url"] == old.url)
    status, out, _ = run("gc", "--older-than", "30d")
    assert status == 0
    assert f"removed {old.url} ({format_size(size)}): unused for 40 days" in out
    assert f"freed {format_size(size)}; 1 repository left" in out
    assert urls_in_cache(run) == [recent.url]
    assert list((cache_dir / "tmp").iterdir()) == []

    # The next session clones the removed one again.
    assert RepoStore(cache_dir).resolve(old.url, "main") == old.rev("main")


def test_gc_by_size_removes_the_least_recently_used_first(
    run: Run, make_upstream: Callable[..., Upstream], cache_dir: Path
) -> None:
    ups = [small_upstream(make_upstream, name) for name in ("one", "two", "three")]
    store = RepoStore(cache_dir)
    for days_ago, up in zip((3, 1, 2), ups, strict=True):
        store.clone(up.url)
        set_last_use(store.git_dir(up.url), days_ago)
    size = {repo["url"]: repo["size"] for repo in listing(run)["repositories"]}
    one, two, three = (up.url for up in ups)

    # Room for two: the least recently used ("one", 3 days) goes.
    status, out, _ = run("gc", "--max-size", str(size[two] + size[three]))
    assert status == 0
    assert f"removed {one} (" in out
    assert "cache above" in out
    assert urls_in_cache(run) == sorted([two, three])

    # Room for one: then "three" (2 days) goes, "two" (1 day) stays.
    status, out, _ = run("gc", "--max-size", str(size[two] + 1))
    assert status == 0
    assert f"removed {three} (" in out
    assert urls_in_cache(run) == [two]

    status, out, _ = run("gc", "--max-size", "1G", "--older-than", "2w")
    assert status == 0
    assert "removed" not in out
    assert urls_in_cache(run) == [two]


def test_gc_skips_an_entry_whose_lock_another_process_holds(
    run: Run, upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    git_dir = RepoStore(cache_dir).clone(upstream.url)
    set_last_use(git_dir, 100)
    with ChildGroup(tmp_path / "logs") as group:
        holder = group.start("hold-lock", {"cache": str(cache_dir), "url": upstream.url})
        holder.wait_ready()
        started = time.monotonic()
        status, out, _ = run("gc", "--older-than", "1d")
        assert time.monotonic() - started < 10, "a busy entry is skipped, not waited for"
        assert status == 0
        assert f"skipped {upstream.url}: in use: lock held by pid {holder.pid}" in out
        assert "1 in use, skipped" in out
        assert git_dir.is_dir()

        status, out, _ = run("clear", upstream.url)
        assert status == 1
        assert f"skipped {upstream.url}: in use" in out
        assert git_dir.is_dir()
        holder.kill()

    status, out, _ = run("gc", "--older-than", "1d")
    assert status == 0
    assert f"removed {upstream.url}" in out
    assert not git_dir.exists()


def test_gc_skips_an_entry_with_a_live_worktree_and_frees_a_dead_ones(
    run: Run, upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    store = RepoStore(cache_dir)
    worktree = store.add_worktree(upstream.url, "v1.0", tmp_path / "live")  # we are alive
    git_dir = worktree.git_dir
    set_last_use(git_dir, 100)
    status, out, _ = run("gc", "--older-than", "1d")
    assert status == 0
    assert f"in use by worktree {worktree.path} of pid {os.getpid()}" in out
    assert (worktree.path / "README.md").is_file()
    store.remove_worktree(worktree)

    # A worktree whose owner was killed does not keep the entry, and its checkout goes too.
    with ChildGroup(tmp_path / "logs") as group:
        child = group.start(
            "hold-worktree",
            {
                "cache": str(cache_dir),
                "url": upstream.url,
                "commit": "v1.1",
                "path": str(tmp_path / "dead"),
            },
        )
        child.wait_ready()
        child.kill()
    assert (tmp_path / "dead" / "README.md").is_file()
    set_last_use(git_dir, 100)
    status, out, _ = run("gc", "--older-than", "1d")
    assert status == 0
    assert f"removed {upstream.url}" in out
    assert not git_dir.exists()
    assert not (tmp_path / "dead").exists()


def test_gc_removes_leftovers_of_killed_processes(
    run: Run, upstream: Upstream, cache_dir: Path
) -> None:
    git_dir = RepoStore(cache_dir).clone(upstream.url)
    key = git_dir.name[: -len(".git")]
    tmp = cache_dir / "tmp"
    clone_leftover = tmp / f"{key}.{DEAD_PID}.ab12cd34"
    dead_trash = tmp / f"trash.{DEAD_PID}.ab12cd34"
    live_trash = tmp / f"trash.{os.getpid()}.ab12cd34"  # being deleted right now
    for path in (clone_leftover, dead_trash, live_trash):
        (path / "objects").mkdir(parents=True)
        (path / "objects" / "blob").write_bytes(b"x" * 5000)
    (tmp / "unknown-file").write_text("not ours")

    status, out, _ = run("gc")
    assert status == 0
    assert f"removed leftover {clone_leftover} (4.9 KiB)" in out
    assert f"removed leftover {dead_trash}" in out
    assert "freed 9.8 KiB; 1 repository left" in out
    assert sorted(path.name for path in tmp.iterdir()) == sorted([live_trash.name, "unknown-file"])
    assert git_dir.is_dir()

    # An entry without its marker is garbage to every session: gc removes it whatever its age.
    (git_dir / MARKER).unlink()
    status, out, _ = run("gc")
    assert status == 0
    assert "incomplete (no marker)" in out
    assert not git_dir.exists()


# -- verify ------------------------------------------------------------------------------------


def test_verify_reports_sound_entries(run: Run, upstream: Upstream, cache_dir: Path) -> None:
    status, out, _ = run("verify")
    assert status == 0
    assert "no cached repositories" in out

    RepoStore(cache_dir).clone(upstream.url)
    for args in (["verify"], ["verify", "--full"], ["verify", upstream.url]):
        status, out, err = run(*args)
        assert status == 0, err
        assert out.splitlines() == [f"ok        {upstream.url}"]

    status, _, err = run("verify", upstream.url + "-other")
    assert status == 1
    assert "not in the cache" in err


def test_verify_rebuilds_a_damaged_entry(run: Run, big_upstream: Upstream, cache_dir: Path) -> None:
    pinned = big_upstream.commit({"pr.txt": "x\n"}, "pr", ref="refs/pull/1/head")
    status, _, err = run("prefetch", big_upstream.url, pinned)
    assert status == 0, err
    git_dir = RepoStore(cache_dir).git_dir(big_upstream.url)
    assert list((git_dir / "objects" / "pack").glob("*.pack")), "test setup: expected a pack"
    truncate_pack(git_dir)

    status, out, err = run("verify")
    assert status == 0, err
    assert out.startswith(f"repaired  {big_upstream.url}: was: pack ")
    assert "truncated" in without_paths(out)
    assert "fetched 1 of 1 pinned commits again" in out
    assert git("--git-dir", str(git_dir), "fsck", "--no-progress", "--connectivity-only") == ""
    assert list((cache_dir / "tmp").iterdir()) == []
    offline = RepoStore(cache_dir, offline=True)
    assert offline.resolve(big_upstream.url, pinned) == pinned
    assert (git_dir / PIN_PREFIX / pinned).is_file()


def test_verify_full_finds_what_the_quick_check_cannot(
    run: Run, upstream: Upstream, cache_dir: Path
) -> None:
    git_dir = RepoStore(cache_dir).clone(upstream.url)  # few objects: kept loose
    # A blob gone: every ref's tree is still there, so only fsck notices.
    blob = upstream.rev("v1.0:README.md")
    (git_dir / "objects" / blob[:2] / blob[2:]).unlink()

    status, out, _ = run("verify")
    assert status == 0
    assert out.startswith("ok")

    status, out, err = run("verify", "--full")
    assert status == 0, err
    assert out.startswith(f"repaired  {upstream.url}: was: git fsck: ")
    assert git("--git-dir", str(git_dir), "cat-file", "-t", blob) == "blob"


def test_verify_leaves_a_damaged_entry_it_cannot_rebuild_and_names_it(
    run: Run, big_upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    store = RepoStore(cache_dir)
    worktree = store.add_worktree(big_upstream.url, "main", tmp_path / "wt")
    git_dir = worktree.git_dir
    truncate_pack(git_dir)

    # In use by a live process (this one): not rebuilt under its feet.
    status, out, _ = run("verify")
    assert status == 1
    assert out.startswith(f"DAMAGED   {big_upstream.url}: pack ")
    assert f"in use by worktree {worktree.path} of pid {os.getpid()}" in out
    assert f"delete {git_dir}" in out
    assert (worktree.path / "README.md").is_file()
    store.remove_worktree(worktree)

    # The remote is gone: the entry is put back as it was, and named for deletion.
    shutil.rmtree(big_upstream.path)
    packs_before = sorted(p.name for p in (git_dir / "objects" / "pack").iterdir())
    status, out, _ = run("verify", big_upstream.url)
    assert status == 1
    assert "could not rebuild (Could not clone" in out
    assert out.rstrip().endswith(f"delete {git_dir}")
    assert sorted(p.name for p in (git_dir / "objects" / "pack").iterdir()) == packs_before
    assert (git_dir / MARKER).is_file()
    assert list((cache_dir / "tmp").iterdir()) == []

    # Once deleted, nothing is left to complain about.
    status, _, _ = run("clear", big_upstream.url)
    assert status == 0
    status, out, _ = run("verify")
    assert status == 0


def test_verify_removes_an_incomplete_entry(run: Run, upstream: Upstream, cache_dir: Path) -> None:
    git_dir = RepoStore(cache_dir).clone(upstream.url)
    (git_dir / MARKER).unlink()
    status, out, _ = run("verify")
    assert status == 0
    assert out.startswith(f"removed   (incomplete entry {git_dir.name}): incomplete")
    assert not git_dir.exists()


# -- clear -------------------------------------------------------------------------------------


def test_clear_one_then_all(
    run: Run, make_upstream: Callable[..., Upstream], cache_dir: Path
) -> None:
    ups = [small_upstream(make_upstream, name) for name in ("a", "b", "c")]
    store = RepoStore(cache_dir)
    for up in ups:
        store.clone(up.url)

    # Any spelling of the URL names the same entry: here the local path instead of file://.
    status, out, _ = run("clear", str(ups[0].path))
    assert status == 0
    assert f"removed {ups[0].url} (" in out
    assert "): cleared" in out
    assert urls_in_cache(run) == sorted([ups[1].url, ups[2].url])

    status, _, err = run("clear", ups[0].url)
    assert status == 1
    assert "not in the cache" in err

    status, out, _ = run("clear", "--all", "--dry-run")
    assert status == 0
    assert out.count("would remove ") == 2
    assert len(urls_in_cache(run)) == 2

    status, out, _ = run("clear", "--all")
    assert status == 0
    assert out.count("removed ") == 2
    assert urls_in_cache(run) == []
    assert list((cache_dir / "repos").iterdir()) == []


def test_clear_refuses_an_entry_in_use(
    run: Run, make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    busy, idle = (small_upstream(make_upstream, name) for name in ("busy", "idle"))
    store = RepoStore(cache_dir)
    store.clone(idle.url)
    worktree = store.add_worktree(busy.url, "main", tmp_path / "wt")

    status, out, _ = run("clear", busy.url)
    assert status == 1
    assert f"skipped {busy.url}: in use by worktree {worktree.path}" in out

    status, out, _ = run("clear", "--all")
    assert status == 0, "with --all, an entry in use is skipped, not a failure"
    assert f"removed {idle.url}" in out
    assert f"skipped {busy.url}" in out
    assert urls_in_cache(run) == [busy.url]
    assert (worktree.path / "README.md").is_file()
    store.remove_worktree(worktree)


@pytest.mark.parametrize(
    "command", [["list"], ["gc", "--max-size", "1G"], ["verify"], ["clear", "--all"]]
)
def test_a_file_as_the_cache_directory_is_an_error_not_an_empty_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("oops\n")
    status = cli.main([f"--cache-dir={not_a_dir}", *command])
    err = capsys.readouterr().err
    assert status == 2
    assert f"{not_a_dir} (from --cache-dir) is not a directory" in err
    assert not_a_dir.read_text() == "oops\n"
