"""Portable caches: ``pytest-repoclones export`` / ``import``, with real git, a real ``git
daemon`` on loopback, real child processes holding worktrees. Nothing mocked."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Run
from helpers.children import ChildGroup
from helpers.servers import GitDaemon, GitHTTPServer
from inner import run as run_inner
from upstream import Upstream, count_git_commands, git

from pytest_repoclones import PortableCacheError, RepoStore, cli
from pytest_repoclones._export_file import MANIFEST, read_bundle_header
from pytest_repoclones._portable import PortableCache
from pytest_repoclones._ref_plan import RefChange, cache_ref, plan_refs
from pytest_repoclones._remote import PIN_PREFIX, REMOTE_HEAD

ORIGIN = "refs/remotes/origin/"


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., GitDaemon]]:
    if shutil.which("git") is None or subprocess.run(
        ["git", "daemon", "--help"], capture_output=True, check=False
    ).returncode not in (0, 129):
        pytest.skip("git daemon is not installed")
    started: list[GitDaemon] = []

    def make(root: Path, trace: Path | None = None) -> GitDaemon:
        started.append(GitDaemon(root, tmp_path / f"daemon{len(started)}.log", trace))
        return started[-1]

    yield make
    for daemon in started:
        daemon.stop()


def run_cli(
    cache_dir: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """The command against another cache than the ``run`` fixture's."""
    capsys.readouterr()
    status = cli.main(["--cache-dir", str(cache_dir), *args])
    out, err = capsys.readouterr()
    return status, out, err


def refs_of(git_dir: Path) -> dict[str, str]:
    lines = git(f"--git-dir={git_dir}", "for-each-ref", "--format=%(objectname) %(refname)")
    return {ref: sha for sha, ref in (line.split(" ", 1) for line in lines.splitlines())}


def manifest_of(path: Path) -> dict[str, Any]:
    with tarfile.open(path) as tar:
        handle = tar.extractfile(MANIFEST)
        assert handle is not None
        document: dict[str, Any] = json.loads(handle.read())
        return document


def leftovers(cache_dir: Path) -> list[str]:
    tmp = cache_dir / "tmp"
    return sorted(path.name for path in tmp.iterdir()) if tmp.is_dir() else []


# -- the round trip --------------------------------------------------------------------------

OFFLINE_SUITE = """
import pytest

URL = {url!r}
EXPECTED = {expected!r}


@pytest.mark.parametrize("commit", sorted(EXPECTED))
def test_worktree_at_an_exported_commit(worktree, commit):
    wt = worktree(URL, None if commit == "(default)" else commit)
    assert wt.commit == EXPECTED[commit]
    assert (wt / "README.md").is_file()


@pytest.mark.worktree(URL, ["v1.0", {pr!r}])
def test_marker_declared_commits(repo_worktree):
    assert repo_worktree.commit in EXPECTED.values()
"""


def test_round_trip_from_a_daemon_to_an_offline_xdist_run(
    run: Run,
    upstream: Upstream,
    make_daemon: Callable[..., GitDaemon],
    tmp_path: Path,
    pytester: pytest.Pytester,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon = make_daemon(upstream.path.parent)
    url = daemon.url("project.git")
    pr = upstream.rev("refs/pull/7/head")  # on no branch: only prefetch's pin brings it
    status, out, err = run("prefetch", url, "v1.0", pr, "feature")
    assert status == 0, err
    served = daemon.upload_packs
    assert served >= 2, "cloned, then fetched the pull request's commit by name"

    export = tmp_path / "ci-cache" / "repoclones.tar"
    export.parent.mkdir()
    status, out, err = run("export", str(export))
    assert status == 0, err
    assert f"exported {url}: " in out
    assert "1 pinned commit" in out
    assert f"wrote {export}: 1 repository, " in out
    record = manifest_of(export)["repositories"][0]
    assert record["url"] == url
    assert record["pins"] == [pr]
    assert record["head"] == upstream.rev("main")
    assert record["default_branch"] == "main"
    with tarfile.open(export) as tar:
        assert tar.getnames() == [MANIFEST, f"bundles/{record['key']}.bundle"]

    restored = tmp_path / "restored-cache"
    status, out, err = run_cli(restored, capsys, "import", str(export))
    assert status == 0, err
    assert f"imported {url} into {restored}/repos/{record['key']}.git: " in out
    assert "(1 pinned commit)" in out
    assert leftovers(restored) == []

    daemon.stop()
    trace = tmp_path / "offline-trace.jsonl"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    expected = {
        "main": upstream.rev("main"),
        "(default)": upstream.rev("main"),
        "v1.0": upstream.rev("v1.0^{commit}"),
        "v1.1": upstream.rev("v1.1"),
        "feature": upstream.rev("feature"),
        pr: pr,
        pr[:10]: pr,  # an abbreviation resolves in the cache, offline
    }
    pytester.makepyfile(test_offline=OFFLINE_SUITE.format(url=url, expected=expected, pr=pr))
    result = run_inner(pytester, restored, "-n", "2", "--repo-offline")
    result.assert_outcomes(passed=len(expected) + 2)
    assert count_git_commands(trace, "update-ref") > 0, "the inner run's git was traced"
    assert count_git_commands(trace, "fetch") == 0
    assert count_git_commands(trace, "clone") == 0
    assert daemon.upload_packs == served, "0 upload-packs after the export"


# -- a cache in use --------------------------------------------------------------------------


def test_import_into_a_cache_in_use_adds_and_advances_but_never_moves_refs_back(
    run: Run,
    upstream: Upstream,
    cache_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The cache in use: another process holds a worktree of the entry the import updates.
    status, _, err = run("prefetch", upstream.url, "main", "feature", "v1.1")
    assert status == 0, err
    git_dir = RepoStore(cache_dir).git_dir(upstream.url)
    old_export = tmp_path / "old.tar"
    assert run("export", str(old_export))[0] == 0
    before = refs_of(git_dir)

    # Upstream moves on; a second cache sees its new state, and is exported.
    old_main, old_feature, old_v11 = (upstream.rev(r) for r in ("main", "feature", "v1.1"))
    new_main = upstream.commit({"NEWS": "4\n"}, "fourth")
    upstream.tag("v2.0", new_main)
    upstream.tag("v1.1", new_main)  # a moved tag: the cache in use keeps its own
    upstream.commit({"x": "y"}, "rewritten", branch="feature", parent="")  # diverged
    pull = upstream.commit({"pr.txt": "8\n"}, "pr 8", parent=old_main, ref="refs/pull/8/head")
    other = tmp_path / "other-cache"
    status, _, err = run_cli(other, capsys, "prefetch", upstream.url, "main", "v2.0", pull)
    assert status == 0, err
    new_export = tmp_path / "new.tar"
    assert run_cli(other, capsys, "export", str(new_export))[0] == 0

    with ChildGroup(tmp_path / "logs") as group:
        holder = group.start(
            "hold-worktree",
            {"cache": str(cache_dir), "url": upstream.url, "commit": old_main,
             "path": str(tmp_path / "held")},
        )  # fmt: skip
        ready = json.loads(holder.wait_ready())
        branch = f"refs/heads/{ready['branch']}"
        assert refs_of(git_dir)[branch] == old_main
        # And a session making and removing worktrees of the entry all along.
        commits = {old_main: ["CHANGES", "3\n"], old_v11: ["run.sh", "#!/bin/sh\necho hi\n"]}
        busy = group.start(
            "worktrees",
            {"cache": str(cache_dir), "url": upstream.url, "rounds": 4, "seed": 1,
             "root": str(tmp_path / "busy"), "commits": commits},
        )  # fmt: skip
        busy.wait_ready()
        busy.send("go")

        objects_before = _object_count(git_dir)
        status, out, err = run("import", str(new_export))
        assert status == 0, err
        assert f"updated {upstream.url}: " in out
        # Only what the entry lacked came in, not the bundle's whole history again.
        added = _object_count(git_dir) - objects_before
        assert 0 < added < _object_count(RepoStore(other).git_dir(upstream.url)) / 2
        after = refs_of(git_dir)
        assert after[ORIGIN + "main"] == new_main, "a branch moves forward"
        assert after[REMOTE_HEAD] == new_main
        assert after["refs/tags/v2.0"] == new_main, "a new tag is added"
        assert after[PIN_PREFIX + pull] == pull, "a pin is added"
        assert after["refs/tags/v1.1"] == old_v11, "an existing tag keeps its commit"
        assert after[ORIGIN + "feature"] == old_feature, "a diverged branch is kept"
        assert after[branch] == old_main, "the live worktree's branch is untouched"
        assert {ref for ref in before if ref not in after} == set(), "nothing deleted"
        assert "kept as the cache has them" in out
        assert leftovers(cache_dir) == []
        assert busy.finish()["errors"] == []

        # The worktree still works, whole history included, and is removed as usual.
        held = tmp_path / "held"
        assert git("-C", str(held), "status", "--porcelain") == ""
        assert pull in git("-C", str(held), "log", "--all", "--format=%H")
        holder.send("remove")
        holder.finish()
    assert not (tmp_path / "held").exists()

    # An older export never moves anything back.
    status, out, err = run("import", str(old_export))
    assert status == 0, err
    assert f"up to date {upstream.url}: " in out
    assert refs_of(git_dir)[ORIGIN + "main"] == new_main
    assert RepoStore(cache_dir, offline=True).resolve(upstream.url, pull) == pull


def _object_count(git_dir: Path) -> int:
    counts = dict(
        line.split(": ", 1)
        for line in git(f"--git-dir={git_dir}", "count-objects", "-v").splitlines()
    )
    return int(counts["count"]) + int(counts["in-pack"])


def test_plan_refs_policy() -> None:
    a, b, c = ("a" * 40, "b" * 40, "c" * 40)

    def descends(old: str, new: str) -> bool:
        return (old, new) == (a, b)  # b descends from a; c is on another line

    wanted = {
        ORIGIN + "main": b,  # a -> b: forward
        ORIGIN + "dev": a,  # c -> a: backwards or sideways
        "refs/tags/v1": b,  # a -> b: a tag keeps its commit
        PIN_PREFIX + c: c,  # new pin
        ORIGIN + "same": a,
        "refs/tags/x/y": a,  # under an existing tag: a clash
    }
    current = {
        ORIGIN + "main": a,
        ORIGIN + "dev": c,
        "refs/tags/v1": a,
        ORIGIN + "same": a,
        "refs/tags/x": c,
    }
    verdicts = {change.ref: change.verdict for change in plan_refs(wanted, current, descends)}
    assert verdicts == {
        ORIGIN + "main": "advanced",
        ORIGIN + "dev": "kept",
        "refs/tags/v1": "kept",
        PIN_PREFIX + c: "added",
        ORIGIN + "same": "same",
        "refs/tags/x/y": "kept",
    }
    assert RefChange(ORIGIN + "main", b, a, "advanced") in plan_refs(wanted, current, descends)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("HEAD", REMOTE_HEAD),
        ("refs/heads/main", ORIGIN + "main"),
        ("refs/tags/v1.0", "refs/tags/v1.0"),
        ("refs/pull/7/head", "refs/repoclones/named/pull/7/head"),
        (PIN_PREFIX + "a" * 40, PIN_PREFIX + "a" * 40),
        ("refs/remotes/origin/main", None),  # another clone's idea of a remote
        ("refs/repoclones/other", None),
        ("refs/heads/../../x", None),
        ("refs/heads/a b", None),
        ("refs/heads/x.lock", None),
    ],
)
def test_where_bundle_refs_go_in_the_cache(ref: str, expected: str | None) -> None:
    assert cache_ref(ref) == expected


# -- subsets, empty caches, secrets ----------------------------------------------------------


def test_export_of_some_repositories_and_import_of_some(
    run: Run,
    make_upstream: Callable[..., Upstream],
    cache_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ups = []
    for name in ("alpha", "beta", "gamma"):
        up = make_upstream(name)
        up.commit({"README.md": f"# {name}\n"}, "initial")
        ups.append(up)
        assert run("prefetch", up.url)[0] == 0
    alpha, beta, gamma = ups

    two = tmp_path / "two.tar"
    missing = (tmp_path / "not-cached").as_uri()
    status, out, err = run("export", str(two), alpha.url, str(beta.path), missing)
    assert status == 1, "a URL not in the cache fails, the others are exported"
    assert f"FAILED {missing}: not in the cache" in out
    assert f"wrote {two}: 2 repositories" in out
    assert "error: 1 repository could not be exported" in err
    assert sorted(r["url"] for r in manifest_of(two)["repositories"]) == [alpha.url, beta.url]

    target = tmp_path / "target"
    status, out, err = run_cli(target, capsys, "import", str(two), "--url", beta.url)
    assert status == 0, err
    assert [line.split()[0] for line in out.splitlines()[:-1]] == ["imported"]
    assert RepoStore(target, offline=True).resolve(beta.url) == beta.rev("main")
    assert not RepoStore(target).git_dir(alpha.url).exists()

    status, out, err = run_cli(target, capsys, "import", str(two), "--url", gamma.url)
    assert status == 1
    assert f"FAILED {gamma.url}: not in {two}" in out

    # All of it: an entry a killed clone left unfinished is skipped, not a failure.
    gamma_dir = RepoStore(cache_dir).git_dir(gamma.url)
    (gamma_dir / "repoclones.json").unlink()
    everything = tmp_path / "all.tar"
    status, out, err = run("export", str(everything))
    assert status == 0, err
    assert f"skipped (incomplete entry {gamma_dir.name}): incomplete" in out
    assert sorted(r["url"] for r in manifest_of(everything)["repositories"]) == [
        alpha.url,
        beta.url,
    ]


def test_export_of_an_empty_cache_imports_as_nothing(
    run: Run, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.tar"
    status, out, err = run("export", str(empty))
    assert status == 0, err
    assert f"wrote {empty}: 0 repositories" in out
    assert manifest_of(empty)["repositories"] == []
    assert not cache_dir.exists(), "exporting does not create the cache"

    status, out, err = run_cli(tmp_path / "other", capsys, "import", str(empty))
    assert status == 0, err
    assert f"no repositories in {empty}" in out


def test_no_secret_reaches_the_export_file(
    run: Run, upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    server = GitHTTPServer(upstream.path.parent, credentials="deploy:s3cr%t-pw")
    try:
        url = server.url("project.git", userinfo="deploy:s3cr%25t-pw")
        pr = upstream.rev("refs/pull/7/head")
        status, _, err = run("prefetch", url, "v1.0", pr)
        assert status == 0, err
    finally:
        server.close()
    export, bundle = tmp_path / "cache.tar", tmp_path / "one.bundle"
    status, out, err = run("export", str(export))
    assert status == 0, err
    assert run("export", "--bundle", str(bundle), url)[0] == 0
    shown = url.replace("s3cr%25t-pw", "***")
    assert manifest_of(export)["repositories"][0]["url"] == shown
    for path in (export, bundle):
        data = path.read_bytes()
        for secret in (b"s3cr%t-pw", b"s3cr%25t-pw", b"s3cr%2525t-pw", b"s3cr"):
            assert secret not in data, (path.name, secret)
    assert "s3cr" not in out + err

    # Imported under the same entry, with the redacted URL recorded: still no secret.
    target = tmp_path / "target"
    assert cli.main(["--cache-dir", str(target), "import", str(export)]) == 0
    (git_dir,) = (target / "repos").iterdir()
    assert git_dir == RepoStore(target).git_dir(url)
    assert json.loads((git_dir / "repoclones.json").read_text())["url"] == shown
    for file in git_dir.rglob("*"):
        if file.is_file():
            assert b"s3cr" not in file.read_bytes(), file


# -- what cannot be exported or imported -----------------------------------------------------


def test_a_partial_clone_is_refused_and_left_as_it_is(
    run: Run, upstream: Upstream, cache_dir: Path, tmp_path: Path, trace_file: Path
) -> None:
    status, _, err = run("prefetch", "--filter", "blob:none", upstream.url)
    assert status == 0, err
    git_dir = RepoStore(cache_dir).git_dir(upstream.url)
    objects_before = git("--git-dir", str(git_dir), "count-objects", "-v")
    trace_file.unlink(missing_ok=True)

    export = tmp_path / "cache.tar"
    status, out, err = run("export", str(export))
    assert status == 1
    assert f"FAILED {upstream.url}: Cannot export a partial clone (filter blob:none)" in out
    assert "a filtered bundle would give an entry that cannot check anything out offline" in out
    assert manifest_of(export)["repositories"] == []
    with pytest.raises(PortableCacheError, match="partial clone"):
        PortableCache(cache_dir).export_bundle(tmp_path / "one.bundle", upstream.url)
    assert not (tmp_path / "one.bundle").exists()
    # Nothing fetched the missing blobs: the entry is still the partial clone it was.
    assert count_git_commands(trace_file, "fetch") == 0
    assert git("--git-dir", str(git_dir), "count-objects", "-v") == objects_before


def test_why_partial_clones_are_refused_git_bundle_fetches_missing_blobs(
    upstream: Upstream, tmp_path: Path
) -> None:
    """The fact behind the refusal, on the git at hand: `git bundle create` in a partial
    clone fetches every missing blob from the remote, and fails once it is gone."""
    clone = tmp_path / "partial.git"
    git("clone", "-q", "--bare", "--filter=blob:none", upstream.url, str(clone))

    def missing() -> list[str]:
        listed = git("--git-dir", str(clone), "rev-list", "--objects", "--all", "--missing=print")
        return [line[1:] for line in listed.splitlines() if line.startswith("?")]

    assert missing(), "test setup: a partial clone lacks blobs"
    shutil.move(upstream.path, tmp_path / "gone.git")
    result = subprocess.run(
        ["git", f"--git-dir={clone}", "bundle", "create", str(tmp_path / "b"), "--all"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "promisor remote" in result.stderr
    shutil.move(tmp_path / "gone.git", upstream.path)
    git("--git-dir", str(clone), "bundle", "create", str(tmp_path / "b"), "--all")
    assert missing() == [], "every missing blob was fetched on the way"


def test_a_shallow_entry_is_refused_and_so_is_a_bundle_made_of_one(
    run: Run, upstream: Upstream, cache_dir: Path, tmp_path: Path
) -> None:
    store = RepoStore(cache_dir, shallow=True)
    assert store.resolve(upstream.url, "main") == upstream.rev("main")
    git_dir = store.git_dir(upstream.url)
    status, out, _ = run("export", str(tmp_path / "cache.tar"))
    assert status == 1
    assert f"FAILED {upstream.url}: Cannot export a shallow entry" in out

    assert (git_dir / "shallow").is_file()

    # git itself bundles a shallow clone without a word; import's connectivity check refuses
    # what it made.
    shallow_clone = tmp_path / "shallow-clone.git"
    git("clone", "-q", "--bare", "--depth=1", upstream.url, str(shallow_clone))
    made_by_git = tmp_path / "shallow.bundle"
    git("--git-dir", str(shallow_clone), "bundle", "create", str(made_by_git), "--all")
    target = tmp_path / "target"
    status, out, _ = run_cli_plain(target, "import", str(made_by_git), "--url", upstream.url)
    assert status == 1
    assert f"FAILED {upstream.url}: The bundle is incomplete" in out
    assert list((target / "repos").iterdir()) == []
    assert leftovers(target) == []


def run_cli_plain(cache_dir: Path, *args: str) -> tuple[int, str, str]:
    """The command as a separate process (its own output, no capsys needed)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest_repoclones", "--cache-dir", str(cache_dir), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def _flip_byte_in_bundle(path: Path) -> None:
    with tarfile.open(path) as tar:
        member = tar.getmember(tar.getnames()[1])
        offset = member.offset_data + member.size // 2
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, "is damaged or truncated"),
        (_flip_byte_in_bundle, "does not match its checksum"),
        (lambda path: path.write_bytes(b""), "neither a pytest-repoclones export file"),
        (lambda path: path.write_bytes(os.urandom(4096)), "neither a pytest-repoclones"),
    ],
    ids=["truncated", "flipped-byte", "empty", "random"],
)
def test_a_damaged_export_file_imports_nothing(
    run: Run,
    big_upstream: Upstream,
    upstream: Upstream,
    cache_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    message: str,
) -> None:
    for up in (upstream, big_upstream):  # the second bundle is the one cut or changed
        assert run("prefetch", up.url)[0] == 0
    export = tmp_path / "cache.tar"
    assert run("export", str(export), upstream.url, big_upstream.url)[0] == 0
    damage(export)

    # Into an empty cache, and into one holding the first repository: nothing changes.
    populated = tmp_path / "populated"
    assert run_cli(populated, capsys, "prefetch", upstream.url)[0] == 0
    before = refs_of(RepoStore(populated).git_dir(upstream.url))
    for target in (tmp_path / "empty", populated):
        status, out, err = run_cli(target, capsys, "import", str(export))
        assert status == 1
        assert message in err
        assert "Traceback" not in err
        assert "imported" not in out
        assert leftovers(target) == []
    assert not (tmp_path / "empty" / "repos").is_dir() or not any(
        (tmp_path / "empty" / "repos").iterdir()
    )
    assert refs_of(RepoStore(populated).git_dir(upstream.url)) == before


def test_a_truncated_plain_bundle_fails_cleanly(
    run: Run, big_upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("prefetch", big_upstream.url)[0] == 0
    bundle = tmp_path / "big.bundle"
    assert run("export", "--bundle", str(bundle), big_upstream.url)[0] == 0
    _truncate(bundle)
    target = tmp_path / "target"
    status, out, _ = run_cli(target, capsys, "import", str(bundle), "--url", big_upstream.url)
    assert status == 1
    assert f"FAILED {big_upstream.url}: The bundle could not be unpacked" in out
    assert list((target / "repos").iterdir()) == []
    assert leftovers(target) == []


def test_a_filtered_or_urlless_bundle_is_refused(
    run: Run, upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filtered = tmp_path / "filtered.bundle"
    git("--git-dir", str(upstream.path), "bundle", "create", str(filtered), "--all",
        "--filter=blob:none")  # fmt: skip
    assert read_bundle_header(filtered).capabilities["filter"] == "blob:none"
    status, out, _ = run("import", str(filtered), "--url", upstream.url)
    assert status == 1
    assert f"FAILED {upstream.url}: The bundle is filtered (blob:none)" in out

    status, _, err = run("import", str(filtered))
    assert status == 2
    assert "is a plain git bundle: name the repository it holds with --url URL" in err


def test_an_export_file_of_a_newer_format_is_refused(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newer = tmp_path / "newer.tar"
    data = json.dumps({"format": "pytest-repoclones-export", "version": 99}).encode()
    with tarfile.open(newer, "w") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, fileobj=io.BytesIO(data))
    status, _, err = run("import", str(newer))
    assert status == 1
    assert "written by a newer pytest-repoclones (export format 99" in err


# -- bundle URIs -----------------------------------------------------------------------------


def _git_version() -> tuple[int, ...]:
    text = git("--version").split()[2]
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def test_a_plain_bundle_seeds_git_clone_bundle_uri_and_imports(
    run: Run,
    upstream: Upstream,
    make_daemon: Callable[..., GitDaemon],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon = make_daemon(upstream.path.parent, trace=tmp_path / "daemon-trace.jsonl")
    url = daemon.url("project.git")
    pr = upstream.rev("refs/pull/7/head")
    assert run("prefetch", url, pr)[0] == 0
    bundle = tmp_path / "project.bundle"
    status, out, err = run("export", "--bundle", str(bundle), url)
    assert status == 0, err
    assert f"wrote {bundle}: a git bundle" in out
    listed = git("bundle", "list-heads", str(bundle)).splitlines()
    heads = {ref: sha for sha, ref in (line.split(" ", 1) for line in listed)}
    assert heads["HEAD"] == heads["refs/heads/main"] == upstream.rev("main")
    assert heads[PIN_PREFIX + pr] == pr

    # A plain git bundle: git clones it as it is.
    git("clone", "-q", str(bundle), str(tmp_path / "from-bundle"))
    assert git("-C", str(tmp_path / "from-bundle"), "rev-parse", "HEAD") == upstream.rev("main")

    # And imports as the repository named, offline afterwards.
    target = tmp_path / "target"
    status, out, err = run_cli(target, capsys, "import", str(bundle), "--url", url)
    assert status == 0, err
    assert f"imported {url} into " in out
    offline = RepoStore(target, offline=True)
    assert offline.resolve(url, pr) == pr
    assert offline.resolve(url) == upstream.rev("main")

    if _git_version() < (2, 38):
        pytest.skip("git clone --bundle-uri needs git >= 2.38")
    upstream.commit({"NEWS": "after the bundle\n"}, "newer than the bundle")
    plain, seeded = tmp_path / "plain.git", tmp_path / "seeded.git"
    git("clone", "-q", "--bare", url, str(plain))
    git("clone", "-q", "--bare", f"--bundle-uri={bundle}", url, str(seeded))
    full, rest = daemon.objects_sent()[-2:]
    assert rest < full, "the daemon sent only what the bundle lacked"
    seeded_refs = refs_of(seeded)
    assert seeded_refs["refs/bundles/main"] == heads["refs/heads/main"]
    assert seeded_refs["refs/heads/main"] == upstream.rev("main")
    git("--git-dir", str(seeded), "fsck", "--connectivity-only", "--no-progress")
