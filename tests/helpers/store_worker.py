"""A child process for the concurrency and crash tests: one real RepoStore in its own process.

Usage: ``python store_worker.py MODE JSON_ARGS``. Every mode prints ``ready`` once set up, and
modes that take part in a start barrier then wait for a line on stdin, so that the test can
release all children at the same moment. Results go to stdout as one ``result {json}`` line;
any exception ends the process with a traceback on stderr and a non-zero status.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

from pytest_repoclones import RepoClonesError, RepoStore
from pytest_repoclones._lock import RepoLock


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def barrier(args: dict[str, Any]) -> None:
    """Tell the test we are set up; wait for its "go" unless this child runs alone."""
    say("ready")
    if args.get("barrier", True) and not sys.stdin.readline():
        raise SystemExit("stdin closed before go")


def make_store(args: dict[str, Any]) -> RepoStore:
    if args.get("hostname"):
        # Run under `unshare --uts`: a container with a hostname of its own.
        socket.sethostname(args["hostname"])
    return RepoStore(
        args["cache"], timeout=60, lock_timeout=args.get("lock_timeout", 60),
        session_id=args.get("session"),
    )  # fmt: skip


def report(store: RepoStore, **extra: Any) -> None:
    stats = {key: value.as_dict() for key, value in store.stats.items()}
    say("result " + json.dumps({"stats": stats, **extra}))


def mode_clone(args: dict[str, Any]) -> None:
    """clone(url), then one worktree at a full sha, then remove it."""
    store = make_store(args)
    barrier(args)
    started = time.time()
    store.clone(args["url"])
    cloned = time.time()
    wt = store.add_worktree(args["url"], args["commit"], args["path"])
    ok = wt.commit == args["commit"] and (wt.path / args["file"]).is_file()
    store.remove_worktree(wt)
    report(store, started=started, cloned=cloned, ok=ok, gone=not wt.path.exists())


def mode_worktrees(args: dict[str, Any]) -> None:
    """Add and remove worktrees of several commits, two open at a time, in a shuffled order."""
    store = make_store(args)
    commits: dict[str, list[str]] = args["commits"]  # sha -> [file, its content at that sha]
    order = [sha for _ in range(args["rounds"]) for sha in commits]
    random.Random(args["seed"]).shuffle(order)
    root = Path(args["root"])
    barrier(args)
    errors: list[str] = []
    open_trees = []
    for number, sha in enumerate(order):
        try:
            wt = store.add_worktree(args["url"], sha, root / f"wt{number}")
            name, content = commits[sha]
            if wt.commit != sha or (wt.path / name).read_text() != content:
                errors.append(f"{sha}: wrong checkout {wt.commit} at {wt.path}")
            open_trees.append(wt)
            if len(open_trees) > 1:
                store.remove_worktree(open_trees.pop(0))
        except (RepoClonesError, OSError) as exc:
            errors.append(f"{sha}: {type(exc).__name__}: {exc}")
    for wt in open_trees:
        try:
            store.remove_worktree(wt)
        except (RepoClonesError, OSError) as exc:
            errors.append(f"remove {wt.path}: {type(exc).__name__}: {exc}")
    report(store, errors=errors, count=len(order))


def mode_resolve(args: dict[str, Any]) -> None:
    """resolve(url, name) once (a branch name, or a full sha to fetch)."""
    store = make_store(args)
    barrier(args)
    sha = store.resolve(args["url"], args["name"])
    report(store, sha=sha)


def mode_hold_worktree(args: dict[str, Any]) -> None:
    """Add a worktree and keep it until told to remove it (or until killed)."""
    store = make_store(args)
    wt = store.add_worktree(
        args["url"], args["commit"], args["path"], submodules=args.get("submodules", False)
    )
    submodules = [str(sub.admin_dir) for sub in wt.submodules]
    say(
        "ready "
        + json.dumps({"branch": wt.branch, "admin": str(wt.admin_dir), "submodules": submodules})
    )
    if sys.stdin.readline().strip() == "remove":
        store.remove_worktree(wt)
        report(store)


def mode_submodules(args: dict[str, Any]) -> None:
    """One worktree with its submodules at a commit, checked, then removed."""
    store = make_store(args)
    barrier(args)
    wt = store.add_worktree(args["url"], args["commit"], args["path"], submodules=True)
    ok = all((sub.path / ".git").is_file() and any(sub.path.iterdir()) for sub in wt.submodules)
    store.remove_worktree(wt)
    report(store, ok=ok and len(wt.submodules) == args["count"], gone=not wt.path.exists())


def mode_hold_lock(args: dict[str, Any]) -> None:
    """Take the repository's lock the way the store does, and keep it until killed."""
    store = make_store(args)
    git_dir = store.git_dir(args["url"])
    lock = RepoLock(
        store.cache_dir / "locks" / f"{git_dir.name[: -len('.git')]}.lock",
        timeout=10,
        shown_url=args["url"],
    )
    with lock.hold("test: hold the lock, then get killed"):
        say("ready")
        sys.stdin.readline()


MODES = {
    "clone": mode_clone,
    "worktrees": mode_worktrees,
    "resolve": mode_resolve,
    "hold-worktree": mode_hold_worktree,
    "hold-lock": mode_hold_lock,
    "submodules": mode_submodules,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](json.loads(sys.argv[2]))
