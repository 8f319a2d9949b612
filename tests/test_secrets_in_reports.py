"""No password reaches a failure report, whatever traceback style (issue 9: secrets)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("style", ["auto", "long", "short"])
@pytest.mark.parametrize(
    "url",
    [
        "http://alice:Pw0rdAAq#Pw0rdBBq/Pw0rdCCq@127.0.0.1:9/project.git",  # unparseable
        "http://alice:Pw0rdAAq%23Pw0rdBBq@127.0.0.1:9/project.git",  # parseable, unreachable
    ],
    ids=["literal", "quoted"],
)
def test_failure_report_never_shows_the_password(
    pytester: pytest.Pytester, style: str, url: str
) -> None:
    """A test that calls the store directly: pytest's long traceback prints the arguments of
    every frame, and the plugin's frames held the URL as the test wrote it."""
    pytester.makepyfile(
        f"""
        URL = {url!r}

        def test_resolve(repo_store):
            repo_store.resolve(URL, "main")

        def test_clone(repo_store):
            repo_store.clone(URL)

        def test_git_dir_and_worktree(repo_store, worktree):
            repo_store.git_dir(URL)
            wt = worktree(URL, "main")
        """
    )
    result = pytester.runpytest_subprocess(
        f"--tb={style}", "--repo-timeout=5", f"--repo-cache-dir={pytester.path / 'cache'}"
    )
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 1
    assert "Pw0rd" not in output
