"""The upstream under test is the generated semverkit history, object for object."""

from __future__ import annotations

from pathlib import Path

from pytest_repoclones import RepoStore

from .make_upstream import build_upstream, list_refs


def test_upstream_is_the_generated_history(
    tmp_path: Path, repo_store: RepoStore, upstream_url: str
) -> None:
    """The generator is deterministic, and the URL (embedded or a mirror) serves its commits."""
    first = list_refs(build_upstream(tmp_path / "a.git"))
    second = list_refs(build_upstream(tmp_path / "b.git"))
    assert first == second
    assert set(first) == {
        "refs/heads/develop",
        "refs/heads/main",
        "refs/tags/v0.1.0",
        "refs/tags/v0.2.0",
        "refs/tags/v0.2.1",
        "refs/tags/v1.0.0",
    }
    for ref, commit in first.items():
        name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        assert repo_store.resolve(upstream_url, name) == commit, name
