"""Harness chores on a worktree: run git in it, apply a patch, collect its diff, reset it.

Evaluation harnesses (SWE-bench and the like) check out a base commit, apply a patch, run the
tests, collect the diff and reset the test files. Each step is a few git commands that are easy
to get subtly wrong: a diff that misses new files, or stages them in the index the test sees; a
patch left half applied; a user's ``diff.noprefix`` that makes a diff ``git apply`` cannot read;
``\\r\\n`` or non-UTF-8 bytes lost on the way through Python. Here they run through the plugin's
hardened git, with no pytest needed: ``Chores(worktree).diff()``. What git prints about a patch
is read in ``_patch_output``; the files a patch may write are saved by ``_snapshot``.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import _git
from ._defaults import DEFAULT_TIMEOUT
from ._files import make_deletable
from ._inputs import check_seconds
from ._modes import fix_modes, odd_modes
from ._patch_output import failures, numstat_paths, rejected, without_searched_lines
from ._snapshot import Snapshot, link_on_the_way
from .errors import (
    CommitNotFoundError,
    GitCommandError,
    InvalidInputError,
    PatchError,
    RepoClonesError,
    WorktreeError,
)
from .urls import parse_url, redact

if TYPE_CHECKING:
    from .worktree import Worktree

__all__ = ["Chores", "GitOutput"]


@dataclass(frozen=True)
class GitOutput:
    """What a git command run in a worktree (``Worktree.git``) printed, and how it ended.

    ``stdout`` is git's output decoded as UTF-8 with ``surrogateescape``: nothing is lost or
    translated (``stdout.encode("utf-8", "surrogateescape")`` gives git's bytes back, ``\\r\\n``
    included). ``stderr`` is for people: undecodable bytes are replaced.
    """

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# Settings of ours for the diffs we produce: a user's diff.noprefix, diff.mnemonicPrefix,
# diff.context=0, color.ui=always, diff.external or a textconv driver would each give a patch
# that `git apply` (ours or a harness's) cannot read, or that is not the files' real content.
_DIFF_ARGS = (
    "--no-color", "--no-ext-diff", "--no-textconv", "--binary", "--unified=3",
    "--src-prefix=a/", "--dst-prefix=b/", "--no-relative", "--submodule=short",
)  # fmt: skip
# The scratch index is ours alone: a split index would write shared parts into the repository.
_SCRATCH_CONFIG = ("core.splitIndex=false", "advice.addEmbeddedRepo=false")
# A user's apply.whitespace=error would refuse patches with trailing spaces; ignoreWhitespace
# would let context that differs in spacing match. Neither is what the patch says.
_APPLY_CONFIG = ("apply.whitespace=nowarn", "apply.ignoreWhitespace=no")
_APPLY_ARGS = ("apply", "--whitespace=nowarn")

_TIMEOUT_HINT = "pass a longer timeout (wt.git(..., timeout=SECONDS)) if the command is just slow"


class Chores:
    """Git chores on one worktree, run through the plugin's hardened git.

    Every command runs in the worktree with git's environment cleaned as for the store's own
    calls (no prompts, no hooks, no fsmonitor, no inherited ``GIT_DIR`` or ``GIT_INDEX_FILE``)
    and a time limit. Nothing here changes ``HEAD`` or a branch, and only ``reset`` writes the
    worktree's index.
    """

    def __init__(self, worktree: Worktree, *, timeout: float | None = None) -> None:
        self.worktree = worktree
        self.root = worktree.path
        self.timeout = DEFAULT_TIMEOUT if timeout is None else check_seconds("timeout", timeout)
        self._url = redact(worktree.url)

    # -- git --------------------------------------------------------------------------------

    def git(
        self,
        args: Sequence[str],
        *,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> GitOutput:
        """Run ``git *args`` in the worktree; GitCommandError if it fails and ``check``."""
        for arg in args:
            if not isinstance(arg, str) or "\0" in arg:
                raise InvalidInputError(
                    f"git arguments must be str without NUL characters, not {arg!r}",
                    url=self._url,
                    commit=self.worktree.commit,
                )
        if input is not None and not isinstance(input, (str, bytes)):
            raise InvalidInputError(
                f"input must be str or bytes, not {type(input).__name__}", url=self._url
            )
        limit = self.timeout if timeout is None else check_seconds("timeout", timeout)
        result = self._run(args, stdin=_as_bytes(input), timeout=limit)
        if check and not result.ok:
            raise self._git_failed(result, f"git {_git.command_name(args)} failed")
        return GitOutput(result.args, result.returncode, result.stdout, result.stderr)

    # -- diff -------------------------------------------------------------------------------

    def diff(self, base: str | None = None) -> str:
        """The worktree's changes against ``base`` (default: the checked-out commit) as a patch
        ``git apply`` reproduces exactly: untracked files included, ignored ones not, binary
        files as ``--binary`` hunks. The worktree's index is left untouched."""
        with self._scratch(base) as (env, tree):
            self._stage_all(env)
            args = ["diff", "--cached", "--find-renames", *_DIFF_ARGS, tree, "--"]
            result = self._run(args, extra_env=env, config=_SCRATCH_CONFIG)
            self._check(result, "collect the worktree's diff")
            return result.stdout

    def changed_files(self, base: str | None = None) -> list[str]:
        """Sorted paths that differ from ``base`` (default: the checked-out commit): added,
        modified, deleted, both sides of a rename, untracked files included."""
        with self._scratch(base) as (env, tree):
            self._stage_all(env)
            args = ["diff", "--cached", "--no-renames", "--name-only", "-z", tree, "--"]
            result = self._run(args, extra_env=env, config=_SCRATCH_CONFIG)
            self._check(result, "list the worktree's changed files")
            return sorted({name for name in result.stdout.split("\0") if name})

    @contextlib.contextmanager
    def _scratch(self, base: str | None) -> Iterator[tuple[dict[str, str], str]]:
        """An environment where git works on a copy of the worktree's index, and the full name
        of the commit ``base`` names.

        The test's index must not change (a harness's diff must not stage the test's files).
        The copy keeps the original's mtime: git judges "racily clean" entries against the
        index file's mtime, and a newer copy would take a file changed in the same clock tick
        as the checkout for unchanged. The blobs git writes go to a temporary object
        directory that reads the repository's through alternates: a large file the test
        wrote must not stay in the shared cache forever (it never runs gc).
        """
        revision = self.worktree.commit if base is None else _checked_revision(base, self._url)
        located = self._run(
            ["rev-parse", "--git-path", "index", "--git-path", "objects",
             "--verify", "--quiet", f"{revision}^{{commit}}"]
        )  # fmt: skip
        lines = located.stdout.splitlines()
        if not located.ok or len(lines) != 3:
            if len(lines) == 2:
                raise CommitNotFoundError(
                    f"Revision {revision!r} is not a commit this worktree's repository has",
                    url=self._url,
                    commit=self.worktree.commit,
                    hint="pass a commit, branch or tag of the worktree's repository as base",
                )
            raise self._git_failed(located, "Could not find the worktree's index")
        index, objects, commit = (self.root / lines[0], self.root / lines[1], lines[2])
        with tempfile.TemporaryDirectory(prefix="repoclones-scratch-") as tmp:
            scratch = Path(tmp)
            if index.exists():
                shutil.copy2(index, scratch / "index")
            (scratch / "objects").mkdir()
            env = {
                "GIT_INDEX_FILE": str(scratch / "index"),
                "GIT_OBJECT_DIRECTORY": str(scratch / "objects"),
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": _alternate(objects),
            }
            yield env, commit

    def _stage_all(self, env: Mapping[str, str]) -> None:
        """Make the scratch index the working tree: every change staged, untracked files
        added, ignored ones not."""
        # --sparse (git 2.34; sparse worktrees need 2.35): a new file outside a sparse
        # checkout's cone is a change too. Skipped entries are never staged as deleted.
        sparse = ["--sparse"] if self.worktree.sparse is not None else []
        added = self._run(["add", "-A", *sparse], extra_env=env, config=_SCRATCH_CONFIG)
        self._check(added, "read the worktree's files")

    # -- apply ------------------------------------------------------------------------------

    def apply(
        self, patch: str | bytes, *, three_way: bool = False, reject: bool = False
    ) -> list[str]:
        """Apply a unified diff to the working tree; the sorted paths it touched.

        All or nothing unless ``reject``: on failure the touched files are put back as they
        were, whatever git left (a 3-way merge with conflicts writes files before it fails).
        """
        if three_way and reject:
            raise InvalidInputError(
                "three_way and reject cannot be combined (git apply refuses --3way --reject)",
                url=self._url,
                commit=self.worktree.commit,
            )
        data = self._patch_bytes(patch)
        touched = self._touched(data)
        if reject:
            result = self._run([*_APPLY_ARGS, "--reject"], stdin=data, config=_APPLY_CONFIG)
            if not result.ok:
                raise self._patch_failed(result, touched, *rejected(result.stderr))
            return touched
        saved = Snapshot(self.root, touched)
        try:
            if three_way:
                result = self._apply_three_way(data, touched)
            else:
                result = self._run(_APPLY_ARGS, stdin=data, config=_APPLY_CONFIG)
        except BaseException:
            saved.restore()
            raise
        if not result.ok:
            saved.restore()
            raise self._patch_failed(
                result,
                touched,
                "Patch did not apply; the worktree was left as it was",
                "reject=True applies what it can and leaves .rej files"
                if three_way
                else "three_way=True merges hunks whose context changed; reject=True applies "
                "what it can and leaves .rej files",
            )
        return touched

    def _patch_bytes(self, patch: object) -> bytes:
        if not isinstance(patch, (str, bytes)):
            raise InvalidInputError(
                f"A patch must be str or bytes, not {type(patch).__name__}", url=self._url
            )
        data = _as_bytes(patch)
        assert data is not None
        if not data.strip():
            raise InvalidInputError(
                "The patch is empty: nothing to apply",
                url=self._url,
                commit=self.worktree.commit,
            )
        return data

    def _touched(self, data: bytes) -> list[str]:
        """Every path the patch writes or removes, read by git itself before anything changes.

        ``git apply --numstat`` names only a rename's new path; the same listing of the patch
        reversed names the old one.
        """
        names: set[str] = set()
        for reverse in ((), ("-R",)):
            args = ["apply", "--numstat", "-z", *reverse]
            result = self._run(args, stdin=data, config=_APPLY_CONFIG)
            if not result.ok:
                if reverse:
                    continue  # no reverse binary data: the old names are the new ones anyway
                raise PatchError(
                    "Not a patch git can apply",
                    url=self._url,
                    commit=self.worktree.commit,
                    git_error=self._scrub(result.error_line),
                    hint="expected a unified diff such as `git diff --binary` prints",
                )
            names.update(numstat_paths(result.stdout))
        return sorted(names)

    def _apply_three_way(self, data: bytes, touched: list[str]) -> _git.GitResult:
        """``git apply --3way`` without touching the worktree's index.

        --3way implies --index: git checks that each file matches the index, and stages its
        result. A scratch index made to match the working tree for the touched paths gives git
        what it checks without staging anything the test sees; its blobs are scratch too.
        """
        with self._scratch(None) as (env, _):
            # Paths that are not plain files or links (a directory where the patch wants a
            # file) are left for git apply itself to report.
            plain = [p for p in touched if _file_or_absent(self.root / p)]
            if plain:
                self._run(
                    ["update-index", "--add", "--remove", "--", *plain],
                    extra_env=env,
                    config=_SCRATCH_CONFIG,
                )
            return self._run(
                [*_APPLY_ARGS, "--3way"],
                stdin=data,
                extra_env=env,
                config=(*_APPLY_CONFIG, *_SCRATCH_CONFIG),
            )

    def _patch_failed(
        self, result: _git.GitResult, touched: list[str], problem: str, hint: str | None
    ) -> PatchError:
        stderr = without_searched_lines(result.stderr)
        files, hunks = failures(stderr, touched)
        if files:
            shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
            problem = f"{problem}: {shown}"
        readable = _git.GitResult(result.args, result.returncode, "", stderr)
        return PatchError(
            problem,
            files=tuple(files),
            hunks=tuple(hunks),
            url=self._url,
            commit=self.worktree.commit,
            git_error=self._scrub(readable.error_line),
            hint=hint,
        )

    # -- reset ------------------------------------------------------------------------------

    def reset(self, paths: Iterable[str] | None = None) -> None:
        """Put files (all, or those under ``paths``) and their index entries back as the
        checked-out commit has them; delete what the test added there, ignored files too.

        Never moves HEAD or a branch: commits the test made stay on its branch.
        """
        specs = ["."] if paths is None else _pathspecs(self.root, paths, self._url)
        if not specs:
            return
        commit = self.worktree.commit
        # Literal pathspecs: a file named '*.py' or ':(glob)x' means that file.
        self._check(
            self._run(["reset", "--quiet", commit, "--", *specs], literal=True),
            "reset the index",
        )
        self._clean(specs)
        listing = self._run(["ls-files", "-z", "-t", "--", *specs], literal=True)
        self._check(listing, "list the commit's files")
        entries = [entry for entry in listing.stdout.split("\0") if entry]
        files = [entry[2:] for entry in entries]
        # A sparse checkout's skipped files stay unwritten: git's checkout leaves entries
        # tagged S alone, but fails on a pathspec that matches nothing else.
        written = [entry[2:] for entry in entries if not entry.startswith("S ")]
        wanted = [spec for spec in specs if any(_under(path, spec) for path in written)]
        if wanted:
            self._check(
                self._run(["checkout", "--quiet", "--force", "--", *wanted], literal=True),
                "restore the commit's files",
            )
        if self.worktree.sparse is not None:
            # A test may have written a skipped file (git then tracks it as present); once
            # it is back to the commit's content, reapply takes it away again.
            self._check(self._run(["sparse-checkout", "reapply"]), "reapply the sparse patterns")
        # git keeps only the executable bit: a chmod 0444 or of a directory survives it.
        base = os.fspath(self.root)
        fix_modes(
            path
            for path in odd_modes(self.root, files)
            if any(_under(os.path.relpath(path, base), spec) for spec in specs)
        )

    def _clean(self, specs: list[str]) -> None:
        """Delete untracked and ignored files (and nested repositories) under ``specs``."""
        clean = ["clean", "-ffdxq", "--", *specs]
        result = self._run(clean, literal=True)
        if not result.ok:
            # A directory the test made read-only stops git for any user but root.
            for spec in specs:
                target = self.root / spec
                if target.is_dir() and not target.is_symlink():
                    make_deletable(target)
            result = self._run(clean, literal=True)
        self._check(result, "delete the files the test added")

    # -- running git ------------------------------------------------------------------------

    def _run(
        self,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
        config: Sequence[str] = (),
        literal: bool = False,
        timeout: float | None = None,
    ) -> _git.GitResult:
        # Once per process (cached): an old git gets one clear error, not an obscure one.
        _git.check_git_version()
        if not self.root.is_dir():
            raise WorktreeError(
                f"Worktree {self.root} does not exist (removed already?)",
                url=self._url,
                commit=self.worktree.commit,
            )
        pre_args = [arg for setting in config for arg in ("-c", setting)]
        if literal:
            pre_args.append("--literal-pathspecs")
        return _git.run_git_exact(
            args,
            env=_git.git_environment(),
            cwd=self.root,
            timeout=self.timeout if timeout is None else timeout,
            extra_env=extra_env,
            pre_args=[*pre_args, "-C", str(self.root)],
            url=self._url,
            stdin=stdin,
            timeout_hint=_TIMEOUT_HINT,
        )

    def _check(self, result: _git.GitResult, doing: str) -> None:
        if not result.ok:
            raise self._git_failed(result, f"Could not {doing}")

    def _git_failed(self, result: _git.GitResult, problem: str) -> GitCommandError:
        return GitCommandError(
            f"{problem} (exit status {result.returncode}) in {self.root}",
            url=self._url,
            commit=self.worktree.commit,
            git_error=self._scrub(result.error_line),
        )

    def _scrub(self, text: str) -> str:
        """git may print the URL it was given (a remote's, in a test's own fetch): no password."""
        try:
            return parse_url(self.worktree.url).scrub(text)
        except RepoClonesError:
            return text


def _pathspecs(root: Path, paths: Iterable[str], url: str) -> list[str]:
    """``paths`` as pathspecs relative to the worktree's top, each checked to stay inside.

    A symbolic link on the way is refused, escaping or not: git refuses paths beyond one,
    and the chmods and deletions here must never reach outside the worktree.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise InvalidInputError(
            f"paths must be a list of paths such as ['tests/'], not one path: {paths!r}",
            url=url,
        )
    specs: list[str] = []
    for item in paths:
        text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
        if not isinstance(text, str) or not text or "\0" in text:
            raise InvalidInputError(
                f"Invalid path {item!r}: give paths relative to the worktree's top",
                url=url,
            )
        if os.path.isabs(text):
            raise InvalidInputError(
                f"Path {text!r} is absolute: give paths relative to the worktree's top",
                url=url,
            )
        spec = posixpath.normpath(text)
        parts = spec.split("/")
        if parts[0] == "..":
            raise InvalidInputError(f"Path {text!r} leads outside the worktree", url=url)
        if any(part.lower() == ".git" for part in parts):
            raise InvalidInputError(f"Path {text!r} is git's own, not a file", url=url)
        _refuse_links(root, text, parts, url)
        if spec == ".":
            return ["."]
        if spec not in specs:
            specs.append(spec)
    return specs


def _refuse_links(root: Path, text: str, parts: list[str], url: str) -> None:
    link = link_on_the_way(root, parts)
    if link is not None:
        raise InvalidInputError(
            f"Path {text!r} goes through the symbolic link "
            f"{link.relative_to(root)} -> {os.readlink(link)}",
            url=url,
            hint="reset the link itself, not what is beyond it",
        )


def _file_or_absent(path: Path) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    except OSError:
        return False  # beyond a file, say: git apply says what is wrong
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _as_bytes(data: str | bytes | None) -> bytes | None:
    # surrogateescape: a str from diff() carries non-UTF-8 bytes as lone surrogates.
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data


def _alternate(objects: Path) -> str:
    """One entry of GIT_ALTERNATE_OBJECT_DIRECTORIES: ':' separates entries, so a path
    holding one (or starting with a quote) is C-quoted, which git reads back."""
    text = os.path.abspath(objects)
    if ":" not in text and not text.startswith('"'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _checked_revision(base: object, url: str) -> str:
    if (
        not isinstance(base, str)
        or not base
        or base.startswith("-")
        or any(ord(ch) < 32 or ch == "\x7f" for ch in base)
    ):
        raise InvalidInputError(f"Invalid base revision {base!r}", url=url)
    return base


def _under(path: str, spec: str) -> bool:
    return spec == "." or path == spec or path.startswith(f"{spec}/")
