"""Repositories of their own for a test, built from a cache entry without registering in it.

Two kinds: an isolated one (``isolate=True``) holds only the commit and its ancestors (or, with
``history=False``, one new commit of its tree), from a pack made from the entry (``_packs``), so
that no other branch, tag, reflog or object can leak the future; a
borrowing one (for a read-only cache) shares the entry's objects through git alternates and
shows its branches and tags, as a worktree would, without writing into the cache.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

from ._bare import config_quote
from ._files import read_stripped
from ._packs import Pack, link_pack

__all__ = ["init_borrowing", "init_isolated", "init_submodule_repository"]


def init_isolated(pack: Pack, target: Path, branch: str, sha: str) -> str:
    """Make ``target/.git`` holding only ``pack``'s objects, on ``branch``; the commit it is at.

    What ``git init`` writes, without a process: the pack is already indexed, so the
    repository is whole once the branch names the commit. A history-free pack brings its one
    commit, written here as a loose object.
    """
    dot_git = target / ".git"
    for sub in ("objects/info", "refs/heads", "refs/tags"):
        (dot_git / sub).mkdir(parents=True)
    link_pack(pack, dot_git / "objects" / "pack")
    if pack.commit is not None:
        sha = _write_loose(dot_git, pack.commit, sha256=len(sha) == 64)
    (dot_git / "config").write_text(_config(sha256=len(sha) == 64))
    (dot_git / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    branch_ref = dot_git / "refs" / "heads" / branch
    branch_ref.parent.mkdir(parents=True, exist_ok=True)
    branch_ref.write_text(f"{sha}\n")
    return sha


def _config(*, sha256: bool) -> str:
    # No reflogs (a reflog names what a ref pointed at), no automatic gc in a test's repository.
    core = "[core]\n\trepositoryformatversion = {}\n\tfilemode = true\n\tbare = false\n"
    config = core.format(1 if sha256 else 0) + "\tlogAllRefUpdates = false\n[gc]\n\tauto = 0\n"
    return config + ("[extensions]\n\tobjectFormat = sha256\n" if sha256 else "")


def _write_loose(dot_git: Path, obj: bytes, *, sha256: bool) -> str:
    name = (hashlib.sha256 if sha256 else hashlib.sha1)(obj).hexdigest()
    path = dot_git / "objects" / name[:2] / name[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zlib.compress(obj))
    return name


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


def shared_refs(
    git_dir: Path, prefixes: tuple[str, ...] = ("refs/remotes/origin/", "refs/tags/")
) -> str:
    """A packed-refs file with the refs of ``git_dir`` under ``prefixes`` (by default the
    cache's branches and tags: what a worktree of the cache would show a test), read from its
    files (no git process). A prefix not ending in ``/`` names one ref."""
    refs: dict[str, str] = {}
    packed = read_stripped(git_dir / "packed-refs") or ""
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name.startswith(prefixes) and not line.startswith(("#", "^")):
            refs[name] = sha
    for prefix in prefixes:
        root = git_dir / prefix
        paths = root.rglob("*") if prefix.endswith("/") and root.is_dir() else [root]
        for path in paths:
            loose = read_stripped(path) if path.is_file() else None
            if loose and len(loose) in (40, 64):  # loose refs win over packed ones, as in git
                refs[path.relative_to(git_dir).as_posix()] = loose
    # No "sorted"/"peeled" traits claimed: git then sorts and peels for itself.
    return "".join(f"{sha} {name}\n" for name, sha in sorted(refs.items()))


def init_submodule_repository(
    git_dir: Path,
    worktree: Path,
    sha: str,
    *,
    pack: Pack | None = None,
    borrow_from: Path | None = None,
    shallow: bool = False,
) -> None:
    """A submodule's own repository at ``git_dir`` (``<superproject>/.git/modules/<name>``,
    where `git submodule update` keeps it), for ``worktree``, on a detached HEAD at ``sha``.

    Its objects are ``pack``'s (an isolated superproject: only the commit's history, or with
    ``shallow`` the commit alone, grafted as a depth-1 clone is) or borrowed from a read-only
    cache entry (``borrow_from``), whose branches and tags it shows as a worktree would.
    The gitfile and ``core.worktree`` are relative, as git writes them, so the pair survives
    a move of the superproject.
    """
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
        (git_dir / sub).mkdir(parents=True, exist_ok=True)  # a pack may be built there first
    if pack is not None:
        link_pack(pack, git_dir / "objects" / "pack")
    if borrow_from is not None:
        (git_dir / "objects" / "info" / "alternates").write_text(
            f"{os.path.realpath(borrow_from / 'objects')}\n"
        )
        (git_dir / "packed-refs").write_text(shared_refs(borrow_from))
    if shallow:
        (git_dir / "shallow").write_text(f"{sha}\n")
    sha256 = len(sha) == 64
    relative_tree = os.path.relpath(worktree, git_dir)
    (git_dir / "config").write_text(
        _config(sha256=sha256).replace(
            "\tbare = false\n", f"\tbare = false\n\tworktree = {config_quote(relative_tree)}\n"
        )
    )
    (git_dir / "HEAD").write_text(f"{sha}\n")
    (worktree / ".git").write_text(f"gitdir: {os.path.relpath(git_dir, worktree)}\n")
