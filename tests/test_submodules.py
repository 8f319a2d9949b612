"""Submodules from the cache (issue 13): every submodule checked out with its superproject, at
the commit the superproject's commit records, each from a cache entry of its own; hostile
``.gitmodules`` refused before anything is cloned or written.

The upstreams are local (``file://``), as everywhere in this suite; a "remote" superproject is
an ``https://`` URL that the user's ``url.<base>.insteadOf`` sends to a local directory, which
is what a mirror set up that way looks like to git and to the plugin.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.children import ChildGroup
from helpers.messages import message_of
from upstream import GITLINK, Upstream, git, upload_packs

from pytest_repoclones import CommitNotFoundError, InvalidInputError, RepoStore, Worktree
from pytest_repoclones._submodules import _relative_url

FILE_ALLOW = ("-c", "protocol.file.allow=always")  # git 2.39 refuses file:// submodules


def gitmodules(*entries: tuple[str, str, str]) -> str:
    """A .gitmodules with (name, path, url) entries."""
    return "".join(
        f'[submodule "{name}"]\n\tpath = {path}\n\turl = {url}\n' for name, path, url in entries
    )


@dataclass
class Family:
    """A superproject and its submodules, over three commits of the superproject:

    c1: ``lib`` (relative URL ../lib.git, itself with a nested ``deps/leaf`` by relative URL)
        and ``vendor/other`` (absolute URL);
    c2: ``lib`` moved on to a newer commit, ``vendor/other``'s URL changed to another
        repository (``moved``);
    c3: ``lib`` moved to the path ``libs/lib``, ``vendor/other`` removed.
    """

    superproject: Upstream
    lib: Upstream
    leaf: Upstream
    other: Upstream
    moved: Upstream
    c1: str
    c2: str
    c3: str
    lib1: str
    lib2: str


@pytest.fixture
def family(make_upstream: Callable[..., Upstream]) -> Family:
    leaf = make_upstream("leaf")
    leaf1 = leaf.commit({"leaf.txt": "leaf\n"})
    lib = make_upstream("lib")
    lib.commit({"lib.txt": "lib 0\n"}, "before any superproject recorded lib")
    lib1 = lib.commit(
        {
            "lib.txt": "lib 1\n",
            ".gitmodules": gitmodules(("leaf", "deps/leaf", "../leaf.git")),
            "deps/leaf": (leaf1, GITLINK),
        }
    )
    lib2 = lib.commit({"lib.txt": "lib 2\n"})
    lib.commit({"lib.txt": "lib 3, recorded by nobody\n"})
    other = make_upstream("other")
    other1 = other.commit({"other.txt": "other\n"})
    moved = make_upstream("moved")
    moved1 = moved.commit({"moved.txt": "moved elsewhere\n"})
    sup = make_upstream("super")
    lib_entry = ("lib", "lib", "../lib.git")
    c1 = sup.commit(
        {
            "README.md": "super\n",
            ".gitmodules": gitmodules(lib_entry, ("other", "vendor/other", other.url)),
            "lib": (lib1, GITLINK),
            "vendor/other": (other1, GITLINK),
        },
        "two submodules",
    )
    c2 = sup.commit(
        {
            ".gitmodules": gitmodules(lib_entry, ("other", "vendor/other", moved.url)),
            "lib": (lib2, GITLINK),
            "vendor/other": (moved1, GITLINK),
        },
        "lib moved on; other's URL changed",
    )
    c3 = sup.commit(
        {
            ".gitmodules": gitmodules(("lib", "libs/lib", "../lib.git")),
            "lib": None,
            "libs/lib": (lib2, GITLINK),
            "vendor/other": None,
        },
        "lib moved to libs/; other removed",
    )
    return Family(sup, lib, leaf, other, moved, c1, c2, c3, lib1, lib2)


def files(root: Path) -> dict[str, str]:
    """Every file under ``root`` but git's own, with its content."""
    return {
        str(path.relative_to(root)): path.read_text()
        for path in root.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


# The first line's leading space is lost to git()'s strip: an empty flag is " ".
_STATUS_LINE = re.compile(r"^ ?([+U-]?)([0-9a-f]{40}) (\S+)")


def submodule_status(root: Path) -> list[tuple[str, str, str]]:
    """(flag, commit, path) of each line of `git submodule status --recursive`."""
    lines = git("-C", str(root), "submodule", "status", "--recursive").splitlines()
    found = []
    for line in lines:
        match = _STATUS_LINE.match(line)
        assert match is not None, line
        flag, sha, path = match.groups()
        found.append((flag or " ", sha, path))
    return found


def submodule_config(root: Path) -> str:
    """The submodule.* settings a checkout sees ("" if none: git config exits 1 then)."""
    found = subprocess.run(
        ["git", "-C", str(root), "config", "--get-regexp", r"^submodule\."],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode in (0, 1), found.stderr
    return found.stdout.strip()


def observed(root: Path) -> dict[str, object]:
    """What a user sees of a checkout with submodules: `git submodule status --recursive`
    (the name in brackets left out: it describes the commit by whatever refs the submodule's
    repository has), `git status` and `git diff` in the superproject and in every submodule."""
    status = submodule_status(root)
    seen: dict[str, object] = {
        "submodule status": status,
        "status": git("-C", str(root), "status", "--porcelain=v1", "--ignored"),
        "diff": git("-C", str(root), "diff", "HEAD"),
        "files": files(root),
    }
    for _, _, path in status:
        sub = str(root / path)
        seen[f"{path}: status"] = git("-C", sub, "status").splitlines()[0]
        seen[f"{path}: porcelain"] = git("-C", sub, "status", "--porcelain=v1", "--ignored")
        seen[f"{path}: HEAD"] = git("-C", sub, "rev-parse", "HEAD")
    return seen


def plain_git_checkout(family: Family, commit: str, where: Path) -> Path:
    """`git clone --recurse-submodules`, or a clone moved to ``commit`` and
    `git submodule update --init --recursive`: what the plugin's checkout must look like."""
    if commit == family.superproject.rev("main"):
        url = family.superproject.url
        git(*FILE_ALLOW, "clone", "-q", "--recurse-submodules", url, str(where))
        return where
    git("clone", "-q", family.superproject.url, str(where))
    git("-C", str(where), "checkout", "-q", commit)
    git("-C", str(where), *FILE_ALLOW, "submodule", "update", "-q", "--init", "--recursive")
    return where


@pytest.mark.parametrize("at", ["c1", "c3"])
def test_checkout_looks_as_after_clone_recurse_submodules(
    store: RepoStore, family: Family, tmp_path: Path, at: str
) -> None:
    commit = getattr(family, at)
    wt = store.add_worktree(family.superproject.url, commit, tmp_path / "wt", submodules=True)
    expected = observed(plain_git_checkout(family, commit, tmp_path / "clone"))
    assert observed(wt.path) == expected
    assert {flag for flag, _, _ in submodule_status(wt.path)} == {" "}
    path = "lib" if at == "c1" else "libs/lib"
    assert str(expected[f"{path}: status"]).startswith("HEAD detached at ")
    # What the result says: each submodule is a Worktree at the commit the superproject records.
    lib = {sub.path.relative_to(wt.path).as_posix(): sub for sub in wt.submodules}
    assert lib[path].commit == (family.lib1 if at == "c1" else family.lib2)
    assert lib[path].url == family.lib.url
    assert lib[path].branch == ""
    (leaf,) = lib[path].submodules
    assert leaf.path == lib[path].path / "deps" / "leaf"
    assert leaf.url == family.leaf.url


def test_each_repository_is_one_entry_cloned_once(
    store: RepoStore, family: Family, tmp_path: Path, trace_file: Path
) -> None:
    """Relative and absolute URLs name entries like a user's URL does; two worktrees and two
    checkouts of one submodule cost one clone; a commit missing from the entry is fetched by
    name (and pinned) on its first use only."""
    url = family.superproject.url
    first = store.add_worktree(url, family.c1, tmp_path / "a", submodules=True)
    second = store.add_worktree(url, family.c1, tmp_path / "b", submodules=True)
    assert {s.path.name for s in first.submodules} == {"lib", "other"}
    for upstream in (family.superproject, family.lib, family.leaf, family.other):
        assert upload_packs(trace_file, upstream.path) == 1, upstream.path
    lib_stats = store.stats[store.git_dir(family.lib.url).name[:-4]]
    # Two checkouts as a submodule: the first cloned its entry (no hit), the second is a hit.
    assert (lib_stats.worktrees, lib_stats.submodules, lib_stats.clones) == (2, 2, 1)
    assert lib_stats.cache_hits == 1
    # lib2 is an ancestor of lib's main tip: the clone brought it; other's moved repository
    # is new: one clone; nothing else goes to the network.
    third = store.add_worktree(url, family.c2, tmp_path / "c", submodules=True)
    assert upload_packs(trace_file, family.lib.path) == 1
    assert upload_packs(trace_file, family.moved.path) == 1
    assert (third.path / "vendor" / "other" / "moved.txt").is_file()
    for wt in (first, second, third):
        store.remove_worktree(wt)


def test_submodule_moved_removed_and_changed_url_between_commits(
    store: RepoStore, family: Family, tmp_path: Path
) -> None:
    url = family.superproject.url
    one = store.add_worktree(url, family.c1, tmp_path / "one", submodules=True)
    two = store.add_worktree(url, family.c2, tmp_path / "two", submodules=True)
    three = store.add_worktree(url, family.c3, tmp_path / "three", submodules=True)
    assert (one.path / "lib" / "lib.txt").read_text() == "lib 1\n"
    assert (one.path / "vendor" / "other" / "other.txt").is_file()
    assert (two.path / "lib" / "lib.txt").read_text() == "lib 2\n"
    assert (two.path / "lib" / "deps" / "leaf" / "leaf.txt").is_file()  # nested, still there
    # The URL changed: another repository, from its own entry.
    assert (two.path / "vendor" / "other" / "moved.txt").is_file()
    assert not (two.path / "vendor" / "other" / "other.txt").exists()
    # Moved to libs/lib; other removed: neither a directory nor a configured submodule.
    assert (three.path / "libs" / "lib" / "lib.txt").read_text() == "lib 2\n"
    assert not (three.path / "lib").exists()
    assert not (three.path / "vendor").exists()
    assert submodule_config(three.path) == (
        f"submodule.lib.url {family.lib.url}\nsubmodule.lib.active true"
    )
    for wt in (one, two, three):
        assert git("-C", str(wt.path), "status", "--porcelain") == ""
        store.remove_worktree(wt)


def test_teardown_and_keep_cover_submodule_registrations(
    store: RepoStore, family: Family, tmp_path: Path
) -> None:
    url = family.superproject.url
    wt = store.add_worktree(url, family.c1, tmp_path / "wt", submodules=True)
    lib_wt = next(s for s in wt.submodules if s.path.name == "lib")
    assert store.registered_worktrees(family.lib.url) == [lib_wt.path]
    assert store.registered_worktrees(family.leaf.url) == [lib_wt.path / "deps" / "leaf"]
    # The superproject's shared config is untouched: submodule settings are per worktree.
    assert "submodule" not in (store.git_dir(url) / "config").read_text()
    store.remove_worktree(wt)
    assert not wt.path.exists()
    for upstream in (family.superproject, family.lib, family.leaf, family.other):
        assert store.registered_worktrees(upstream.url) == []
        assert store.test_branches(upstream.url) == []

    kept = store.add_worktree(url, family.c1, tmp_path / "kept", submodules=True)
    store.keep_worktree(kept)
    store.close()  # this owner is gone: only "kept" saves the registrations now
    later = RepoStore(store.cache_dir, timeout=60)
    again = later.add_worktree(url, family.c1, tmp_path / "later", submodules=True)
    assert (kept.path / "lib" / "deps" / "leaf" / "leaf.txt").is_file()
    assert kept.path / "lib" in later.registered_worktrees(family.lib.url)
    later.remove_worktree(again)


def test_concurrent_processes_clone_each_submodule_once(
    family: Family, cache_dir: Path, tmp_path: Path, trace_file: Path
) -> None:
    """Three processes released at once on a cold cache, each making a worktree with its
    submodules: each repository is cloned once, whoever waits reuses the clone."""
    args = {"cache": str(cache_dir), "url": family.superproject.url, "commit": family.c1}
    with ChildGroup(tmp_path / "logs") as group:
        children = group.start_together(
            "submodules", [{**args, "path": str(tmp_path / f"wt{n}"), "count": 2} for n in range(3)]
        )
        results = [child.finish(timeout=120) for child in children]
    assert all(result["ok"] and result["gone"] for result in results), results
    for upstream in (family.superproject, family.lib, family.leaf, family.other):
        assert upload_packs(trace_file, upstream.path) == 1, upstream.path
    assert RepoStore(cache_dir).registered_worktrees(family.lib.url) == []


def test_killed_owner_submodule_checkouts_are_pruned(
    family: Family, cache_dir: Path, tmp_path: Path
) -> None:
    """A process killed with a worktree and its submodules open: the next session that uses
    a submodule's entry prunes its registration, as for any worktree of a dead owner."""
    args = {"cache": str(cache_dir), "url": family.superproject.url, "submodules": True}
    with ChildGroup(tmp_path / "logs") as group:
        args.update(commit=family.c1, path=str(tmp_path / "v"))
        victim = group.start("hold-worktree", args)
        dead = json.loads(victim.wait_ready())
        victim.kill()
    assert len(dead["submodules"]) == 2
    fresh = RepoStore(cache_dir, timeout=60)
    wt = fresh.add_worktree(family.superproject.url, family.c1, tmp_path / "new", submodules=True)
    for admin in dead["submodules"]:
        assert not (Path(admin) / "gitdir").exists(), admin  # withdrawn
    assert not (tmp_path / "v").exists()  # the dead one's files went with its superproject
    assert fresh.registered_worktrees(family.lib.url) == [wt.path / "lib"]
    fresh.remove_worktree(wt)


def test_cache_commands_respect_live_submodule_checkouts(
    store: RepoStore, family: Family, tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    """`gc` and `clear` see a submodule's checkout as a user of its entry, as any worktree."""
    wt = store.add_worktree(family.superproject.url, family.c3, tmp_path / "wt", submodules=True)
    status, out, _ = run("clear", family.leaf.url)
    assert "skipped" in out, out
    assert store.git_dir(family.leaf.url).is_dir()
    store.remove_worktree(wt)
    status, out, _ = run("clear", family.leaf.url)
    assert status == 0, out
    assert not store.git_dir(family.leaf.url).exists()


def test_mirrors_serve_submodules_too(
    family: Family, make_upstream: Callable[..., Upstream], cache_dir: Path, tmp_path: Path
) -> None:
    """A submodule URL that only a --repo-mirror rule can reach: fetched through the mirror,
    its entry keyed by the URL .gitmodules gives."""
    sup = make_upstream("mirrored")
    remote = "https://example.invalid/org/lib.git"
    sup.commit({".gitmodules": gitmodules(("lib", "lib", remote)), "lib": (family.lib2, GITLINK)})
    mirror_root = family.lib.path.parent.as_uri()
    store = RepoStore(cache_dir, timeout=60, mirrors={"https://example.invalid/org": mirror_root})
    wt = store.add_worktree(sup.url, "main", tmp_path / "wt", submodules=True)
    (lib,) = wt.submodules
    assert lib.url == remote
    assert (lib.path / "lib.txt").read_text() == "lib 2\n"
    assert lib.git_dir == store.git_dir(remote)
    store.remove_worktree(wt)


def test_recorded_commit_missing_upstream_names_both_repositories(
    store: RepoStore, family: Family, make_upstream: Callable[..., Upstream], tmp_path: Path
) -> None:
    gone = "1234567" * 5 + "89abc"
    sup = make_upstream("dangling")
    sup.commit({".gitmodules": gitmodules(("lib", "lib", family.lib.url)), "lib": (gone, GITLINK)})
    with pytest.raises(CommitNotFoundError) as info:
        store.add_worktree(sup.url, "main", tmp_path / "wt", submodules=True)
    message = str(info.value)
    for named in (sup.url, family.lib.url, gone):
        assert named in message, message
    assert "In submodule 'lib' (path 'lib')" in message
    assert not (tmp_path / "wt").exists() or not any((tmp_path / "wt").iterdir())
    assert store.registered_worktrees(sup.url) == []


def test_sparse_checks_out_only_submodules_inside(
    store: RepoStore, family: Family, tmp_path: Path
) -> None:
    """What the sparse checkout leaves out, `git submodule update` leaves out: in cone mode a
    gitlink at the top is in (as every top-level file is), one in another directory is not."""
    url = family.superproject.url
    cone = store.add_worktree(url, family.c1, tmp_path / "a", sparse=["vendor/"], submodules=True)
    assert [s.path.relative_to(cone.path).as_posix() for s in cone.submodules] == [
        "lib",
        "vendor/other",
    ]
    pattern = store.add_worktree(
        url, family.c3, tmp_path / "b", sparse=["README.md"], submodules=True
    )
    assert pattern.submodules == ()
    assert not (pattern.path / "libs").exists()
    assert submodule_config(pattern.path) == ""
    assert store.registered_worktrees(family.lib.url) == [cone.path / "lib"]
    store.remove_worktree(cone)
    store.remove_worktree(pattern)


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
def test_isolated_superproject_isolates_its_submodules(
    store: RepoStore, family: Family, tmp_path: Path, history: bool
) -> None:
    """Each submodule is a repository of its own under the superproject's .git/modules/, as
    git keeps them, holding only its recorded commit's history (without history: the commit
    alone, shallow, so the superproject's gitlink still names it); nothing registered."""
    wt = store.add_worktree(
        family.superproject.url,
        family.c1,
        tmp_path / "wt",
        isolate=True,
        history=history,
        submodules=True,
    )
    lib = wt.path / "lib"
    assert (lib / ".git").read_text() == "gitdir: ../.git/modules/lib\n"
    assert (wt.path / ".git" / "modules" / "lib" / "modules" / "leaf").is_dir()
    assert store.registered_worktrees(family.lib.url) == []
    # Not lib's later commits: only what c1 records and its past (or the commit alone).
    commits = git("-C", str(lib), "log", "--all", "--format=%H").split()
    assert commits[0] == family.lib1
    assert len(commits) == (2 if history else 1)
    assert git("-C", str(lib), "rev-parse", "--is-shallow-repository") == str(not history).lower()
    objects = git("-C", str(lib), "cat-file", "--batch-all-objects", "--batch-check")
    assert objects.count(" commit ") == len(commits)
    assert [flag for flag, _, _ in submodule_status(wt.path)] == [" ", " ", " "]
    assert git("-C", str(wt.path), "status", "--porcelain") == ""
    assert git("-C", str(lib), "status").startswith("HEAD detached at ")
    store.remove_worktree(wt)
    assert not wt.path.exists()


def test_offline_after_a_warm_run(family: Family, cache_dir: Path, tmp_path: Path) -> None:
    warm = RepoStore(cache_dir, timeout=60)
    for commit in (family.c1, family.c2):
        warm.resolve(family.superproject.url, commit, submodules=True)  # what prefetch does
    assert warm.registered_worktrees(family.lib.url) == []  # warming checks nothing out
    offline = RepoStore(cache_dir, timeout=60, offline=True)
    wt = offline.add_worktree(family.superproject.url, family.c2, tmp_path / "wt", submodules=True)
    assert (wt.path / "vendor" / "other" / "moved.txt").is_file()
    assert sum(s.clones + s.fetches for s in offline.stats.values()) == 0
    offline.remove_worktree(wt)


def test_reuse_never_parks_a_worktree_with_submodules(
    family: Family, cache_dir: Path, tmp_path: Path
) -> None:
    """Documented fallback: with --repo-reuse, worktrees with submodules are made fresh and
    removed at teardown; plain ones are still parked and reused."""
    store = RepoStore(cache_dir, timeout=60, reuse=True)
    url = family.superproject.url
    first = store.add_worktree(url, family.c1, tmp_path / "a", submodules=True)
    store.remove_worktree(first)
    assert not first.path.exists()
    assert store.registered_worktrees(family.lib.url) == []
    plain = store.add_worktree(url, family.c1, tmp_path / "b")
    store.remove_worktree(plain)  # parked
    second = store.add_worktree(url, family.c2, tmp_path / "c", submodules=True)
    assert not store.stats[store.git_dir(url).name[:-4]].reused
    assert (second.path / "lib" / "lib.txt").read_text() == "lib 2\n"
    store.remove_worktree(second)
    store.close()


def test_store_default_and_explicit_false(family: Family, cache_dir: Path, tmp_path: Path) -> None:
    store = RepoStore(cache_dir, timeout=60, submodules=True)
    wt = store.add_worktree(family.superproject.url, family.c1, tmp_path / "a")
    plain = store.add_worktree(family.superproject.url, family.c1, tmp_path / "b", submodules=False)
    assert len(wt.submodules) == 2
    assert plain.submodules == ()
    assert not any((plain.path / "lib").iterdir())  # what a plain checkout leaves
    store.remove_worktree(wt)
    store.remove_worktree(plain)


def test_update_none_leaves_the_submodule_uninitialised_as_git_does(
    store: RepoStore, family: Family, make_upstream: Callable[..., Upstream], tmp_path: Path
) -> None:
    """update = none: configured, not checked out; a command (which git turns into none when
    it comes from .gitmodules) is never run."""
    sup = make_upstream("update-none")
    modules = gitmodules(("lib", "lib", "../lib.git"))
    none = sup.commit({".gitmodules": modules + "\tupdate = none\n", "lib": (family.lib2, GITLINK)})
    command = sup.commit({".gitmodules": modules + "\tupdate = !touch pwned\n"})
    wt = store.add_worktree(sup.url, none, tmp_path / "none", submodules=True)
    assert wt.submodules == ()
    assert [flag for flag, _, _ in submodule_status(wt.path)] == ["-"]
    assert (
        submodule_config(wt.path)
        == f"submodule.lib.url {family.lib.url}\nsubmodule.lib.active true"
    )
    other = store.add_worktree(sup.url, command, tmp_path / "command", submodules=True)
    assert other.submodules == ()
    assert not list(tmp_path.rglob("pwned"))
    assert store.registered_worktrees(family.lib.url) == []
    store.remove_worktree(wt)
    store.remove_worktree(other)


# -- hostile .gitmodules ------------------------------------------------------------------------


@dataclass
class Hostile:
    gitmodules: str
    #: Tree entries beside .gitmodules: path -> content or (content, mode).
    tree: dict[str, object]
    #: What the error must say (besides naming the superproject).
    says: str


def _hostile_cases(lib: str) -> dict[str, Hostile]:
    def one(name: str, path: str, url: str, says: str, **tree: object) -> Hostile:
        return Hostile(gitmodules((name, path, url)), tree or {"lib": (lib, GITLINK)}, says)

    return {
        "url-option": one("lib", "lib", "-u./payload", "starts with '-'"),
        "url-upload-pack": one("lib", "lib", "--upload-pack=touch pwned", "starts with '-'"),
        "url-ext": one("lib", "lib", "ext::sh -c touch% pwned", "not allowed"),
        "url-newline": one("lib", "lib", "../lib.git%0ahost=evil", "control character"),
        "url-climbs-into-host": one("lib", "lib", "../:evil.example/x", "climbs into the host"),
        "url-bare-relative": one("lib", "lib", "lib.git", "without './' or '../'"),
        "url-backslash": one("lib", "lib", "..\\\\lib.git", "backslash"),  # ..\lib.git
        "path-into-dot-git": one("lib", ".git/hooks", "../lib.git", "'.git'"),
        "path-case-dot-git": one("lib", "x/.GiT/modules", "../lib.git", "'.git'"),
        "path-ntfs-dot-git": one("lib", "git~1/hooks", "../lib.git", "'.git'"),
        "path-dotdot": one("lib", "../outside", "../lib.git", "'..'"),
        "path-absolute": one("lib", "/tmp/outside", "../lib.git", "absolute"),
        "path-option": one("lib", "-lib", "../lib.git", "starts with '-'"),
        "name-dotdot": one("../../escape", "lib", "../lib.git", "'..' component"),
        "path-through-symlink": one(
            "lib", "link/lib", "../lib.git", "through the symlink", link=("/tmp", "120000")
        ),
        "path-is-symlink": one("lib", "lib", "../lib.git", "is a symlink", lib=("/tmp", "120000")),
        "same-path-twice": Hostile(
            gitmodules(("a", "lib", "../lib.git"), ("b", "lib", "../lib.git")),
            {"lib": (lib, GITLINK)},
            "claims the same path",
        ),
    }


HOSTILE = list(_hostile_cases("0" * 40))


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_gitmodules_refused_before_anything_is_written(
    store: RepoStore,
    family: Family,
    make_upstream: Callable[..., Upstream],
    tmp_path: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hostile = _hostile_cases(family.lib1)[case]
    sup = make_upstream("hostile")
    sup.commit({".gitmodules": hostile.gitmodules, "README.md": "hi\n", **hostile.tree})  # type: ignore[dict-item]
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)  # where a relative payload would land
    target = tmp_path / "wt"
    with pytest.raises(InvalidInputError) as info:
        store.add_worktree(sup.url, "main", target, submodules=True)
    message = message_of(info.value)
    assert hostile.says in message, message
    assert "Submodule " in message, message
    assert "refused" in message, message
    assert str(info.value).count(sup.url) >= 1, str(info.value)  # names the superproject
    # Nothing written: no checkout left, no payload, no entry for the submodule's URL.
    assert not target.exists() or not any(target.iterdir())
    assert list(outside.iterdir()) == []
    assert [p.name.split("-")[0] for p in (store.cache_dir / "repos").iterdir()] == ["hostile"]
    assert store.registered_worktrees(sup.url) == []


def test_gitmodules_symlink_refused(
    store: RepoStore, family: Family, make_upstream: Callable[..., Upstream], tmp_path: Path
) -> None:
    sup = make_upstream("linked")
    sup.commit({"real": gitmodules(("lib", "lib", "../lib.git")), "lib": (family.lib1, GITLINK)})
    sup.commit({".gitmodules": ("real", "120000")})
    # git's checkout refuses such a tree itself ("invalid path"); warming reads no checkout.
    with pytest.raises(InvalidInputError, match=r"\.gitmodules is a symlink"):
        store.resolve(sup.url, "main", submodules=True)


@pytest.fixture
def remote_view(tmp_path: Path, family: Family) -> str:
    """The family's directory as a "remote" host: https://example.invalid/org/... (the user's
    git config rewrites it to the local directory, so fetches still work offline)."""
    base = "https://example.invalid/org/"
    config = Path(os.environ["GIT_CONFIG_GLOBAL"])
    with open(config, "a") as handle:
        handle.write(f'[url "{family.superproject.path.parent}/"]\n\tinsteadOf = {base}\n')
    return base


def test_relative_urls_of_a_remote_superproject_follow_insteadof(
    store: RepoStore, family: Family, remote_view: str, tmp_path: Path
) -> None:
    """A remote superproject's relative URLs resolve to the same host (and the user's
    insteadOf applies to them as to any URL); c1's absolute file:// URL is refused there."""
    url = remote_view + "super.git"
    wt = store.add_worktree(url, family.c3, tmp_path / "wt", submodules=True)
    (lib,) = wt.submodules
    assert lib.url == remote_view + "lib.git"
    assert lib.submodules[0].url == remote_view + "leaf.git"
    assert git("-C", str(wt.path), "config", "submodule.lib.url") == remote_view + "lib.git"
    store.remove_worktree(wt)
    with pytest.raises(InvalidInputError) as info:
        store.add_worktree(url, family.c1, tmp_path / "wt1", submodules=True)
    message = str(info.value)
    assert "Submodule 'other'" in message, message
    assert "CVE-2022-39253" in message, message
    assert url in message  # the superproject, as given
    assert store.registered_worktrees(family.lib.url) == []
    assert not (tmp_path / "wt1").exists() or not any((tmp_path / "wt1").iterdir())


@pytest.mark.parametrize(
    ("base", "relative", "expected"),
    [
        # git's own cases (t0060-path-utils.sh, relative_url with an absolute remote URL)
        ("file:///tmp/repo", "../subrepo", "file:///tmp/subrepo"),
        ("ssh://hostname/repo", "../subrepo", "ssh://hostname/subrepo"),
        ("ssh://hostname/repo", "../../subrepo", "ssh://subrepo"),
        ("ssh://hostname/repo", "../../../subrepo", "ssh:/subrepo"),
        ("ssh://hostname/repo", "../../../../../subrepo", ".:subrepo"),
        ("ssh://hostname:22/repo", "../subrepo", "ssh://hostname:22/subrepo"),
        ("user@host:path/to/repo", "../subrepo", "user@host:path/to/subrepo"),
        ("user@host:repo", "../subrepo", "user@host:subrepo"),
        ("/x/submodule_update_repo", "./.", "/x/submodule_update_repo/."),
    ],
)
def test_relative_urls_resolve_as_git_resolves_them(
    base: str, relative: str, expected: str
) -> None:
    assert _relative_url(base, relative) == expected


def test_relative_url_climbing_out_of_the_host_is_refused(
    store: RepoStore, family: Family, remote_view: str, make_upstream: Callable[..., Upstream],
    tmp_path: Path,
) -> None:  # fmt: skip
    sup = make_upstream("climber")
    modules = gitmodules(("x", "x", "../../../evil.example/x"))
    sup.commit({".gitmodules": modules, "x": (family.lib1, GITLINK)})
    with pytest.raises(InvalidInputError, match="climbs out of the superproject's host"):
        store.add_worktree(remote_view + "climber.git", "main", tmp_path / "wt", submodules=True)


def test_worktree_repr_and_submodules_compare_as_values(
    store: RepoStore, family: Family, tmp_path: Path
) -> None:
    wt = store.add_worktree(family.superproject.url, family.c3, tmp_path / "wt", submodules=True)
    assert isinstance(wt.submodules[0], Worktree)
    assert "submodules" not in repr(wt)
    store.remove_worktree(wt)


# -- the plugin: option, ini, marker, prefetch under xdist, summary, offline, the CLI --------

INNER_TESTS = """
import os
import subprocess

import pytest


def submodule_flags(path):
    out = subprocess.run(
        ["git", "submodule", "status", "--recursive"], cwd=path, capture_output=True,
        text=True, check=True,
    ).stdout
    return {line[0] for line in out.splitlines()}


@pytest.mark.worktree(URL, COMMITS)
def test_declared(repo_worktree, repo_store):
    assert repo_worktree.submodules  # from the ini default
    assert submodule_flags(repo_worktree) == {" "}
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # The controller warmed every submodule before the first test: this worker cloned
        # and fetched nothing.
        assert [s.url for s in repo_store.stats.values() if s.clones or s.fetches] == []


@pytest.mark.worktree(URL, COMMITS[0], submodules=False)
def test_declared_without(repo_worktree):
    assert repo_worktree.submodules == ()


def test_factory(worktree):
    wt = worktree(URL, COMMITS[1], isolate=True)
    assert [s.path.name for s in wt.submodules] == ["lib", "other"]
    assert worktree(URL, COMMITS[1], submodules=False).submodules == ()
"""


def test_suite_with_submodules_under_xdist_then_offline(
    pytester: pytest.Pytester, family: Family, cache_dir: Path, trace_file: Path
) -> None:
    from inner import run

    pytester.makeini("[pytest]\nrepo_submodules = true\n")
    header = f"URL = {family.superproject.url!r}\nCOMMITS = {[family.c1, family.c2, family.c3]!r}\n"
    pytester.makepyfile(test_inner=header + INNER_TESTS)
    result = run(pytester, cache_dir, "-n", "2", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["repoclones: *submodules*"])  # the header says so
    # 6 superproject worktrees; submodules: lib+leaf+other (c1, c2), lib+leaf (c3), lib+leaf
    # +other (the isolated c2) = 11 checkouts; 5 repositories, each cloned once (prefetch).
    result.stdout.fnmatch_lines(
        ["*17 worktrees (11 of them submodules) from 5 repositories: 5 clones, 0 fetches*"]
    )
    for upstream in (family.superproject, family.lib, family.leaf, family.other, family.moved):
        assert upload_packs(trace_file, upstream.path) == 1, upstream.path
    store = RepoStore(cache_dir)
    for upstream in (family.lib, family.leaf, family.other):
        assert store.registered_worktrees(upstream.url) == []

    # Offline, in one process (no controller to prefetch; the cache must hold it all).
    offline = run(pytester, cache_dir, "-p", "no:xdist", "--repo-offline")
    offline.assert_outcomes(passed=5)
    for upstream in (family.superproject, family.lib, family.leaf):
        assert upload_packs(trace_file, upstream.path) == 1, upstream.path


def test_cache_list_shows_submodule_entries(
    family: Family, cache_dir: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    RepoStore(cache_dir, timeout=60).resolve(family.superproject.url, family.c1, submodules=True)
    status, out, _ = run("list")
    assert status == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("file://")}
    assert set(lines) == {
        u.url for u in (family.superproject, family.lib, family.leaf, family.other)
    }
    assert f"submodule of {family.superproject.url}" in lines[family.lib.url]
    assert f"submodule of {family.lib.url}" in lines[family.leaf.url]
    assert "submodule of" not in lines[family.superproject.url]
    status, out, _ = run("list", "--json")
    by_url = {repo["url"]: repo for repo in json.loads(out)["repositories"]}
    assert by_url[family.other.url]["submodule_of"] == family.superproject.url


def test_read_only_cache_serves_submodules_without_writing(
    family: Family, cache_dir: Path, tmp_path: Path
) -> None:
    """A warm cache on a read-only mount: the superproject and each submodule are
    repositories of their own borrowing the cache's objects (submodules under .git/modules),
    isolated ones too; nothing is written into the cache."""
    from helpers.mounts import read_only_bind

    RepoStore(cache_dir, timeout=60).resolve(family.superproject.url, family.c1, submodules=True)
    with read_only_bind(cache_dir, tmp_path / "ro") as mount:
        before = {str(p): p.lstat().st_mtime_ns for p in mount.rglob("*")}
        store = RepoStore(mount, timeout=60)
        assert store.read_only
        for isolate in (False, True):
            target = tmp_path / f"wt-{isolate}"
            wt = store.add_worktree(
                family.superproject.url, family.c1, target, isolate=isolate, submodules=True
            )
            assert (wt.path / "lib" / ".git").read_text() == "gitdir: ../.git/modules/lib\n"
            assert {flag for flag, _, _ in submodule_status(wt.path)} == {" "}
            assert git("-C", str(wt.path), "status", "--porcelain") == ""
            store.remove_worktree(wt)
        assert {str(p): p.lstat().st_mtime_ns for p in mount.rglob("*")} == before


def test_cli_prefetch_warms_submodules_for_an_offline_run(
    family: Family, cache_dir: Path, tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    status, _, err = run("prefetch", "--submodules", family.superproject.url, family.c1)
    assert status == 0, err
    offline = RepoStore(cache_dir, timeout=60, offline=True)
    wt = offline.add_worktree(family.superproject.url, family.c1, tmp_path / "wt", submodules=True)
    assert (wt.path / "lib" / "deps" / "leaf" / "leaf.txt").is_file()
    offline.remove_worktree(wt)
