"""The prefetch hand-over between xdist workers and the controller, as plain functions.

The whole path (workers send what they declare over their channel, the controller fetches
before scheduling) is tested through pytester in test_daily_use.py and test_remote_workers.py;
these pin the edges an odd or foreign worker can produce.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import execnet
import pytest
from helpers.messages import without_paths
from upstream import Upstream, git, upload_packs

from pytest_repoclones import RepoStore
from pytest_repoclones.prefetch import (
    Unfetched,
    Wanted,
    cache_key,
    key_lines,
    key_pairs,
    parse_declared,
    parse_key_pairs,
    prefetch,
)


def test_declared_commits_survive_the_channel() -> None:
    """What a worker declares is plain builtins: execnet carries it as it is."""
    wanted: Wanted = {"file:///a.git": ["v1.0", None], "file:///b": ["x"]}
    assert parse_declared(execnet.loads(execnet.dumps(wanted))) == wanted


def test_declared_submodule_wishes_survive_the_channel() -> None:
    # A marker's submodules=True/False travels with its commit, a pair (or a list, from JSON).
    wanted: Wanted = {"file:///a.git": ["v1.0", ("v1.1", True), (None, False)]}
    assert parse_declared(execnet.loads(execnet.dumps(wanted))) == wanted
    as_lists = {"file:///a.git": ["v1.0", ["v1.1", True], [None, False], ["v2", "yes"], [1, True]]}
    assert parse_declared(as_lists) == wanted


def test_submodules_change_the_cache_key_and_only_then() -> None:
    """A cache warmed with submodules holds more entries: another key. Items without them
    weigh as before submodules existed, so existing CI keys stay valid."""
    url = "https://github.com/you/project"
    plain = key_pairs({url: ["v1.0"]})
    assert plain == [(plain[0][0], "v1.0", False)]
    assert key_pairs({url: [("v1.0", False)]}) == plain
    assert key_pairs({url: ["v1.0"]}, submodules=True) == key_pairs({url: [("v1.0", True)]})
    assert key_pairs({url: [("v1.0", False)]}, submodules=True) == plain  # the marker decides
    with_them = key_pairs({url: [("v1.0", True)]})
    assert cache_key(with_them) != cache_key(plain)
    # The digest of a plain pair is the one the key had before submodules.
    before = json.dumps(["repoclones-key-v1", [[plain[0][0], "v1.0"]]], separators=(",", ":"))
    assert cache_key(plain) == hashlib.sha256(before.encode()).hexdigest()
    # Over the channel, and as older workers sent them (two fields).
    assert parse_key_pairs(execnet.loads(execnet.dumps(with_them))) == with_them
    assert parse_key_pairs([[plain[0][0], "v1.0"]]) == plain
    assert parse_key_pairs([[plain[0][0], "v1.0", "yes"], ["x"]]) == []
    assert key_lines(with_them, verbose=True)[1].endswith(" v1.0 with submodules")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, {}),  # a worker with nothing to hand over
        ("file:///a", {}),
        (["v1.0"], {}),
        ({"file:///a": "v1.0", "file:///b": ["v2", 3, None, {}]}, {"file:///b": ["v2", None]}),
    ],
    ids=["none", "a-string", "not-a-mapping", "odd-values"],
)
def test_unusable_declarations_mean_nothing_to_prefetch(
    data: object, expected: dict[str, list[str | None]]
) -> None:
    assert parse_declared(data) == expected


def test_prefetch_failures_are_logged_not_raised(
    store: RepoStore,
    upstream: Upstream,
    tmp_path: Path,
    trace_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = (tmp_path / "no-such-repo").as_uri()
    pull = upstream.rev("refs/pull/7/head")  # not in a clone: only a fetch of its own brings it
    # A failure first in each repository's list: what follows it must still be fetched.
    told: list[Unfetched] = []
    prefetch(
        store, {missing: ["main"], upstream.url: ["no-such-branch", pull, "v1.0"]}, told.append
    )
    warnings = sorted(
        without_paths(r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING
    )
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("repoclones: prefetch of main failed: "), warnings
    assert warnings[1].startswith("repoclones: prefetch of no-such-branch failed: "), warnings
    assert "No such branch or tag" in warnings[1], warnings
    assert any(missing in r.getMessage() for r in caplog.records)  # names the repository
    # Told once each, with what deduplicates them across xdist workers: (url, commit).
    assert sorted((f.url, f.commit) for f in told) == [
        (missing, "main"),
        (upstream.url, "no-such-branch"),
    ]
    assert all(f.line.startswith(f"repoclones: could not prefetch {f.commit} of ") for f in told)
    # The good commits of the good repository were fetched regardless: one clone, one fetch.
    git_dir = store.git_dir(upstream.url)
    assert (git_dir / "repoclones.json").is_file()
    assert git(f"--git-dir={git_dir}", "cat-file", "-t", pull) == "commit"
    assert upload_packs(trace_file, upstream.path) == 2
