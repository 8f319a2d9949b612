"""Where the suite's upstream comes from: a real URL, or the embedded ``semverkit`` history.

Set ``REPOCLONES_EXAMPLE_URL`` to run the suite against a real remote. It must serve a copy of
the same project (same object names, ``main`` as default branch), for example a mirror made by
pushing the generated repository::

    python example_suite/make_upstream.py /tmp/semverkit.git
    git --git-dir=/tmp/semverkit.git push --mirror https://git.example.com/you/semverkit.git
    REPOCLONES_EXAMPLE_URL=https://git.example.com/you/semverkit.git pytest example_suite -n auto

Otherwise the upstream is built once at ``example_suite/.upstream/semverkit.git`` (gitignored) and
reused: a fixed path gives a fixed ``file://`` URL, so the plugin's clone cache entry for it stays
valid from one run to the next instead of growing a new clone per run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from filelock import FileLock

from . import make_upstream

URL_ENV = "REPOCLONES_EXAMPLE_URL"
UPSTREAM = Path(__file__).resolve().parent / ".upstream" / "semverkit.git"
#: Written into the bare repository last: present and current means the build is complete.
STAMP = "example-suite-generator.sha256"
BUILD_LOCK_TIMEOUT = 120.0


def _generator_digest() -> str:
    """Changes whenever make_upstream.py does, so an edited generator triggers a rebuild."""
    return hashlib.sha256(Path(make_upstream.__file__).read_bytes()).hexdigest()


def _is_current(path: Path, digest: str) -> bool:
    try:
        return (path / STAMP).read_text().strip() == digest
    except OSError:
        return False


def ensure_embedded_upstream(path: Path = UPSTREAM) -> Path:
    """Build the upstream at ``path`` unless a complete, current build is already there.

    pytest-xdist starts every worker at once, and each one asks for the upstream: the file lock
    lets one build while the others wait, and the build goes to a temporary directory that is
    renamed into place only when complete, so no process ever fetches from a half-built one.
    """
    digest = _generator_digest()
    if _is_current(path, digest):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock"), timeout=BUILD_LOCK_TIMEOUT):
        if _is_current(path, digest):  # another worker built it while we waited
            return path
        for leftover in path.parent.glob(f".{path.name}.*"):  # from a killed build
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary repository
            make_upstream.build_upstream(tmp)
            (tmp / STAMP).write_text(digest + "\n")
            if path.exists():  # stale: built by an older generator, or incomplete
                old = tmp.with_suffix(".old")
                os.rename(path, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


@pytest.fixture(scope="session")
def upstream_url() -> str:
    """URL of the project under test: ``$REPOCLONES_EXAMPLE_URL``, else the embedded upstream."""
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        return url
    return ensure_embedded_upstream().as_uri()


def pytest_report_header(config: pytest.Config) -> str:
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        return f"example upstream: {url} (from {URL_ENV})"
    return f"example upstream: embedded semverkit at {UPSTREAM}"
