"""A cached repository's upstream: the only place that decides to touch the network.

Offline and read-only caches are refused here, credentials are handed to git here (never in
its argv), remotes that did not answer fail fast here, and so does a full disk met mid-fetch
(blamed on the disk, not on the remote).
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from ._files import rmtree
from ._git import GitResult, credential_args, ssh_batch_env
from ._layout import read_only_error
from ._mirrors import Mirrors
from ._remote_failures import RemoteFailures
from ._runner import GitRunner
from .errors import (
    CacheWriteError,
    CommitNotFoundError,
    GitTimeoutError,
    RemoteError,
    RepoClonesError,
)
from .stats import RepoStats
from .urls import RepoURL

__all__ = ["NAMED_PREFIX", "OFFLINE_HINT", "PIN_PREFIX", "REMOTE_HEAD", "Remote"]

log = logging.getLogger("pytest_repoclones")

PIN_PREFIX = "refs/repoclones/pins/"
#: Where a ref outside branches and tags (refs/pull/7/head) is kept once fetched.
NAMED_PREFIX = "refs/repoclones/named/"
OFFLINE_HINT = (
    "warm the cache first: `pytest-repoclones prefetch URL [COMMIT...]`, "
    "or one run without --repo-offline"
)
_BRANCHES_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"
# Branches are pruned (deleted upstream: gone here, and `release/2.x` can become `release`
# without a directory/file clash), tags are not: a tag a test makes in its worktree lives in
# the shared refs/tags, and pruning there could pull it from under a running test. Hence tags
# through --tags (never pruned) with --force (a moved tag is updated), not through a refspec.
_UPSTREAM_OPTIONS = ("--prune", "--tags", "--force")
# Not refs/remotes/origin/HEAD: an upstream branch named HEAD maps there through the branches
# refspec, and git refuses to fetch two sources into one ref (plain git clones such a remote).
REMOTE_HEAD = "refs/repoclones/remote-head"
_HEAD_REFSPEC = f"+HEAD:{REMOTE_HEAD}"
# A tag deleted upstream and replaced by tags below its name (or the other way round): git
# cannot create refs/tags/a/b while refs/tags/a exists, and tags are never pruned (see above).
_TAG_CLASH_RE = re.compile(
    r"'(refs/tags/[^']+)' exists; cannot create '(?:refs/tags/[^']+)'"
    r"|there are still refs under '(refs/tags/[^']+)'"
)
# The cache's disk failed git, not the remote.
_LOCAL_WRITE_FAILURE = re.compile(
    r"No space left on device|Disk quota exceeded|Read-only file system", re.IGNORECASE
)
# Phrases git uses when the remote answered but has no such object or ref.
_NOT_FOUND_PHRASES = ("not our ref", "couldn't find remote ref", "no such remote ref")


class Remote:
    """Fetches from one repository's upstream into its cache entry (or a clone being built)."""

    def __init__(
        self,
        repo: RepoURL,
        runner: GitRunner,
        *,
        cache_dir: Path,
        offline: bool,
        read_only: Callable[[], bool],
        failures: RemoteFailures,
        stats: Callable[[], RepoStats],
        partial: Callable[[], bool],
        progress: Callable[[str], None] | None,
        mirrors: Mirrors | None = None,
    ) -> None:
        self.repo = repo
        self._mirrors = mirrors
        self._runner = runner
        self._cache_dir = cache_dir
        self._offline = offline
        self._read_only = read_only
        self._failures = failures
        self._stats = stats
        self._partial = partial
        self._progress = progress

    def fetch_upstream(
        self, git_dir: Path, *, clone_filter: str | None = None, extra: list[str] | None = None
    ) -> GitResult:
        """Branches (pruned), tags (forced, never pruned) and the remote's HEAD."""
        specs = [_HEAD_REFSPEC, _BRANCHES_REFSPEC]

        def fetch() -> GitResult:
            return self.fetch(git_dir, specs, clone_filter=clone_filter, upstream=True, extra=extra)

        result = fetch()
        if not result.ok and "couldn't find remote ref HEAD" in result.stderr:
            # Remote HEAD points at a missing branch, or the remote is empty.
            specs = specs[1:]
            result = fetch()
        for _ in range(3):  # a few rounds: each one may uncover the next clash
            if result.ok or not self._remove_clashing_tags(git_dir, result.stderr):
                break
            result = fetch()
        return result

    def fetch_commit(self, git_dir: Path, sha: str, *, depth: int | None = None) -> GitResult:
        """One object by its full name, pinned under PIN_PREFIX so that nothing drops it
        (with ``depth``, only that many commits of its history: a shallow entry)."""
        if self._read_only():
            raise read_only_error(
                self._cache_dir, self.repo.redacted, "does not hold this commit", sha
            )
        if self._offline:
            raise CommitNotFoundError(
                "Commit is not in the cache, and --repo-offline forbids fetching it",
                url=self.repo.redacted,
                commit=sha,
                hint=OFFLINE_HINT,
            )
        extra = [] if depth is None else [f"--depth={depth}"]
        return self.fetch(git_dir, [f"+{sha}:{PIN_PREFIX}{sha}"], extra=extra)

    def fetch(
        self,
        git_dir: Path,
        refspecs: list[str],
        *,
        clone_filter: str | None = None,
        upstream: bool = False,
        extra: list[str] | None = None,
    ) -> GitResult:
        repo = self.repo
        self._refuse_unless_online("cannot take what the remote has")
        building = git_dir.parent.name == "tmp"  # a clone's own fetch counts as the clone
        options, report = self._options(building, clone_filter=clone_filter, upstream=upstream)
        # A partial clone must fetch through its promisor remote; others name the URL, so
        # that no URL is ever stored in the cached repository's config.
        source = "origin" if clone_filter is not None or self._partial() else repo.fetch_url
        args = ["fetch", *options, *(extra or []), "--", source, *refspecs]
        if not building:
            self._stats().fetches += 1
        return self._network(args, git_dir, report)

    def list_refs(self, git_dir: Path, patterns: list[str]) -> GitResult:
        """The remote's refs matching ``patterns`` (``git ls-remote``), no object fetched."""
        self._refuse_unless_online("cannot ask the remote for its refs")
        self._stats().fetches += 1
        # --exit-code: "none matches" is exit status 2, which a mirror that lacks the ref must
        # give for the original to be asked.
        args = ["ls-remote", "--exit-code", "--", self.repo.fetch_url, *patterns]
        return self._network(args, git_dir, None)

    def _refuse_unless_online(self, what: str) -> None:
        if self._read_only():
            raise read_only_error(self._cache_dir, self.repo.redacted, what, None)
        if self._offline:
            raise RemoteError(
                "Not in the cache, and --repo-offline forbids contacting the remote",
                url=self.repo.redacted,
                hint=OFFLINE_HINT,
            )

    def _network(
        self, args: list[str], git_dir: Path, report: Callable[[str], None] | None
    ) -> GitResult:
        """Run a git command that talks to the remote: through its mirror first, if any."""
        repo = self.repo
        started = time.time()
        mirror = self._mirrors.mirror_of(repo) if self._mirrors else None
        if mirror is not None:
            served = self._from_mirror(mirror, git_dir, args, report, started)
            if served is not None:
                return served
        self._failures.check(repo.key, repo.redacted)
        try:
            result = self._run_via(repo, args, git_dir, report)
        except GitTimeoutError as exc:
            self._failures.record(repo.key, exc)
            raise
        if not result.ok and not self.lacks(result):
            self._raise_local_write_failure(result, git_dir, started)
            self._record_failure(result)
        return result

    def _from_mirror(
        self,
        mirror: RepoURL,
        git_dir: Path,
        args: list[str],
        report: Callable[[str], None] | None,
        started: float,
    ) -> GitResult | None:
        """The command as ``mirror`` served it, or None (said once): then the original serves it."""
        assert self._mirrors is not None
        repo = self.repo
        # The entry keeps the original URL (a partial clone's promisor remote too): git
        # rewrites it to the mirror for this one command. No credential is in either URL.
        rewrite = ["-c", f"url.{mirror.fetch_url}.insteadOf={repo.fetch_url}"]
        try:
            result = self._run_via(mirror, args, git_dir, report, rewrite)
        except GitTimeoutError:
            self._mirrors.failed(repo, mirror, "it timed out", unreachable=True)
            return None
        if result.ok:
            return result
        self._raise_local_write_failure(result, git_dir, started)  # the disk, not the mirror
        reason = mirror.scrub(repo.scrub(result.error_line))
        self._mirrors.failed(repo, mirror, reason, unreachable=not self.lacks(result))
        return None

    def _run_via(
        self,
        via: RepoURL,
        args: list[str],
        git_dir: Path,
        report: Callable[[str], None] | None,
        rewrite: list[str] | None = None,
    ) -> GitResult:
        """git talking to ``via`` (the original or a mirror), with ``via``'s credentials."""
        pre_args, extra_env = self._auth_for(via)
        return self._runner.run(
            args,
            git_dir=git_dir,
            key=self.repo.key,
            pre_args=[*pre_args, *(rewrite or [])],
            extra_env=extra_env,
            url=via.redacted,
            progress=report,
        )

    def _record_failure(self, result: GitResult) -> None:
        """Remember a remote that did not answer, so that later operations fail at once."""
        repo = self.repo
        error = RemoteError(
            "Could not reach the remote", url=repo.redacted, git_error=repo.scrub(result.error_line)
        )
        self._failures.record(repo.key, error, stderr=repo.scrub(result.stderr))

    def _options(
        self, building: bool, *, clone_filter: str | None, upstream: bool
    ) -> tuple[list[str], Callable[[str], None] | None]:
        """git fetch's options, and where its progress lines go (None: quiet)."""
        options = [
            *(_UPSTREAM_OPTIONS if upstream else ["--no-tags"]),
            "--no-write-fetch-head",
            "--no-auto-maintenance",
        ]
        if clone_filter is not None:
            options.append(f"--filter={clone_filter}")
        if self._progress is None:
            return [*options, "--quiet"], None
        show, verb, shown = (
            self._progress,
            "cloning" if building else "fetching",
            self.repo.redacted,
        )

        def report(line: str) -> None:
            show(f"repoclones: {verb} {shown}: {line}")

        return [*options, "--progress"], report  # git prints it only to a terminal otherwise

    def auth(self) -> tuple[list[str], dict[str, str]]:
        """git arguments and environment that carry the URL's credentials (never argv)."""
        return self._auth_for(self.repo)

    def _auth_for(self, repo: RepoURL) -> tuple[list[str], dict[str, str]]:
        pre_args, extra_env = credential_args(
            repo.username if repo.scheme in ("http", "https") else None, repo.password
        )
        if repo.scheme == "ssh":
            extra_env.update(ssh_batch_env(self._runner.environment(), self._user_ssh_command()))
        return pre_args, extra_env

    @staticmethod
    def not_found(result: GitResult) -> bool:
        """The remote answered, and has no such object or ref."""
        return any(phrase in result.stderr for phrase in _NOT_FOUND_PHRASES)

    @classmethod
    def lacks(cls, result: GitResult) -> bool:
        """The remote answered, and has not what was asked (``ls-remote --exit-code``: 2)."""
        listing = result.args[:1] == ("ls-remote",) and result.returncode == 2
        return listing or cls.not_found(result)

    def fetch_error(self, commit: str | None, result: GitResult, problem: str) -> RepoClonesError:
        error_line = self.repo.scrub(result.error_line)
        if self.not_found(result):
            return CommitNotFoundError(
                f"{problem}: not found upstream",
                url=self.repo.redacted,
                commit=commit,
                git_error=error_line,
            )
        return RemoteError(problem, url=self.repo.redacted, commit=commit, git_error=error_line)

    def _raise_local_write_failure(self, result: GitResult, git_dir: Path, since: float) -> None:
        match = _LOCAL_WRITE_FAILURE.search(result.stderr)
        if match is None:
            return
        _remove_fetch_leftovers(git_dir, since)
        # The cache's disk, not the remote: say so (git's message only names a file).
        line = next(text for text in result.stderr.splitlines() if match.group(0) in text)
        failure = OSError(errno.ENOSPC if "space" in line.lower() else errno.EROFS, line.strip())
        raise CacheWriteError.from_os_error(failure, url=self.repo.redacted)

    def _user_ssh_command(self) -> str | None:
        """The user's core.sshCommand, which our GIT_SSH_COMMAND must not override."""
        result = self._runner.run(["config", "--get", "core.sshCommand"])
        return result.stdout.strip() or None

    def _remove_clashing_tags(self, git_dir: Path, stderr: str) -> bool:
        """Delete local tags that block upstream ones by name (caller holds the lock)."""
        doomed: set[str] = set()
        for match in _TAG_CLASH_RE.finditer(stderr):
            if match.group(1):
                doomed.add(match.group(1))
            else:
                under = self._runner.run(
                    ["for-each-ref", "--format=%(refname)", f"{match.group(2)}/"], git_dir=git_dir
                )
                doomed.update(line for line in under.stdout.splitlines() if line)
        if not doomed:
            return False
        stdin = "".join(f"delete {ref}\n" for ref in sorted(doomed))
        log.warning("repoclones: removing tags that upstream replaced: %s", ", ".join(doomed))
        return self._runner.run(["update-ref", "--stdin"], git_dir=git_dir, stdin=stdin).ok


def _remove_fetch_leftovers(git_dir: Path, since: float) -> None:
    """The temporary object and pack files a fetch that failed on a full disk left behind
    (git does not remove them): those made since it started, under our lock, are its own."""
    objects = git_dir / "objects"
    for pattern in ("??/tmp_obj_*", "pack/tmp_*", "incoming-*"):
        for leftover in objects.glob(pattern):
            try:
                if leftover.stat().st_mtime >= since - 1:
                    rmtree(leftover)
            except OSError:
                continue
