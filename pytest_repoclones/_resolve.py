"""Turning what a test asked for (a full or abbreviated object name, a branch, a tag, a ref,
the default branch) into a commit of the cache, fetching only what is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._entry import NAMED_PREFIX, CacheEntries
from ._git import GitResult
from ._lock import RepoLock
from ._remote import OFFLINE_HINT, REMOTE_HEAD
from ._runner import GitRunner
from .errors import CommitNotFoundError, InvalidInputError
from .revisions import Revision
from .urls import RepoURL

__all__ = ["Resolver"]


class Resolver:
    """Resolves revisions against the cache entries of one store."""

    def __init__(
        self, entries: CacheEntries, runner: GitRunner, lock: Callable[[RepoURL], RepoLock]
    ) -> None:
        self._entries = entries
        self._runner = runner
        self._lock = lock

    def _git_input(self, args: list[str], stdin: str, *, git_dir: Path) -> GitResult:
        return self._runner.run(args, git_dir=git_dir, stdin=stdin)

    def resolve(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str:
        if revision.kind == "full":
            return self.resolve_object(repo, git_dir, revision)
        if revision.kind == "abbrev":
            return self._resolve_abbrev(repo, git_dir, revision)
        return self._resolve_name(repo, git_dir, revision)

    def resolve_object(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str:
        expr = f"{revision.text}^{{commit}}"
        found = self._lookup(git_dir, [expr], repo=repo)[0]
        if found is None:
            with self._lock(repo).hold(f"fetch {revision.text}"):
                # Another process may have fetched it.
                found = self._lookup(git_dir, [expr], repo=repo)[0]
                if found is None:
                    self._entries.fetch_commit_locked(repo, git_dir, revision)
                    found = self._lookup(git_dir, [expr], repo=repo)[0]
        if found is None:
            raise CommitNotFoundError(
                "Object exists but is not a commit", url=repo.redacted, commit=revision.text
            )
        return found

    def commit_with_file(
        self, repo: RepoURL, git_dir: Path, revision: Revision, path: str
    ) -> tuple[str, bool]:
        """The commit ``revision`` (a full name, fetched if missing) and whether its tree
        holds ``path`` (a submodule's ``.gitmodules``): one git process when it is cached."""
        commit, file = self._lookup_typed(
            git_dir, [f"{revision.text}^{{commit}}", f"{revision.text}:{path}"], repo=repo
        )
        if commit is not None and commit[1] == "commit":
            return commit[0], file is not None and file[1] == "blob"
        found = self.resolve_object(repo, git_dir, revision)
        return found, self._lookup(git_dir, [f"{found}:{path}"], kind="blob", repo=repo)[
            0
        ] is not None

    def _resolve_abbrev(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str:
        expr = f"{revision.text}^{{commit}}"
        found = self._lookup(git_dir, [expr], abbrev=revision, repo=repo)[0]
        if found is None and self._entries.is_shallow(repo) and not self._cache_only:
            # Only the whole history can say what an abbreviation names: take it all.
            self._entries.deepen(repo, git_dir, None)
            found = self._lookup(git_dir, [expr], abbrev=revision, repo=repo)[0]
        if found is None:
            self._entries.refresh(repo, git_dir)
            found = self._lookup(git_dir, [expr], abbrev=revision, repo=repo)[0]
        if found is None:
            # A branch or tag whose name happens to look like hex.
            found = self._lookup_name(repo, git_dir, revision)
        if found is None:
            raise CommitNotFoundError(
                "No commit matches this abbreviated object name",
                url=repo.redacted,
                commit=revision.text,
                hint=OFFLINE_HINT
                if self._entries.offline
                else "abbreviations are resolved against the cache after fetching all branches "
                "and tags; give the full object name to fetch a commit outside them",
            )
        return found

    def _resolve_name(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str:
        named = revision.text is not None and revision.text.startswith("refs/")
        if self._entries.is_shallow(repo):
            self._entries.fetch_name(repo, git_dir, revision)
        elif named and not revision.text.startswith(("refs/heads/", "refs/tags/")):  # type: ignore[union-attr]
            self._entries.refresh_named_ref(repo, git_dir, revision)
        else:
            self._entries.refresh(repo, git_dir)
        found = self._lookup_name(repo, git_dir, revision)
        if found is None:
            what = "default branch (remote HEAD)" if revision.kind == "default" else "branch or tag"
            # Offline or from a read-only cache no remote was asked: only the cache can be
            # said to lack the name, and "upstream" would send the user looking at the remote.
            where = "in the cache" if self._cache_only else "upstream"
            raise CommitNotFoundError(
                f"No such {what} {where}",
                url=repo.redacted,
                commit=revision.text,
                hint=OFFLINE_HINT
                if self._cache_only
                else "the remote's HEAD names a branch it does not have; pass a branch name"
                if revision.kind == "default"
                else "branches and tags were fetched from the remote in this session",
            )
        return found

    @property
    def _cache_only(self) -> bool:
        """No remote is contacted: --repo-offline, or a read-only cache (never refreshed)."""
        return self._entries.offline or self._entries.read_only

    def _lookup_name(self, repo: RepoURL, git_dir: Path, revision: Revision) -> str | None:
        name = revision.text
        if name is None:
            # The second: where caches made before 0.2 kept it (offline, never refreshed).
            candidates = [REMOTE_HEAD, "refs/remotes/origin/HEAD"]
        elif name.startswith("refs/heads/"):
            candidates = ["refs/remotes/origin/" + name[len("refs/heads/") :]]
        elif name.startswith("refs/tags/"):
            candidates = [name]
        elif name.startswith("refs/"):
            candidates = [NAMED_PREFIX + name[len("refs/") :]]
        else:
            # git's own order for an ambiguous short name: tags before branches.
            candidates = [f"refs/tags/{name}", f"refs/remotes/origin/{name}"]
        exprs = [f"{ref}^{{commit}}" for ref in candidates]
        for found in self._lookup(git_dir, exprs, repo=repo):
            if found is not None:
                return found
        return None

    def _lookup(
        self,
        git_dir: Path,
        exprs: list[str],
        abbrev: Revision | None = None,
        kind: str = "commit",
        repo: RepoURL | None = None,
    ) -> list[str | None]:
        """Object names for revision expressions, None where missing; one git process.

        With ``repo``, a damaged object (cat-file dies on it) raises DamagedEntry; without,
        it counts as missing (what the health check wants).
        """
        typed = self._lookup_typed(git_dir, exprs, abbrev=abbrev, repo=repo)
        return [item[0] if item is not None and item[1] == kind else None for item in typed]

    def _lookup_typed(
        self,
        git_dir: Path,
        exprs: list[str],
        abbrev: Revision | None = None,
        repo: RepoURL | None = None,
    ) -> list[tuple[str, str] | None]:
        """(object name, type) for each expression, None where missing; one git process."""
        result = self._git_input(
            ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            "".join(f"{expr}\n" for expr in exprs),
            git_dir=git_dir,
        )
        if not result.ok and repo is not None:
            self._entries.check_damage(repo, git_dir, result.stderr)
        found: list[tuple[str, str] | None] = []
        for line in result.stdout.splitlines():
            if line.endswith(" ambiguous") and abbrev is not None:
                raise InvalidInputError(
                    "Abbreviated object name is ambiguous; give more hex digits",
                    commit=abbrev.text,
                )
            name, _, object_type = line.partition(" ")
            found.append((name, object_type) if object_type != "missing" else None)
        found.extend([None] * (len(exprs) - len(found)))
        return found
