"""Check what an error message says, not what the paths inside it happen to spell.

pytest names a test's temporary directory after the test (``test_offline_...0``), and a test
names the paths it makes (``tmp_path / "sparse"``): a message that names such a path contains
those words whatever its own wording is. A check for a word must therefore look at the message
with every temporary path taken out (:func:`without_paths`, :func:`message_of`,
:func:`raises_saying`), or at a field that holds no path (``exc.problem``, ``exc.hint``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

#: What a temporary path is replaced with.
TMP = "<tmp>"


def _temp_roots() -> list[str]:
    """Where pytest (and anything else in the suite) makes temporary paths, as it spells them."""
    # pytest's own root: PYTEST_DEBUG_TEMPROOT or the system's, resolved (see _pytest.tmpdir).
    root = os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()
    roots = {root, os.path.realpath(root), tempfile.gettempdir()}
    return sorted((r.rstrip("/") for r in roots if r.rstrip("/")), key=len, reverse=True)


# A path runs until whitespace, a quote, a bracket or a comma: how messages delimit them.
_PATH_RE = re.compile(
    r"(?:file://)?(?:"
    + "|".join(re.escape(root) for root in _temp_roots())
    + r")(?:/[^\s'\"()\[\]{},]*)?"
)


def without_paths(text: str) -> str:
    """``text`` with every path (or file:// URL) under the temporary root replaced by TMP."""
    return _PATH_RE.sub(TMP, text)


def message_of(exc: BaseException) -> str:
    """The exception's message without its temporary paths."""
    return without_paths(str(exc))


@contextlib.contextmanager
def raises_saying(
    expected: type[BaseException] | tuple[type[BaseException], ...], pattern: str
) -> Iterator[pytest.ExceptionInfo[Any]]:
    """``pytest.raises(expected, match=pattern)``, with the pattern searched in the message
    once its temporary paths are taken out."""
    with pytest.raises(expected) as info:
        yield info
    text = message_of(info.value)
    assert re.search(pattern, text), f"{pattern!r} not in the message proper: {text!r}"
