"""What changed between releases: a bug fix, an API rename, the changelog, the branches."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from pytest_repoclones import RepoStore, Worktree

from .helpers import git, python, run_python

WorktreeFactory = Callable[..., Worktree]

TAGS = ["v0.1.0", "v0.2.0", "v0.2.1", "v1.0.0"]
LIST_API = "import semverkit; print(*semverkit.__all__)"
SORT_VERSIONS = (
    "import functools, sys, semverkit\n"
    "cmp = getattr(semverkit, 'compare_versions', None) or semverkit.compare\n"
    "print(*sorted(sys.argv[1:], key=functools.cmp_to_key(cmp)))"
)


def changelog_section(text: str, version: str) -> str:
    """The body of one ``## <version>`` section of a Keep-a-Changelog file ('' if absent)."""
    match = re.search(rf"^## {re.escape(version)}\b.*?(?=^## |\Z)", text, re.M | re.S)
    return match.group(0) if match else ""


@pytest.mark.parametrize(("tag", "expected"), [("v0.2.0", 1), ("v0.2.1", -1)])
def test_prerelease_bug_fixed_in_0_2_1(
    worktree: WorktreeFactory, upstream_url: str, tag: str, expected: int
) -> None:
    """0.2.0 sorted 1.0.0-alpha after 1.0.0 (issue #4); 0.2.1 sorts it before."""
    wt = worktree(upstream_url, tag)
    code = "from semverkit import compare; print(compare('1.0.0-alpha', '1.0.0'))"
    assert int(python(wt, code)) == expected


def test_changelog_records_the_fix(worktree: WorktreeFactory, upstream_url: str) -> None:
    """The fix release adds its own section and keeps every earlier one."""
    before = (worktree(upstream_url, "v0.2.0") / "CHANGELOG.md").read_text()
    after = (worktree(upstream_url, "v0.2.1") / "CHANGELOG.md").read_text()
    assert changelog_section(before, "0.2.1") == ""
    fix = changelog_section(after, "0.2.1")
    assert "### Fixed" in fix
    assert "#4" in fix
    for version in ("0.1.0", "0.2.0"):
        assert changelog_section(after, version) == changelog_section(before, version) != ""


def test_files_changed_for_1_0_0(worktree: WorktreeFactory, upstream_url: str) -> None:
    """Tags live in the shared clone, so any worktree can diff two releases."""
    wt = worktree(upstream_url, "v1.0.0")
    changed = set(git(wt, "diff", "--name-only", "v0.2.0", "v1.0.0").splitlines())
    assert changed == {
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
        "semverkit/__init__.py",
        "semverkit/bump.py",
        "semverkit/core.py",
        "tests/test_bump.py",
        "tests/test_compare.py",
    }
    added = git(wt, "diff", "--name-only", "--diff-filter=A", "v0.2.0", "v1.0.0").split()
    assert added == ["semverkit/bump.py", "tests/test_bump.py"]


def test_1_0_0_adds_api_and_keeps_behaviour(worktree: WorktreeFactory, upstream_url: str) -> None:
    """Two releases side by side: new names only, and the same ordering as before."""
    old = worktree(upstream_url, "v0.2.1")
    new = worktree(upstream_url, "v1.0.0")
    assert old.path != new.path
    assert old.commit != new.commit
    old_api = set(python(old, LIST_API).split())
    new_api = set(python(new, LIST_API).split())
    assert old_api < new_api
    assert new_api - old_api == {"bump", "compare_versions"}
    versions = ["1.0.0", "1.0.0-rc.1", "0.9.12", "1.0.0-alpha", "0.10.0", "1.0.0-alpha.2"]
    expected = "0.9.12 0.10.0 1.0.0-alpha 1.0.0-alpha.2 1.0.0-rc.1 1.0.0"
    assert python(old, SORT_VERSIONS, *versions) == expected
    assert python(new, SORT_VERSIONS, *versions) == expected


def test_compare_is_deprecated_in_1_0_0(worktree: WorktreeFactory, upstream_url: str) -> None:
    """The renamed function keeps working under its old name, with a DeprecationWarning."""
    wt = worktree(upstream_url, "v1.0.0")
    code = "from semverkit import compare; print(compare('1.0.0', '2.0.0'))"
    lenient = run_python(wt, code)
    assert lenient.returncode == 0
    assert lenient.stdout.strip() == "-1"
    assert "DeprecationWarning" in lenient.stderr
    strict = run_python(wt, code, flags=("-W", "error::DeprecationWarning"))
    assert strict.returncode == 1
    assert "use compare_versions()" in strict.stderr


def test_default_branch_is_newest(
    worktree: WorktreeFactory, repo_store: RepoStore, upstream_url: str
) -> None:
    """commit=None checks out the remote's default branch: every release, plus newer work."""
    wt = worktree(upstream_url)
    assert wt.commit == repo_store.resolve(upstream_url, "main")
    assert set(git(wt, "tag", "--merged", "HEAD").split()) == set(TAGS)
    assert git(wt, "describe", "--tags", "--abbrev=0") == "v1.0.0"
    assert git(wt, "rev-list", "--count", "v1.0.0..HEAD") == "1"
    assert "## Deprecation policy" in (wt / "README.md").read_text()


def test_develop_branch_has_unreleased_work(
    worktree: WorktreeFactory, repo_store: RepoStore, upstream_url: str
) -> None:
    """A branch name checks out its tip; develop builds on main with an Unreleased feature."""
    dev = worktree(upstream_url, "develop")
    main_commit = repo_store.resolve(upstream_url, "main")
    assert git(dev, "rev-parse", "HEAD^") == main_commit
    assert git(dev, "describe", "--tags").startswith("v1.0.0-2-g")
    code = "from semverkit import satisfies; print(satisfies('1.4.0', '>=1.0.0, <2.0.0'))"
    assert python(dev, code) == "True"
    assert "satisfies()" in changelog_section((dev / "CHANGELOG.md").read_text(), "Unreleased")
