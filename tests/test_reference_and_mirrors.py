"""Beyond one machine (issue 11): a seed cache new clones borrow from (``--repo-reference-dir``)
and mirrors tried before the original (``--repo-mirror``), each falling back, never failing."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.mounts import read_only_bind
from helpers.servers import GitHTTPServer
from inner import run
from upstream import Upstream, git, upload_packs

from pytest_repoclones import RepoStore

# -- a seed cache -------------------------------------------------------------------------------


@pytest.fixture
def project(make_upstream: Callable[..., Upstream]) -> Upstream:
    """Enough files that a full clone and a borrowed one differ by far."""
    up = make_upstream("project")
    up.commit({f"src/m{i:03}.py": f"X = {i}\n" * 30 for i in range(120)}, "many files")
    up.commit({"README.md": "# project\n"}, "readme")
    return up


def own_objects(git_dir: Path) -> int:
    """Objects the repository holds itself (not through its alternates)."""
    counts = dict(
        line.split(": ") for line in git(f"--git-dir={git_dir}", "count-objects", "-v").splitlines()
    )
    return int(counts["count"]) + int(counts["in-pack"])


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
    }


@pytest.fixture
def seed(project: Upstream, tmp_path: Path) -> Path:
    """Another machine's cache, one commit behind the upstream, with a pinned PR commit."""
    reference = tmp_path / "seed"
    pr = project.commit({"pr.txt": "pr\n"}, "pr", ref="refs/pull/3/head")
    RepoStore(reference).resolve(project.url, pr)
    project.commit({"src/new.py": "NEW = 1\n"}, "one commit after the seed")
    return reference


def test_a_new_clone_borrows_the_seed_and_fetches_only_what_is_new(
    project: Upstream, seed: Path, tmp_path: Path
) -> None:
    before = files_of(seed)
    store = RepoStore(tmp_path / "cache", reference_dir=seed)
    wt = store.add_worktree(project.url, "main", tmp_path / "wt")
    git_dir = store.git_dir(project.url)
    assert (git_dir / "objects" / "info" / "alternates").read_text().strip() == str(
        (RepoStore(seed).git_dir(project.url) / "objects").resolve()
    )
    full = RepoStore(tmp_path / "full")
    full.clone(project.url)
    assert own_objects(git_dir) <= 4  # the new commit, its trees, its blob
    assert own_objects(full.git_dir(project.url)) > 120
    assert (wt / "src" / "new.py").read_text() == "NEW = 1\n"
    assert git("fsck", "--no-progress", cwd=wt) == ""
    # The seed's pins came along: its pull-request commit is served with the upstream gone.
    pr = project.rev("refs/pull/3/head")
    shutil.move(project.path, tmp_path / "upstream-gone")
    assert store.resolve(project.url, pr) == pr
    store.remove_worktree(wt)
    assert files_of(seed) == before, "the seed was written to"


def test_a_read_only_seed_serves_as_well(project: Upstream, seed: Path, tmp_path: Path) -> None:
    with read_only_bind(seed, tmp_path / "seed-ro") as mount_point:
        store = RepoStore(tmp_path / "cache", reference_dir=mount_point)
        wt = store.add_worktree(project.url, "main", tmp_path / "wt")
        assert own_objects(store.git_dir(project.url)) <= 4
        assert git("rev-parse", "HEAD", cwd=wt) == project.rev("main")
        store.remove_worktree(wt)


@pytest.mark.parametrize("change", ["deleted", "replaced-by-an-older-one", "moved"])
def test_a_seed_that_changes_between_sessions_never_breaks_the_entry(
    change: str, project: Upstream, seed: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    RepoStore(cache, reference_dir=seed).clone(project.url)
    if change == "deleted":
        shutil.rmtree(seed)
    elif change == "replaced-by-an-older-one":
        older = tmp_path / "older"
        first = project.rev("main~2")
        RepoStore(older).resolve(project.url, first)  # a clone made now: another stamp
        shutil.rmtree(seed)
        shutil.move(older, seed)
    else:
        shutil.move(seed, tmp_path / "seed-elsewhere")
    warnings: list[str] = []
    later = RepoStore(cache, reference_dir=seed, notice=warnings.append)  # the next session
    wt = later.add_worktree(project.url, "main", tmp_path / "wt")
    assert git("fsck", "--no-progress", cwd=wt) == ""
    assert (wt / "src" / "new.py").read_text() == "NEW = 1\n"
    assert len(warnings) == 1
    assert "cloning" in warnings[0]
    assert "reference cache entry" in warnings[0]
    # Borrowing again where the seed still serves: never from what it was before.
    alternates = later.git_dir(project.url) / "objects" / "info" / "alternates"
    assert alternates.exists() == (change == "replaced-by-an-older-one")
    later.remove_worktree(wt)


def test_a_seed_without_the_repository_is_no_seed(project: Upstream, tmp_path: Path) -> None:
    empty = tmp_path / "seed"
    empty.mkdir()
    store = RepoStore(tmp_path / "cache", reference_dir=empty)
    store.clone(project.url)
    assert not (store.git_dir(project.url) / "objects" / "info" / "alternates").exists()


def test_reference_dir_from_the_ini_file_under_xdist(
    pytester: pytest.Pytester, project: Upstream, seed: Path, tmp_path: Path
) -> None:
    pytester.makeini(f"[pytest]\nrepo_reference_dir = {seed}\n")
    pytester.makepyfile(
        f"""
        import pathlib, pytest

        @pytest.mark.parametrize("n", range(4))
        def test_new_file(worktree, n):
            wt = worktree({project.url!r}, "main")
            assert (wt / "src" / "new.py").read_text() == "NEW = 1\\n"
        """
    )
    cache = tmp_path / "inner-cache"
    run(pytester, cache, "-n", "2").assert_outcomes(passed=4)
    git_dir = RepoStore(cache).git_dir(project.url)
    assert (git_dir / "objects" / "info" / "alternates").exists()
    assert own_objects(git_dir) <= 4


# -- mirrors ------------------------------------------------------------------------------------


@pytest.fixture
def mirror(project: Upstream, tmp_path: Path) -> Upstream:
    """A copy of the upstream at another URL."""
    copy = tmp_path / "mirrors" / "project.git"
    copy.parent.mkdir()
    git("clone", "--quiet", "--mirror", str(project.path), str(copy))
    mirrored = Upstream.__new__(Upstream)
    mirrored.path = copy
    return mirrored


def test_an_unreachable_original_is_served_by_its_mirror(
    project: Upstream, mirror: Upstream, tmp_path: Path, trace_file: Path
) -> None:
    url = project.url
    gone = tmp_path / "original-gone"
    shutil.move(project.path, gone)
    warnings: list[str] = []
    store = RepoStore(tmp_path / "cache", mirrors={url: mirror.url}, notice=warnings.append)
    wt = store.add_worktree(url, "main", tmp_path / "wt")
    assert git("rev-parse", "HEAD", cwd=wt) == git(f"--git-dir={gone}", "rev-parse", "main")
    # Keyed by the original: the same entry as without a mirror.
    assert store.git_dir(url) == RepoStore(tmp_path / "cache").git_dir(url)
    assert url not in (store.git_dir(url) / "config").read_text()
    assert warnings == []
    assert upload_packs(trace_file, mirror.path) == 1
    store.remove_worktree(wt)


def test_an_unreachable_mirror_falls_back_with_one_warning_per_session(
    project: Upstream, tmp_path: Path, trace_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = project.url
    missing = (tmp_path / "no-such-mirror.git").as_uri()
    warnings: list[str] = []
    stores = [
        RepoStore(
            tmp_path / "cache",
            mirrors=[(url, missing)],
            notice=warnings.append,
            session_id="one-session",
        )
        for _ in range(2)  # two xdist workers of one session
    ]
    pr = project.commit({"pr.txt": "x\n"}, "pr", ref="refs/pull/9/head")
    for n, store in enumerate(stores):
        wt = store.add_worktree(url, "main", tmp_path / f"wt{n}")
        assert store.resolve(url, pr) == pr
        store.remove_worktree(wt)
    assert len(warnings) == 1, warnings
    assert "no-such-mirror" in warnings[0]
    assert "fetching from the original" in warnings[0]
    assert upload_packs(trace_file, project.path) >= 2


def test_a_mirror_behind_the_original_falls_back_for_what_it_lacks(
    project: Upstream, mirror: Upstream, tmp_path: Path, trace_file: Path
) -> None:
    newer = project.commit({"src/newer.py": "Y = 2\n"}, "after the mirror's copy")
    warnings: list[str] = []
    store = RepoStore(tmp_path / "cache", mirrors={project.url: mirror.url}, notice=warnings.append)
    store.clone(project.url)  # from the mirror: one commit behind
    assert upload_packs(trace_file, project.path) == 0
    wt = store.add_worktree(project.url, newer, tmp_path / "wt")
    assert (wt / "src" / "newer.py").read_text() == "Y = 2\n"
    assert upload_packs(trace_file, project.path) == 1
    assert len(warnings) == 1
    store.remove_worktree(wt)


def test_a_prefix_rule_maps_every_repository_below_it(
    project: Upstream, mirror: Upstream, tmp_path: Path
) -> None:
    originals = project.path.parent.as_uri()
    mirrors = mirror.path.parent.as_uri()
    shutil.move(project.path, tmp_path / "original-gone")
    store = RepoStore(tmp_path / "cache", mirrors=[(originals, mirrors)])
    assert store.clone(project.url).is_dir()


@pytest.fixture
def private_mirror(mirror: Upstream) -> Iterator[tuple[GitHTTPServer, str]]:
    password = "mirror-s3cret-pw"
    server = GitHTTPServer(mirror.path.parent, f"bot:{password}")
    yield server, password
    server.close()


def test_a_mirror_password_is_never_shown(
    project: Upstream,
    private_mirror: tuple[GitHTTPServer, str],
    tmp_path: Path,
    trace_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, password = private_mirror
    good = server.url("project.git", f"bot:{password}")
    warnings: list[str] = []
    store = RepoStore(tmp_path / "cache", mirrors={project.url: good}, notice=warnings.append)
    store.clone(project.url)
    assert any("project.git" in request for request in server.requests)
    # A wrong password: refused by the mirror, served by the original, and still never shown.
    wrong = server.url("project.git", "bot:wrong-pw-0042")
    other = RepoStore(tmp_path / "cache2", mirrors={project.url: wrong}, notice=warnings.append)
    other.clone(project.url)
    assert len(warnings) == 1
    seen = "\n".join([*warnings, caplog.text, trace_file.read_text()])
    for secret in (password, "wrong-pw-0042"):
        assert secret not in seen
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_mirror_rules_are_checked_at_start_up(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, tmp_path / "cache", "--repo-mirror", "no-equals-sign")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ORIGINAL=MIRROR*"])
