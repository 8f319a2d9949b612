"""The git processes the plugin starts: they end with their owner, they check out the commit's
bytes whatever the user's or the system's attributes say, and the suite leaves none behind.

Real processes throughout: a FIFO stands in for a file git opens, so a git process is provably
blocked (and alive) at the moment its owner is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers.children import LineChild, cmdline, descendants, is_running, wait_until
from upstream import Upstream, git

from pytest_repoclones import RepoStore
from pytest_repoclones._git import git_environment, run_git

if TYPE_CHECKING:
    from conftest import Fifo

TESTS_DIR = Path(__file__).resolve().parent


def blocked_gits(owner: int, fifo: Path) -> list[int]:
    """git processes below ``owner`` that work on ``fifo`` (git itself, not setpriv before its
    exec: by then the death signal is set)."""
    found = []
    for pid in descendants(owner):
        argv = cmdline(pid)
        if argv and Path(argv[0]).name == "git" and str(fifo) in argv:
            found.append(pid)
    return found


def script(path: Path, code: str) -> str:
    """A Python script file: run as a file, not with -c, so that the child imports the plugin
    as this process does (-c would put the current directory first on its sys.path)."""
    path.write_text(code)
    return str(path)


# -- every git dies with its owner -----------------------------------------------------------

# Runs one git metadata call (it blocks opening the FIFO) the way the plugin does: from the
# main thread, or from a pool thread as prefetch does.
OWNER = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pytest_repoclones._git import git_environment, run_git

fifo, where, flag = sys.argv[1], sys.argv[2], sys.argv[3] == "True"

def call():
    args = ["config", "--file", fifo, "--get", "section.key"]
    return run_git(args, env=git_environment(), timeout=120, die_with_parent=flag)

print("ready", flush=True)
if where == "pool":
    with ThreadPoolExecutor(1) as pool:
        pool.submit(call).result()
else:
    call()
"""


@pytest.mark.parametrize("where", ["main", "pool"], ids=["main-thread", "pool-thread"])
@pytest.mark.parametrize("die_with_parent", [False, True], ids=["flag-off", "flag-on"])
def test_git_dies_with_its_owner(
    tmp_path: Path, make_fifo: Callable[[Path], Fifo], where: str, die_with_parent: bool
) -> None:
    """A SIGKILLed owner takes its git with it, metadata calls included (store.py still passes
    die_with_parent=False for those): nothing is left blocked on a lock or a pipe."""
    fifo = make_fifo(tmp_path / "config")
    owner_script = script(tmp_path / "owner.py", OWNER)
    owner = LineChild(
        [sys.executable, owner_script, str(fifo.path), where, str(die_with_parent)],
        tmp_path / "owner.stderr",
        label="git owner",
    )
    try:
        owner.expect("ready", timeout=30)
        wait_until(lambda: blocked_gits(owner.pid, fifo.path), 10, "git to block on the FIFO")
        gits = blocked_gits(owner.pid, fifo.path)
        owner.kill()
        wait_until(
            lambda: not any(is_running(pid) for pid in gits),
            timeout=10,
            what=f"git {gits} to die with its owner",
        )
    finally:
        owner.kill()
        fifo.release()  # a git that outlived its owner (the bug) ends instead of waiting forever


def test_git_of_a_pool_thread_lives_until_it_is_done(
    tmp_path: Path, make_fifo: Callable[[Path], Fifo]
) -> None:
    """The death signal fires when the *thread* that started git ends, not the process: a git
    started from a pool thread (prefetch) runs to its end, and other threads that start git
    and end meanwhile kill nothing but their own (finished) git."""
    fifo = make_fifo(tmp_path / "config")
    args = ["config", "--file", str(fifo.path), "--get", "section.key"]
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_git, args, env=git_environment(), timeout=60)
        wait_until(lambda: blocked_gits(os.getpid(), fifo.path), 10, "git to block on the FIFO")
        [blocked] = blocked_gits(os.getpid(), fifo.path)
        for _ in range(3):
            thread = threading.Thread(
                target=run_git, args=(["--version"],), kwargs={"env": git_environment()}
            )
            thread.start()
            thread.join()
        assert is_running(blocked)
        assert not future.done()
        with open(fifo.path, "w") as writer:  # git is the reader: this open does not block
            writer.write("[section]\n\tkey = from the pipe\n")
        result = future.result(timeout=60)
    assert result.ok, result.stderr
    assert result.stdout == "from the pipe\n"


# -- the suite's end-of-run check for leftover processes -------------------------------------

LEAVER = """
import subprocess
from pathlib import Path


def test_starts_a_process(tmp_path):
    # Its own session: nothing but the end-of-run check would ever kill it.
    proc = subprocess.Popen(["sleep", "{seconds}"], start_new_session=True)
    Path({pid_file!r}).write_text(str(proc.pid))
"""


@pytest.fixture
def inner_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[pytest.RunResult, int]]]:
    """Run a test that starts ``sleep SECONDS`` and returns, in a pytest subprocess that loads
    this directory's conftest (and with it the check); returns the result and the sleep's pid."""
    inherited = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), inherited])))
    monkeypatch.setenv("PYTEST_PLUGINS", "conftest")  # in xdist workers too
    started: list[int] = []

    def run(seconds: float, *args: str) -> tuple[pytest.RunResult, int]:
        pid_file = pytester.path / f"sleep-{len(started)}.pid"
        pytester.makepyfile(LEAVER.format(seconds=seconds, pid_file=str(pid_file)))
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-p", "no:randomly", *args, timeout=120
        )
        started.append(int(pid_file.read_text()))
        return result, started[-1]

    yield run
    for pid in started:  # whatever the inner run did, our own sleep must not outlive the test
        if is_running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["no-xdist", "n2"])
def test_run_that_leaves_a_process_fails(
    inner_run: Callable[..., tuple[pytest.RunResult, int]], xdist: list[str]
) -> None:
    """A passing run that leaves a process running exits non-zero, names it, and kills it."""
    result, pid = inner_run(300, *xdist)
    assert result.parseoutcomes().get("passed") == 1
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*1 process(es) started by this run still running at its end; killed*",
            f"pid {pid}: sleep 300  (cwd *)",
        ]
    )
    assert not is_running(pid)


@pytest.mark.slow
@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["no-xdist", "n2"])
def test_run_whose_processes_end_in_the_grace_period_passes(
    inner_run: Callable[..., tuple[pytest.RunResult, int]], xdist: list[str]
) -> None:
    """A process that ends within the grace period (here 1.5 s after its test started it,
    which is after the run's end), and the xdist workers shutting down, are not leftovers."""
    result, _ = inner_run(1.5, *xdist)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "still running at its end" not in result.stdout.str()


# -- the user's and the system's attributes do not change checked-out bytes ------------------

FIRST = {
    "lf.txt": b"one\ntwo\n",
    "src/app.py": b"print('hi')\n",
    "no-final-newline.txt": b"one\ntwo",
    "crlf.txt": b"one\r\ntwo\r\n",
    # The repository's own attributes still apply, as they do with plain git.
    ".gitattributes": b"*.bat text eol=crlf\n",
    "run.bat": b"echo one\necho two\n",
}
SECOND = {"lf.txt": b"one\ntwo\nthree\n", "new.txt": b"new\n"}
HOSTILE_ATTRIBUTES = "* text eol=crlf\n"


def expected_bytes(*commits: dict[str, bytes]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for commit in commits:
        files.update(commit)
    return {**files, "run.bat": b"echo one\r\necho two\r\n"}


def checked_out(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


@pytest.fixture
def lf_project(make_upstream: Callable[..., Upstream]) -> tuple[Upstream, str, str]:
    up = make_upstream("lf")
    first = up.commit(dict(FIRST), "LF files")
    second = up.commit(dict(SECOND), "more LF files")
    return up, first, second


@pytest.fixture(params=["xdg", "home", "core.attributesFile"])
def user_attributes(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The user's attributes say `* text eol=crlf`: in $XDG_CONFIG_HOME/git/attributes, in
    ~/.config/git/attributes, or in a file ~/.gitconfig names as core.attributesFile."""
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    if request.param == "xdg":
        xdg = tmp_path / "xdg-config"
        monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
        attributes = xdg / "git" / "attributes"
    elif request.param == "home":
        attributes = home / ".config" / "git" / "attributes"
    else:
        attributes = home / "my-attributes"
        monkeypatch.delenv("GIT_CONFIG_GLOBAL")  # so git reads ~/.gitconfig
        (home / ".gitconfig").write_text("[core]\n\tattributesFile = ~/my-attributes\n")
    attributes.parent.mkdir(parents=True, exist_ok=True)
    attributes.write_text(HOSTILE_ATTRIBUTES)
    return str(request.param)


def show_control(up: Upstream, where: Path) -> None:
    """Plain git obeys the hostile attributes: the setting is spelled right and takes effect."""
    git("clone", "--quiet", up.url, str(where))
    assert (where / "src" / "app.py").read_bytes() == b"print('hi')\r\n", "control failed"


@pytest.mark.parametrize("how", ["shared", "isolated", "reused"])
def test_user_attributes_do_not_change_checked_out_bytes(
    lf_project: tuple[Upstream, str, str],
    user_attributes: str,
    cache_dir: Path,
    tmp_path: Path,
    how: str,
) -> None:
    up, first, second = lf_project
    show_control(up, tmp_path / "control")
    store = RepoStore(cache_dir, timeout=60, lock_timeout=60, reuse=how == "reused")

    wt = store.add_worktree(up.url, first, tmp_path / "wt", isolate=how == "isolated")
    assert checked_out(wt.path) == expected_bytes(FIRST)
    if how == "reused":
        os.utime(wt / ".git", (1_000_000_000, 1_000_000_000))  # no checkout writes this mtime
        store.remove_worktree(wt)
        wt = store.add_worktree(up.url, second, tmp_path / "wt2")
        assert os.stat(wt / ".git").st_mtime == 1_000_000_000, "not reused"
        assert checked_out(wt.path) == expected_bytes(FIRST, SECOND)
    store.remove_worktree(wt)
    store.close()


# Runs in a mount namespace where /etc/gitattributes says `* text eol=crlf` (an overlay on /etc
# that only this process tree sees): a control clone with plain git, then the plugin's checkout.
CHECKOUT = """
import json, subprocess, sys
from pathlib import Path
from pytest_repoclones import RepoStore

url, sha, cache, where = sys.argv[1:5]
subprocess.run(["git", "clone", "--quiet", url, where + "/control"], check=True)
store = RepoStore(cache, timeout=60, lock_timeout=60)
wt = store.add_worktree(url, sha, where + "/wt")
ours = {
    path.relative_to(wt.path).as_posix(): path.read_bytes().hex()
    for path in wt.path.rglob("*")
    if path.is_file() and ".git" not in path.relative_to(wt.path).parts
}
store.remove_worktree(wt)
control = (Path(where) / "control" / "src" / "app.py").read_bytes().hex()
print(json.dumps({"control": control, "ours": ours}))
"""


def test_system_attributes_do_not_change_checked_out_bytes(
    lf_project: tuple[Upstream, str, str], cache_dir: Path, tmp_path: Path
) -> None:
    """/etc/gitattributes (git's system file) with `* text eol=crlf`: the plugin's checkout
    still has the commit's bytes. The file is made in a private mount namespace over an
    overlay of /etc, so no other process on the machine sees it."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and util-linux unshare to fake /etc/gitattributes")
    up, first, _ = lf_project
    system_file_before = _read(Path("/etc/gitattributes"))
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    upper.mkdir()
    work.mkdir()
    setup = (
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
        " || exit 77\n"
        f"echo '{HOSTILE_ATTRIBUTES.strip()}' > /etc/gitattributes || exit 77\n"
        'exec "$@"\n'
    )
    namespace = [unshare, "--mount", "--propagation", "private", "sh", "-c", setup, "sh"]
    child_args = [up.url, first, str(cache_dir), str(tmp_path)]
    child = subprocess.run(
        [*namespace, sys.executable, script(tmp_path / "checkout.py", CHECKOUT), *child_args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if child.returncode == 77:
        pytest.skip(f"cannot overlay /etc in a mount namespace: {child.stderr.strip()}")
    assert child.returncode == 0, child.stderr
    assert system_file_before == _read(Path("/etc/gitattributes")), "the overlay leaked"
    report = json.loads(child.stdout)
    assert bytes.fromhex(report["control"]) == b"print('hi')\r\n", "control failed"
    ours = {name: bytes.fromhex(data) for name, data in report["ours"].items()}
    assert ours == expected_bytes(FIRST)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _processes_with(marker: str) -> list[int]:
    """Running processes whose environment holds ``marker`` (zombies are gone already)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in environ and state not in ("Z", "X"):
            found.append(int(entry))
    return found


@pytest.mark.slow
def test_killed_xdist_controller_takes_its_workers_and_their_git_along(
    upstream: Upstream, pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """SIGKILL of a `pytest -n 2` controller: its workers went on making worktrees (and
    starting git in the cache) for seconds; now they die with it, and their git with them."""
    pytester.makepyfile(
        f"""
        import time

        def test_churn(worktree):
            while True:
                worktree({upstream.url!r}, "main")

        def test_churn_too(worktree):
            while True:
                worktree({upstream.url!r}, "v1.0")
        """
    )
    marker = f"REPOCLONES_KILL_MARK={os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    controller = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider",
         f"--repo-cache-dir={tmp_path / 'cache'}", f"--basetemp={tmp_path / 'bt'}"],
        cwd=pytester.path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both workers are making worktrees
            if len(list((tmp_path / "cache" / "owners").glob("*.lock"))) >= 2:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the workers never made a worktree")
        time.sleep(0.5)
    finally:
        controller.kill()
        controller.wait(10)
    deadline = time.monotonic() + 2.0
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], [cmdline_of(pid) for pid in left]


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(gone)"
