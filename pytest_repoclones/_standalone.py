"""Repositories of their own for a test, built from a cache entry without registering in it.

Two kinds: an isolated one (``isolate=True``) holds only the commit and its ancestors, fetched
over git's local transport, so that no other branch, tag or reflog can leak the future; a
borrowing one (for a read-only cache) shares the entry's objects through git alternates and
shows its branches and tags, as a worktree would, without writing into the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._files import read_stripped
from ._git import GitResult
from ._runner import GitRunner

__all__ = ["init_borrowing", "init_isolated"]


def init_isolated(
    runner: GitRunner, cache_git_dir: Path, target: Path, branch: str, sha: str, key: str
) -> GitResult | None:
    """Make ``target/.git`` with ``sha``'s history on ``branch``; git's failure, or None."""
    for args in (
        ["init", "--quiet", "--template=", f"--initial-branch={branch}", "--", str(target)],
        # Fetching into the branch HEAD names needs --update-head-ok; no tags, no
        # FETCH_HEAD, no reflog: nothing but the commit and its ancestors.
        [
            "-c", "core.logAllRefUpdates=false", "-C", str(target), "fetch", "--quiet",
            "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
            "--update-head-ok", "--", str(cache_git_dir), f"+{sha}:refs/heads/{branch}",
        ],
    ):  # fmt: skip
        result = runner.run(args, key=key)
        if not result.ok:
            return result
    with open(target / ".git" / "config", "a", encoding="utf-8") as config:
        config.write("[core]\n\tlogAllRefUpdates = false\n[gc]\n\tauto = 0\n")
    return None


def init_borrowing(cache_git_dir: Path, target: Path, branch: str, sha: str) -> Path:
    """Make ``target/.git`` borrowing the entry's objects, on ``branch`` at ``sha``."""
    dot_git = target / ".git"
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
        (dot_git / sub).mkdir(parents=True)
    (dot_git / "objects" / "info" / "alternates").write_text(
        f"{os.path.realpath(cache_git_dir / 'objects')}\n"
    )
    (dot_git / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"
        "\tlogAllRefUpdates = false\n[gc]\n\tauto = 0\n"
    )
    (dot_git / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    (dot_git / "packed-refs").write_text(shared_refs(cache_git_dir))
    branch_ref = dot_git / "refs" / "heads" / branch
    branch_ref.parent.mkdir(parents=True, exist_ok=True)
    branch_ref.write_text(f"{sha}\n")
    return dot_git


def shared_refs(git_dir: Path) -> str:
    """A packed-refs file with the cache's branches (refs/remotes/origin/*) and tags, read from
    its files (no git process): what a worktree of the cache would show a test."""
    refs: dict[str, str] = {}
    packed = read_stripped(git_dir / "packed-refs") or ""
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name.startswith(("refs/remotes/origin/", "refs/tags/")):
            refs[name] = sha
    for top in ("refs/remotes/origin", "refs/tags"):
        root = git_dir / top
        for path in root.rglob("*") if root.is_dir() else []:
            loose = read_stripped(path) if path.is_file() else None
            if loose and len(loose) in (40, 64):  # loose refs win over packed ones, as in git
                refs[path.relative_to(git_dir).as_posix()] = loose
    # No "sorted"/"peeled" traits claimed: git then sorts and peels for itself.
    return "".join(f"{sha} {name}\n" for name, sha in sorted(refs.items()))
