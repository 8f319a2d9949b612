"""Daily use, second round (issue 14): error messages that keep git's reason, say where a name
was looked for, a fixture that shows itself usefully in reports, and summary counters that add
up.

Inner pytest runs go through ``pytester`` in a subprocess (the plugin loads from its entry point,
as for a user); git is real and upstreams are local bare repositories.
"""

from __future__ import annotations

import re
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.messages import message_of, without_paths
from helpers.mounts import read_only_bind
from inner import run
from upstream import Upstream

import pytest_repoclones
from pytest_repoclones import CommitNotFoundError, RemoteError, RepoStore, _git
from pytest_repoclones._git import GitResult


def write_tests(pytester: pytest.Pytester, body: str, **constants: Any) -> Path:
    header = "\n".join(f"{name} = {value!r}" for name, value in constants.items())
    return pytester.makepyfile(test_inner=f"import pytest\n{header}\n\n{textwrap.dedent(body)}")


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


def e_lines(result: pytest.RunResult) -> str:
    """The failure messages of an inner run (its ``E`` lines), without temporary paths."""
    return without_paths("\n".join(line for line in result.outlines if line.startswith("E ")))


# -- 1. an unreachable host: the reason git gives on its second line -----------------------------


def test_unreachable_host_error_keeps_the_reason(
    pytester: pytest.Pytester, cache_dir: Path
) -> None:
    """git says `fatal: unable to connect to 127.0.0.1:` and the cause on the next line."""
    url = f"git://127.0.0.1:{closed_port()}/project.git"
    with pytest.raises(RemoteError) as caught:
        RepoStore(cache_dir, timeout=30).resolve(url, "main")
    message = str(caught.value)
    assert "fatal: unable to connect to 127.0.0.1" in message, message
    assert "Connection refused" in message, message

    # Where users meet it: the failure report of a test.
    write_tests(
        pytester,
        """
        def test_unreachable(worktree):
            worktree(URL, "main")
        """,
        URL=url,
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(failed=1)
    errors = e_lines(result)
    assert "fatal: unable to connect to 127.0.0.1" in errors, errors
    assert "Connection refused" in errors, errors


def test_error_line_is_bounded_and_keeps_one_error() -> None:
    chatty = "\n".join(
        [
            "remote: Enumerating objects: 3",
            "fatal: unable to connect to example.com:",
            "example.com[0: 192.0.2.1]: errno=Connection refused",
            *(f"banner line {n} " + "x" * 80 for n in range(20)),
        ]
    )
    kept = GitResult(("fetch",), 128, "", chatty).error_line.splitlines()
    assert kept[0] == "fatal: unable to connect to example.com:"
    assert kept[1].strip() == "example.com[0: 192.0.2.1]: errno=Connection refused"
    assert len(kept) <= _git.ERROR_LINES
    assert sum(len(line.strip()) for line in kept) <= _git.ERROR_CHARS
    # One line of git's stays one line; no fatal line: the last line, as before.
    assert GitResult((), 1, "", "error: nope\n").error_line == "error: nope"
    assert GitResult((), 1, "", "warning: a\nsomething\n").error_line == "something"
    assert GitResult((), 3, "", "").error_line == "git exited with status 3"


def test_multi_line_error_is_redacted(cache_dir: Path) -> None:
    """Every kept line goes through the same redaction as the first did."""
    url = f"https://alice:s3cret-token@127.0.0.1:{closed_port()}/project.git"
    with pytest.raises(RemoteError) as caught:
        RepoStore(cache_dir, timeout=30).resolve(url, "main")
    assert "s3cret-token" not in str(caught.value)
    assert "alice:***@127.0.0.1" in str(caught.value)


# -- 2. offline or read-only: the name is missing in the cache, not upstream ---------------------


def test_offline_missing_branch_says_in_the_cache(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    RepoStore(cache_dir, timeout=60).clone(upstream.url)  # warm: the clone only
    offline = RepoStore(cache_dir, timeout=60, offline=True)
    with pytest.raises(CommitNotFoundError) as caught:
        offline.resolve(upstream.url, "no-such-branch")
    assert caught.value.problem == "No such branch or tag in the cache"

    write_tests(
        pytester,
        """
        def test_missing_branch(worktree):
            worktree(URL, "no-such-branch")
        """,
        URL=upstream.url,
    )
    result = run(pytester, cache_dir, "--repo-offline")
    result.assert_outcomes(failed=1)
    errors = e_lines(result)
    assert "No such branch or tag in the cache" in errors, errors
    assert "upstream" not in errors, errors

    # Online, the remote was asked: "upstream" is right there.
    with pytest.raises(CommitNotFoundError) as online:
        RepoStore(cache_dir, timeout=60).resolve(upstream.url, "no-such-branch")
    assert online.value.problem == "No such branch or tag upstream"


@pytest.fixture
def read_only_cache(upstream: Upstream, tmp_path: Path) -> Iterator[Path]:
    """A warm cache, bind-mounted read-only (as in test_read_only_cache.py)."""
    source = tmp_path / "cache-rw"
    RepoStore(source).clone(upstream.url)
    with read_only_bind(source, tmp_path / "cache-ro") as mount_point:
        yield mount_point


def test_read_only_cache_missing_branch_says_in_the_cache(
    upstream: Upstream, read_only_cache: Path
) -> None:
    store = RepoStore(read_only_cache, timeout=60)
    assert store.read_only
    with pytest.raises(CommitNotFoundError) as caught:
        store.resolve(upstream.url, "no-such-branch")
    assert caught.value.problem == "No such branch or tag in the cache"
    assert "upstream" not in message_of(caught.value)


# -- 3. the factory in reports, and its type for annotations -------------------------------------


def test_factory_repr_in_a_failure_report_and_importable_type(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path
) -> None:
    write_tests(
        pytester,
        """
        from pytest_repoclones import WorktreeFactory

        def test_fails(worktree: WorktreeFactory):
            assert isinstance(worktree, WorktreeFactory)
            worktree(URL)
            worktree(URL, "v1.0")
            assert worktree is None
        """,
        URL=upstream.url,
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert f"<worktree factory: 2 worktrees made, cache {cache_dir}>" in output, output
    assert "object at 0x" not in output, output


def test_factory_repr_never_names_a_url(cache_dir: Path, tmp_path: Path) -> None:
    store = RepoStore(cache_dir)
    factory = pytest_repoclones.WorktreeFactory(store, lambda name: tmp_path / name, "test_x")
    assert repr(factory) == f"<worktree factory: 0 worktrees made, cache {cache_dir}>"
    assert "://" not in repr(factory)


# -- 4. summary counters that add up -------------------------------------------------------------

SUMMARY_RE = re.compile(
    r"^(?P<worktrees>\d+) worktrees? from \d+ repositor(?:y|ies): "
    r"(?P<clones>\d+) clones?, (?P<fetches>\d+) fetch(?:es)?, (?P<hits>\d+) cache hits?, "
)
NOTE_RE = re.compile(
    r"^\((?P<hits>\d+) cache hits? \+ (?P<needed>\d+) that needed a clone or fetch = "
    r"(?P<worktrees>\d+) worktrees?; "
)


def summary(result: pytest.RunResult) -> tuple[dict[str, int], dict[str, int] | None]:
    """The summary line's numbers, and the reconciling note's when there is one."""
    lines = [m.groupdict() for line in result.outlines if (m := SUMMARY_RE.match(line))]
    assert len(lines) == 1, result.stdout.str()
    notes = [m.groupdict() for line in result.outlines if (m := NOTE_RE.match(line))]
    as_ints = {key: int(value) for key, value in lines[0].items()}
    return as_ints, ({k: int(v) for k, v in notes[0].items()} if notes else None)


@pytest.mark.parametrize("declared", [False, True], ids=["called", "prefetched"])
def test_summary_counts_add_up(
    pytester: pytest.Pytester, upstream: Upstream, cache_dir: Path, declared: bool
) -> None:
    """3 tests on 2 commits; one commit is reachable only from a pull-request ref (a fetch).

    Called in the tests, the first test's clone and the third's fetch are theirs: 1 hit.
    Declared by markers, prefetch does both before any test: 3 hits, and the summary must
    not leave "1 clone, 1 fetch, 3 cache hits" for 3 worktrees unexplained.
    """
    if declared:
        body = """
        @pytest.mark.worktree(URL, C1)
        def test_a(repo_worktree): pass

        @pytest.mark.worktree(URL, C1)
        def test_b(repo_worktree): pass

        @pytest.mark.worktree(URL, PR)
        def test_c(repo_worktree): pass
        """
    else:
        body = """
        def test_a(worktree): worktree(URL, C1)

        def test_b(worktree): worktree(URL, C1)

        def test_c(worktree): worktree(URL, PR)
        """
    write_tests(
        pytester,
        body,
        URL=upstream.url,
        C1=upstream.rev("v1.0^{commit}"),
        PR=upstream.rev("refs/pull/7/head"),
    )
    result = run(pytester, cache_dir)
    result.assert_outcomes(passed=3)
    counts, note = summary(result)
    needed = 0 if declared else 2  # the worktrees whose making cloned or fetched
    assert (counts["worktrees"], counts["clones"], counts["fetches"]) == (3, 1, 1)
    assert counts["hits"] == 3 - needed
    if declared:
        # Network work outside the tests' worktrees: the note says how the numbers fit.
        assert note == {"hits": 3, "needed": 0, "worktrees": 3}, result.stdout.str()
    else:
        assert note is None, result.stdout.str()
