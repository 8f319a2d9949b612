"""An evaluation harness in the style of SWE-bench, on semverkit's own history.

A task is a change the upstream really made: the commit that made it (its parent is the base the
model starts from), the tests that judge it, and the issue a model would be given. The patches
are not copied into this file: they are cut from the upstream when the suite runs, the change to
``tests/`` as the test patch and the change to ``semverkit/`` as the reference fix, exactly as
SWE-bench cuts a pull request in two.

Each evaluation gets an isolated worktree (``isolate=True``): a repository of its own holding
the base commit and its ancestors only, so the fix a model is asked for is nowhere in it. The
steps are the ``Worktree`` chores: ``apply`` (all or nothing, ``PatchError`` otherwise),
``diff`` (the model's prediction), ``reset`` (the test files as the base has them) and ``git``.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_repoclones import PatchError, RepoStore, Worktree, WorktreeFactory

from .helpers import run_project_tests


@dataclass(frozen=True)
class Task:
    """One task, as data: where it comes from upstream and what decides whether it is solved."""

    instance_id: str
    #: The upstream commit that solved it (any revision git reads); the base is its parent.
    solution: str
    #: What a model is given.
    problem_statement: str
    #: Tests that fail at the base with the test patch applied, and pass once it is solved.
    fail_to_pass: tuple[str, ...]
    #: Tests that already pass at the base and must keep passing.
    pass_to_pass: tuple[str, ...] = ()


TASKS = (
    Task(
        "semverkit-4",
        solution="v0.2.1~1",
        problem_statement='compare("1.0.0-alpha", "1.0.0") returns 1: a pre-release must sort '
        "before its release.",
        fail_to_pass=("tests/test_compare.py::test_prerelease_precedes_release",),
        pass_to_pass=(
            "tests/test_compare.py::test_orders_by_number_not_text",
            "tests/test_compare.py::test_equal",
            "tests/test_compare.py::test_prerelease_identifiers",
        ),
    ),
    Task(
        "semverkit-compare-versions",
        solution="v1.0.0~2",
        problem_statement="Rename compare() to compare_versions(); keep compare() working as a "
        "deprecated alias until 2.0.",
        # The test file imports compare_versions: before the fix none of its tests can run.
        fail_to_pass=(
            "tests/test_compare.py::test_orders_by_number_not_text",
            "tests/test_compare.py::test_equal",
            "tests/test_compare.py::test_prerelease_identifiers",
            "tests/test_compare.py::test_prerelease_precedes_release",
            "tests/test_compare.py::test_compare_is_a_deprecated_alias",
        ),
        pass_to_pass=("tests/test_parse.py::test_parse_prerelease",),
    ),
    Task(
        "semverkit-bump",
        solution="v1.0.0~1",
        problem_statement='Add bump(version, part): bump("1.4.2", "minor") == "1.5.0"; '
        "an unknown part raises ValueError.",
        fail_to_pass=(
            "tests/test_bump.py::test_bump[1.4.2-patch-1.4.3]",
            "tests/test_bump.py::test_bump[1.4.2-minor-1.5.0]",
            "tests/test_bump.py::test_bump[1.4.2-major-2.0.0]",
            "tests/test_bump.py::test_bump[2.0.0-rc.1-major-3.0.0]",
            "tests/test_bump.py::test_rejects_unknown_part",
        ),
        pass_to_pass=("tests/test_compare.py::test_compare_is_a_deprecated_alias",),
    ),
)
TASK_IDS = {task.instance_id: task for task in TASKS}


@dataclass(frozen=True)
class Instance:
    """A task made concrete from the upstream: commits by full name and the patches' text."""

    task: Task
    base_commit: str
    #: The commit that solved it: an isolated worktree of the base must not hold it.
    solution_commit: str
    test_patch: str
    #: The reference fix (SWE-bench's ``patch``).
    patch: str


#: git diff as harnesses store patches, whatever the user's git config says: diff.noprefix,
#: diff.context, color.ui=always or diff.external would each give text `git apply` cannot use.
PATCH_DIFF = (
    "diff", "--binary", "--no-color", "--no-ext-diff", "--unified=3",
    "--src-prefix=a/", "--dst-prefix=b/",
)  # fmt: skip


def upstream_git(git_dir: Path, *args: str) -> str:
    """git in the cache's clone of the upstream; stdout exactly as printed (a patch needs its
    final newline)."""
    result = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def make_instance(git_dir: Path, task: Task) -> Instance:
    solution = upstream_git(git_dir, "rev-parse", "--verify", f"{task.solution}^{{commit}}")
    solution = solution.strip()
    base = upstream_git(git_dir, "rev-parse", "--verify", f"{solution}^1").strip()
    return Instance(
        task=task,
        base_commit=base,
        solution_commit=solution,
        test_patch=upstream_git(git_dir, *PATCH_DIFF, base, solution, "--", "tests/"),
        patch=upstream_git(git_dir, *PATCH_DIFF, base, solution, "--", "semverkit/"),
    )


@pytest.fixture(scope="session")
def instances(repo_store: RepoStore, upstream_url: str) -> dict[str, Instance]:
    """Every task cut from the upstream, once per process: the plugin's clone has the history."""
    git_dir = repo_store.clone(upstream_url)
    return {task.instance_id: make_instance(git_dir, task) for task in TASKS}


def patched_files(patch: str) -> set[str]:
    """The paths a unified diff touches, from its ``--- a/`` and ``+++ b/`` lines."""
    return {line[6:] for line in patch.splitlines() if line.startswith(("--- a/", "+++ b/"))}


# -- running the tests and scoring -----------------------------------------------------------

#: A line of pytest's ``-rA`` summary: ``PASSED tests/test_x.py::test_y``.
SUMMARY_LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)")
RESOLVED, UNRESOLVED, PATCH_FAILED = "resolved", "unresolved", "patch did not apply"


def run_task_tests(wt: Worktree, task: Task) -> dict[str, str]:
    """Run the task's test files in the worktree: test id -> PASSED, FAILED, ...

    A test that is not listed did not run (its file could not be imported, say): it did not pass.
    """
    tests = (*task.fail_to_pass, *task.pass_to_pass)
    files = sorted({test.split("::")[0] for test in tests})
    # --continue-on-collection-errors: a test file that cannot import what the task adds yet
    # must not stop the other files (the pass_to_pass tests) from running.
    result = run_project_tests(wt, "-rA", "--continue-on-collection-errors", *files)
    found = (SUMMARY_LINE.match(line) for line in result.stdout.splitlines())
    return {match[2]: match[1] for match in found if match}


def solves(outcomes: dict[str, str], task: Task) -> bool:
    return all(outcomes.get(test) == "PASSED" for test in (*task.fail_to_pass, *task.pass_to_pass))


def evaluate(wt: Worktree, instance: Instance, model_patch: str) -> str:
    """Score one prediction as SWE-bench does: apply it, put the test files back as the base has
    them (a model may have edited them), apply the test patch, run the task's tests."""
    try:
        wt.apply(model_patch)
    except PatchError:
        return PATCH_FAILED  # the worktree is exactly as it was: nothing to clean up
    wt.reset(["tests/"])
    wt.apply(instance.test_patch)
    return RESOLVED if solves(run_task_tests(wt, instance.task), instance.task) else UNRESOLVED


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased pass@k estimator (Chen et al., 2021): the chance that at least one of ``k``
    attempts drawn from ``n``, ``correct`` of them right, is right."""
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_id", TASK_IDS)
def test_reference_fix_resolves_the_task(
    worktree: WorktreeFactory, upstream_url: str, instances: dict[str, Instance], instance_id: str
) -> None:
    """The task is valid (its tests fail at the base) and its reference fix solves it."""
    instance = instances[instance_id]
    task = instance.task
    wt = worktree(upstream_url, instance.base_commit, isolate=True)
    # The future is not there: the commit that solved the task is in no ref and no object.
    future = wt.git("cat-file", "-e", f"{instance.solution_commit}^{{commit}}", check=False)
    assert not future.ok
    assert wt.git("rev-list", "--all").stdout.split()[0] == instance.base_commit

    wt.apply(instance.test_patch)
    before = run_task_tests(wt, task)
    assert not [test for test in task.fail_to_pass if before.get(test) == "PASSED"], before
    assert all(before.get(test) == "PASSED" for test in task.pass_to_pass), before

    wt.apply(instance.patch)  # the model's turn; here it writes the reference fix
    prediction = wt.diff()
    touched = patched_files(instance.test_patch) | patched_files(instance.patch)
    assert patched_files(prediction) == touched
    assert wt.changed_files() == sorted(touched)

    # Evaluate as a harness does: the test files as the base has them, then the test patch.
    wt.reset(["tests/"])
    assert wt.diff() == instance.patch  # what is left of the prediction is the fix, exactly
    wt.apply(instance.test_patch)
    after = run_task_tests(wt, task)
    assert solves(after, task), after
    assert wt.git("rev-parse", "HEAD").stdout.strip() == instance.base_commit  # nothing committed


#: What a model wrote at each attempt at semverkit-4: None stands for the reference fix.
#: Attempt 1 flips the sign (a release still sorts first); attempt 2 was written against
#: 0.1.x's compare(), which had no _precedence(), so its context is not in the base.
#: (Empty context lines are written empty, not as one space: git apply reads both, and
#: editors strip the space.)
ATTEMPTS: dict[int, tuple[str | None, str]] = {
    0: (None, RESOLVED),
    1: (
        """\
diff --git a/semverkit/core.py b/semverkit/core.py
--- a/semverkit/core.py
+++ b/semverkit/core.py
@@ -39,7 +39,7 @@ def _precedence(version: Version) -> tuple[object, ...]:
     identifiers = tuple(
         (0, int(part), "") if part.isdigit() else (1, 0, part) for part in version.prerelease
     )
-    return (version.major, version.minor, version.patch, identifiers)
+    return (version.major, version.minor, version.patch, bool(version.prerelease), identifiers)


 def compare(a: str, b: str) -> int:
""",
        UNRESOLVED,
    ),
    2: (
        '''\
diff --git a/semverkit/core.py b/semverkit/core.py
--- a/semverkit/core.py
+++ b/semverkit/core.py
@@ -44,4 +44,6 @@ def _precedence(version: Version) -> tuple[object, ...]:
 def compare(a: str, b: str) -> int:
     """Return -1, 0 or 1 as version ``a`` is lower than, equal to or higher than ``b``."""
     left, right = parse(a), parse(b)
+    if left[:3] == right[:3] and bool(left.prerelease) != bool(right.prerelease):
+        return -1 if left.prerelease else 1
     return (left > right) - (left < right)
''',
        PATCH_FAILED,
    ),
}


@pytest.mark.parametrize("attempt", range(len(ATTEMPTS)))
def test_pass_at_k_attempt(
    worktree: WorktreeFactory,
    upstream_url: str,
    instances: dict[str, Instance],
    attempt: int,
    record_property: Callable[[str, object], None],
) -> None:
    """k attempts at one task, each in a worktree of its own, on any xdist worker.

    A real harness does not fail a test when the model fails: it records the outcome
    (``record_property`` puts it in ``--junitxml``'s report, workers' included) and scores the
    attempts afterwards with :func:`pass_at_k`. Here the outcomes are known, so they are checked.
    """
    instance = instances["semverkit-4"]
    model_patch, expected = ATTEMPTS[attempt]
    wt = worktree(upstream_url, instance.base_commit, isolate=True)
    outcome = evaluate(wt, instance, instance.patch if model_patch is None else model_patch)
    record_property("outcome", outcome)
    assert outcome == expected
    if outcome == PATCH_FAILED:
        assert wt.changed_files() == []  # a patch that fails changes nothing


def test_pass_at_k_of_the_attempts() -> None:
    """One attempt in three resolves semverkit-4: pass@1 is 1/3, pass@2 is 2/3 (two of the
    three pairs of attempts include it), pass@3 is 1."""
    outcomes = [expected for _, expected in ATTEMPTS.values()]
    n, correct = len(outcomes), outcomes.count(RESOLVED)
    assert pass_at_k(n, correct, 1) == pytest.approx(1 / 3)
    assert pass_at_k(n, correct, 2) == pytest.approx(2 / 3)
    assert pass_at_k(n, correct, 3) == 1.0


def test_history_free_base(
    worktree: WorktreeFactory,
    repo_store: RepoStore,
    upstream_url: str,
    instances: dict[str, Instance],
) -> None:
    """``history=False``: one parentless commit of the base's files, and nothing else to read."""
    instance = instances["semverkit-4"]
    wt = worktree(upstream_url, instance.base_commit, isolate=True, history=False)
    assert wt.git("log", "--all", "--format=%H").stdout.split() == [wt.commit]
    assert wt.commit != instance.base_commit  # a new commit, of the same files
    git_dir = repo_store.clone(upstream_url)
    base_tree = upstream_git(git_dir, "rev-parse", f"{instance.base_commit}^{{tree}}")
    assert wt.git("rev-parse", "HEAD^{tree}").stdout == base_tree
    assert wt.git("log", "-1", "--format=%s").stdout.strip() == "Release 0.2.0"

    wt.apply(instance.test_patch)
    assert not solves(run_task_tests(wt, instance.task), instance.task)
    assert evaluate(wt, instance, instance.patch) == RESOLVED
