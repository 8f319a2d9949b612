"""Exceptions raised for every failure a user can cause.

Each message names the repository (credentials redacted) and the commit, and ends with git's own
error line when git was involved, so a failing test report is enough to act on.
"""

from __future__ import annotations

import errno

__all__ = [
    "CacheCorruptError",
    "CacheWriteError",
    "CommitNotFoundError",
    "GitCommandError",
    "GitTimeoutError",
    "InvalidInputError",
    "LockTimeoutError",
    "PatchError",
    "PortableCacheError",
    "RemoteError",
    "RepoClonesError",
    "WorktreeError",
]


class RepoClonesError(Exception):
    """Base class: catch this to handle any failure of the plugin."""

    def __init__(
        self,
        problem: str,
        *,
        url: str | None = None,
        commit: str | None = None,
        git_error: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.url = url  # always redacted by the caller
        self.commit = commit
        self.git_error = git_error
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.url is not None:
            where.append(f"repository {self.url}")
        if self.commit is not None:
            where.append(f"commit {self.commit!r}")
        message = self.problem
        if where:
            message = f"{message} ({', '.join(where)})"
        if self.git_error:
            message = f"{message}\n  git: {self.git_error}"
        if self.hint:
            message = f"{message}\n  hint: {self.hint}"
        return message

    def add_context(self, *, url: str | None, commit: object) -> None:
        """Name the repository and commit that a lower layer did not know about, so that
        every error the user sees says which request failed (``url`` must be redacted)."""
        if self.url is None and url is not None:
            self.url = url
        if self.commit is None and isinstance(commit, str):
            self.commit = commit
        self.args = (self._message(),)

    def add_outer(self, where: str) -> None:
        """Say which larger request this failure belongs to (a submodule's error names its
        superproject): ``where`` leads the problem, the repository and commit stay."""
        if not self.problem.startswith(where):
            self.problem = f"{where}: {self.problem}"
            self.args = (self._message(),)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling, and xdist/multiprocessing
        # users pickle exceptions across processes.
        return (
            _rebuild,
            (type(self), self.problem, self.url, self.commit, self.git_error, self.hint),
        )


def _rebuild(
    cls: type[RepoClonesError],
    problem: str,
    url: str | None,
    commit: str | None,
    git_error: str | None,
    hint: str | None,
) -> RepoClonesError:
    return cls(problem, url=url, commit=commit, git_error=git_error, hint=hint)


class InvalidInputError(RepoClonesError, ValueError):
    """A URL, commit, path or branch name was rejected before git ever saw it."""


class CommitNotFoundError(RepoClonesError, LookupError):
    """The commit is neither in the cache nor obtainable from the remote."""


class RemoteError(RepoClonesError):
    """The remote could not be reached, refused us, or is not a repository."""


class GitCommandError(RepoClonesError):
    """A local git command failed in a way the plugin did not expect."""


class GitTimeoutError(RepoClonesError, TimeoutError):
    """A git command ran longer than its time limit and was killed with its children."""


class LockTimeoutError(RepoClonesError, TimeoutError):
    """Another live process held the repository's lock for longer than the lock timeout."""


class CacheCorruptError(RepoClonesError):
    """A cache entry is damaged and could not be rebuilt automatically."""


class PortableCacheError(RepoClonesError):
    """An export file or bundle cannot be used (damaged, truncated, of a newer format, not
    one at all), or a repository cannot be exported (a partial or shallow entry)."""


class WorktreeError(RepoClonesError):
    """A worktree could not be created at the requested path or removed."""


class PatchError(RepoClonesError):
    """A patch did not apply to a worktree (``Worktree.apply``).

    ``files`` and ``hunks`` say what failed, as git reported it, so that a harness can record
    why a patch failed without parsing the message; the message lists them too.
    """

    #: How many failed hunks the message lists; ``hunks`` always has them all.
    SHOWN = 20

    def __init__(
        self,
        problem: str,
        *,
        files: tuple[str, ...] = (),
        hunks: tuple[str, ...] = (),
        url: str | None = None,
        commit: str | None = None,
        git_error: str | None = None,
        hint: str | None = None,
    ) -> None:
        #: The files whose changes did not apply (sorted, as the patch names them).
        self.files = tuple(files)
        #: One line per failure, e.g. ``"src/app.py: hunk at line 12 did not apply"``.
        self.hunks = tuple(hunks)
        super().__init__(problem, url=url, commit=commit, git_error=git_error, hint=hint)

    def _message(self) -> str:
        lines = [f"\n  failed: {hunk}" for hunk in self.hunks[: self.SHOWN]]
        if len(self.hunks) > self.SHOWN:
            lines.append(f"\n  failed: ... and {len(self.hunks) - self.SHOWN} more")
        head, sep, rest = super()._message().partition("\n")
        return head + "".join(lines) + sep + rest

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_patch_error,
            (
                type(self),
                self.problem,
                self.files,
                self.hunks,
                self.url,
                self.commit,
                self.git_error,
                self.hint,
            ),
        )


def _rebuild_patch_error(
    cls: type[PatchError],
    problem: str,
    files: tuple[str, ...],
    hunks: tuple[str, ...],
    url: str | None,
    commit: str | None,
    git_error: str | None,
    hint: str | None,
) -> PatchError:
    return cls(
        problem, files=files, hunks=hunks, url=url, commit=commit, git_error=git_error, hint=hint
    )


class CacheWriteError(RepoClonesError):
    """The cache could not be written: its disk is full, it is read-only, or access is denied."""

    @classmethod
    def from_os_error(
        cls, exc: OSError, *, url: str | None = None, commit: str | None = None
    ) -> CacheWriteError:
        """A clear error for a filesystem failure met while using the cache."""
        where = f" ({exc.filename})" if exc.filename else ""
        if not exc.filename and exc.strerror and exc.args[1:] and "fatal" in exc.strerror:
            where = f" (git: {exc.strerror})"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            problem = f"No space left on the cache's filesystem{where}"
            hint = "free some space (`pytest-repoclones gc --max-size 5G`), or move the cache"
        elif exc.errno == errno.EROFS:
            problem = f"The cache is on a read-only filesystem{where}"
            hint = "mount it read-write, or use only commits it already holds"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            problem = f"Permission denied in the cache{where}"
            hint = "give this user write access, or point --repo-cache-dir elsewhere"
        else:
            problem = f"Cannot use the cache: {exc.strerror or exc}{where}"
            hint = "check the cache directory (--repo-cache-dir, PYTEST_REPO_CACHE_DIR)"
        return cls(problem, url=url, commit=commit, hint=hint)
