"""Mirrors (``--repo-mirror ORIGINAL=MIRROR``): fetch from an internal mirror, keep cache
entries keyed by the original URL, and fall back to the original, never failing because of
the mirror (Buildkite's rule for its git mirrors: "fall back, never fail").

A rule's ORIGINAL is a repository URL or a prefix of one (``https://github.com/org``): the
longest that matches wins, and what follows it in the repository's canonical URL is appended
to MIRROR, as git's ``url.<base>.insteadOf`` does. git's own insteadOf rules keep applying on
top, as for any URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import InvalidInputError
from .urls import RepoURL, parse_url, redact

__all__ = ["Mirrors", "parse_mirror_rule"]

log = logging.getLogger("pytest_repoclones")

#: Notes that a session already warned of a mirror (one warning per session, across workers).
NOTICES_DIR = "notices"
_NOTICE_LIFETIME = 24 * 3600.0


def parse_mirror_rule(text: str) -> tuple[str, str]:
    """``ORIGINAL=MIRROR`` (spaces around ``=`` allowed) as a pair; InvalidInputError if not."""
    original, sep, mirror = text.partition("=")
    original, mirror = original.strip(), mirror.strip()
    if not sep or not original or not mirror:
        raise InvalidInputError(
            f"A mirror is given as ORIGINAL=MIRROR, got {redact(text)!r}",
            hint="e.g. --repo-mirror https://github.com/org=https://git.internal/mirrors/org",
        )
    return original, mirror


class Mirrors:
    """The mirror rules of one store, and which mirrors it has warned of in this session."""

    def __init__(
        self,
        rules: Iterable[tuple[str, str]],
        protocols: tuple[str, ...],
        *,
        notices: Path,
        session_id: str,
        warn: Callable[[str], None] | None,
    ) -> None:
        parsed = []
        for original, mirror in rules:
            parse_url(mirror, protocols)  # refused now, not at the first fetch
            canonical = parse_url(original, protocols).canonical
            parsed.append((canonical, mirror.rstrip("/")))
        # Longest original first: the most specific rule wins.
        self._rules = sorted(parsed, key=lambda rule: len(rule[0]), reverse=True)
        self._protocols = protocols
        self._notices = notices
        self._session_id = session_id
        self._warn = warn
        self._unreachable: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._rules)

    def mirror_of(self, repo: RepoURL) -> RepoURL | None:
        """The mirror to try first for ``repo``, or None (none set, or it did not answer)."""
        for original, mirror in self._rules:
            if repo.canonical == original:
                found = mirror
            elif repo.canonical.startswith(original + "/"):
                found = mirror + repo.canonical[len(original) :]
            else:
                continue
            candidate = parse_url(found, self._protocols)
            return None if candidate.key in self._unreachable else candidate
        return None

    def failed(self, repo: RepoURL, mirror: RepoURL, reason: str, *, unreachable: bool) -> None:
        """The mirror could not serve ``repo``: say so once per session; an unreachable one
        is not tried again by this store (a stalled mirror would cost its timeout each time)."""
        if unreachable:
            self._unreachable.add(mirror.key)
        message = (
            f"repoclones: mirror {mirror.redacted} could not serve {repo.redacted} ({reason}); "
            "fetching from the original instead"
        )
        log.warning("%s", message)
        if self._warn is not None and self._first_in_session(mirror):
            self._warn(message)

    def _first_in_session(self, mirror: RepoURL) -> bool:
        """Whether no process of this session warned of ``mirror`` yet (xdist workers share
        the session id): an exclusively created note says it."""
        digest = hashlib.sha256(f"{self._session_id} {mirror.canonical}".encode()).hexdigest()
        note = self._notices / f"mirror-{digest[:24]}"
        try:
            self._notices.mkdir(parents=True, exist_ok=True)
            _sweep(self._notices)
            fd = os.open(note, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError:
            return True  # a read-only or vanished cache: warn, rather than say nothing
        os.close(fd)
        return True


def _sweep(notices: Path) -> None:
    """Notes of sessions long over: they only say a warning was shown."""
    cutoff = time.time() - _NOTICE_LIFETIME
    for note in notices.iterdir():
        try:
            if note.stat().st_mtime < cutoff:
                note.unlink()
        except OSError:
            continue
