"""Hostile and malformed input: every case is a RepoClonesError with a clear message, fast, and
with no side effect (no file outside the cache and the test's tmp dir, no cache entry).

Each case goes through the public API, ``RepoStore.add_worktree(url, commit, path)`` (and
``resolve(url, commit)`` where no path is involved), as a test parameter would reach it. Payloads
that git would execute if it ever saw them as options or transports write to a marker path in
/tmp; the marker must never appear.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.messages import message_of, raises_saying
from upstream import Upstream

from pytest_repoclones import (
    InvalidInputError,
    RemoteError,
    RepoClonesError,
    RepoStore,
    WorktreeError,
)

#: Every rejection here is either pure validation or one local git process.
BOUND_SECONDS = 10.0
_PLACEHOLDER_RE = re.compile(r"<(\w+)>")


@dataclass(frozen=True)
class Case:
    """One hostile call. String fields may hold ``<name>`` placeholders (see Scene)."""

    id: str
    url: object = "<up>"
    commit: object = "main"
    path: object = "<wt>"
    branch: object = None
    error: type[RepoClonesError] = InvalidInputError
    #: A regular expression the message must match: it names the problem.
    says: str = ""
    protocols: tuple[str, ...] | None = None
    #: Rejected before any git process ran: the cache gets no repos/ directory at all.
    before_git: bool = True
    bug: str | None = None


CASES: list[Case] = [
    # -- URLs git would read as options, or transports that run commands ----------------
    Case("url-upload-pack-option", url="--upload-pack=touch <marker>", says="starts with '-'"),
    Case("url-short-option", url="-oProxyCommand=touch <marker>", says="starts with '-'"),
    Case("url-ext-transport", url="ext::sh -c touch% <marker>", says="Transport 'ext'::"),
    Case("url-ext-uppercase", url="EXT::sh -c touch% <marker>", says="Transport 'EXT'::"),
    Case("url-fd-transport", url="fd::17", says="Transport 'fd'::"),
    Case("url-other-transport", url="testgit::<tmp>/x", says="Transport 'testgit'::"),
    Case("url-ftp-scheme", url="ftp://127.0.0.1/x.git", says="Protocol 'ftp' is not allowed"),
    Case("url-rsync-scheme", url="rsync://127.0.0.1/x.git", says="Protocol 'rsync' is not"),
    Case(
        "url-ssh-host-option",
        url="ssh://-oProxyCommand=touch%20<marker>/x.git",
        says="host starts with '-'",
    ),
    Case("url-scp-host-option", url="git@-oProxyCommand=touch:x.git", says="host starts with"),
    Case(
        "url-https-not-in-protocols",
        url="https://127.0.0.1/x.git",
        protocols=("file",),
        says="Protocol 'https' is not allowed",
    ),
    Case(
        "url-file-not-in-protocols",
        protocols=("https",),
        says="Protocol 'file' is not allowed",
    ),
    Case(
        "url-local-path-not-in-protocols",
        url="<up_path>",
        protocols=("https", "ssh"),
        says="Protocol 'file' is not allowed",
    ),
    # -- malformed URLs ---------------------------------------------------------------------
    Case("url-newline", url="<up>\n--upload-pack=touch <marker>", says="control character"),
    Case("url-nul", url="<up>\x00", says="control character"),
    Case("url-escape-sequence", url="https://127.0.0.1/x\x1b[2J.git", says="control character"),
    Case("url-delete-char", url="https://127.0.0.1/x\x7f.git", says="control character"),
    Case("url-empty", url="", says="empty"),
    Case("url-blank", url="   ", says="empty"),
    Case("url-absurd-length", url="https://127.0.0.1/" + "a" * 5000, says="characters long"),
    Case("url-no-host", url="https:///x.git", says="no host"),
    Case("url-file-remote-host", url="file://evil.example/x.git", says="remote host"),
    Case("url-file-without-path", url="file://", says="absolute path"),
    Case("url-bad-port", url="https://127.0.0.1:99999/x.git", says="malformed"),
    Case("url-bad-ipv6", url="https://[::1/x.git", says="malformed"),
    # -- URLs that are not repositories (git runs, fails; nothing is published) ---------------
    Case(
        "url-plain-directory",
        url="<plain>",
        error=RemoteError,
        says="does not appear to be a git repository",
        before_git=False,
    ),
    Case(
        "url-regular-file",
        url="<afile>",
        error=RemoteError,
        says="Could not clone.*\n.*git: fatal:",
        before_git=False,
    ),
    Case(
        "url-missing-path",
        url="<missing>",
        error=RemoteError,
        says="does not appear to be a git repository",
        before_git=False,
    ),
    Case(
        "url-dev-null",
        url="file:///dev/null",
        error=RemoteError,
        says="does not appear to be a git repository",
        before_git=False,
    ),
    Case(
        "url-repository-without-commits",
        url="<empty_repo>",
        error=RemoteError,
        says="no commits",
        before_git=False,
    ),
    # -- non-string URLs ----------------------------------------------------------------------
    Case("url-int", url=42, says="must be a string, not int"),
    Case("url-none", url=None, says="must be a string, not NoneType"),
    Case("url-bytes", url=b"/tmp/x.git", says="must be a string, not bytes"),
    Case("url-list", url=["https://127.0.0.1/x.git"], says="must be a string, not list"),
    # -- commits git would read as options or revision expressions ---------------------------
    Case("commit-output-option", commit="--output=<marker>", says="starts with '-'"),
    Case("commit-short-option", commit="-p", says="starts with '-'"),
    Case("commit-parent-syntax", commit="main~1", says="one of ~ \\^"),
    Case("commit-peel-syntax", commit="main^{tree}", says="one of ~ \\^"),
    Case("commit-range", commit="main..feature", says="'\\.\\.' or '@\\{'"),
    Case("commit-reflog", commit="@{-1}", says="'\\.\\.' or '@\\{'"),
    Case("commit-reflog-date", commit="main@{yesterday}", says="'\\.\\.' or '@\\{'"),
    Case("commit-message-search", commit=":/initial", says="one of ~ \\^ :"),
    Case("commit-tree-path", commit="main:README.md", says="one of ~ \\^ :"),
    Case("commit-with-space", commit="v1.0 --output=<marker>", says="a space"),
    Case("commit-newline", commit="main\n--output=<marker>", says="a control character"),
    Case("commit-nul", commit="main\x00", says="a control character"),
    Case("commit-empty", commit="", says="it is empty"),
    Case("commit-absurd-length", commit="a" * 300, says="300 characters long"),
    Case("commit-trailing-slash", commit="refs/heads/", says="ends with '/'"),
    Case("commit-lock-suffix", commit="main.lock", says="ends with '\\.lock'"),
    Case("commit-hidden-component", commit="refs/.hidden", says="starts with '\\.'"),
    Case("commit-at-alone", commit="@", says="'@' alone"),
    Case("commit-double-slash", commit="a//b", says="empty path component"),
    Case("commit-glob", commit="v*", says="one of ~ \\^ : \\? \\*"),
    Case("commit-int", commit=1234567, says="must be a string or None, not int"),
    Case("commit-bytes", commit=b"main", says="must be a string or None, not bytes"),
    # -- worktree paths -------------------------------------------------------------------
    Case("path-non-empty", path="<nonempty>", error=WorktreeError, says="not an empty directory"),
    Case("path-is-a-file", path="<afile>", error=WorktreeError, says="not an empty directory"),
    Case("path-inside-cache", path="<cache>/repos/wt", says="inside the cache"),
    Case("path-is-the-cache", path="<cache>", says="inside the cache"),
    Case("path-newline", path="<tmp>/wt\nx", says="without control characters"),
    Case("path-nul", path="<tmp>/wt\x00x", says="without control characters"),
    Case("path-escape", path="<tmp>/wt\x1b[2J", says="without control characters"),
    Case("path-empty", path="", says="non-empty str"),
    Case("path-bytes", path=b"/tmp/wt", says="non-empty str"),
    Case("path-none", path=None, says="Worktree path must be a non-empty str"),
    Case("path-int", path=123, says="Worktree path must be a non-empty str"),
    Case(
        "path-into-cache-via-dotdot",
        path="<tmp>/elsewhere/../cache/wt",
        says="inside the cache",
    ),
    Case(
        "path-into-cache-via-symlink",
        path="<link_to_cache>/wt",
        says="inside the cache",
    ),
    # -- branch names ---------------------------------------------------------------------
    Case("branch-option", branch="--force", says="Invalid branch name '--force'"),
    Case("branch-head", branch="HEAD", says="'HEAD' is reserved"),
    Case("branch-range", branch="a..b", says="Invalid branch name"),
    Case("branch-newline", branch="x\n-D", says="Invalid branch name"),
    Case("branch-int", branch=123, says="Invalid branch name 123: not a string"),
]


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(reason=f"BUG: {case.bug}", strict=True)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


#: Cases that do not involve the worktree path or branch, replayed through resolve().
RESOLVE_CASES = [c for c in CASES if c.path == "<wt>" and c.branch is None]


class Scene:
    """Builds what a placeholder names, only when a case uses it."""

    def __init__(
        self, tmp_path: Path, cache_dir: Path, marker: Path, make: Callable[..., Upstream]
    ):
        self.tmp_path = tmp_path
        self.cache_dir = cache_dir
        self.marker = marker
        self._make = make
        self._upstream: Upstream | None = None

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            up = self._make("project")
            base = up.commit({"README.md": "# project\n"}, "initial")
            up.tag("v1.0", base)
            up.commit({"f.txt": "feature\n"}, "feature", branch="feature", parent=base)
            self._upstream = up
        return self._upstream

    def value(self, name: str) -> str:
        tmp = self.tmp_path
        if name == "up":
            return self.upstream.url
        if name == "up_path":
            return str(self.upstream.path)
        if name == "marker":
            return str(self.marker)
        if name == "tmp":
            return str(tmp)
        if name == "wt":
            return str(tmp / "wt")
        if name == "cache":
            return str(self.cache_dir)
        if name == "plain":
            (tmp / "plain").mkdir(exist_ok=True)
            (tmp / "plain" / "file.txt").write_text("not a repository\n")
            return str(tmp / "plain")
        if name == "afile":
            (tmp / "afile").write_text("a regular file\n")
            return str(tmp / "afile")
        if name == "missing":
            return str(tmp / "no-such-repo.git")
        if name == "empty_repo":
            return Upstream(tmp / "empty.git").url
        if name == "nonempty":
            (tmp / "nonempty").mkdir(exist_ok=True)
            (tmp / "nonempty" / "keep.txt").write_text("keep me\n")
            return str(tmp / "nonempty")
        if name == "link_to_cache":
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            link = tmp / "link-to-cache"
            if not link.is_symlink():
                link.symlink_to(self.cache_dir, target_is_directory=True)
            (tmp / "elsewhere").mkdir(exist_ok=True)
            return str(link)
        raise KeyError(name)

    def fill(self, value: object) -> object:
        if not isinstance(value, str):
            return value
        if "<tmp>/elsewhere" in value:
            (self.tmp_path / "elsewhere").mkdir(exist_ok=True)
        return _PLACEHOLDER_RE.sub(lambda m: self.value(m.group(1)), value)


@pytest.fixture
def marker() -> Iterator[Path]:
    """A path in /tmp that a payload would create if git ever executed it."""
    path = Path(tempfile.gettempdir()) / f"pwned-repoclones-{secrets.token_hex(6)}"
    yield path
    for leftover in path.parent.glob(f"{path.name}*"):  # never expected; keep /tmp clean
        leftover.unlink()


@pytest.fixture
def sentinel_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: a relative payload would land here."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def scene(
    tmp_path: Path, cache_dir: Path, marker: Path, make_upstream: Callable[..., Upstream]
) -> Scene:
    return Scene(tmp_path, cache_dir, marker, make_upstream)


def _call_and_check(
    case: Case,
    scene: Scene,
    cache_dir: Path,
    marker: Path,
    cwd: Path,
    call: Callable[[RepoStore, object, object], object],
) -> None:
    url = scene.fill(case.url)
    commit = scene.fill(case.commit)
    wt = scene.tmp_path / "wt"
    nonempty = scene.tmp_path / "nonempty"
    nonempty_before = sorted(os.listdir(nonempty)) if nonempty.is_dir() else None
    kwargs = {} if case.protocols is None else {"protocols": case.protocols}
    store = RepoStore(cache_dir, timeout=30, lock_timeout=30, **kwargs)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(case.error) as info:
        call(store, url, commit)
    elapsed = time.monotonic() - started

    # Without its paths: those spell this test's name ("path", "url", "branch"...).
    message = message_of(info.value)
    assert re.search(case.says, message), f"message does not name the problem: {message!r}"
    assert elapsed < BOUND_SECONDS, f"took {elapsed:.1f} s"
    # No side effect: nothing a payload would create, no new working files, no cache entry.
    assert not list(marker.parent.glob(f"{marker.name}*")), "a payload was executed"
    assert os.listdir(cwd) == [], "something was written to the working directory"
    assert not wt.exists() or case.path != "<wt>", "the worktree path was created"
    if nonempty_before is not None:
        assert sorted(os.listdir(nonempty)) == nonempty_before, "the non-empty path was changed"
    repos = cache_dir / "repos"
    if case.before_git:
        assert not repos.exists(), f"rejected input reached the cache: {os.listdir(cache_dir)}"
    else:
        assert list(repos.iterdir()) == []
        assert list((cache_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_add_worktree_rejects(
    case: Case, scene: Scene, cache_dir: Path, marker: Path, sentinel_cwd: Path
) -> None:
    path = scene.fill(case.path)
    branch = scene.fill(case.branch)

    def call(store: RepoStore, url: object, commit: object) -> object:
        return store.add_worktree(url, commit, path, branch=branch)  # type: ignore[arg-type]

    _call_and_check(case, scene, cache_dir, marker, sentinel_cwd, call)


@pytest.mark.parametrize("case", [_param(c) for c in RESOLVE_CASES])
def test_resolve_rejects(
    case: Case, scene: Scene, cache_dir: Path, marker: Path, sentinel_cwd: Path
) -> None:
    def call(store: RepoStore, url: object, commit: object) -> object:
        return store.resolve(url, commit)  # type: ignore[arg-type]

    _call_and_check(case, scene, cache_dir, marker, sentinel_cwd, call)


def test_there_are_at_least_thirty_cases() -> None:
    """The issue asks for a suite of at least 30 hostile inputs."""
    assert len([c for c in CASES if not c.bug]) >= 30


# -- credentials ------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: git fails at once with 'Couldn't connect'."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


USER_PASSWORD = "https://alice:{token}@127.0.0.1:{port}/org/r.git"
TOKEN_AS_USER = "https://{token}@127.0.0.1:{port}/org/r.git"
CREDENTIAL_FORMS = [
    pytest.param(USER_PASSWORD, id="https-user-password"),
    pytest.param("http://alice:{token}@127.0.0.1:{port}/org/r.git", id="http-user-password"),
    pytest.param(TOKEN_AS_USER, id="https-token-as-user"),
]


def _files_mentioning(root: Path, secret: str) -> list[str]:
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            if secret in name:
                found.append(os.path.join(directory, name))
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink() and secret.encode() in path.read_bytes():
                found.append(str(path))
    return found


@pytest.mark.parametrize("form", CREDENTIAL_FORMS)
def test_token_never_reaches_messages_logs_or_cache(
    form: str,
    closed_port: int,
    cache_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = f"tok{secrets.token_hex(10)}"
    url = form.format(token=token, port=closed_port)
    caplog.set_level(logging.DEBUG)
    store = RepoStore(cache_dir, timeout=30, lock_timeout=30)
    errors: list[RepoClonesError] = []
    started = time.monotonic()
    for call in (
        lambda: store.add_worktree(url, "main", tmp_path / "wt"),
        lambda: store.resolve(url, "v1.0"),
        lambda: store.clone(url),
    ):
        with pytest.raises(RemoteError) as info:
            call()
        errors.append(info.value)
    assert time.monotonic() - started < BOUND_SECONDS

    for error in errors:
        assert f"127.0.0.1:{closed_port}/org/r.git" in str(error)  # names the repository
        assert "***@" in str(error)  # ...with the secret visibly hidden
        assert token not in str(error)
        assert token not in repr(error)
        assert token not in repr(error.args)
        assert all(token not in str(v) for v in vars(error).values())
    assert token not in caplog.text
    assert all(token not in record.getMessage() for record in caplog.records)
    assert _files_mentioning(cache_dir, token) == []
    assert not (tmp_path / "wt").exists()
    assert list((cache_dir / "repos").iterdir()) == []


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(USER_PASSWORD, id="https-user-password"),
        pytest.param(
            TOKEN_AS_USER,
            id="https-token-as-user",
        ),
    ],
)
def test_token_never_reaches_gits_argv(
    form: str, closed_port: int, cache_dir: Path, trace_file: Path
) -> None:
    """Any process can read another's argv; secrets must go through git's credential helper."""
    token = f"tok{secrets.token_hex(10)}"
    url = form.format(token=token, port=closed_port)
    with pytest.raises(RemoteError):
        RepoStore(cache_dir, timeout=30).clone(url)
    trace = trace_file.read_text()
    assert f"127.0.0.1:{closed_port}" in trace, "the trace must show the fetch ran"
    assert token not in trace


# -- the store's own arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", float("nan")),
        ("timeout", float("inf")),
        ("timeout", 0),
        ("timeout", -1.0),
        ("lock_timeout", float("nan")),
        ("lock_timeout", -1.0),
    ],
    ids=str,
)
def test_store_rejects_nonsense_timeouts(option: str, value: float, cache_dir: Path) -> None:
    with raises_saying(InvalidInputError, rf"^{option} must be a .*number of seconds"):
        RepoStore(cache_dir, **{option: value})  # type: ignore[arg-type]
    assert not cache_dir.exists()
