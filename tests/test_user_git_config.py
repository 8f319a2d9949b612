"""The user's own git configuration must neither break nor hijack the plugin's git calls.

Per setting, the decision this file pins down:

neutralised (would run code, change checked-out bytes, or point git at another repository):
    core.hooksPath (hooks), core.fsmonitor, core.autocrlf / core.eol, init.templateDir (hooks and
    config of a template), submodule.recurse / fetch.recurseSubmodules, GIT_DIR / GIT_WORK_TREE /
    GIT_INDEX_FILE / GIT_OBJECT_DIRECTORY / GIT_CONFIG_PARAMETERS inherited from a parent git
    (pytest run from a hook or ``git rebase --exec``), and ``protocol.allow`` (an insteadOf
    rewrite cannot reach a transport outside the store's protocol list);
harmless, must not break anything:
    commit.gpgSign / tag.gpgSign with a failing gpg.program, advice.*, safe.bareRepository;
honoured:
    url.<base>.insteadOf, core.sshCommand (credential helpers: see test_faults.py).

Settings go into the per-test global config file the conftest points GIT_CONFIG_GLOBAL at. Each
hostile setting is first shown to take effect on a plain ``git`` call (the control), so a test
cannot pass just because the setting was spelled wrong.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.messages import message_of, raises_saying
from upstream import Upstream, git

from pytest_repoclones import CommitNotFoundError, RemoteError, RepoStore

HOOKS = (
    "post-checkout",
    "reference-transaction",
    "post-index-change",
    "pre-auto-gc",
    "post-merge",
    "post-rewrite",
    "pre-commit",
    "push-to-checkout",
    "fsmonitor-watchman",
)


@pytest.fixture
def global_config() -> Path:
    return Path(os.environ["GIT_CONFIG_GLOBAL"])


def add_config(config: Path, text: str) -> None:
    with open(config, "a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    """Every hostile hook or command touches a file here if it ever runs."""
    path = tmp_path / "markers"
    path.mkdir()
    return path


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def touching_hooks(directory: Path, markers: Path, prefix: str = "") -> Path:
    for name in HOOKS:
        script(directory / name, f"touch '{markers}/{prefix}{name}'")
    return directory


def fired(markers: Path) -> list[str]:
    return sorted(os.listdir(markers))


def clear(markers: Path) -> None:
    for name in os.listdir(markers):
        (markers / name).unlink()


def exercise(store: RepoStore, up: Upstream, where: Path) -> None:
    """Every kind of git call the plugin makes: clone, refresh, fetch by name, fetch of a named
    ref, worktree add and checkout, branch deletion; then a new session's health check."""
    unreachable = up.rev("refs/pull/1/head")
    wt = store.add_worktree(up.url, "main", where / "wt-main")
    assert (wt.path / "README.md").read_text() == "# project\n"
    assert store.resolve(up.url, "feature") == up.rev("refs/heads/feature")
    assert store.resolve(up.url, "refs/pull/1/head") == unreachable
    hidden = store.add_worktree(up.url, unreachable, where / "wt-hidden")
    assert (hidden.path / "hidden.txt").is_file()
    store.remove_worktree(hidden)
    store.remove_worktree(wt)
    fresh = RepoStore(store.cache_dir, timeout=60, lock_timeout=60)
    again = fresh.add_worktree(up.url, "v1.0", where / "wt-again")
    fresh.remove_worktree(again)
    assert fresh.test_branches(up.url) == []
    assert fresh.live_worktrees(up.url) == []


@pytest.fixture
def project(make_upstream: Callable[..., Upstream]) -> Upstream:
    up = make_upstream("project")
    base = up.commit({"README.md": "# project\n", "run.sh": ("#!/bin/sh\n", "100755")})
    up.tag("v1.0", base, message="release")
    up.commit({"feature.txt": "wip\n"}, "feature", branch="feature", parent=base)
    # Made now, before a test installs hostile settings that our own git calls would obey.
    up.commit({"hidden.txt": "only by name\n"}, "hidden", parent=base, ref="refs/pull/1/head")
    return up


def cached_config(git_dir: Path, key: str) -> str:
    """A value from the cached repository's own config file (not the user's)."""
    return git("config", "--file", str(git_dir / "config"), "--get", key)


# -- neutralised ------------------------------------------------------------------------------


def test_global_hooks_never_run(
    store: RepoStore,
    project: Upstream,
    global_config: Path,
    markers: Path,
    tmp_path: Path,
) -> None:
    hooks = touching_hooks(tmp_path / "hooks", markers)
    add_config(global_config, f"[core]\n\thooksPath = {hooks}\n")
    git("clone", "--quiet", project.url, str(tmp_path / "control"))
    assert {"post-checkout", "reference-transaction"} <= set(fired(markers)), "control failed"
    clear(markers)

    exercise(store, project, tmp_path)
    assert fired(markers) == []
    git_dir = store.git_dir(project.url)
    assert cached_config(git_dir, "core.hooksPath") == "/dev/null"
    assert cached_config(git_dir, "gc.auto") == "0"


def test_fsmonitor_command_never_runs(
    store: RepoStore,
    project: Upstream,
    global_config: Path,
    markers: Path,
    tmp_path: Path,
) -> None:
    monitor = script(tmp_path / "fsmonitor", f"touch '{markers}/fsmonitor'\nexit 1")
    add_config(global_config, f"[core]\n\tfsmonitor = {monitor}\n")
    git("clone", "--quiet", project.url, str(tmp_path / "control"))
    git("-C", str(tmp_path / "control"), "status", "--porcelain")
    assert fired(markers) == ["fsmonitor"], "control failed"
    clear(markers)

    exercise(store, project, tmp_path)
    assert fired(markers) == []
    # Pinned in the cached repository too, so git run by a test in its worktree is safe.
    assert cached_config(store.git_dir(project.url), "core.fsmonitor") == "false"


def test_line_ending_settings_do_not_change_checked_out_bytes(
    store: RepoStore,
    make_upstream: Callable[..., Upstream],
    global_config: Path,
    tmp_path: Path,
) -> None:
    files = {
        "crlf.txt": b"one\r\ntwo\r\n",
        "lf.txt": b"one\ntwo\n",
        "mixed.txt": b"one\r\ntwo\nthree\r",
        "no-final-newline.txt": b"one\ntwo",
        "binary.bin": bytes(range(256)) + b"\n\r\n",
    }
    up = make_upstream("eol")
    sha = up.commit(dict(files), "line endings")
    add_config(global_config, "[core]\n\tautocrlf = true\n\teol = crlf\n\tsafecrlf = true\n")
    git("clone", "--quiet", up.url, str(tmp_path / "control"))
    assert (tmp_path / "control" / "lf.txt").read_bytes() == b"one\r\ntwo\r\n", "control failed"

    wt = store.add_worktree(up.url, sha, tmp_path / "wt")
    for name, content in files.items():
        assert (wt.path / name).read_bytes() == content, name
    store.remove_worktree(wt)


def test_init_template_dir_is_not_copied(
    store: RepoStore,
    project: Upstream,
    global_config: Path,
    markers: Path,
    tmp_path: Path,
) -> None:
    template = tmp_path / "template"
    touching_hooks(template / "hooks", markers, prefix="template-")
    monitor = script(tmp_path / "fsmonitor", f"touch '{markers}/template-fsmonitor'\nexit 1")
    (template / "config").write_text(f"[core]\n\tfsmonitor = {monitor}\n")
    (template / "info").mkdir()
    (template / "info" / "exclude").write_text("*\n")  # would hide every file from `git status`
    add_config(global_config, f"[init]\n\ttemplateDir = {template}\n")
    git("init", "--quiet", str(tmp_path / "control"))
    assert (tmp_path / "control" / ".git" / "hooks" / "post-checkout").is_file(), "control failed"

    exercise(store, project, tmp_path)
    assert fired(markers) == []
    git_dir = store.git_dir(project.url)
    assert not (git_dir / "hooks").exists()
    assert not (git_dir / "info" / "exclude").exists()
    assert "template-fsmonitor" not in (git_dir / "config").read_text()


def test_submodules_are_never_recursed_into(
    store: RepoStore,
    make_upstream: Callable[..., Upstream],
    global_config: Path,
    markers: Path,
    tmp_path: Path,
) -> None:
    """Even with the user asking for recursion, and allowing every transport."""
    sub = make_upstream("sub")
    sub_commit = sub.commit({"inside.txt": "submodule\n"})
    up = make_upstream("super")
    base = up.commit({"README.md": "super\n"})
    gitmodules = (
        f'[submodule "sub"]\n\tpath = sub\n\turl = {sub.url}\n'
        f'[submodule "evil"]\n\tpath = evil\n\turl = ext::sh -c touch% {markers}/submodule\n'
    ).encode()
    stream = (
        b"commit refs/heads/main\ncommitter C <c@example.com> 1700000000 +0000\ndata 4\nsubs\n"
        + f"from {base}\nM 160000 {sub_commit} sub\nM 160000 {sub_commit} evil\n".encode()
        + f"M 100644 inline .gitmodules\ndata {len(gitmodules)}\n".encode()
        + gitmodules
        + b"\n"
    )
    up.git("fast-import", "--quiet", "--force", input=stream)
    add_config(
        global_config,
        "[submodule]\n\trecurse = true\n[fetch]\n\trecurseSubmodules = true\n"
        "[protocol]\n\tallow = always\n",
    )

    wt = store.add_worktree(up.url, "main", tmp_path / "wt")
    assert os.listdir(wt.path / "sub") == []
    assert os.listdir(wt.path / "evil") == []
    assert fired(markers) == []
    store.remove_worktree(wt)


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` with its mtime and content hash."""
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            data = path.read_bytes()
            found[str(path.relative_to(root))] = (
                path.stat().st_mtime_ns,
                hashlib.sha256(data).hexdigest(),
            )
    return found


@pytest.fixture
def other_repository(tmp_path: Path) -> Path:
    """The user's own project, whose hook is running pytest."""
    other = tmp_path / "users-project"
    git("init", "--quiet", "--initial-branch=trunk", str(other))
    (other / "mine.txt").write_text("the user's work\n")
    git("-C", str(other), "add", "mine.txt")
    git("-C", str(other), "commit", "--quiet", "-m", "user commit")
    (other / "staged.txt").write_text("staged\n")
    git("-C", str(other), "add", "staged.txt")
    (other / "untracked.txt").write_text("untracked\n")
    return other


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param(
            {
                "GIT_DIR": "{other}/.git",
                "GIT_WORK_TREE": "{other}",
                "GIT_INDEX_FILE": "{other}/.git/index",
                "GIT_PREFIX": "",
            },
            id="inside-a-hook",
        ),
        pytest.param(
            {"GIT_DIR": "{other}/.git", "GIT_COMMON_DIR": "{other}/.git"},
            id="git-dir-only",
        ),
        pytest.param(
            {
                "GIT_OBJECT_DIRECTORY": "{other}/.git/objects",
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": "{other}/.git/objects",
            },
            id="object-directory",
        ),
        pytest.param(
            {
                "GIT_CONFIG_PARAMETERS": (
                    "'core.hooksPath'='{hooks}' 'core.worktree'='{other}' 'core.autocrlf'='true'"
                ),
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "core.fsmonitor",
                "GIT_CONFIG_VALUE_0": "{monitor}",
            },
            id="config-from-a-parent-git",
        ),
    ],
)
def test_inherited_repository_variables_are_ignored(
    variables: dict[str, str],
    store: RepoStore,
    project: Upstream,
    other_repository: Path,
    markers: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks = touching_hooks(tmp_path / "hooks", markers)
    monitor = script(tmp_path / "fsmonitor", f"touch '{markers}/fsmonitor'\nexit 1")
    before = _snapshot(other_repository)
    with monkeypatch.context() as patch:
        for key, value in variables.items():
            patch.setenv(key, value.format(other=other_repository, hooks=hooks, monitor=monitor))
        # Only the plugin runs git while the variables are set (our own helper would obey them).
        wt = store.add_worktree(project.url, "v1.0", tmp_path / "wt")
        content = (wt.path / "README.md").read_bytes()
        branch = store.resolve(project.url, "feature")
        store.remove_worktree(wt)
    assert content == b"# project\n"
    assert branch == project.rev("refs/heads/feature")
    assert _snapshot(other_repository) == before, "the user's repository was touched"
    assert git("-C", str(other_repository), "branch", "--list") == "* trunk"
    assert fired(markers) == []


def test_instead_of_cannot_reach_a_transport_outside_the_list(
    cache_dir: Path,
    project: Upstream,
    global_config: Path,
    markers: Path,
    tmp_path: Path,
) -> None:
    """insteadOf is honoured, but what it rewrites to still has to be an allowed transport."""
    add_config(
        global_config,
        "[protocol]\n\tallow = always\n"
        '[protocol "ext"]\n\tallow = always\n'
        f'[url "ext::sh -c touch% {markers}/ext"]\n\tinsteadOf = https://evil.example/\n'
        f'[url "{project.url}"]\n\tinsteadOf = https://mirror.example/project.git\n',
    )
    with raises_saying(RemoteError, "transport 'ext' not allowed") as info:
        RepoStore(cache_dir, timeout=60).clone("https://evil.example/x.git")
    assert "https://evil.example/x.git" in str(info.value)
    narrow = RepoStore(cache_dir, timeout=60, protocols=("https",))
    with raises_saying(RemoteError, "transport 'file' not allowed"):
        narrow.clone("https://mirror.example/project.git")
    assert fired(markers) == []
    assert list((cache_dir / "repos").iterdir()) == []


# -- harmless: must simply keep working ------------------------------------------------------


def test_signing_settings_with_a_failing_gpg(
    store: RepoStore,
    project: Upstream,
    global_config: Path,
    markers: Path,
    tmp_path: Path,
) -> None:
    gpg = script(tmp_path / "gpg", f"touch '{markers}/gpg'\nexit 1")
    add_config(
        global_config,
        f"[commit]\n\tgpgSign = true\n[tag]\n\tgpgSign = true\n\tforceSignAnnotated = true\n"
        f"[push]\n\tgpgSign = true\n[gpg]\n\tprogram = {gpg}\n",
    )
    exercise(store, project, tmp_path)
    assert fired(markers) == []


def test_advice_settings_do_not_hide_gits_error(
    store: RepoStore, project: Upstream, global_config: Path, tmp_path: Path
) -> None:
    add_config(
        global_config,
        "[advice]\n"
        + "".join(
            f"\t{name} = true\n"
            for name in (
                "detachedHead",
                "statusHints",
                "resolveConflict",
                "ignoredHook",
                "fetchShowForcedUpdates",
                "objectNameWarning",
                "refSyntax",
                "setUpstreamFailure",
                "skippedCherryPicks",
                "waitingForEditor",
                "worktreeAddOrphan",
                "forceDeleteBranch",
            )
        )
        + "[core]\n\tquotePath = true\n[color]\n\tui = always\n",
    )
    exercise(store, project, tmp_path)
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(CommitNotFoundError) as info:
        store.add_worktree(project.url, missing, tmp_path / "wt-missing")
    message = str(info.value)
    # git's own error line, not a hint, no colour codes
    assert "\n  git: fatal:" in message_of(info.value)
    assert "\x1b[" not in message


def test_safe_bare_repository_explicit(
    store: RepoStore, project: Upstream, global_config: Path, tmp_path: Path
) -> None:
    add_config(global_config, "[safe]\n\tbareRepository = explicit\n")
    exercise(store, project, tmp_path)
    control = subprocess.run(
        ["git", "-C", str(store.git_dir(project.url)), "rev-parse", "HEAD"],
        capture_output=True,
        check=False,
    )
    assert control.returncode != 0, "control failed: the setting did not take effect"


def test_everything_at_once(
    store: RepoStore,
    project: Upstream,
    global_config: Path,
    markers: Path,
    tmp_path: Path,
) -> None:
    """A user config combining every hostile setting above still gives exact, quiet checkouts."""
    hooks = touching_hooks(tmp_path / "hooks", markers)
    template = tmp_path / "template"
    touching_hooks(template / "hooks", markers, prefix="template-")
    monitor = script(tmp_path / "fsmonitor", f"touch '{markers}/fsmonitor'\nexit 1")
    add_config(
        global_config,
        f"[core]\n\thooksPath = {hooks}\n\tfsmonitor = {monitor}\n\tautocrlf = true\n"
        f"[init]\n\ttemplateDir = {template}\n"
        "[commit]\n\tgpgSign = true\n[gpg]\n\tprogram = false\n"
        "[advice]\n\tdetachedHead = true\n[safe]\n\tbareRepository = explicit\n"
        "[submodule]\n\trecurse = true\n[gc]\n\tauto = 1\n[maintenance]\n\tauto = true\n"
        "[fetch]\n\tprune = true\n\tpruneTags = true\n\twriteCommitGraph = true\n"
        "[checkout]\n\tworkers = 1\n[protocol]\n\tversion = 0\n",
    )
    exercise(store, project, tmp_path)
    assert fired(markers) == []
    git_dir = store.git_dir(project.url)
    assert cached_config(git_dir, "core.hooksPath") == "/dev/null"
    assert cached_config(git_dir, "gc.auto") == "0"
    assert cached_config(git_dir, "maintenance.auto") == "false"
    assert not (git_dir / "objects" / "info" / "commit-graph").exists()


# -- honoured ---------------------------------------------------------------------------------


def test_url_instead_of_is_honoured(
    store: RepoStore, project: Upstream, global_config: Path, tmp_path: Path
) -> None:
    alias = "https://example.invalid/project.git"
    add_config(global_config, f'[url "{project.url}"]\n\tinsteadOf = {alias}\n')
    wt = store.add_worktree(alias, "v1.0", tmp_path / "wt")
    assert wt.commit == project.rev("v1.0^{commit}")
    assert (wt.path / "README.md").read_text() == "# project\n"
    assert store.resolve(alias, "feature") == project.rev("refs/heads/feature")
    # One entry, keyed by the URL the test gave, never by what git rewrote it to.
    assert [p.name for p in (store.cache_dir / "repos").iterdir()] == [store.git_dir(alias).name]
    assert store.git_dir(alias) != store.git_dir(project.url)
    store.remove_worktree(wt)


def test_core_ssh_command_is_honoured(
    store: RepoStore, global_config: Path, tmp_path: Path
) -> None:
    log = tmp_path / "ssh.log"
    fake_ssh = script(tmp_path / "my-ssh", f"echo \"$@\" >> '{log}'\nexit 255")
    add_config(global_config, f"[core]\n\tsshCommand = {fake_ssh}\n")
    with pytest.raises(RemoteError):
        store.clone("ssh://git@127.0.0.1:1/org/repo.git")
    assert log.is_file(), "the user's core.sshCommand was not used"
    assert "127.0.0.1" in log.read_text()
