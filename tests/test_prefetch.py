"""The prefetch hand-over between xdist workers and the controller, as plain functions.

The whole path (workers write, the controller fetches before scheduling) is tested through
pytester in test_daily_use.py; these pin the edges a crashed or odd worker can produce.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers.messages import without_paths
from upstream import Upstream, git, upload_packs

from pytest_repoclones import RepoStore
from pytest_repoclones.prefetch import Wanted, prefetch, read_declared, write_declared


def test_declared_commits_survive_the_hand_over(tmp_path: Path) -> None:
    wanted: Wanted = {"file:///a.git": ["v1.0", None], "file:///b": ["x"]}
    assert write_declared(tmp_path / "gw0.json", wanted)
    assert read_declared(tmp_path / "gw0.json") == wanted
    assert [p.name for p in tmp_path.iterdir()] == ["gw0.json"], "no temporary file left"


def test_declared_submodule_wishes_survive_the_hand_over(tmp_path: Path) -> None:
    # A marker's submodules=True/False travels with its commit; JSON makes the pair a list.
    wanted: Wanted = {"file:///a.git": ["v1.0", ("v1.1", True), (None, False)]}
    assert write_declared(tmp_path / "gw0.json", wanted)
    assert read_declared(tmp_path / "gw0.json") == wanted


def test_hand_over_to_a_vanished_directory_reports_failure(tmp_path: Path) -> None:
    # The worker then prefetches by itself rather than not at all.
    assert write_declared(tmp_path / "gone" / "gw0.json", {"u": ["c"]}) is False


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, {}),  # the worker died before writing
        ('{"file:///a": ["v1', {}),  # cut short
        ('["v1.0"]', {}),
        ('{"file:///a": "v1.0", "file:///b": ["v2", 3, null, {}]}', {"file:///b": ["v2", None]}),
    ],
    ids=["missing", "truncated", "not-a-mapping", "odd-values"],
)
def test_unusable_hand_over_files_mean_nothing_to_prefetch(
    tmp_path: Path, content: str | None, expected: dict[str, list[str | None]]
) -> None:
    path = tmp_path / "gw1.json"
    if content is not None:
        path.write_text(content)
    assert read_declared(path) == expected


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
    prefetch(store, {missing: ["main"], upstream.url: ["no-such-branch", pull, "v1.0"]})
    warnings = sorted(
        without_paths(r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING
    )
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("repoclones: prefetch of main failed: "), warnings
    assert warnings[1].startswith("repoclones: prefetch of no-such-branch failed: "), warnings
    assert "No such branch or tag" in warnings[1], warnings
    assert any(missing in r.getMessage() for r in caplog.records)  # names the repository
    # The good commits of the good repository were fetched regardless: one clone, one fetch.
    git_dir = store.git_dir(upstream.url)
    assert (git_dir / "repoclones.json").is_file()
    assert git(f"--git-dir={git_dir}", "cat-file", "-t", pull) == "commit"
    assert upload_packs(trace_file, upstream.path) == 2
