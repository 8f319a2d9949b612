"""Identity and secrets of repository URLs, end to end with real git.

Two spellings share a cache entry only when they name the same repository for certain: over
ssh the login picks the home directory a relative path starts from, so a stand-in ``ssh`` that
really runs ``git-upload-pack`` in a per-user home shows what a wrong sharing costs (a test gets
another login's code). ``file://`` URLs with percent-escapes really fetch and share the plain
path's entry. A password that does not parse never reaches a message, a log or a file, and
under xdist what workers hand the controller crosses in memory, over execnet: no URL carrying
a password or token is written anywhere, $TMPDIR included.

The parsing rules themselves are pinned in test_urls.py.
"""

from __future__ import annotations

import json
import logging
import secrets
import stat
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.messages import without_paths
from helpers.servers import GitHTTPServer
from inner import run
from upstream import Upstream

from pytest_repoclones import InvalidInputError, RemoteError, RepoClonesError, RepoStore

# -- a stand-in ssh server ---------------------------------------------------------------------

# Named ``ssh`` so that git speaks to it as to OpenSSH. Like sshd, it starts the command in the
# login's home with HOME set: git-upload-pack resolves 'x' and '~/x' there, '/x' from the root.
_FAKE_SSH = """#!{python}
import json, os, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):  # -o SendEnv=GIT_PROTOCOL, -p PORT, -4, -6
    if args.pop(0) in ("-o", "-p"):
        args.pop(0)
destination, command = args[0], " ".join(args[1:])
user, _, host = destination.rpartition("@")
user = user or "nobody"  # no user in the URL: the local login name, whoever that is
with open({log!r}, "a") as log:
    log.write(json.dumps({{"user": user, "host": host, "command": command}}) + "\\n")
home = os.path.join({homes!r}, user)
if host != "git.example" or not os.path.isdir(home):
    sys.exit("ssh: " + destination + ": Permission denied (publickey).")
os.chdir(home)
os.execve("/bin/sh", ["sh", "-c", command], {{**os.environ, "HOME": home}})
"""


@dataclass
class SshHost:
    """``git.example``: each login has its own home directory under ``homes``."""

    homes: Path
    log: Path

    def upstream(self, user: str, name: str) -> Upstream:
        return Upstream(self.homes / user / name)

    def commands(self) -> list[tuple[str, str]]:
        """(login, command) of every connection so far."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [(row["user"], row["command"]) for row in map(json.loads, lines)]


@pytest.fixture
def ssh_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SshHost:
    host = SshHost(tmp_path / "homes", tmp_path / "ssh.jsonl")
    script = tmp_path / "bin" / "ssh"
    script.parent.mkdir()
    script.write_text(
        _FAKE_SSH.format(python=sys.executable, log=str(host.log), homes=str(host.homes))
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    # The user's own ssh command is honoured by the store (GIT_SSH_COMMAND, core.sshCommand).
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    return host


def test_ssh_logins_never_share_a_home_relative_repository(
    ssh_host: SshHost, store: RepoStore, tmp_path: Path
) -> None:
    urls = {
        "alice": "alice@git.example:project.git",
        "bob": "bob@git.example:project.git",
        "nobody": "git.example:project.git",  # no user: not the same as any explicit one
    }
    for who in urls:
        ssh_host.upstream(who, "project.git").commit({"who.txt": f"{who}\n"})
    for who, url in urls.items():
        wt = store.add_worktree(url, "main", tmp_path / f"wt-{who}")
        assert (wt.path / "who.txt").read_text() == f"{who}\n", f"{url} got another login's code"
        store.remove_worktree(wt)
    assert len({store.git_dir(url) for url in urls.values()}) == 3
    assert {user for user, _ in ssh_host.commands()} == set(urls)


def test_ssh_absolute_path_is_not_the_home_relative_one(
    ssh_host: SshHost, store: RepoStore
) -> None:
    name = f"repoclones-identity-{secrets.token_hex(4)}.git"
    assert not Path("/", name).exists()
    sha = ssh_host.upstream("nobody", name).commit({"README": "in the home\n"})
    assert store.resolve(f"git.example:{name}", "main") == sha
    # git sends '/NAME': the root's, which does not exist; a shared entry would answer anyway.
    with pytest.raises(RemoteError):
        store.resolve(f"ssh://git.example/{name}", "main")
    assert ("nobody", f"git-upload-pack '/{name}'") in ssh_host.commands()


def test_ssh_home_relative_spellings_share_one_entry_and_each_fetches(
    ssh_host: SshHost, store: RepoStore
) -> None:
    up = ssh_host.upstream("alice", "project.git")
    up.commit({"README": "first\n"})
    spellings = {
        "alice@git.example:project.git": "'project.git'",
        "ssh://alice@git.example/~/project.git": "'~/project.git'",
        "alice@git.example:~/project": "'~/project'",
        "git+ssh://alice@GIT.example/~/project/": "'~/project/'",
    }
    git_dirs = set()
    for spelling, sent in spellings.items():
        new = up.commit({"by": spelling})  # only a fetch through this spelling brings it
        assert store.resolve(spelling, new) == new
        assert ("alice", f"git-upload-pack {sent}") in ssh_host.commands()
        git_dirs.add(store.git_dir(spelling))
    assert len(git_dirs) == 1


# -- file:// URLs with percent-escapes --------------------------------------------------------


def test_file_url_with_escapes_and_plain_path_share_one_entry_that_fetches(
    tmp_path: Path, cache_dir: Path
) -> None:
    up = Upstream(tmp_path / "with space é" / "project.git")
    up.commit({"README.md": "hello\n"})
    spellings = [
        str(up.path),
        up.path.as_uri(),  # file:///.../with%20space%20%C3%A9/project.git
        f"file://{up.path}",  # unescaped
        f"file://localhost{up.path}/",
    ]
    store = RepoStore(cache_dir, timeout=60, lock_timeout=60)
    git_dirs = set()
    for n, spelling in enumerate(spellings):
        new = up.commit({"by": spelling})  # only a fetch through this spelling brings it
        git_dirs.add(store.clone(spelling))
        assert store.resolve(spelling, new) == new
        # And a clone through it alone works.
        alone = RepoStore(tmp_path / f"cache-{n}", timeout=60, lock_timeout=60)
        assert alone.resolve(spelling, "main") == up.rev("main")
    assert len(git_dirs) == 1
    assert [p.name for p in (cache_dir / "repos").iterdir()] == [git_dirs.pop().name]
    wt = store.add_worktree(up.path.as_uri(), "main", tmp_path / "wt")
    assert (wt.path / "README.md").read_text() == "hello\n"
    store.remove_worktree(wt)


# -- passwords that do not parse ---------------------------------------------------------------

AWKWARD = [
    "https://user:{pw}@host.example/repo",
    "http://user:{pw}@127.0.0.1:{port}/org/repo.git",
    "ssh://user:{pw}@127.0.0.1:{port}/srv/repo.git",
]
PASSWORDS = ["pa#ss", "p/ss", "p?w", "Zq7#Kx9/Wv3?Pm", "Rg5@Yp?Bn#Ck/"]


def _pieces(secret: str) -> list[str]:
    """The password and each piece of 3 characters or more of it."""
    return [secret, *(secret[i : i + 3] for i in range(len(secret) - 2))]


def _files_mentioning(root: Path, secret: str) -> list[str]:
    found = []
    for path in root.rglob("*") if root.exists() else []:
        if secret in path.name or (
            path.is_file() and not path.is_symlink() and secret.encode() in path.read_bytes()
        ):
            found.append(str(path))
    return found


@pytest.mark.parametrize("password", PASSWORDS)
def test_store_refuses_a_password_that_does_not_parse_and_never_shows_it(
    password: str, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = RepoStore(cache_dir, timeout=30, lock_timeout=30)
    calls: list[tuple[Callable[..., object], tuple[object, ...]]] = [
        (store.clone, ()),
        (store.resolve, ("main",)),
        (store.add_worktree, ("main", tmp_path / "wt")),
    ]
    errors: list[RepoClonesError] = []
    for form in AWKWARD:
        url = form.format(pw=password, port=1)
        for call, args in calls:
            with pytest.raises(RepoClonesError) as info:
                call(url, *args)
            errors.append(info.value)
    texts = [record.getMessage() for record in caplog.records]
    for error in errors:
        texts += [str(error), repr(error), repr(error.args), *map(str, vars(error).values())]
    everything = "\n".join(texts)
    assert [piece for piece in _pieces(password) if piece in everything] == []
    # Refused before git ran (nothing was sent anywhere), saying how to write it instead.
    assert all(isinstance(error, InvalidInputError) for error in errors)
    assert all("percent-encode" in (error.hint or "") for error in errors)
    assert _files_mentioning(cache_dir, password) == []
    assert not (tmp_path / "wt").exists()


def test_failure_report_never_shows_a_password_that_does_not_parse(
    pytester: pytest.Pytester, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "Zq7#Kx9/Wv3?Pm"
    # From the environment, so that no source line of the inner test shows it.
    monkeypatch.setenv("AWKWARD_URL", f"https://user:{password}@127.0.0.1:9/org/repo.git")
    pytester.makepyfile(
        """
        import os

        def test_factory(worktree):
            worktree(os.environ["AWKWARD_URL"], "main")
        """
    )
    result = run(pytester, cache_dir, "--tb=long", "-rA")
    result.assert_outcomes(failed=1)
    out = result.stdout.str() + result.stderr.str()
    assert "InvalidInputError" in out
    assert "percent-encode" in without_paths(out)
    assert [piece for piece in _pieces(password) if piece in out] == []


# -- the xdist hand-over -------------------------------------------------------------------

HAND_OVER_TESTS = """
import os
import subprocess

import pytest

PRIVATE = os.environ["PRIVATE_URL"]


@pytest.mark.worktree(PRIVATE, PRIVATE_SHA)
@pytest.mark.worktree(PUBLIC, PUBLIC_SHA)
@pytest.mark.parametrize("n", range(2))
def test_hand_over(repo_store, worktree, n):
    # Both were prefetched before any test, by the controller, whose cache the workers share:
    # what they declare reached it over their execnet channels.
    for url, sha in ((PRIVATE, PRIVATE_SHA), (PUBLIC, PUBLIC_SHA)):
        git_dir = repo_store.git_dir(url)
        subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "-e", sha], check=True)
    assert all(stats.clones == 0 for stats in repo_store.stats.values())
    wt = worktree(PRIVATE, PRIVATE_SHA)
    assert (wt / "README.md").read_text() == "private\\n"
"""


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[tuple[GitHTTPServer, Upstream, str]]:
    """A repository served over http behind Basic auth, and the password it wants."""
    password = f"pw{secrets.token_hex(12)}"
    root = tmp_path / "served"
    up = Upstream(root / "private.git")
    up.commit({"README.md": "private\n"})
    server = GitHTTPServer(root, f"alice:{password}")
    yield server, up, password
    server.close()


def test_xdist_hand_over_never_writes_a_password(
    pytester: pytest.Pytester,
    make_upstream: Callable[..., Upstream],
    private_server: tuple[GitHTTPServer, Upstream, str],
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, private, password = private_server
    public = make_upstream("public")
    public_sha = public.commit({"README.md": "public\n"})
    tmpdir = tmp_path / "tmpdir"  # the hand-over used to be a directory of files in $TMPDIR
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setenv("PRIVATE_URL", server.url("private.git", f"alice:{password}"))
    constants = {"PRIVATE_SHA": private.rev("main"), "PUBLIC": public.url, "PUBLIC_SHA": public_sha}
    header = "\n".join(f"{name} = {value!r}" for name, value in constants.items())
    pytester.makepyfile(test_inner=header + "\n" + textwrap.dedent(HAND_OVER_TESTS))

    result = run(pytester, cache_dir, "-n", "2")
    result.assert_outcomes(passed=2)
    assert server.requests, "the private repository was really fetched over http"
    assert list(tmpdir.iterdir()) == [], "nothing is written to $TMPDIR for the hand-over"
    # Nor anywhere else the run wrote (a SIGKILLed run leaves what it wrote as it is).
    for root in (cache_dir, pytester.path):
        assert _files_mentioning(root, password) == []
