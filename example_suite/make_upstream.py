"""Build the example suite's upstream: a bare repository of ``semverkit``, a small Python project.

The suite needs an upstream with real history (releases, a bug fix, an API change, a development
branch) and must run without network, so the history is generated here. Everything is written by
one ``git fast-import`` stream with fixed names, emails and dates, so the object names are the same
on every machine and every build: the suite never hard-codes them, but a mirror made by pushing
this repository (see README.md) serves exactly the same commits.

History (``main`` is the default branch)::

    1  Initial project layout
    2  Add parse() and the Version type
    3  Release 0.1.0                          <- v0.1.0 (lightweight tag)
    4  Add compare()
    5  Support pre-release identifiers        (bug: 1.0.0-alpha sorts after 1.0.0)
    6  Release 0.2.0                          <- v0.2.0 (annotated)
    7  Fix: a pre-release sorts before ...    (by another author)
    8  Release 0.2.1                          <- v0.2.1 (annotated)
    9  Rename compare() to compare_versions() (compare() stays, deprecated)
    10 Add bump()
    11 Release 1.0.0                          <- v1.0.0 (annotated)
    12 Document the deprecation policy        <- main
    13 Add satisfies() ... (WIP)              <- develop (on top of 12)

Usage: ``python example_suite/make_upstream.py DEST.git`` prints the ``file://`` URL to use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["DEFAULT_BRANCH", "IDENTITY", "build_upstream", "list_refs", "main"]

DEFAULT_BRANCH = "main"

MAINTAINER = ("Ada Maintainer", "ada@semverkit.example")
CONTRIBUTOR = ("Bo Contributor", "bo@semverkit.example")

#: The identity of the generator's own git processes; never the user's configuration.
IDENTITY = {
    "GIT_AUTHOR_NAME": MAINTAINER[0],
    "GIT_AUTHOR_EMAIL": MAINTAINER[1],
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": MAINTAINER[0],
    "GIT_COMMITTER_EMAIL": MAINTAINER[1],
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
}

# -- the project's files, version by version ----------------------------------------------------

GITIGNORE = "__pycache__/\n*.egg-info/\n.pytest_cache/\nbuild/\ndist/\n"

README_0 = """\
# semverkit

Parse and compare [semantic versions](https://semver.org).
"""

README_1 = """\
# semverkit

Parse, compare and bump [semantic versions](https://semver.org).

    >>> from semverkit import bump, compare_versions
    >>> compare_versions("1.0.0-alpha", "1.0.0")
    -1
    >>> bump("1.4.2", "minor")
    '1.5.0'
"""

README_1_POLICY = (
    README_1
    + """
## Deprecation policy

A renamed function keeps its old name as an alias that emits `DeprecationWarning` for one major
release: `compare()` still works in 1.x and is removed in 2.0.
"""
)


def pyproject(version: str) -> str:
    return f"""\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "semverkit"
version = "{version}"
description = "Parse, compare and bump semantic versions"
requires-python = ">=3.9"
license = {{ text = "MIT" }}

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
"""


def init_py(version: str, exports: Mapping[str, list[str]]) -> str:
    imports = "".join(
        f"from semverkit.{module} import {', '.join(names)}\n" for module, names in exports.items()
    )
    names = sorted(name for group in exports.values() for name in group)
    listed = "".join(f'    "{name}",\n' for name in names)
    return (
        '"""semverkit: parse, compare and bump semantic versions."""\n\n'
        + (imports + "\n" if imports else "")
        + f'__version__ = "{version}"\n'
        + (f"__all__ = [\n{listed}]\n" if names else "__all__: list[str] = []\n")
    )


CORE_HEAD = '''\
"""Parsing and comparing semantic versions (https://semver.org)."""

from __future__ import annotations

'''

CORE_PARSE = (
    CORE_HEAD
    + '''\
import re
from typing import NamedTuple

_VERSION_RE = re.compile(r"^(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)$")


class Version(NamedTuple):
    """A parsed ``MAJOR.MINOR.PATCH`` version."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse(text: str) -> Version:
    """Parse ``MAJOR.MINOR.PATCH``; raise ValueError for anything else."""
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not a semantic version: {text!r}")
    major, minor, patch = (int(group) for group in match.groups())
    return Version(major, minor, patch)
'''
)

CORE_COMPARE = (
    CORE_PARSE
    + '''

def compare(a: str, b: str) -> int:
    """Return -1, 0 or 1 as version ``a`` is lower than, equal to or higher than ``b``."""
    left, right = parse(a), parse(b)
    return (left > right) - (left < right)
'''
)

_CORE_PRERELEASE_PARSE = '''\
import re
from typing import NamedTuple

_VERSION_RE = re.compile(
    r"^(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*))?$"
)


class Version(NamedTuple):
    """A parsed ``MAJOR.MINOR.PATCH[-PRERELEASE]`` version."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{'.'.join(self.prerelease)}" if self.prerelease else text


def parse(text: str) -> Version:
    """Parse ``MAJOR.MINOR.PATCH[-PRERELEASE]``; raise ValueError for anything else."""
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not a semantic version: {text!r}")
    major, minor, patch, prerelease = match.groups()
    identifiers = tuple(prerelease.split(".")) if prerelease else ()
    return Version(int(major), int(minor), int(patch), identifiers)

'''

_IDENTIFIERS = """\
    # Numeric identifiers compare as numbers and before alphanumeric ones (semver 11.4).
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in version.prerelease
    )
"""

# The bug of 0.2.0: a release has no identifiers, and () sorts before any tuple, so 1.0.0 < 1.0.0-a.
_PRECEDENCE_BUGGY = (
    """
def _precedence(version: Version) -> tuple[object, ...]:
"""
    + _IDENTIFIERS
    + """\
    return (version.major, version.minor, version.patch, identifiers)
"""
)

_PRECEDENCE_FIXED = (
    """
def _precedence(version: Version) -> tuple[object, ...]:
"""
    + _IDENTIFIERS
    + """\
    # A pre-release sorts before its release (semver 11.3): False < True.
    return (version.major, version.minor, version.patch, not version.prerelease, identifiers)
"""
)

_COMPARE = '''

def compare(a: str, b: str) -> int:
    """Return -1, 0 or 1 as version ``a`` is lower than, equal to or higher than ``b``."""
    left, right = _precedence(parse(a)), _precedence(parse(b))
    return (left > right) - (left < right)
'''

_COMPARE_VERSIONS = '''

def compare_versions(a: str, b: str) -> int:
    """Return -1, 0 or 1 as version ``a`` is lower than, equal to or higher than ``b``."""
    left, right = _precedence(parse(a)), _precedence(parse(b))
    return (left > right) - (left < right)


def compare(a: str, b: str) -> int:
    """Deprecated alias of :func:`compare_versions`, removed in 2.0."""
    warnings.warn(
        "semverkit.compare() is deprecated; use compare_versions()",
        DeprecationWarning,
        stacklevel=2,
    )
    return compare_versions(a, b)
'''

CORE_PRERELEASE_BUGGY = CORE_HEAD + _CORE_PRERELEASE_PARSE + _PRECEDENCE_BUGGY + _COMPARE
CORE_PRERELEASE_FIXED = CORE_HEAD + _CORE_PRERELEASE_PARSE + _PRECEDENCE_FIXED + _COMPARE
CORE_RENAMED = (
    CORE_HEAD
    + _CORE_PRERELEASE_PARSE.replace("import re\n", "import re\nimport warnings\n")
    + _PRECEDENCE_FIXED
    + _COMPARE_VERSIONS
)

BUMP_PY = '''\
"""Incrementing versions."""

from __future__ import annotations

from semverkit.core import Version, parse

PARTS = ("major", "minor", "patch")


def bump(version: str, part: str = "patch") -> str:
    """Increment ``part`` of ``version``, reset the parts below it and drop any pre-release."""
    current = parse(version)
    if part == "major":
        new = Version(current.major + 1, 0, 0)
    elif part == "minor":
        new = Version(current.major, current.minor + 1, 0)
    elif part == "patch":
        new = Version(current.major, current.minor, current.patch + 1)
    else:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, not {part!r}")
    return str(new)
'''

RANGES_PY = '''\
"""Matching versions against simple ranges (work in progress)."""

from __future__ import annotations

import operator
import re

from semverkit.core import compare_versions

_OPERATORS = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_CLAUSE_RE = re.compile(r"^\\s*(==|!=|>=|<=|>|<)\\s*(\\S+)\\s*$")


def satisfies(version: str, spec: str) -> bool:
    """Whether ``version`` meets every comma-separated clause of ``spec`` (">=1.0.0, <2.0.0")."""
    for clause in spec.split(","):
        match = _CLAUSE_RE.match(clause)
        if match is None:
            raise ValueError(f"not a range clause: {clause!r}")
        op, bound = match.groups()
        if not _OPERATORS[op](compare_versions(version, bound), 0):
            return False
    return True
'''

TEST_PARSE_0 = """\
import pytest

from semverkit import Version, parse


def test_parse_release():
    assert parse("1.2.3") == Version(1, 2, 3)


def test_str_round_trip():
    assert str(parse(" 10.0.7 ")) == "10.0.7"


@pytest.mark.parametrize("text", ["1.2", "01.2.3", "v1.2.3"])
def test_rejects_invalid(text):
    with pytest.raises(ValueError, match="not a semantic version"):
        parse(text)
"""

TEST_PARSE_1 = (
    TEST_PARSE_0
    + """

def test_parse_prerelease():
    version = parse("1.0.0-rc.1")
    assert version.prerelease == ("rc", "1")
    assert str(version) == "1.0.0-rc.1"
"""
)

TEST_COMPARE_0 = """\
from semverkit import compare


def test_orders_by_number_not_text():
    assert compare("1.10.0", "1.9.0") == 1
    assert compare("1.9.0", "1.10.0") == -1


def test_equal():
    assert compare("2.0.0", "2.0.0") == 0
"""

TEST_COMPARE_1 = (
    TEST_COMPARE_0
    + """

def test_prerelease_identifiers():
    assert compare("1.0.0-alpha.2", "1.0.0-alpha.10") == -1
    assert compare("1.0.0-alpha", "1.0.0-beta") == -1
    assert compare("1.0.0-1", "1.0.0-alpha") == -1
"""
)

_REGRESSION_TEST = """

def test_prerelease_precedes_release():
    # Regression test for #4: 1.0.0-alpha used to sort after 1.0.0.
    assert compare("1.0.0-alpha", "1.0.0") == -1
    assert compare("1.0.0", "1.0.0-rc.1") == 1
"""

TEST_COMPARE_2 = TEST_COMPARE_1 + _REGRESSION_TEST

_COMPARE_3_IMPORTS = "import pytest\n\nfrom semverkit import compare, compare_versions\n"
TEST_COMPARE_3 = (
    (TEST_COMPARE_1 + _REGRESSION_TEST)
    .replace("from semverkit import compare\n", _COMPARE_3_IMPORTS)
    .replace("assert compare(", "assert compare_versions(")
    + """

def test_compare_is_a_deprecated_alias():
    with pytest.deprecated_call():
        assert compare("1.0.0", "2.0.0") == -1
"""
)

TEST_BUMP = """\
import pytest

from semverkit import bump


@pytest.mark.parametrize(
    ("version", "part", "expected"),
    [
        ("1.4.2", "patch", "1.4.3"),
        ("1.4.2", "minor", "1.5.0"),
        ("1.4.2", "major", "2.0.0"),
        ("2.0.0-rc.1", "major", "3.0.0"),
    ],
)
def test_bump(version, part, expected):
    assert bump(version, part) == expected


def test_rejects_unknown_part():
    with pytest.raises(ValueError, match="part must be one of"):
        bump("1.0.0", "build")
"""

TEST_RANGES = """\
from semverkit import satisfies


def test_every_clause_must_hold():
    assert satisfies("1.4.0", ">=1.0.0, <2.0.0")
    assert not satisfies("2.0.0", ">=1.0.0, <2.0.0")


def test_prerelease_is_below_its_release():
    assert not satisfies("1.0.0-rc.1", ">=1.0.0")
"""

CHANGELOG_HEAD = "# Changelog\n\nAll notable changes to semverkit. Versions follow semver.\n"

CHANGES_0_1_0 = """
## 0.1.0 - 2024-01-10

### Added
- `parse()` reads `MAJOR.MINOR.PATCH` into a `Version`.
"""

CHANGES_0_2_0 = """
## 0.2.0 - 2024-02-05

### Added
- `compare()` orders two versions.
- Pre-release identifiers: `1.0.0-alpha.1`.
"""

CHANGES_0_2_1 = """
## 0.2.1 - 2024-02-13

### Fixed
- A pre-release now sorts before its release: `compare("1.0.0-alpha", "1.0.0")` is -1, it was 1
  (#4, thanks Bo Contributor).
"""

CHANGES_1_0_0 = """
## 1.0.0 - 2024-03-11

### Changed
- `compare()` is renamed `compare_versions()`. `compare()` remains as a deprecated alias that
  emits `DeprecationWarning`; it will be removed in 2.0.

### Added
- `bump()` increments the major, minor or patch number.
"""

CHANGES_UNRELEASED = """
## Unreleased

### Added
- `satisfies()` matches a version against a range such as `>=1.0.0, <2.0.0`.
"""


def changelog(*sections: str) -> str:
    """Newest release first, as in the file itself."""
    return CHANGELOG_HEAD + "".join(reversed(sections))


# -- the history ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    message: str
    date: str  # ISO 8601, UTC
    files: Mapping[str, str]
    author: tuple[str, str] = MAINTAINER
    branch: str = DEFAULT_BRANCH
    #: Mark (1-based position in HISTORY) of the parent; default: the previous commit.
    parent: int | None = None
    #: (name, message): message None makes a lightweight tag.
    tag: tuple[str, str | None] | None = None


HISTORY: tuple[Commit, ...] = (
    Commit(
        "Initial project layout",
        "2024-01-08T09:00:00",
        {
            ".gitignore": GITIGNORE,
            "README.md": README_0,
            "pyproject.toml": pyproject("0.1.0.dev0"),
            "semverkit/__init__.py": init_py("0.1.0.dev0", {}),
        },
    ),
    Commit(
        "Add parse() and the Version type",
        "2024-01-09T14:30:00",
        {
            "semverkit/__init__.py": init_py("0.1.0.dev0", {"core": ["Version", "parse"]}),
            "semverkit/core.py": CORE_PARSE,
            "tests/test_parse.py": TEST_PARSE_0,
        },
    ),
    Commit(
        "Release 0.1.0",
        "2024-01-10T10:00:00",
        {
            "pyproject.toml": pyproject("0.1.0"),
            "semverkit/__init__.py": init_py("0.1.0", {"core": ["Version", "parse"]}),
            "CHANGELOG.md": changelog(CHANGES_0_1_0),
        },
        tag=("v0.1.0", None),
    ),
    Commit(
        "Add compare()",
        "2024-02-01T16:00:00",
        {
            "semverkit/__init__.py": init_py("0.1.0", {"core": ["Version", "compare", "parse"]}),
            "semverkit/core.py": CORE_COMPARE,
            "tests/test_compare.py": TEST_COMPARE_0,
        },
    ),
    Commit(
        "Support pre-release identifiers",
        "2024-02-03T11:15:00",
        {
            "semverkit/core.py": CORE_PRERELEASE_BUGGY,
            "tests/test_parse.py": TEST_PARSE_1,
            "tests/test_compare.py": TEST_COMPARE_1,
        },
    ),
    Commit(
        "Release 0.2.0",
        "2024-02-05T09:00:00",
        {
            "pyproject.toml": pyproject("0.2.0"),
            "semverkit/__init__.py": init_py("0.2.0", {"core": ["Version", "compare", "parse"]}),
            "CHANGELOG.md": changelog(CHANGES_0_1_0, CHANGES_0_2_0),
        },
        tag=("v0.2.0", "semverkit 0.2.0\n\nAdds compare() and pre-release identifiers.\n"),
    ),
    Commit(
        "Fix: a pre-release sorts before its release (#4)",
        "2024-02-12T18:20:00",
        {"semverkit/core.py": CORE_PRERELEASE_FIXED, "tests/test_compare.py": TEST_COMPARE_2},
        author=CONTRIBUTOR,
    ),
    Commit(
        "Release 0.2.1",
        "2024-02-13T09:00:00",
        {
            "pyproject.toml": pyproject("0.2.1"),
            "semverkit/__init__.py": init_py("0.2.1", {"core": ["Version", "compare", "parse"]}),
            "CHANGELOG.md": changelog(CHANGES_0_1_0, CHANGES_0_2_0, CHANGES_0_2_1),
        },
        tag=("v0.2.1", "semverkit 0.2.1\n\nFixes the precedence of pre-releases (#4).\n"),
    ),
    Commit(
        "Rename compare() to compare_versions(); keep compare() as a deprecated alias",
        "2024-03-04T10:00:00",
        {
            "semverkit/__init__.py": init_py(
                "0.2.1", {"core": ["Version", "compare", "compare_versions", "parse"]}
            ),
            "semverkit/core.py": CORE_RENAMED,
            "tests/test_compare.py": TEST_COMPARE_3,
        },
    ),
    Commit(
        "Add bump()",
        "2024-03-06T15:45:00",
        {
            "semverkit/__init__.py": init_py(
                "0.2.1",
                {"bump": ["bump"], "core": ["Version", "compare", "compare_versions", "parse"]},
            ),
            "semverkit/bump.py": BUMP_PY,
            "tests/test_bump.py": TEST_BUMP,
        },
    ),
    Commit(
        "Release 1.0.0",
        "2024-03-11T09:00:00",
        {
            "pyproject.toml": pyproject("1.0.0"),
            "semverkit/__init__.py": init_py(
                "1.0.0",
                {"bump": ["bump"], "core": ["Version", "compare", "compare_versions", "parse"]},
            ),
            "README.md": README_1,
            "CHANGELOG.md": changelog(CHANGES_0_1_0, CHANGES_0_2_0, CHANGES_0_2_1, CHANGES_1_0_0),
        },
        tag=(
            "v1.0.0",
            "semverkit 1.0.0\n\ncompare() is now compare_versions(); new: bump().\n",
        ),
    ),
    Commit(
        "Document the deprecation policy",
        "2024-03-12T12:00:00",
        {"README.md": README_1_POLICY},
    ),
    Commit(
        "Add satisfies() for simple version ranges (WIP)",
        "2024-03-20T17:00:00",
        {
            "pyproject.toml": pyproject("1.1.0.dev0"),
            "semverkit/__init__.py": init_py(
                "1.1.0.dev0",
                {
                    "bump": ["bump"],
                    "core": ["Version", "compare", "compare_versions", "parse"],
                    "ranges": ["satisfies"],
                },
            ),
            "semverkit/ranges.py": RANGES_PY,
            "tests/test_ranges.py": TEST_RANGES,
            "CHANGELOG.md": changelog(
                CHANGES_0_1_0, CHANGES_0_2_0, CHANGES_0_2_1, CHANGES_1_0_0, CHANGES_UNRELEASED
            ),
        },
        branch="develop",
        parent=12,
    ),
)


# -- writing it -----------------------------------------------------------------------------------


def _timestamp(iso: str, later: int = 0) -> str:
    """git's raw date format, ``<epoch> +0000``, ``later`` seconds after ``iso`` (UTC)."""
    moment = datetime.fromisoformat(iso).replace(tzinfo=timezone.utc)
    return f"{int(moment.timestamp()) + later} +0000"


def _data(text: str) -> bytes:
    payload = text.encode()
    return b"data %d\n%s\n" % (len(payload), payload)


def fast_import_stream(history: tuple[Commit, ...] = HISTORY) -> bytes:
    """The whole history as one ``git fast-import`` stream; a pure function of ``history``."""
    chunks: list[bytes] = []
    for mark, commit in enumerate(history, start=1):
        when = _timestamp(commit.date)
        name, email = commit.author
        committer_name, committer_email = MAINTAINER
        chunks.append(f"commit refs/heads/{commit.branch}\nmark :{mark}\n".encode())
        chunks.append(f"author {name} <{email}> {when}\n".encode())
        chunks.append(f"committer {committer_name} <{committer_email}> {when}\n".encode())
        chunks.append(_data(commit.message + "\n"))
        parent = commit.parent if commit.parent is not None else mark - 1
        if parent:
            chunks.append(f"from :{parent}\n".encode())
        for path in sorted(commit.files):
            chunks.append(f"M 100644 inline {path}\n".encode())
            chunks.append(_data(commit.files[path]))
        chunks.append(b"\n")
        if commit.tag is None:
            continue
        tag_name, tag_message = commit.tag
        if tag_message is None:
            chunks.append(f"reset refs/tags/{tag_name}\nfrom :{mark}\n\n".encode())
        else:
            tag_when = _timestamp(commit.date, later=3600)  # tagged an hour after the commit
            chunks.append(f"tag {tag_name}\nfrom :{mark}\n".encode())
            chunks.append(f"tagger {committer_name} <{committer_email}> {tag_when}\n".encode())
            chunks.append(_data(tag_message))
    chunks.append(b"done\n")
    return b"".join(chunks)


def _git_env() -> dict[str, str]:
    """No inherited GIT_* variable, no system or global config: the build is the same anywhere."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(IDENTITY)
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, LC_ALL="C")
    return env


def _git(*args: str, input: bytes | None = None) -> str:
    result = subprocess.run(
        ["git", *args], input=input, capture_output=True, env=_git_env(), check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return result.stdout.decode().strip()


def build_upstream(dest: str | os.PathLike[str]) -> Path:
    """Create the bare repository at ``dest`` (absent or an empty directory); return its path."""
    path = Path(dest).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty directory")
    _git(
        "init",
        "--quiet",
        "--bare",
        "--template=",
        f"--initial-branch={DEFAULT_BRANCH}",
        "--object-format=sha1",
        "--",
        str(path),
    )
    git_dir = f"--git-dir={path}"
    _git(git_dir, "fast-import", "--quiet", "--done", input=fast_import_stream())
    # Like a real forge: clients may fetch any commit by object name.
    _git(git_dir, "config", "uploadpack.allowAnySHA1InWant", "true")
    return path


def list_refs(git_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Every branch and tag of a bare repository, mapped to the commit it names (tags peeled)."""
    out = _git(
        f"--git-dir={os.fspath(git_dir)}",
        "for-each-ref",
        "--format=%(refname) %(objectname) %(*objectname)",
        "refs/heads/",
        "refs/tags/",
    )
    refs = {}
    for line in out.splitlines():
        ref, obj, peeled = [*line.split(" "), ""][:3]
        refs[ref] = peeled or obj
    return refs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="where to create the bare repository (DEST.git)")
    args = parser.parse_args(argv)
    try:
        path = build_upstream(args.dest)
    except (FileExistsError, RuntimeError) as exc:
        parser.exit(1, f"{parser.prog}: {exc}\n")
    for ref, commit in list_refs(path).items():
        print(f"{commit} {ref}", file=sys.stderr)
    print(path.as_uri())
    return 0


if __name__ == "__main__":
    sys.exit(main())
