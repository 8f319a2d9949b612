"""The callable behind the ``worktree`` fixture: one test's worktrees, and their teardown."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import RepoClonesError, WorktreeError
from .store import RepoStore
from .urls import redact
from .worktree import Worktree

__all__ = ["WorktreeFactory"]

_SLUG_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_-]+")


def slugify(text: str, limit: int = 40) -> str:
    """A ref- and path-safe fragment of a test name (``test_x[a/b]`` -> ``test_x-a-b``)."""
    return _SLUG_UNSAFE_RE.sub("-", text).strip("-")[:limit].strip("-") or "test"


class WorktreeFactory:
    """Makes worktrees for one test and removes every one of them at teardown."""

    def __init__(self, store: RepoStore, make_dir: Callable[[str], Path], test_name: str) -> None:
        self._store = store
        self._make_dir = make_dir
        self._slug = slugify(test_name)
        self.made: list[Worktree] = []
        # All made so far: ``made`` shrinks at teardown, but the repr should still say how
        # many this test made.
        self._count = 0

    def __repr__(self) -> str:
        # Shown in failure reports (``assert worktree(...)``, ``--showlocals``); names nothing
        # that could hold a secret: no URL, only the cache directory.
        count = self._count
        noun = "worktree" if count == 1 else "worktrees"
        return f"<worktree factory: {count} {noun} made, cache {self._store.cache_dir}>"

    def __call__(
        self,
        url: str | os.PathLike[str],
        commit: str | None = None,
        *,
        sparse: Sequence[str] | None = None,
        isolate: bool = False,
        history: bool = True,
        submodules: bool | None = None,
    ) -> Worktree:
        """Check out ``commit`` (default: the remote's default branch) of ``url`` for this test.

        ``sparse``: only these paths (``["src/", "docs/index.md"]``). ``isolate``: a repository
        of its own with only the commit's history (for evaluation harnesses); with
        ``history=False`` too, one new commit of the files and no history at all.
        ``submodules``: every submodule checked out too, recursively, at the commits this
        one records (default: ``--repo-submodules`` / ini ``repo_submodules``).
        """
        __tracebackhide__ = True
        try:
            parent = self._make_dir(f"wt-{self._slug}")
            name = _repo_dir_name(url)
            worktree = self._store.add_worktree(
                url,
                commit,
                parent / name,
                branch=self._store.new_branch_name(self._slug),
                sparse=sparse,
                isolate=isolate,
                history=history,
                submodules=submodules,
            )
        except RepoClonesError as exc:
            # The message says everything; the plugin's internal frames would only bury it.
            raise exc.with_traceback(None) from None
        self.made.append(worktree)
        self._count += 1
        return worktree

    def cleanup(self, keep: bool = False) -> None:
        """Remove (or keep) every worktree made, newest first; report the first failure after
        trying all."""
        errors: list[BaseException] = []
        while self.made:
            worktree = self.made.pop()
            try:
                if keep:
                    self._store.keep_worktree(worktree)
                else:
                    self._store.remove_worktree(worktree)
            except Exception as exc:  # noqa: BLE001 - keep removing the others
                errors.append(exc)
        if errors:
            first = errors[0]
            if isinstance(first, RepoClonesError):
                raise first.with_traceback(None)
            raise WorktreeError(f"Could not remove a worktree: {first}") from first


def _repo_dir_name(url: str | os.PathLike[str]) -> str:
    tail = redact(os.fspath(url)).rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if tail.endswith(".git"):
        tail = tail[: -len(".git")]
    return slugify(tail) if tail else "repo"
