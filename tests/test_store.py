"""RepoStore used directly, as a script would: every commit form, every user error."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.messages import message_of, raises_saying
from upstream import Upstream, count_git_commands, git

from pytest_repoclones import (
    CommitNotFoundError,
    InvalidInputError,
    RemoteError,
    RepoClonesError,
    RepoStore,
    Worktree,
    WorktreeError,
)


def head_of(worktree: Worktree) -> str:
    return git("rev-parse", "HEAD", cwd=worktree.path)


# -- commit forms -------------------------------------------------------------------------


def test_full_object_name(store: RepoStore, upstream: Upstream) -> None:
    sha = upstream.rev("v1.1^{commit}")
    assert store.resolve(upstream.url, sha) == sha


def test_abbreviated_object_name(store: RepoStore, upstream: Upstream) -> None:
    sha = upstream.rev("v1.1^{commit}")
    assert store.resolve(upstream.url, sha[:7]) == sha


def test_branch_name(store: RepoStore, upstream: Upstream) -> None:
    assert store.resolve(upstream.url, "feature") == upstream.rev("refs/heads/feature")


def test_full_branch_ref(store: RepoStore, upstream: Upstream) -> None:
    assert store.resolve(upstream.url, "refs/heads/feature") == upstream.rev("refs/heads/feature")


def test_lightweight_tag(store: RepoStore, upstream: Upstream) -> None:
    assert store.resolve(upstream.url, "v1.1") == upstream.rev("v1.1")


def test_annotated_tag_peels_to_its_commit(store: RepoStore, upstream: Upstream) -> None:
    tag_object = upstream.rev("refs/tags/v1.0")
    commit = upstream.rev("v1.0^{commit}")
    assert tag_object != commit
    assert store.resolve(upstream.url, "v1.0") == commit
    # Given by the tag object's own name, it still peels.
    assert store.resolve(upstream.url, tag_object) == commit


def test_none_is_the_remote_default_branch(store: RepoStore, make_upstream) -> None:  # type: ignore[no-untyped-def]
    up = make_upstream("trunky", default_branch="trunk")
    up.commit({"a": "1"}, branch="trunk")
    newest = up.commit({"a": "2"}, branch="trunk")
    up.commit({"b": "other"}, branch="aaa-first-alphabetically")
    assert store.resolve(up.url, None) == newest


def test_commit_only_under_a_pull_request_ref_is_fetched_by_name(
    store: RepoStore, upstream: Upstream, trace_file: Path
) -> None:
    pr = upstream.rev("refs/pull/7/head")
    store.clone(upstream.url)
    assert (
        subprocess.run(
            ["git", f"--git-dir={store.git_dir(upstream.url)}", "cat-file", "-e", pr], check=False
        ).returncode
        != 0
    ), "the first clone must not contain the pull-request commit"
    assert store.resolve(upstream.url, pr) == pr
    assert count_git_commands(trace_file, "upload-pack") == 2  # the clone, then one fetch
    # Pinned under a private ref so that no maintenance can ever drop it.
    pins = git(f"--git-dir={store.git_dir(upstream.url)}", "for-each-ref", "refs/repoclones/")
    assert pr in pins


def test_pull_request_ref_by_name(store: RepoStore, upstream: Upstream) -> None:
    assert store.resolve(upstream.url, "refs/pull/7/head") == upstream.rev("refs/pull/7/head")


def test_uppercase_full_name_is_accepted(store: RepoStore, upstream: Upstream) -> None:
    sha = upstream.rev("main")
    assert store.resolve(upstream.url, sha.upper()) == sha


def test_abbreviation_that_is_really_a_branch_name(store: RepoStore, upstream: Upstream) -> None:
    target = upstream.commit({"x": "1"}, branch="cafebabe")
    assert store.resolve(upstream.url, "cafebabe") == target


# -- the cache ----------------------------------------------------------------------------


def test_clone_returns_a_bare_git_dir_named_after_the_url(
    store: RepoStore, upstream: Upstream
) -> None:
    git_dir = store.clone(upstream.url)
    assert git_dir.parent == store.cache_dir / "repos"
    assert git_dir.name.startswith("project-")
    assert git_dir.name.endswith(".git")
    assert git("--git-dir", str(git_dir), "rev-parse", "--is-bare-repository") == "true"
    assert (git_dir / "repoclones.json").is_file()
    assert list((store.cache_dir / "tmp").iterdir()) == []


def test_url_variants_share_one_clone(
    store: RepoStore, upstream: Upstream, trace_file: Path
) -> None:
    first = store.clone(upstream.url)
    assert upstream.url.endswith(".git")
    assert store.clone(upstream.url[: -len(".git")]) == first
    assert store.clone(upstream.url + "/") == first
    assert store.clone(str(upstream.path)) == first
    assert count_git_commands(trace_file, "upload-pack") == 1
    assert len(list((store.cache_dir / "repos").iterdir())) == 1


def test_cached_full_name_never_touches_the_network(
    cache_dir: Path, upstream: Upstream, trace_file: Path, tmp_path: Path
) -> None:
    sha = upstream.rev("v1.1")
    RepoStore(cache_dir).clone(upstream.url)
    before = count_git_commands(trace_file, "upload-pack")
    fresh = RepoStore(cache_dir)  # a new session
    worktree = fresh.add_worktree(upstream.url, sha, tmp_path / "wt")
    assert count_git_commands(trace_file, "upload-pack") == before
    assert fresh.stats[next(iter(fresh.stats))].cache_hits == 1
    fresh.remove_worktree(worktree)


def test_cached_commit_keeps_working_when_the_remote_is_gone(
    cache_dir: Path, upstream: Upstream, tmp_path: Path
) -> None:
    sha = upstream.rev("v1.1")
    RepoStore(cache_dir).clone(upstream.url)
    shutil.rmtree(upstream.path)
    store = RepoStore(cache_dir)
    worktree = store.add_worktree(upstream.url, sha, tmp_path / "wt")
    assert head_of(worktree) == sha
    store.remove_worktree(worktree)
    with raises_saying(RemoteError, "Could not fetch") as info:
        store.resolve(upstream.url, "main")
    assert upstream.url in str(info.value)


def test_moving_names_refresh_once_per_session(cache_dir: Path, upstream: Upstream) -> None:
    store = RepoStore(cache_dir)
    old = store.resolve(upstream.url, "main")
    new = upstream.commit({"later": "1"}, "pushed later")
    assert store.resolve(upstream.url, "main") == old, "same session: no second refresh"
    assert store.resolve(upstream.url, None) == old
    assert RepoStore(cache_dir).resolve(upstream.url, "main") == new, "new session refreshes"


def test_sessions_sharing_an_id_refresh_once(
    cache_dir: Path, upstream: Upstream, trace_file: Path
) -> None:
    RepoStore(cache_dir, session_id="run-1").resolve(upstream.url, "main")
    RepoStore(cache_dir, session_id="run-1").resolve(upstream.url, "feature")
    assert count_git_commands(trace_file, "upload-pack") == 1


def test_concurrent_runs_each_refresh_once(
    cache_dir: Path, upstream: Upstream, trace_file: Path
) -> None:
    """Two runs interleaving on one cache: a later worker of either run does not refresh again
    because the other run refreshed in between."""
    RepoStore(cache_dir, session_id="run-1").resolve(upstream.url, "main")  # clone
    RepoStore(cache_dir, session_id="run-2").resolve(upstream.url, "main")  # refresh
    assert count_git_commands(trace_file, "upload-pack") == 2
    RepoStore(cache_dir, session_id="run-1").resolve(upstream.url, "feature")
    RepoStore(cache_dir, session_id="run-2").resolve(upstream.url, None)
    assert count_git_commands(trace_file, "upload-pack") == 2
    for n in range(40):  # older runs are forgotten, the newest kept
        RepoStore(cache_dir, session_id=f"later-{n}").resolve(upstream.url, "main")
    RepoStore(cache_dir, session_id="later-39").resolve(upstream.url, "main")
    assert count_git_commands(trace_file, "upload-pack") == 42
    RepoStore(cache_dir, session_id="run-1").resolve(upstream.url, "main")
    assert count_git_commands(trace_file, "upload-pack") == 43


def test_branches_deleted_upstream_are_gone_after_refresh(
    cache_dir: Path, upstream: Upstream, tmp_path: Path
) -> None:
    """A branch deleted upstream is not served by the next session, and a new branch named
    like its parent directory (release/2.x -> release) does not clash with the old one."""
    c1 = upstream.rev("v1.0^{commit}")
    upstream.set_ref("refs/heads/release/2.x", c1)
    first = RepoStore(cache_dir, session_id="one")
    kept = first.add_worktree(upstream.url, "release/2.x", tmp_path / "kept")
    first_tag = first.git_dir(upstream.url) / "refs" / "tags" / "local-only"
    first_tag.write_text(c1 + "\n")  # a tag made in the shared cache by a test's worktree
    upstream.delete_ref("refs/heads/release/2.x")
    upstream.set_ref("refs/heads/release", upstream.rev("main"))
    upstream.set_ref("refs/tags/v1.1", c1)  # a moved tag is followed

    second = RepoStore(cache_dir, session_id="two")
    with raises_saying(CommitNotFoundError, r"release/2\.x"):
        second.resolve(upstream.url, "release/2.x")
    assert second.resolve(upstream.url, "release") == upstream.rev("main")
    assert second.resolve(upstream.url, None) == upstream.rev("main")
    assert second.resolve(upstream.url, "v1.1") == c1
    # Tags are never pruned: one a test made in the shared cache survives.
    assert second.resolve(upstream.url, "local-only") == c1
    # The worktree made from the deleted branch is untouched, its commit still served.
    assert head_of(kept) == c1
    assert second.resolve(upstream.url, c1) == c1
    first.remove_worktree(kept)


def test_missing_commit_is_fetched_once(
    store: RepoStore, upstream: Upstream, trace_file: Path, tmp_path: Path
) -> None:
    store.clone(upstream.url)
    new = upstream.commit({"n": "1"}, "new upstream commit")
    first = store.add_worktree(upstream.url, new, tmp_path / "a")
    second = store.add_worktree(upstream.url, new, tmp_path / "b")
    assert head_of(first) == head_of(second) == new
    assert count_git_commands(trace_file, "upload-pack") == 2
    store.remove_worktree(first)
    store.remove_worktree(second)


def test_cache_protects_itself_from_gc(store: RepoStore, upstream: Upstream) -> None:
    git_dir = store.clone(upstream.url)
    config = f"--git-dir={git_dir}"
    assert git(config, "config", "gc.auto") == "0"
    assert git(config, "config", "maintenance.auto") == "false"
    assert git(config, "config", "core.hooksPath") == "/dev/null"


def test_half_made_clone_is_replaced(store: RepoStore, upstream: Upstream, cache_dir: Path) -> None:
    git_dir = store.git_dir(upstream.url)
    git_dir.mkdir(parents=True)
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")  # no objects, no marker
    assert store.resolve(upstream.url, "v1.1") == upstream.rev("v1.1")
    assert (git_dir / "repoclones.json").is_file()


# -- worktrees ----------------------------------------------------------------------------


def test_worktree_is_checked_out_clean_on_a_new_branch(
    store: RepoStore, upstream: Upstream, tmp_path: Path
) -> None:
    worktree = store.add_worktree(upstream.url, "v1.0", tmp_path / "wt")
    assert worktree.path == tmp_path / "wt"
    assert worktree.url == upstream.url
    assert worktree.commit == upstream.rev("v1.0^{commit}") == head_of(worktree)
    assert (worktree / "src" / "app.py").read_text() == "VERSION = 1\n"
    assert git("status", "--porcelain", "--ignored", cwd=worktree.path) == ""
    assert git("symbolic-ref", "HEAD", cwd=worktree.path) == f"refs/heads/{worktree.branch}"
    git("check-ref-format", f"refs/heads/{worktree.branch}")
    store.remove_worktree(worktree)


def test_worktree_keeps_file_modes(store: RepoStore, upstream: Upstream, tmp_path: Path) -> None:
    worktree = store.add_worktree(upstream.url, "v1.1", tmp_path / "wt")
    assert os.access(worktree / "run.sh", os.X_OK)
    assert not os.access(worktree / "README.md", os.X_OK)
    store.remove_worktree(worktree)


def test_worktree_is_path_like(store: RepoStore, upstream: Upstream, tmp_path: Path) -> None:
    worktree = store.add_worktree(upstream.url, None, tmp_path / "wt")
    assert os.fspath(worktree) == str(tmp_path / "wt")
    with open(worktree / "README.md") as handle:
        assert handle.read().startswith("# project")
    out = subprocess.run(["ls"], cwd=worktree, capture_output=True, text=True, check=True)
    assert "README.md" in out.stdout
    with pytest.raises(AttributeError):
        worktree.commit = "x"  # type: ignore[misc]
    store.remove_worktree(worktree)


def test_remove_worktree_leaves_nothing_behind(
    store: RepoStore, upstream: Upstream, tmp_path: Path
) -> None:
    worktree = store.add_worktree(upstream.url, "main", tmp_path / "wt")
    (worktree / "new-file").write_text("x")
    git("add", "-A", cwd=worktree.path)
    git("commit", "-qm", "local change", cwd=worktree.path)
    (worktree / "src").chmod(0o500)
    store.remove_worktree(worktree)
    assert not worktree.path.exists()
    assert store.live_worktrees(upstream.url) == []
    assert store.test_branches(upstream.url) == []
    listing = git(f"--git-dir={worktree.git_dir}", "worktree", "list", "--porcelain")
    assert listing.count("worktree ") == 1  # only the bare repository itself


def test_remove_worktree_while_inside_it(
    store: RepoStore, upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worktree = store.add_worktree(upstream.url, "main", tmp_path / "wt")
    monkeypatch.chdir(worktree.path / "src")
    store.remove_worktree(worktree)
    assert not worktree.path.exists()
    assert Path.cwd().exists()


def test_explicit_branch_name(store: RepoStore, upstream: Upstream, tmp_path: Path) -> None:
    worktree = store.add_worktree(upstream.url, "main", tmp_path / "wt", branch="mine/topic")
    assert worktree.branch == "mine/topic"
    assert git("symbolic-ref", "--short", "HEAD", cwd=worktree.path) == "mine/topic"
    store.remove_worktree(worktree)


def test_many_worktrees_of_one_repository(
    store: RepoStore, upstream: Upstream, tmp_path: Path
) -> None:
    commits = ["v1.0", "v1.1", "main", "feature", None]
    worktrees = [
        store.add_worktree(upstream.url, c, tmp_path / f"wt{i}") for i, c in enumerate(commits)
    ]
    assert len({w.branch for w in worktrees}) == len(commits)
    assert len(store.live_worktrees(upstream.url)) == len(commits)
    for worktree in worktrees:
        store.remove_worktree(worktree)
    assert store.live_worktrees(upstream.url) == []
    assert store.test_branches(upstream.url) == []


# -- errors a user can cause --------------------------------------------------------------


def test_unknown_branch(store: RepoStore, upstream: Upstream) -> None:
    with pytest.raises(CommitNotFoundError) as info:
        store.resolve(upstream.url, "no-such-branch")
    message = str(info.value)
    assert upstream.url in message
    assert "'no-such-branch'" in message


def test_unknown_full_name(store: RepoStore, upstream: Upstream, tmp_path: Path) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(CommitNotFoundError) as info:
        store.add_worktree(upstream.url, missing, tmp_path / "wt")
    message = str(info.value)
    assert missing in message
    assert upstream.url in message
    assert "git: fatal:" in message_of(info.value)  # git's own error line
    assert not (tmp_path / "wt").exists()
    assert store.test_branches(upstream.url) == []


def test_unknown_abbreviation(store: RepoStore, upstream: Upstream) -> None:
    with raises_saying(CommitNotFoundError, "abbreviated"):
        store.resolve(upstream.url, "0123456")


def test_nonexistent_repository(store: RepoStore, tmp_path: Path) -> None:
    url = (tmp_path / "nowhere.git").as_uri()
    with pytest.raises(RemoteError) as info:
        store.clone(url)
    assert url in str(info.value)
    assert "does not appear to be a git repository" in message_of(info.value)
    assert list((store.cache_dir / "repos").iterdir()) == []
    assert list((store.cache_dir / "tmp").iterdir()) == []


def test_path_that_is_not_a_repository(store: RepoStore, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "file").write_text("x")
    with pytest.raises(RemoteError):
        store.clone(str(plain))


def test_repository_with_no_commits(store: RepoStore, make_upstream) -> None:  # type: ignore[no-untyped-def]
    empty = make_upstream("empty")
    with raises_saying(RemoteError, "no commits"):
        store.clone(empty.url)
    assert list((store.cache_dir / "repos").iterdir()) == []


def test_unreachable_host_with_password_is_redacted(store: RepoStore) -> None:
    url = "https://alice:hunter2@127.0.0.1:1/org/repo.git"
    with pytest.raises(RemoteError) as info:
        store.clone(url)
    message = str(info.value)
    assert "hunter2" not in message
    assert "https://alice:***@127.0.0.1:1/org/repo.git" in message
    assert "hunter2" not in " ".join(os.listdir(store.cache_dir / "repos"))


def test_worktree_path_must_be_empty(store: RepoStore, upstream: Upstream, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "file").write_text("x")
    with raises_saying(WorktreeError, "not an empty directory"):
        store.add_worktree(upstream.url, "main", target)


def test_invalid_commit_is_rejected_without_touching_the_cache(
    store: RepoStore, upstream: Upstream, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError):
        store.add_worktree(upstream.url, "--orphan", tmp_path / "wt")
    assert not store.cache_dir.exists() or not any((store.cache_dir / "repos").glob("*"))


def test_errors_share_one_base_class() -> None:
    for cls in (CommitNotFoundError, InvalidInputError, RemoteError, WorktreeError):
        assert issubclass(cls, RepoClonesError)


def test_errors_survive_pickling() -> None:
    import pickle

    error = CommitNotFoundError("gone", url="file:///x", commit="abc1234", git_error="fatal: x")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is CommitNotFoundError
    assert str(copy) == str(error)
    assert copy.commit == "abc1234"


def test_cache_dir_that_is_a_file_is_a_clear_error(tmp_path: Path, upstream: Upstream) -> None:
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("x")
    with pytest.raises(RepoClonesError, match="cache-file") as info:
        RepoStore(not_a_dir).clone(upstream.url)
    assert str(not_a_dir) in str(info.value)  # names it, and says what is wrong with it:
    assert "as the repository cache: Not a directory" in message_of(info.value)


@pytest.mark.parametrize(
    ("commit", "error"),
    [("main~1", InvalidInputError), ("v1.0", RemoteError), (None, RemoteError)],
    ids=["invalid-commit", "clone-fails", "default-branch"],
)
def test_every_error_names_the_repository_and_the_commit(
    store: RepoStore, tmp_path: Path, commit: str | None, error: type[Exception]
) -> None:
    """Even when the failure comes before the commit matters (the URL's clone) or is about
    the commit alone (its syntax), the message says which request failed."""
    url = "https://user:s3cret@127.0.0.1:1/org/repo.git"
    for call in (
        lambda: store.resolve(url, commit),
        lambda: store.add_worktree(url, commit, tmp_path / "wt"),
    ):
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
        assert "repository https://user:***@127.0.0.1:1/org/repo.git" in message
        if commit is not None:
            assert f"commit {commit!r}" in message
        assert "s3cret" not in message
