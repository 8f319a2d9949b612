"""A new cached repository's skeleton and configuration, written without starting git.

`git init --bare --template=` costs a process on the cold path; this writes the same files,
plus the configuration that keeps anything run in a worktree (a test's own `git commit`
triggers auto-gc) from repacking or pruning the shared store.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["config_quote", "init_bare_repository"]


def init_bare_repository(path: Path, *, promisor_url: str | None, clone_filter: str | None) -> None:
    """A bare repository at ``path`` configured for the cache (a partial clone with a filter)."""
    _init_skeleton(path)
    with open(path / "config", "a", encoding="utf-8") as config:
        config.write(_REPO_CONFIG)
        if clone_filter is not None and promisor_url is not None:
            # A partial clone needs a promisor remote to fetch missing blobs from later;
            # its URL carries no credentials (they come from the environment).
            config.write(
                f'[remote "origin"]\n\turl = {config_quote(promisor_url)}\n'
                f"\tpromisor = true\n\tpartialCloneFilter = {clone_filter}\n"
                "[extensions]\n\tpartialClone = origin\n"
            )


# Written into each cached repository's own config, so git run by tests inside a worktree
# (a commit triggers auto-gc) cannot repack or prune the shared store either.
_REPO_CONFIG = """\
[gc]
\tauto = 0
\tautoDetach = false
\tpruneExpire = never
\treflogExpire = never
[maintenance]
\tauto = false
[fetch]
\twriteCommitGraph = false
[core]
\thooksPath = /dev/null
\tfsmonitor = false
[extensions]
\tworktreeConfig = true
[receive]
\tautogc = false
"""


# With worktreeConfig on, core.bare must live in the bare repository's own config.worktree,
# or every linked worktree would read core.bare=true from the shared config. Doing this at
# clone time is what `git sparse-checkout` would otherwise do later, rewriting the shared
# config while other processes' worktrees read it.
_MAIN_WORKTREE_CONFIG = "[core]\n\tbare = true\n"


def _init_skeleton(path: Path) -> None:
    """What `git init --bare --template=` writes, without starting git (cold-path cost).

    core.bare goes to the repository's own config.worktree (see _MAIN_WORKTREE_CONFIG).
    """
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
        (path / sub).mkdir(parents=True)
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    filemode = "false" if os.name == "nt" else "true"
    (path / "config").write_text(
        f"[core]\n\trepositoryformatversion = 1\n\tfilemode = {filemode}\n"
    )
    (path / "config.worktree").write_text(_MAIN_WORKTREE_CONFIG)


def config_quote(value: str) -> str:
    """A value for a git config file, quoted so that no character changes its meaning."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
