"""Worktree registrations in a cached repository: their branches, their admin entries in
``worktrees/``, and the pruning of those whose owner is gone.

git's own `worktree add` writes an entry file by file, and deletes it the same way; a test
running `git log --all` in its own worktree meanwhile reads it half-made ("bad object
worktrees/X/HEAD", "failed to read worktrees/X/commondir"). Here an entry is built aside and
renamed in, and withdrawn by one unlink before it is deleted. Every method that changes the
repository runs under its lock (see store.py), which the caller holds and each one checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from ._files import read_stripped, rmtree, write_atomically
from ._git import GitResult
from ._lock import RepoLock
from ._ownership import REASON_PREFIX, Owner, judge, points_back
from ._runner import GitRunner

__all__ = [
    "BRANCH_PREFIX",
    "HUSK_GRACE",
    "STAGING_DIR",
    "WorktreeRegistry",
    "write_checkout_reflog",
]

log = logging.getLogger("pytest_repoclones")

BRANCH_PREFIX = "repoclones/"
#: Inside a cached repository: admin entries are built here and renamed into worktrees/ (and
#: renamed out here before deletion), so that no git process ever sees one half-made.
STAGING_DIR = "repoclones-staging"
#: How long a withdrawn worktree entry stays on disk (see WorktreeRegistry.unregister).
HUSK_GRACE = 10.0
#: A git lock file untouched this long, found while we hold the repository lock, is stale.
STALE_GIT_LOCK_AGE = 60.0
_ENTRY_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class WorktreeRegistry:
    """Registers, withdraws and prunes the worktrees of the cached repositories of one cache."""

    def __init__(self, cache_dir: Path, runner: GitRunner, owner: Owner) -> None:
        self.cache_dir = cache_dir
        self._runner = runner
        self.owner = owner

    def create_branch(self, lock: RepoLock, git_dir: Path, branch: str, start: str) -> GitResult:
        """The worktree's branch, created only if absent ("" as the old value); git checks
        that ``start`` names a commit, so nothing ever points a branch at a missing object."""
        lock.assert_held()
        return self._runner.run(["update-ref", f"refs/heads/{branch}", start, ""], git_dir=git_dir)

    def delete_branch(self, lock: RepoLock, git_dir: Path, branch: str) -> GitResult:
        """Delete one of our branches: its loose ref and reflog files where that is all there
        is of it (the usual case: update-ref made it and nothing packed it), git otherwise.

        A worktree's teardown and every reuse pays this: a git process is most of it. Under
        our lock nobody else writes our branches; a packed copy (a test ran `git pack-refs`
        or `gc`) would outlive the loose file, so then git deletes it.
        """
        lock.assert_held()
        name = f"refs/heads/{branch}"
        if _delete_loose_ref(git_dir, name):
            return GitResult(("update-ref", "-d", name), 0, "", "")
        return self._runner.run(["update-ref", "-d", name], git_dir=git_dir)

    def register(
        self, lock: RepoLock, git_dir: Path, target: Path, branch: str, *, detached: str = ""
    ) -> Path:
        """Register ``target`` as a worktree on ``branch`` (or at the commit ``detached``, on no
        branch, as a submodule is); return its admin entry.

        What `git worktree add --no-checkout --lock` writes, but built aside and renamed into
        ``worktrees/``, locked with our owner id: git's own prune leaves it alone, and a later
        session tells a dead owner's entry from a live one by that owner's lock. A detached
        HEAD must name a commit the entry holds (a fetch reads every worktree's HEAD).
        """
        lock.assert_held()
        name = _ENTRY_NAME_UNSAFE.sub("-", target.name).strip(".-")[:40] or "wt"
        name = f"{name}-{secrets.token_hex(4)}"
        staging = git_dir / STAGING_DIR / name
        admin = Path(os.path.realpath(git_dir)) / "worktrees" / name
        dot_git = target / ".git"
        try:
            staging.mkdir(parents=True)
            (staging / "gitdir").write_text(f"{os.path.realpath(target)}/.git\n")
            (staging / "commondir").write_text("../..\n")
            (staging / "HEAD").write_text(
                f"{detached}\n" if detached else f"ref: refs/heads/{branch}\n"
            )
            if detached:
                write_checkout_reflog(staging, detached)
            (staging / "locked").write_text(self.owner.reason(branch))
            target.mkdir(parents=True, exist_ok=True)
            dot_git.write_text(f"gitdir: {admin}\n")
            (git_dir / "worktrees").mkdir(exist_ok=True)
            os.rename(staging, admin)
        except BaseException:
            rmtree(staging)
            dot_git.unlink(missing_ok=True)
            raise
        return admin

    def keep(self, lock: RepoLock, admin: Path, branch: str) -> None:
        """Mark an entry kept for a human (``--repo-keep``): no owner judges it any more; it
        lives while its directory does."""
        lock.assert_held()
        write_atomically(admin / "locked", f"{REASON_PREFIX}kept=1 branch={branch}")

    def unregister(self, lock: RepoLock, git_dir: Path, admin: Path) -> None:
        """Withdraw an admin entry: git stops listing it at once.

        Without its ``gitdir`` file git skips an entry (get_linked_worktree gives up before
        anything else), so one unlink withdraws it. The directory itself stays a while as a
        husk: a git that read ``gitdir`` a moment before still resolves the directory and
        reads its HEAD, and dies ("Invalid path ... No such file") if it vanished meanwhile.
        Husks older than HUSK_GRACE are swept here, by whoever removes the next worktree.
        """
        lock.assert_held()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (admin / "gitdir").unlink()
        self._sweep_husks(git_dir)

    def _sweep_husks(self, git_dir: Path) -> None:
        """Delete withdrawn entries of ours older than HUSK_GRACE (caller holds the lock)."""
        root = git_dir / "worktrees"
        limit = time.time() - HUSK_GRACE
        for admin in root.iterdir() if root.is_dir() else []:
            try:
                if (admin / "gitdir").exists() or admin.stat().st_mtime > limit:
                    continue
            except OSError:
                continue
            if not (read_stripped(admin / "locked") or "").startswith(REASON_PREFIX):
                continue  # not ours (a test's own worktree): git's prune is its tool
            gone = git_dir / STAGING_DIR / f"gone-{admin.name}-{secrets.token_hex(4)}"
            try:
                gone.parent.mkdir(exist_ok=True)
                os.rename(admin, gone)
            except FileNotFoundError:
                continue
            rmtree(gone)

    def prepare(self, lock: RepoLock, git_dir: Path) -> None:
        """First use in this process: clear what killed processes left behind."""
        lock.assert_held()
        # Only holders of this lock stage admin entries: anything there is a killed one's.
        rmtree(git_dir / STAGING_DIR)
        _remove_stale_git_locks(git_dir)
        self.prune_dead(lock, git_dir)

    def prune_dead(self, lock: RepoLock, git_dir: Path) -> None:
        """Remove worktrees and branches whose owner is gone.

        Only registrations the plugin wrote are judged (see _ownership.judge): a worktree a
        test made with its own `git worktree add` is never ours to delete.
        """
        lock.assert_held()
        live_refs: set[str] = set()
        admin_root = git_dir / "worktrees"
        verdicts: dict[str, bool] = {}
        for admin in sorted(admin_root.iterdir()) if admin_root.is_dir() else []:
            registration = judge(self.cache_dir, admin, verdicts=verdicts, forget_dead=True)
            dead = registration.state == "dead" or (
                registration.state == "kept" and not registration.in_use
            )
            if not dead:
                head = read_stripped(admin / "HEAD") or ""
                if head.startswith("ref: "):
                    live_refs.add(head[len("ref: ") :])
                branch = registration.fields.get("branch")
                if branch:
                    live_refs.add(f"refs/heads/{branch}")  # even if the test switched away
                continue
            tree = registration.tree
            # Delete the tree only if it still points back here, never some other directory.
            if tree is not None and points_back(tree, admin):
                try:
                    rmtree(tree)
                except OSError as exc:  # the entry matters, the files are in a tmp dir
                    log.warning("repoclones: could not delete %s: %s", tree, exc)
            self.unregister(lock, git_dir, admin)
            log.info("repoclones: pruned worktree entry %s of a dead process", admin.name)
        # Under the lock nobody is between creating a branch and registering its worktree,
        # so a plugin branch that no live worktree owns was orphaned by a killed teardown.
        doomed = [ref for ref in self.plugin_branches(git_dir) if ref not in live_refs]
        if doomed:
            stdin = "".join(f"delete {ref}\n" for ref in doomed)
            result = self._runner.run(["update-ref", "--stdin"], git_dir=git_dir, stdin=stdin)
            if not result.ok:
                log.warning("repoclones: could not delete orphaned branches: %s", result.error_line)

    def plugin_branches(self, git_dir: Path) -> list[str]:
        """Full names of the branches the plugin made in ``git_dir``."""
        result = self._runner.run(
            ["for-each-ref", "--format=%(refname)", f"refs/heads/{BRANCH_PREFIX}"],
            git_dir=git_dir,
        )
        return [line for line in result.stdout.splitlines() if line]

    def users(self, git_dir: Path) -> list[Path]:
        """Checkouts that removing or rebuilding the entry would pull from under someone."""
        admin_root = git_dir / "worktrees"
        verdicts: dict[str, bool] = {}
        found = []
        for admin in sorted(admin_root.iterdir()) if admin_root.is_dir() else []:
            registration = judge(self.cache_dir, admin, verdicts=verdicts)
            if registration.in_use:
                found.append(registration.tree or admin)
        return found

    @staticmethod
    def registered(git_dir: Path) -> list[Path]:
        """Checkouts registered in ``git_dir`` (withdrawn entries are not)."""
        found = []
        for admin in sorted((git_dir / "worktrees").glob("*")):
            gitdir = read_stripped(admin / "gitdir")
            if gitdir:
                found.append(Path(gitdir).parent)
        return found


def write_checkout_reflog(admin: Path, sha: str) -> None:
    """The HEAD reflog line `git submodule update` leaves: `git status` reads the last
    "checkout: moving from X to Y" to say "HEAD detached at <sha>" rather than "Not
    currently on any branch"."""
    (admin / "logs").mkdir(exist_ok=True)
    line = f"{'0' * len(sha)} {sha} pytest-repoclones <> {int(time.time())} +0000"
    (admin / "logs" / "HEAD").write_text(f"{line}\tcheckout: moving from {sha} to {sha}\n")


def _remove_stale_git_locks(git_dir: Path) -> None:
    now = time.time()
    candidates = [git_dir / name for name in ("packed-refs.lock", "config.lock", "HEAD.lock")]
    candidates.extend((git_dir / "refs").rglob("*.lock"))
    for lock_file in candidates:
        try:
            # Tests may run git in their worktrees (a commit takes a ref lock for a few
            # milliseconds) without our lock; only old lock files are from dead processes.
            # One dated in the future (clock stepped back, NFS server ahead) has no age we
            # can trust: the runner's retry judges it by watching it instead.
            if now - lock_file.stat().st_mtime > STALE_GIT_LOCK_AGE:
                lock_file.unlink()
                log.warning("repoclones: removed stale git lock %s", lock_file)
        except FileNotFoundError:
            continue


def _delete_loose_ref(git_dir: Path, name: str) -> bool:
    """Whether ``name`` was a loose ref only (not packed) and is now gone with its reflog.

    git's own locks are taken as ``update-ref -d`` takes them (the ref's, then packed-refs'),
    so a `git pack-refs` a test runs meanwhile cannot pack the ref between our look at
    packed-refs and the unlink; a lock already there (a git at work, or a killed one's) sends
    the deletion to git, which waits or clears it.
    """
    loose, packed_refs = git_dir / name, git_dir / "packed-refs"
    with _git_lock(loose) as ref_locked, _git_lock(packed_refs) as packed_locked:
        if not (ref_locked and packed_locked):
            return False
        try:
            value = loose.read_text().strip()
            packed = b""
            if os.path.lexists(packed_refs):
                if not stat.S_ISREG(os.lstat(packed_refs).st_mode):
                    return False  # not a plain file we can just read: git deals with it
                packed = packed_refs.read_bytes()
        except (OSError, UnicodeDecodeError):
            return False
        if len(value) not in (40, 64) or f" {name}\n".encode() in packed:
            return False
        loose.unlink()
        (git_dir / "logs" / name).unlink(missing_ok=True)
    # Empty directories left by a deleted ref are removed, as git does.
    for base in (git_dir, git_dir / "logs"):
        heads, parent = base / "refs" / "heads", (base / name).parent
        while parent != heads and parent.is_relative_to(heads):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    return True


@contextlib.contextmanager
def _git_lock(path: Path) -> Iterator[bool]:
    """git's lock file of ``path`` (``<path>.lock``, created exclusively), if it can be had."""
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError:
        yield False
        return
    os.close(fd)
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
