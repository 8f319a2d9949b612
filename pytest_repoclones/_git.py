"""The one place that runs git: a hardened environment, fixed configuration, bounded time.

Every call goes through :func:`run_git` so that no user setting, inherited variable or remote can
make git prompt, run a hook, hijack the repository it works on, or outlive its time limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._defaults import DEFAULT_TIMEOUT
from .errors import GitTimeoutError, RepoClonesError
from .urls import DEFAULT_PROTOCOLS

__all__ = [
    "MINIMUM_GIT",
    "SPARSE_MINIMUM_GIT",
    "GitResult",
    "check_git_version",
    "command_name",
    "git_environment",
    "run_git",
    "run_git_exact",
]

# `git rev-parse --local-env-vars` on git 2.39: inherited from a git hook (pytest run by a
# pre-commit hook, say), GIT_DIR would override --git-dir/-C and point git at the user's project.
_LOCAL_ENV_VARS = frozenset(
    {
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CONFIG",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_OBJECT_DIRECTORY",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_GRAFT_FILE",
        "GIT_INDEX_FILE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_REPLACE_REF_BASE",
        "GIT_PREFIX",
        "GIT_INTERNAL_SUPER_PREFIX",
        "GIT_SHALLOW_FILE",
        "GIT_COMMON_DIR",
    }
)

# Settings that would run code, change file contents, or let maintenance delete objects in the
# shared cache. Everything else in the user's configuration (url.<base>.insteadOf, credential
# helpers, proxies, http.sslCAInfo) is honoured on purpose.
_FIXED_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.autocrlf", "false"),
    ("core.askPass", ""),
    ("init.templateDir", ""),
    ("protocol.version", "2"),  # fetching an unadvertised commit by name needs v2
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("fetch.writeCommitGraph", "false"),
    ("fetch.prune", "false"),
    ("fetch.pruneTags", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("fetch.showForcedUpdates", "false"),
    ("submodule.recurse", "false"),
    ("advice.detachedHead", "false"),
    ("checkout.workers", "0"),  # parallel checkout, one worker per core
    # The user's attributes file (default ~/.config/git/attributes) could say `* text eol=crlf`
    # or name a filter driver: checked-out bytes would differ from the commit's, or a command
    # would run. /dev/null reads as an empty file. The system file (/etc/gitattributes) is
    # turned off by GIT_ATTR_NOSYSTEM in git_environment(); the repository's own .gitattributes
    # files still apply, as they do for anyone who checks the commit out with plain git.
    ("core.attributesFile", "/dev/null"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
)

_CONFIG_ARGS: tuple[str, ...] = tuple(
    arg for key, value in _FIXED_CONFIG for arg in ("-c", f"{key}={value}")
)

# Reads git's environment for a credential, so the secret never appears in git's argv.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || return 0; '
    'printf "username=%s\\npassword=%s\\n" "$REPOCLONES_USERNAME" "$REPOCLONES_PASSWORD"; }; f'
)


@dataclass(frozen=True)
class GitResult:
    """What a finished git command returned."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def error_line(self) -> str:
        """git's telling lines: the first 'fatal:'/'error:' line and the lines that explain it,
        else the last line.

        git often splits one error over lines: ``fatal: unable to connect to host:`` and then
        ``host[0: 1.2.3.4]: errno=Connection refused``. The first alone names no cause, so up
        to ERROR_LINES lines (ERROR_CHARS characters) from it on are kept. Callers redact it
        (``repo.scrub``) as before: every kept line comes from the same stderr.
        """
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        for at, line in enumerate(lines):
            if line.startswith(("fatal:", "error:")):
                return _bounded(lines[at : at + ERROR_LINES])
        return lines[-1][:ERROR_CHARS] if lines else f"git exited with status {self.returncode}"


# How much of git's stderr an error message keeps: enough for the cause git prints after its
# first line, bounded so that a chatty remote (a long banner, a hook's output) cannot flood
# a test report.
ERROR_LINES = 3
ERROR_CHARS = 300
# Continuation lines line up under the first in RepoClonesError's "  git: ..." line.
_CONTINUATION = "\n       "


def _bounded(lines: list[str]) -> str:
    kept: list[str] = []
    used = 0
    for line in lines:
        if kept and used + len(line) > ERROR_CHARS:
            break  # a whole explanatory line or none: half a line reads as a different error
        kept.append(line[:ERROR_CHARS])
        used += len(kept[-1])
    return _CONTINUATION.join(kept)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG = 1
_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # The fallback when setpriv is missing (see _death_signal_prefix). Only a function looked
    # up before fork is called here: nothing that allocates or takes locks.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PREEXEC = _die_with_parent if _PRCTL is not None else None


def _find_setpriv() -> str | None:
    """util-linux's setpriv sets the death signal, then execs git: no fork needed.

    A preexec_fn makes Python fork instead of vfork: 2 ms a process, 9 ms in a pytest process
    with a large heap (measured). setpriv costs about 1 ms. --pdeathsig needs util-linux 2.33.
    """
    if _PRCTL is None:
        return None
    found = shutil.which("setpriv")
    if found is None:
        return None
    try:
        probe = subprocess.run(
            [found, "--pdeathsig", "KILL", "--", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found if probe.returncode == 0 else None


_SETPRIV: str | bool | None = False  # False: not looked up yet


def _death_signal_prefix() -> list[str] | None:
    """argv prefix that makes git die with us, or None to fall back to preexec_fn.

    Every git process gets it: if our process is SIGKILLed (a killed pytest, a crashed xdist
    worker), git gets SIGKILL too, instead of finishing a clone into a directory nobody will
    publish, or waiting forever on a lock or a pipe (an `update-ref -d` blocked mid-way used
    to outlive its killed owner indefinitely, when only transfers and checkouts had this).
    git's own children (index-pack, ssh, upload-pack of a file:// remote) then die on the
    pipes it held.

    The kernel sends the signal when the *thread* that forked the child ends, not the
    process. run_git starts git and waits for it in the same thread (prefetch's pool threads
    included), so that thread always outlives its git; never hand a running git over to
    another thread. In the moment between fork and setpriv's prctl, a parent killed outright
    leaves git to run to its end like any orphan: accepted for a window that short.
    """
    global _SETPRIV
    if _SETPRIV is False:
        _SETPRIV = _find_setpriv()
    return [_SETPRIV, "--pdeathsig", "KILL", "--"] if isinstance(_SETPRIV, str) else None


def _git_executable() -> str:
    found = shutil.which("git")
    if found is None:
        raise RepoClonesError("git was not found on PATH; pytest-repoclones needs git >= 2.29")
    return found


def git_environment(
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment every git process gets: no prompts, no inherited repository."""
    source = os.environ if base is None else base
    env = {
        key: value
        for key, value in source.items()
        if key not in _LOCAL_ENV_VARS
        and not key.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GCM_INTERACTIVE="never",
        GIT_ASKPASS="",
        SSH_ASKPASS="",
        SSH_ASKPASS_REQUIRE="never",
        GIT_ALLOW_PROTOCOL=":".join(protocols),
        GIT_EDITOR=":",
        GIT_PAGER="cat",
        LC_ALL="C",
        LANGUAGE="C",
        # No system-wide attributes (/etc/gitattributes): see core.attributesFile above.
        GIT_ATTR_NOSYSTEM="1",
    )
    env.pop("REPOCLONES_USERNAME", None)
    env.pop("REPOCLONES_PASSWORD", None)
    return env


def ssh_batch_env(env: Mapping[str, str], user_ssh_command: str | None) -> dict[str, str]:
    """BatchMode for ssh, unless the user chose an ssh command (env or core.sshCommand).

    git runs without a terminal (new session, stdin from /dev/null), so ssh could not prompt
    anyway; BatchMode makes it fail at once instead of trying.
    """
    if "GIT_SSH_COMMAND" in env or "GIT_SSH" in env or user_ssh_command:
        return {}
    return {"GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}


def credential_args(username: str | None, password: str | None) -> tuple[list[str], dict[str, str]]:
    """Extra git arguments and environment that hand git the credentials from an http URL.

    Neither ever appears in git's argv (visible in /proc and traces): a helper reads them from
    the environment. With a password, the user's helpers are reset so ours answers; with only
    a user name (often a token, sent with an empty password as plain git does), ours comes
    after the user's helpers, which may still supply the password.
    """
    if password is None and username is None:
        return [], {}
    env = {"REPOCLONES_USERNAME": username or "", "REPOCLONES_PASSWORD": password or ""}
    helper = ["-c", f"credential.helper={_CREDENTIAL_HELPER}"]
    if password is not None:
        return ["-c", "credential.helper=", *helper], env
    return helper, env


def run_git(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    git_dir: Path | None = None,
    cwd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    extra_env: Mapping[str, str] | None = None,
    pre_args: Sequence[str] = (),
    url: str | None = None,
    stdin: str | None = None,
    progress: Callable[[str], None] | None = None,
    die_with_parent: bool = True,
) -> GitResult:
    """Run git; return its result, or raise GitTimeoutError after killing its process group.

    git is started in a new session so that a timeout or Ctrl-C also kills its children
    (index-pack, ssh, remote helpers), which otherwise keep writing after git itself dies.
    With ``progress``, git's progress lines are passed to it once the command has run for
    PROGRESS_AFTER seconds, at most once per PROGRESS_EVERY.

    Every git dies with the thread that started it (see _command), whatever
    ``die_with_parent`` says (kept for callers written when only transfers and checkouts did).
    setpriv costs one more exec, 0.6-0.9 ms a process (`run_git(["--version"])`: 2.6 against
    1.7 ms, medians of 300); without setpriv, a preexec_fn costs a fork instead of a vfork.
    """
    del die_with_parent  # always on: see the docstring
    argv, preexec = _command(args, pre_args, git_dir)
    process = subprocess.Popen(
        argv,
        # Never a terminal: nothing git or ssh runs can wait for an answer.
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A stable cwd: a test may have deleted (or chdir'd into) the directory we started in.
        cwd=str(cwd if cwd is not None else (git_dir if git_dir is not None else "/")),
        env={**env, **(extra_env or {})},
        start_new_session=True,
        preexec_fn=preexec,  # see _die_with_parent
        text=True,
        errors="replace",
    )
    stdout, stderr = _wait(process, args, stdin, timeout, url, progress)
    return GitResult(tuple(args), process.returncode, stdout, stderr)


def run_git_exact(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = DEFAULT_TIMEOUT,
    extra_env: Mapping[str, str] | None = None,
    pre_args: Sequence[str] = (),
    url: str | None = None,
    stdin: bytes | None = None,
    timeout_hint: str = "raise --repo-timeout if the remote is just slow",
) -> GitResult:
    """run_git for output that must come back byte for byte: patches, file contents.

    run_git reads git's output as text, which replaces undecodable bytes and, through Python's
    universal newlines, turns every ``\r\n`` into ``\n``: either corrupts a patch. Here
    stdin goes in as bytes and stdout is decoded as UTF-8 with ``surrogateescape``, so
    ``result.stdout.encode("utf-8", "surrogateescape")`` is exactly what git wrote; stderr,
    read by people, is decoded as run_git does. Same argv, environment, session and death
    signal as run_git; no progress reporting.
    """
    argv, preexec = _command(args, pre_args, None)
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd),
        env={**env, **(extra_env or {})},
        start_new_session=True,
        preexec_fn=preexec,  # see _die_with_parent
    )
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise GitTimeoutError(
            f"git {command_name(args)} timed out after {timeout:g} s and was killed",
            url=url,
            hint=timeout_hint,
        ) from None
    except BaseException:
        _kill_group(process)
        raise
    return GitResult(
        tuple(args),
        process.returncode,
        stdout.decode("utf-8", "surrogateescape"),
        stderr.decode("utf-8", "replace"),
    )


def command_name(args: Sequence[str]) -> str:
    """The git command ``args`` runs (``commit`` in ``-c k=v -C dir commit -m x``), for
    messages: the first word is often an option."""
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in ("-c", "-C", "--git-dir", "--work-tree", "--namespace"):
            skip_next = True
        elif not arg.startswith("-"):
            return arg
    return " ".join(args[:1]) or "(no command)"


def _wait(
    process: subprocess.Popen[str],
    args: Sequence[str],
    stdin: str | None,
    timeout: float,
    url: str | None,
    progress: Callable[[str], None] | None,
) -> tuple[str, str]:
    """git's output once it ended; past ``timeout`` (or on Ctrl-C) its whole group is killed."""
    try:
        if progress is None:
            return process.communicate(stdin, timeout=timeout)
        return _communicate_with_progress(process, timeout, progress)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        command = " ".join(args[:1])
        raise GitTimeoutError(
            f"git {command} timed out after {timeout:g} s and was killed",
            url=url,
            hint="raise --repo-timeout if the remote is just slow",
        ) from None
    except BaseException:
        _kill_group(process)
        raise


def _command(
    args: Sequence[str], pre_args: Sequence[str], git_dir: Path | None
) -> tuple[list[str], Callable[[], None] | None]:
    """git's argv (behind setpriv when it can die with us that way), and the preexec_fn that
    makes it die with us otherwise."""
    argv = [_git_executable(), *_CONFIG_ARGS, *pre_args]
    if git_dir is not None:
        # --git-dir rather than -C: safe.bareRepository=explicit makes `-C bare.git` fail.
        argv.append(f"--git-dir={git_dir}")
    argv.extend(args)
    prefix = _death_signal_prefix()
    if prefix is not None:
        return [*prefix, *argv], None
    return argv, _PREEXEC


PROGRESS_AFTER = 2.0
PROGRESS_EVERY = 1.0


def _communicate_with_progress(
    process: subprocess.Popen[str], timeout: float, progress: Callable[[str], None]
) -> tuple[str, str]:
    """communicate(), but reporting git's latest progress line while it runs."""
    chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def drain(name: str) -> None:
        pipe = getattr(process, name)
        for piece in iter(lambda: pipe.read(256), ""):
            chunks[name].append(piece)

    readers = [threading.Thread(target=drain, args=(n,), daemon=True) for n in chunks]
    for reader in readers:
        reader.start()
    start = time.monotonic()
    shown_at = 0.0
    last_shown = ""
    while True:
        try:
            process.wait(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now - start > timeout:
                raise
            if now - start >= PROGRESS_AFTER and now - shown_at >= PROGRESS_EVERY:
                line = _latest_progress("".join(chunks["stderr"][-40:]))
                if line and line != last_shown:
                    progress(line)
                    shown_at, last_shown = now, line
    for reader in readers:
        reader.join(timeout=5)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    return "".join(chunks["stdout"]), _without_progress("".join(chunks["stderr"]))


def _latest_progress(text: str) -> str:
    # git redraws a progress line with '\r'; the last complete one is the current state.
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return lines[-2] if len(lines) > 1 else (lines[-1] if lines else "")


def _without_progress(text: str) -> str:
    """Keep only the lines a person would read in an error (not the redrawn counters)."""
    kept = []
    for line in text.split("\n"):
        if "\r" in line:
            line = line.rsplit("\r", 1)[-1]
        kept.append(line)
    return "\n".join(kept)


def _kill_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # A grandchild that left the group still holds our pipes; do not wait for it.
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        process.wait()


#: The oldest git the plugin works with. Every fetch passes `--no-write-fetch-head` and
#: `--no-auto-maintenance` (both new in git 2.29, which older git rejects as unknown options),
#: and fetching an unadvertised commit by name relies on protocol v2, git's default since 2.29.
#: Everything else it runs is older (`clone --dissociate` 2.3, `fsck --connectivity-only`
#: 2.11, partial clone 2.17, `tree:0` 2.20); `checkout.workers` (2.32) is only a setting,
#: which older git ignores.
MINIMUM_GIT = (2, 29)
#: `git sparse-checkout set --cone/--no-cone` (what ``sparse=`` runs) is new in git 2.35;
#: before, `set` takes `--cone` for a pattern.
SPARSE_MINIMUM_GIT = (2, 35)

_VERSION_RE = re.compile(r"git version (\d+)\.(\d+)(?:\.(\d+))?")


def check_git_version(
    minimum: tuple[int, int] = MINIMUM_GIT, needed_for: str | None = None
) -> tuple[int, ...] | None:
    """Raise RepoClonesError naming the version found and ``minimum`` if git is older.

    Meant for the first use of git in a process: an older git fails with one clear message
    instead of an obscure "unknown option" in the middle of a clone. `git --version` runs once
    per process and git executable (cached), so the check costs nothing after the first call.
    Returns the version found, or None if git printed something unexpected (a distribution's
    odd format must not lock users out of a git that works).
    """
    found = _git_version(_git_executable())
    if found is None or found[:2] >= minimum:
        return found
    wanted = ".".join(map(str, minimum))
    purpose = f" for {needed_for}" if needed_for else ""
    raise RepoClonesError(
        f"git {'.'.join(map(str, found))} found; pytest-repoclones needs git >= {wanted}{purpose}",
        hint=f"install git {wanted} or newer, or put it first on PATH",
    )


@functools.cache
def _git_version(executable: str) -> tuple[int, ...] | None:
    # Keyed by the executable so that a changed PATH is checked again; run_git for its
    # hardened environment and time limit (a wedged git must not hang the first test).
    result = run_git(["--version"], env=git_environment(), timeout=60)
    match = _VERSION_RE.search(result.stdout) if result.ok else None
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)
