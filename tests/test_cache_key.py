"""``--repo-cache-key``: the key a CI cache step stores the clone cache under.

It is made from what the selected tests declare, as (repository, commit) pairs: the same suite
gives the same key whatever the order of its tests and markers, the spelling of a URL or the
number of xdist workers, and another commit gives another key. Computing it with
``--collect-only`` (a CI step before the cache is restored) fetches nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from inner import run
from upstream import Upstream, upload_packs

from pytest_repoclones.prefetch import cache_key, key_lines, key_pairs

KEY_RE = re.compile(r"^repoclones-key: ([0-9a-f]{64})$")

# Two spellings of one suite: other test names and order, markers stacked or listed, the
# repository as a file:// URL, with a trailing "/" or as a plain path, a commit declared twice.
SUITE = """
import pytest

@pytest.mark.worktree(URL, ["v1.0", "main"])
def test_a():
    pass

@pytest.mark.worktree(PATH, "v1.1")
def test_b():
    pass

@pytest.mark.worktree(OTHER)
def test_c():
    pass
"""

SAME_SUITE_REORDERED = """
import pytest

@pytest.mark.worktree(OTHER, None)
def test_first():
    pass

@pytest.mark.worktree(URL, "v1.1")
@pytest.mark.worktree(URL, "main")
def test_second():
    pass

@pytest.mark.worktree(URL + "/", ["v1.0", "v1.0"])
def test_third():
    pass
"""


def write(pytester: pytest.Pytester, source: str, upstream: Upstream, other: Upstream) -> None:
    constants = f"URL = {upstream.url!r}\nPATH = {str(upstream.path)!r}\nOTHER = {other.url!r}\n"
    pytester.makepyfile(test_suite=constants + source)


def key_of(result: pytest.RunResult) -> str:
    """The one ``repoclones-key:`` line's digest (a CI step greps for exactly that)."""
    keys = [found.group(1) for line in result.outlines if (found := KEY_RE.match(line))]
    assert len(keys) == 1, result.outlines
    return keys[0]


@pytest.fixture
def other(make_upstream: object) -> Upstream:
    up = make_upstream("other")  # type: ignore[operator]
    up.commit({"README": "other\n"})
    return up  # type: ignore[no-any-return]


def test_the_key_depends_only_on_what_is_declared(
    pytester: pytest.Pytester,
    upstream: Upstream,
    other: Upstream,
    cache_dir: Path,
    trace_file: Path,
) -> None:
    write(pytester, SUITE, upstream, other)
    first = run(pytester, cache_dir, "--collect-only", "-q", "--repo-cache-key")
    assert first.ret == pytest.ExitCode.OK
    key = key_of(first)
    # Computing the key touched neither the network nor the cache.
    assert upload_packs(trace_file, upstream.path) == 0
    assert not cache_dir.exists()

    # With -n, --collect-only collects in the controller (xdist stands aside): the same key.
    collected_with_n = run(
        pytester, cache_dir, "--collect-only", "-q", "-n", "2", "--repo-cache-key"
    )
    assert key_of(collected_with_n) == key
    # The same under xdist, where the controller says it (from a worker's collection), in a
    # run that prefetches and runs the tests.
    under_xdist = run(pytester, cache_dir, "-n", "2", "--repo-cache-key")
    under_xdist.assert_outcomes(passed=3)
    assert key_of(under_xdist) == key
    assert upload_packs(trace_file, upstream.path) == 1, "prefetched as usual"

    write(pytester, SAME_SUITE_REORDERED, upstream, other)
    reordered = run(pytester, cache_dir, "--collect-only", "--repo-cache-key", "-v")
    assert key_of(reordered) == key
    # -v lists the pairs, on lines the key's pattern does not match.
    listed = [line for line in reordered.outlines if line.startswith("repoclones-key input: ")]
    url_key, other_key = (key_pairs({u: [None]})[0][0] for u in (upstream.url, other.url))
    assert sorted(listed) == sorted(
        [
            f"repoclones-key input: {url_key} main",
            f"repoclones-key input: {url_key} v1.0",
            f"repoclones-key input: {url_key} v1.1",
            f"repoclones-key input: {other_key} (default branch)",
        ]
    )


def test_another_commit_or_selection_changes_the_key(
    pytester: pytest.Pytester, upstream: Upstream, other: Upstream, cache_dir: Path
) -> None:
    write(pytester, SUITE, upstream, other)
    key = key_of(run(pytester, cache_dir, "--collect-only", "-q", "--repo-cache-key"))
    write(
        pytester,
        SUITE + '\n@pytest.mark.worktree(URL, "feature")\ndef test_d():\n    pass\n',
        upstream,
        other,
    )
    more = key_of(run(pytester, cache_dir, "--collect-only", "-q", "--repo-cache-key"))
    assert more != key
    # Deselected tests declare nothing: the key follows the selection of the run it keys.
    fewer = run(pytester, cache_dir, "--collect-only", "-q", "--repo-cache-key", "-k", "test_d")
    assert key_of(fewer) not in (key, more)


def test_a_suite_without_markers_has_a_key_too(pytester: pytest.Pytester, cache_dir: Path) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = run(pytester, cache_dir, "--collect-only", "-q", "--repo-cache-key")
    assert key_of(result) == cache_key([])


def test_credentials_and_spelling_do_not_change_the_key() -> None:
    """A rotated token, a ".git", the host's case: one repository, one key; no secret shown."""
    token = "ghp_0123456789abcdefSECRET"
    plain = key_pairs({"https://github.com/you/project": ["v1.0"]})
    assert key_pairs({f"https://x-access-token:{token}@GitHub.com/you/project.git": ["v1.0"]}) == (
        plain
    )
    lines = key_lines(
        key_pairs({f"https://oauth2:{token}@github.com/you/project": ["v1.0"]}), verbose=True
    )
    assert token not in "\n".join(lines)
    assert cache_key(plain) == cache_key(list(reversed(plain * 2)))
    assert cache_key(plain) != cache_key(key_pairs({"https://github.com/you/other": ["v1.0"]}))


def test_submodules_change_the_key(
    pytester: pytest.Pytester, upstream: Upstream, other: Upstream, cache_dir: Path
) -> None:
    """With submodules the cache holds their entries too: a cache saved without them must not
    be restored under the key of a run that wants them."""
    write(pytester, SUITE, upstream, other)
    key = key_of(run(pytester, cache_dir, "--collect-only", "-q", "--repo-cache-key"))
    args = ("--repo-cache-key", "--repo-submodules")
    with_them = run(pytester, cache_dir, "--collect-only", "-v", *args)
    assert key_of(with_them) != key
    listed = [line for line in with_them.outlines if line.startswith("repoclones-key input: ")]
    assert len(listed) == 4
    assert all(line.endswith(" with submodules") for line in listed), listed
    # Under xdist a worker computes the pairs with the same default.
    under_xdist = run(pytester, cache_dir, "-n", "2", *args)
    under_xdist.assert_outcomes(passed=3)
    assert key_of(under_xdist) == key_of(with_them)
