"""Harness chores on a worktree: git, apply, diff and changed_files, reset.

Real git throughout. Most tests run on every kind of worktree (plain, ``isolate=True``, sparse,
and one reused under ``reuse=True``); patches are made with plain git in a worktree of their own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import stat
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.messages import message_of
from inner import run
from upstream import Upstream

from pytest_repoclones import (
    CommitNotFoundError,
    GitCommandError,
    GitOutput,
    GitTimeoutError,
    InvalidInputError,
    PatchError,
    RepoStore,
    Worktree,
    WorktreeError,
)

APP = [f"line {n}" for n in range(1, 41)]
# A PNG header and bytes no text has: git diffs it as binary.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
SPARSE = ["src/", "tests/"]  # cone mode: also every top-level file; docs/ and data/ skipped
KINDS = ["plain", "isolated", "sparse", "reused"]


def text(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def replaced(lines: list[str], changes: dict[int, str]) -> list[str]:
    """``lines`` with line numbers (1-based) replaced."""
    return [changes.get(n, line) for n, line in enumerate(lines, 1)]


@dataclasses.dataclass
class Project:
    up: Upstream
    c0: str  # where parked worktrees start before reuse moves them
    c1: str  # the base of most patches
    c2: str  # c1 with line 7 of src/app.py changed: the context of a hunk at line 10


@pytest.fixture
def project(make_upstream: Callable[..., Upstream]) -> Project:
    up = make_upstream("project")
    c0 = up.commit({"README.md": "# project\n", "src/app.py": text(APP[:5])}, "c0")
    c1 = up.commit(
        {
            ".gitignore": "*.log\nbuild/\n",
            "src/app.py": text(APP),
            "src/util.py": "def util():\n    return 1\n",
            "tests/test_app.py": "def test_app():\n    pass\n",
            "tests/test_util.py": "def test_util():\n    pass\n",
            "run.sh": ("#!/bin/sh\necho run\n", "100755"),
            "logo.png": PNG,
            "link": ("README.md", "120000"),
            "docs/guide.md": "guide\n",
            "data/crlf.txt": "one\r\ntwo\r\n",
        },
        "c1",
    )
    c2 = up.commit({"src/app.py": text(replaced(APP, {7: "line 7 upstream"}))}, "c2")
    return Project(up, c0, c1, c2)


class Maker:
    """Worktrees of one kind; a reused one is made by parking a worktree at c0 first."""

    def __init__(self, kind: str, project: Project, cache_dir: Path, root: Path) -> None:
        self.kind = kind
        self.project = project
        self.root = root
        self.store = RepoStore(cache_dir, timeout=60, lock_timeout=60, reuse=kind == "reused")
        # Patches are made in plain worktrees of a store that never reuses (nor takes a parked
        # worktree of the store above).
        self.plain_store = RepoStore(cache_dir, timeout=60, lock_timeout=60)
        self.count = 0
        self.reused = 0

    def __call__(self, commit: str) -> Worktree:
        self.count += 1
        url = self.project.up.url
        if self.kind == "reused":
            parked = self.store.add_worktree(url, self.project.c0, self.root / f"p{self.count}")
            self.store.remove_worktree(parked)
            self.reused += 1
        wt = self.store.add_worktree(
            url,
            commit,
            self.root / f"wt{self.count}",
            sparse=SPARSE if self.kind == "sparse" else None,
            isolate=self.kind == "isolated",
        )
        if self.kind == "reused":
            assert sum(s.reused for s in self.store.stats.values()) == self.reused
        return wt

    def plain(self, commit: str) -> Worktree:
        self.count += 1
        return self.plain_store.add_worktree(
            self.project.up.url, commit, self.root / f"src{self.count}"
        )

    def close(self) -> None:
        self.store.close()
        self.plain_store.close()


@pytest.fixture(params=KINDS)
def make(
    request: pytest.FixtureRequest, project: Project, cache_dir: Path, tmp_path: Path
) -> Iterator[Maker]:
    maker = Maker(request.param, project, cache_dir, tmp_path / "wts")
    yield maker
    maker.close()


@pytest.fixture
def plain(project: Project, cache_dir: Path, tmp_path: Path) -> Iterator[Maker]:
    maker = Maker("plain", project, cache_dir, tmp_path / "wts")
    yield maker
    maker.close()


def git(cwd: Path | Worktree, *args: str, input: bytes | None = None) -> bytes:
    """Plain git (not the plugin's), for making patches and looking at the result."""
    result = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def patch_of(source: Worktree, change: Callable[[Path], None]) -> bytes:
    """``git diff --binary`` of ``change`` made in ``source`` (a plain worktree), which is put
    back afterwards."""
    change(source.path)
    git(source, "add", "-A")
    patch = git(source, "diff", "--cached", "--binary")
    git(source, "reset", "-q", "--hard")
    git(source, "clean", "-fdxq")
    return patch


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` but the top ``.git``: type, permission bits and content."""
    found: dict[str, tuple[Any, ...]] = {}
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(top, name)
            rel = path.relative_to(root).as_posix()
            if rel == ".git":
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", oct(stat.S_IMODE(info.st_mode)))
            else:
                found[rel] = ("file", oct(stat.S_IMODE(info.st_mode)), path.read_bytes())
        dirs[:] = [d for d in dirs if not (top == str(root) and d == ".git")]
    return found


def stamps(root: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of every file: a rewrite with the same content changes them."""
    return {
        str(path): (info.st_ino, info.st_mtime_ns)
        for path in root.rglob("*")
        if ".git" not in path.relative_to(root).parts
        for info in [os.lstat(path)]
    }


def index_state(wt: Worktree) -> tuple[bytes, bytes, bytes]:
    """The index file's bytes, what it stages and what status says (nothing rewritten)."""
    index = Path(wt.path, git(wt, "rev-parse", "--git-path", "index").decode().strip())
    quiet = ("--no-optional-locks",)
    return (
        index.read_bytes(),
        git(wt, *quiet, "diff", "--cached", "--binary"),
        git(wt, *quiet, "status", "--porcelain", "-z", "--ignored", "--untracked-files=all"),
    )


# -- wt.git ----------------------------------------------------------------------------------


def test_git_runs_in_the_worktree_and_returns_exact_output(make: Maker, project: Project) -> None:
    wt = make(project.c1)
    head = wt.git("rev-parse", "HEAD")
    assert isinstance(head, GitOutput)
    assert (head.args, head.returncode, head.ok) == (("rev-parse", "HEAD"), 0, True)
    assert head.stdout == f"{wt.commit}\n"
    assert wt.git("status", "--porcelain").stdout == ""
    # Bytes in, bytes out: no newline translation, nothing undecodable lost.
    raw = b"caf\xe9\r\nend\r\n"
    blob = wt.git("hash-object", "-w", "--stdin", input=raw).stdout.strip()
    shown = wt.git("cat-file", "blob", blob).stdout
    assert shown.encode("utf-8", "surrogateescape") == raw
    assert wt.git("hash-object", "--stdin", input="text\n").stdout.strip() == (
        git(wt, "hash-object", "--stdin", input=b"text\n").decode().strip()
    )


def test_git_failure_raises_with_gits_lines_and_a_redacted_repository(
    plain: Maker, project: Project
) -> None:
    wt = plain(project.c1)
    with pytest.raises(GitCommandError) as info:
        wt.git("rev-parse", "--verify", "no-such-branch")
    message = message_of(info.value)
    assert "git rev-parse failed (exit status 128)" in message
    assert "git: fatal: Needed a single revision" in message
    assert project.up.url in str(info.value)
    assert wt.commit in message
    failed = wt.git("rev-parse", "--verify", "no-such-branch", check=False)
    assert (failed.ok, failed.returncode) == (False, 128)
    assert "fatal: Needed a single revision" in failed.stderr
    # The URL as the test gave it may hold a password: never in the message.
    secret = dataclasses.replace(wt, url="https://alice:s3cret@example.com/org/repo.git")
    with pytest.raises(GitCommandError) as info:
        secret.git("-c", "x.y=1", "log", "no-such-branch")
    assert "s3cret" not in str(info.value)
    assert "repository https://alice:***@example.com/org/repo.git" in str(info.value)
    assert "git log failed" in str(info.value)  # named after the command, not its options
    with pytest.raises(InvalidInputError):
        wt.git("log", Path("x"))  # type: ignore[arg-type]


def test_hooks_in_the_repository_do_not_run(make: Maker, project: Project, tmp_path: Path) -> None:
    wt = make(project.c1)
    # The repository's own configuration names the hooks, as a cloned project's may.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    git(wt, "config", "core.hooksPath", str(hooks))
    marker = tmp_path / "hook-ran"
    for name in ("pre-commit", "post-commit"):
        (hooks / name).write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        (hooks / name).chmod(0o755)
    wt.git("commit", "--quiet", "--allow-empty", "-m", "through the plugin")
    assert not marker.exists()
    git(wt, "commit", "--quiet", "--allow-empty", "-m", "plain git")  # the hooks do work
    assert marker.read_text() == "pre-commit\npost-commit\n"


def test_a_git_that_runs_too_long_is_killed(plain: Maker, project: Project) -> None:
    wt = plain(project.c1)
    start = time.monotonic()
    with pytest.raises(GitTimeoutError) as info:
        # A shell alias is still git: it runs its command in git's process group.
        wt.git("-c", "alias.slow=!sleep 30", "slow", timeout=0.5)
    assert time.monotonic() - start < 10
    assert "git slow timed out after 0.5 s" in str(info.value)
    assert "timeout" in (info.value.hint or "")


# -- wt.apply --------------------------------------------------------------------------------


def every_kind_of_change(root: Path) -> None:
    """Text, binary (new and changed), new, deleted, renamed and mode-changed files, in paths
    every kind of worktree checks out."""
    (root / "src/app.py").write_text(text(replaced(APP, {3: "line three", 30: "line thirty"})))
    (root / "src/new/module.py").parent.mkdir()
    (root / "src/new/module.py").write_text("NEW = True\n")
    (root / "tests/test_util.py").unlink()
    os.rename(root / "src/util.py", root / "src/helpers.py")
    (root / "run.sh").chmod(0o644)
    (root / "logo.png").write_bytes(PNG[::-1])
    (root / "src/icon.png").write_bytes(PNG + b"\x00\xff" * 50)


def test_apply_text_binary_new_deleted_renamed_and_mode_changes(
    make: Maker, project: Project
) -> None:
    source = make.plain(project.c1)
    patch = patch_of(source, every_kind_of_change)
    assert b"GIT binary patch" in patch
    assert b"rename from src/util.py" in patch
    wt = make(project.c1)
    index_before = index_state(wt)[0]
    touched = wt.apply(patch)
    assert touched == [
        "logo.png", "run.sh", "src/app.py", "src/helpers.py", "src/icon.png",
        "src/new/module.py", "src/util.py", "tests/test_util.py",
    ]  # fmt: skip
    every_kind_of_change(source.path)
    expected = tree(source.path)
    got = tree(wt.path)
    if make.kind == "sparse":  # what it skips stays skipped
        expected = {k: v for k, v in expected.items() if not k.startswith(("docs", "data"))}
    assert got == expected
    assert index_state(wt)[0] == index_before  # the working tree only, not the index


def test_a_failing_hunk_leaves_the_tree_and_index_exactly_as_they_were(
    make: Maker, project: Project
) -> None:
    source = make.plain(project.c1)
    patch = patch_of(source, every_kind_of_change)
    wt = make(project.c1)
    # A worktree a test has been at: a change the second hunk of src/app.py cannot find its
    # context in, a staged change, untracked and ignored files.
    (wt / "src/app.py").write_text(text(replaced(APP, {29: "changed here"})))
    (wt / "tests/test_app.py").write_text("staged\n")
    git(wt, "add", "tests/test_app.py")
    (wt / "notes.txt").write_text("untracked\n")
    (wt / "debug.log").write_text("ignored\n")
    files_before, state_before, stamps_before = tree(wt.path), index_state(wt), stamps(wt.path)

    with pytest.raises(PatchError) as info:
        wt.apply(patch)
    error = info.value
    assert error.files == ("src/app.py",)
    assert error.hunks == ("src/app.py: hunk at line 27 did not apply",)
    message = message_of(error)
    assert "Patch did not apply; the worktree was left as it was: src/app.py" in message
    assert "failed: src/app.py: hunk at line 27 did not apply" in message
    assert project.up.url in str(error)
    assert wt.commit in message
    assert tree(wt.path) == files_before
    assert stamps(wt.path) == stamps_before  # not even rewritten with the same bytes
    assert index_state(wt) == state_before
    clone = pickle.loads(pickle.dumps(error))  # xdist sends errors between processes
    assert (clone.files, clone.hunks, str(clone)) == (error.files, error.hunks, str(error))


def test_three_way_merges_a_hunk_whose_context_changed(make: Maker, project: Project) -> None:
    source = make.plain(project.c1)
    patch = patch_of(
        source, lambda root: (root / "src/app.py").write_text(text(replaced(APP, {10: "ten"})))
    )
    wt = make(project.c2)  # line 7 changed upstream: in the hunk's context
    (wt / "notes.txt").write_text("untracked\n")
    before = index_state(wt)
    with pytest.raises(PatchError) as info:
        wt.apply(patch)
    assert info.value.hunks == ("src/app.py: hunk at line 7 did not apply",)
    assert "three_way=True" in (info.value.hint or "")

    assert wt.apply(patch, three_way=True) == ["src/app.py"]
    assert (wt / "src/app.py").read_text() == text(replaced(APP, {7: "line 7 upstream", 10: "ten"}))
    after = index_state(wt)
    assert after[:2] == before[:2]  # nothing staged: the index is the test's
    assert b" M src/app.py\0" in after[2]


def test_three_way_conflicts_raise_and_leave_the_tree_as_it_was(
    make: Maker, project: Project
) -> None:
    def change(root: Path) -> None:
        (root / "src/app.py").write_text(text(replaced(APP, {10: "ten"})))
        (root / "src/added").mkdir()
        (root / "src/added/new.py").write_text("new\n")
        (root / "tests/test_util.py").unlink()
        os.rename(root / "src/util.py", root / "src/helpers.py")

    patch = patch_of(make.plain(project.c1), change)
    wt = make(project.c2)
    (wt / "src/app.py").write_text(text(replaced(APP, {7: "line 7 upstream", 10: "TEN"})))
    files_before, state_before = tree(wt.path), index_state(wt)
    with pytest.raises(PatchError) as info:
        wt.apply(patch, three_way=True)
    assert info.value.files == ("src/app.py",)
    assert info.value.hunks == ("src/app.py: conflicts in the 3-way merge",)
    # git wrote the conflict and the other files' changes; all of it is undone.
    assert tree(wt.path) == files_before
    assert index_state(wt) == state_before


def test_reject_applies_what_it_can_and_leaves_rej_files(plain: Maker, project: Project) -> None:
    source = plain.plain(project.c1)
    patch = patch_of(
        source,
        lambda root: (root / "src/app.py").write_text(
            text(replaced(APP, {3: "line three", 30: "line thirty"}))
        ),
    )
    wt = plain(project.c1)
    (wt / "src/app.py").write_text(text(replaced(APP, {29: "changed here"})))
    with pytest.raises(PatchError) as info:
        wt.apply(patch, reject=True)
    assert info.value.hunks == ("src/app.py: hunk at line 27 did not apply",)
    assert info.value.problem == "Patch applied with rejected hunks: src/app.py"
    assert (wt / "src/app.py").read_text() == text(
        replaced(APP, {3: "line three", 29: "changed here"})
    )
    assert "+line thirty" in (wt / "src/app.py.rej").read_text()


def test_empty_garbage_and_conflicting_requests_are_clear_errors(
    plain: Maker, project: Project
) -> None:
    wt = plain(project.c1)
    before = tree(wt.path)
    with pytest.raises(InvalidInputError, match="The patch is empty"):
        wt.apply(" \n")
    with pytest.raises(PatchError, match="Not a patch git can apply") as info:
        wt.apply("Hello, this is not a diff\n")
    assert "No valid patches in input" in (info.value.git_error or "")
    with pytest.raises(PatchError, match="corrupt patch"):
        wt.apply("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n")
    with pytest.raises(InvalidInputError, match="cannot be combined"):
        wt.apply("x", three_way=True, reject=True)
    with pytest.raises(InvalidInputError, match="str or bytes"):
        wt.apply(None)  # type: ignore[arg-type]
    missing = "diff --git a/nope b/nope\n--- a/nope\n+++ b/nope\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(PatchError) as info:
        wt.apply(missing)
    assert info.value.hunks == ("nope: No such file or directory",)
    with pytest.raises(PatchError, match="nothing was written") as info:
        wt.apply(missing, reject=True)
    assert info.value.files == ("nope",)
    assert tree(wt.path) == before


def test_a_patch_cannot_write_outside_the_worktree(
    plain: Maker, project: Project, tmp_path: Path
) -> None:
    wt = plain(project.c1)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, wt / "escape")
    for path, says in [("../outside/evil.txt", "invalid path"), ("escape/evil.txt", "beyond")]:
        evil = f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
        with pytest.raises(PatchError, match=says):
            wt.apply(evil + "@@ -0,0 +1 @@\n+evil\n")
    assert list(outside.iterdir()) == []


# -- wt.diff and wt.changed_files -------------------------------------------------------------


def test_diff_has_untracked_and_binary_files_and_leaves_the_index_alone(
    make: Maker, project: Project
) -> None:
    wt = make(project.c1)
    (wt / "src/app.py").write_text(text(replaced(APP, {1: "first"})))
    (wt / "src/util.py").write_text("staged\n")
    git(wt, "add", "src/util.py")
    (wt / "src/new.py").write_text("untracked\n")
    (wt / "src/pic.png").write_bytes(PNG)
    (wt / "docs").mkdir(exist_ok=True)  # outside a sparse worktree's paths: reported all the same
    (wt / "docs/extra.md").write_text("new\n")
    (wt / "README.md").unlink()
    (wt / "debug.log").write_text("ignored\n")
    (wt / "build").mkdir()
    (wt / "build/out.o").write_bytes(b"\x00")
    before = index_state(wt)

    patch = wt.diff()
    assert "diff --git a/src/new.py b/src/new.py\nnew file mode 100644" in patch
    assert "diff --git a/src/pic.png b/src/pic.png\nnew file mode 100644" in patch
    assert "GIT binary patch" in patch
    assert "+staged" in patch
    assert "+first" in patch
    assert "deleted file mode" in patch
    assert "debug.log" not in patch
    assert "build/" not in patch
    # Skipped files of a sparse checkout are not deletions.
    assert wt.changed_files() == [
        "README.md", "docs/extra.md", "src/app.py", "src/new.py", "src/pic.png", "src/util.py",
    ]  # fmt: skip
    assert index_state(wt) == before


def test_diff_writes_no_object_into_the_cache(plain: Maker, project: Project) -> None:
    wt = plain(project.c1)
    objects = Path(wt.git_dir, "objects")
    before = sorted(objects.rglob("*"))
    (wt / "big.bin").write_bytes(os.urandom(100_000))
    assert "big.bin" in wt.diff()
    assert sorted(objects.rglob("*")) == before


def test_diff_round_trips_into_a_fresh_worktree(make: Maker, project: Project) -> None:
    wt = make(project.c1)
    every_kind_of_change(wt.path)
    (wt / "src/latin1.txt").write_bytes(b"caf\xe9 cr\xe8me\n")  # not UTF-8
    (wt / "src/crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    (wt / "src/no-newline.txt").write_bytes(b"no newline at the end")
    (wt / "src/empty.txt").write_bytes(b"")
    (wt / "src/caf\u00e9 au lait.txt").write_text("a name git quotes\n")
    os.symlink("app.py", wt / "src/link-to-app")
    patch = wt.diff()
    assert isinstance(patch, str)

    fresh = make(project.c1)
    touched = fresh.apply(patch)
    assert touched == wt.changed_files() == fresh.changed_files()
    assert tree(fresh.path) == tree(wt.path)
    assert fresh.diff() == patch


def test_diff_against_another_base(plain: Maker, project: Project) -> None:
    wt = plain(project.c2)
    assert wt.diff() == ""
    assert wt.changed_files() == []
    patch = wt.diff(project.c1)
    assert "-line 7\n+line 7 upstream\n" in patch
    assert wt.changed_files(base=project.c1) == ["src/app.py"]
    assert wt.changed_files(base="HEAD~1") == ["src/app.py"]
    with pytest.raises(CommitNotFoundError, match="not a commit"):
        wt.diff("no-such-branch")
    with pytest.raises(InvalidInputError):
        wt.diff("--output=/tmp/x")


# -- wt.reset --------------------------------------------------------------------------------


def dirty(root: Path) -> None:
    """What a test may do to a worktree, everywhere in it."""
    (root / "src/app.py").write_text("changed\n")
    (root / "tests/test_app.py").unlink()
    (root / "tests/test_new.py").write_text("new\n")
    (root / "tests/cache.log").write_text("ignored\n")
    (root / "tests/build").mkdir()
    (root / "tests/build/x.o").write_bytes(b"\x00")
    (root / "tests/test_util.py").chmod(0o600)
    (root / "run.sh").chmod(0o644)
    (root / "tests").chmod(0o700)
    (root / "newdir/deep").mkdir(parents=True)
    (root / "newdir/deep/file.txt").write_text("added\n")
    (root / "logo.png").write_bytes(b"not a png")


def test_reset_everything(make: Maker, project: Project) -> None:
    wt = make(project.c1)
    fresh = tree(wt.path)
    dirty(wt.path)
    git(wt, "add", "src/app.py", "tests/test_new.py")
    git(wt, "commit", "-qm", "a commit of the test's")
    head = git(wt, "rev-parse", "HEAD").decode().strip()
    (wt / "README.md").write_text("after the commit\n")

    wt.reset()
    assert tree(wt.path) == fresh  # contents, modes, nothing added (ignored files neither)
    assert git(wt, "diff", "--cached", wt.commit) == b""  # the index is the commit's
    assert git(wt, "diff", wt.commit) == b""
    assert git(wt, "rev-parse", "HEAD").decode().strip() == head  # HEAD did not move
    if make.kind == "sparse":
        assert not (wt / "docs").exists()  # skipped files stay unwritten


def test_reset_some_paths(make: Maker, project: Project) -> None:
    wt = make(project.c1)
    fresh = tree(wt.path)
    dirty(wt.path)
    (wt / "src/util.py").write_text("staged\n")
    git(wt, "add", "src/util.py", "tests/test_new.py")
    (wt / "src/app.py").write_text("staged and kept\n")
    git(wt, "add", "src/app.py")

    wt.reset(["tests", "newdir", "src/util.py", "run.sh", "./tests/"])
    now = tree(wt.path)
    for path in fresh:
        if path.startswith(("tests", "src/util.py", "run.sh")):
            assert now.get(path) == fresh[path], path
    assert not any(path.startswith(("newdir", "tests/build", "tests/cache.log")) for path in now)
    assert "tests/test_new.py" not in now
    # Outside those paths nothing changed, staging included.
    assert (wt / "src/app.py").read_text() == "staged and kept\n"
    assert (wt / "logo.png").read_bytes() == b"not a png"
    assert git(wt, "diff", "--cached", "--name-only") == b"src/app.py\n"
    assert wt.changed_files() == ["logo.png", "src/app.py"]
    if make.kind == "sparse":
        assert not (wt / "docs").exists()


def test_reset_removes_a_skipped_file_the_test_wrote(
    project: Project, cache_dir: Path, tmp_path: Path
) -> None:
    maker = Maker("sparse", project, cache_dir, tmp_path / "wts")
    wt = maker(project.c1)
    fresh = tree(wt.path)
    (wt / "docs").mkdir()
    (wt / "docs/guide.md").write_text("written by the test\n")
    wt.reset(["docs"])
    assert tree(wt.path) == fresh
    maker.close()


def test_reset_refuses_paths_outside_the_worktree(
    plain: Maker, project: Project, tmp_path: Path
) -> None:
    wt = plain(project.c1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep\n")
    os.symlink(outside, wt / "escape")
    os.symlink(wt / "src", wt / "inside")
    for bad, says in [
        (str(outside), "absolute"),
        ("../outside", "outside the worktree"),
        ("src/../../outside", "outside the worktree"),
        ("escape/precious.txt", "symbolic link escape"),
        ("inside/app.py", "symbolic link inside"),
        (".git", "git's own"),
        ("", "Invalid path"),
    ]:
        with pytest.raises(InvalidInputError, match=says):
            wt.reset([bad])
    with pytest.raises(InvalidInputError, match="not one path"):
        wt.reset("tests")
    assert (outside / "precious.txt").read_text() == "keep\n"
    wt.reset(["escape"])  # the link itself is the test's: deleted
    assert not os.path.lexists(wt / "escape")
    assert (outside / "precious.txt").read_text() == "keep\n"
    wt.reset([])  # nothing to do


def test_chores_of_a_removed_worktree_say_so(plain: Maker, project: Project) -> None:
    wt = plain(project.c1)
    plain.store.remove_worktree(wt)
    with pytest.raises(WorktreeError, match="does not exist"):
        wt.diff()


# -- a harness's suite, as a user writes it -----------------------------------------------------


def test_a_harness_suite_applies_runs_and_collects_the_diff(
    pytester: pytest.Pytester, project: Project, plain: Maker, cache_dir: Path
) -> None:
    source = plain.plain(project.c1)
    model_patch = patch_of(
        source, lambda root: (root / "src/util.py").write_text("def util():\n    return 2\n")
    )
    test_patch = patch_of(
        source,
        lambda root: (root / "tests/check.py").write_text(
            "import sys\nsys.path.insert(0, 'src')\nimport util\nassert util.util() == 2\n"
        ),
    )
    out = pytester.path / "out"
    out.mkdir()
    pytester.makepyfile(
        test_harness=textwrap.dedent(
            f"""
            import json, subprocess, sys
            import pytest
            from pytest_repoclones import PatchError

            URL, COMMIT, OUT = {project.up.url!r}, {project.c1!r}, {str(out)!r}
            MODEL, TESTS = {model_patch!r}, {test_patch!r}

            @pytest.mark.parametrize("instance", ["a", "b", "c"])
            def test_instance(worktree, instance):
                wt = worktree(URL, COMMIT)
                applied = wt.apply(MODEL)
                wt.reset(["tests"])  # the harness's test files, as the commit has them
                wt.apply(TESTS)
                ran = subprocess.run([sys.executable, "tests/check.py"], cwd=wt)
                wt.reset(["tests"])
                with open(f"{{OUT}}/{{instance}}.json", "w") as handle:
                    json.dump({{"applied": applied, "status": ran.returncode,
                               "diff": wt.diff(), "changed": wt.changed_files()}}, handle)

            def test_a_bad_patch_fails_clearly(worktree):
                wt = worktree(URL, COMMIT)
                with pytest.raises(PatchError, match="src/util.py"):
                    wt.apply(MODEL.replace(b"return 1", b"return 3"))

            def test_reported_at_the_tests_line(worktree):
                worktree(URL, COMMIT).apply(MODEL.replace(b"return 1", b"return 3"))
            """
        )
    )
    result = run(pytester, cache_dir, "-n", "2")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*worktree(URL, COMMIT).apply(*",
            "E *PatchError: Patch did not apply; the worktree was left as it was: src/util.py *",
            "E *failed: src/util.py: hunk at line 1 did not apply",
        ]
    )
    assert "_chores.py" not in result.stdout.str()  # not buried under the plugin's frames
    for instance in "abc":
        record = json.loads((out / f"{instance}.json").read_text())
        assert record["applied"] == ["src/util.py"]
        assert record["status"] == 0
        assert record["changed"] == ["src/util.py"]
        assert record["diff"].encode() == model_patch
