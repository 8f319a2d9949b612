"""Repository URLs: validation, the cache key, and redaction of credentials.

Two URLs that name the same repository (``.../repo``, ``.../repo.git``, ``.../repo/``, another
case of the host, with or without credentials) must share one cache entry, and no credential may
reach a directory name, a log line, an error message or git's argument vector.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from .errors import InvalidInputError

__all__ = [
    "DEFAULT_PROTOCOLS",
    "RepoURL",
    "parse_url",
    "redact",
]

#: Transports git may use unless the user widens the list (``ext::`` and ``fd::`` run commands).
DEFAULT_PROTOCOLS: tuple[str, ...] = ("file", "git", "http", "https", "ssh")

MAX_URL_LENGTH = 2048

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TRANSPORT_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)::")
# git's rule for scp-like syntax: a colon before the first slash, and no "://".
_SCP_RE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/]+):(?P<path>.*)$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NAME_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")
_SCHEME_ALIASES = {"git+ssh": "ssh", "ssh+git": "ssh"}


@dataclass(frozen=True)
class RepoURL:
    """A validated repository URL and everything derived from it."""

    original: str
    #: What git is given: absolute for local paths, never carrying a password.
    fetch_url: str
    #: Credentials stripped, host lowercased, trailing ``/`` and ``.git`` removed.
    canonical: str
    #: Safe to show anywhere.
    redacted: str
    scheme: str
    username: str | None = None
    password: str | None = None

    @property
    def key(self) -> str:
        """Cache directory name: readable, deterministic, never the raw URL."""
        digest = hashlib.sha256(self.canonical.encode()).hexdigest()[:16]
        last = self.canonical.rstrip("/").rsplit("/", 1)[-1]
        last = _NAME_UNSAFE_RE.sub("-", last).strip(".-")[:40] or "repo"
        return f"{last}-{digest}"

    def scrub(self, text: str) -> str:
        """Remove this URL's password from any text (git's stderr, an argv)."""
        secrets = [self.password] if self.password else []
        if self.username and self.scheme in ("http", "https"):
            secrets.append(self.username)
        for secret in secrets:
            # git re-encodes credentials when it quotes a URL ('%40' becomes '%2540').
            once = quote(secret, safe="")
            for form in (secret, once, quote(once, safe="")):
                text = text.replace(form, "***")
        return text


def redact(url: str) -> str:
    """Return ``url`` with any password (and any http token given as a user name) hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "://" not in url or "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    if has_password:
        userinfo = f"{user}:***"
    elif parts.scheme.lower() in ("http", "https"):
        # A bare user name over http is how tokens are usually passed (https://TOKEN@host/).
        userinfo = "***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hostport}"))


def parse_url(url: object, protocols: tuple[str, ...] = DEFAULT_PROTOCOLS) -> RepoURL:
    """Validate ``url`` and derive the fetch URL, cache key and redacted form.

    Rejects, before git sees them, the inputs git would misread: a leading ``-`` (an option), a
    ``transport::address`` or scheme outside ``protocols``, control characters, absurd lengths.
    """
    if not isinstance(url, (str, os.PathLike)):
        raise InvalidInputError(f"Repository URL must be a string, not {type(url).__name__}")
    text = os.fspath(url)
    if not isinstance(text, str):
        raise InvalidInputError("Repository URL must be a str path, not bytes")
    shown = redact(text) if "://" in text else text
    if not text.strip():
        raise InvalidInputError("Repository URL is empty")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidInputError(
            f"Repository URL is {len(text)} characters long (at most {MAX_URL_LENGTH})",
            url=redact(text[:80]) + "...",
        )
    if _CONTROL_RE.search(text):
        raise InvalidInputError(
            "Repository URL contains a control character (newline, NUL, ...)", url=repr(shown)
        )
    if text.startswith("-"):
        raise InvalidInputError(
            "Repository URL starts with '-', which git would read as an option", url=shown
        )
    transport = _TRANSPORT_RE.match(text)
    if transport:
        raise InvalidInputError(
            f"Transport {transport.group(1)!r}:: is not allowed (it can run commands)",
            url=shown,
            hint="use an https://, ssh://, git:// or file:// URL or a local path",
        )
    scheme_match = _SCHEME_RE.match(text)
    if scheme_match:
        return _parse_scheme_url(text, scheme_match.group(1).lower(), protocols)
    scp = _SCP_RE.match(text)
    if scp and not os.path.exists(text) and "/" not in text.split(":", 1)[0]:
        return _parse_scp_url(text, scp, protocols)
    return _parse_local_path(text, protocols)


def _require_protocol(scheme: str, protocols: tuple[str, ...], shown: str) -> None:
    if scheme not in protocols:
        raise InvalidInputError(
            f"Protocol {scheme!r} is not allowed (allowed: {', '.join(protocols)})",
            url=shown,
        )


def _strip_suffixes(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")].rstrip("/")
    return path


def _parse_scheme_url(text: str, scheme: str, protocols: tuple[str, ...]) -> RepoURL:
    shown = redact(text)
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    _require_protocol(scheme, protocols, shown)
    try:
        parts: SplitResult = urlsplit(text)
        hostname = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"Repository URL is malformed: {exc}", url=shown) from None
    if scheme == "file":
        if hostname not in ("", "localhost"):
            raise InvalidInputError("file:// URLs cannot name a remote host", url=shown)
        path = os.path.normpath(parts.path) if parts.path else ""
        if not path.startswith("/"):
            raise InvalidInputError("file:// URL must have an absolute path", url=shown)
        canonical = "file://" + _strip_suffixes(os.path.realpath(path))
        return RepoURL(text, f"file://{path}", canonical, shown, scheme)
    if not hostname:
        raise InvalidInputError("Repository URL has no host", url=shown)
    if hostname.startswith("-"):
        raise InvalidInputError("Repository host starts with '-'", url=shown)
    # git decodes %-escapes in credentials; so must we, before handing them to git.
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    host = f"[{hostname}]" if ":" in hostname else hostname
    netloc = host if port is None else f"{host}:{port}"
    path = _strip_suffixes(parts.path)
    if hostname in ("github.com", "gitlab.com", "bitbucket.org"):
        # These hosts treat paths case-insensitively; one entry per repository.
        path = path.lower()
    canonical = urlunsplit((scheme, netloc, path, parts.query, ""))
    if scheme in ("http", "https"):
        # Credentials go to git through its environment (see _git.credential_args), not argv.
        fetch_netloc = netloc
    else:
        fetch_netloc = netloc if parts.username is None else f"{parts.username}@{netloc}"
    fetch_url = urlunsplit((parts.scheme, fetch_netloc, parts.path, parts.query, parts.fragment))
    return RepoURL(text, fetch_url, canonical, shown, scheme, username, password)


def _parse_scp_url(text: str, match: re.Match[str], protocols: tuple[str, ...]) -> RepoURL:
    _require_protocol("ssh", protocols, text)
    host = match.group("host").lower()
    if host.startswith("-"):
        raise InvalidInputError("Repository host starts with '-'", url=text)
    path = _strip_suffixes(match.group("path"))
    if not path.startswith("/"):
        path = "/" + path
    if host in ("github.com", "gitlab.com", "bitbucket.org"):
        path = path.lower()
    return RepoURL(text, text, f"ssh://{host}{path}", text, "ssh", match.group("user"))


def _parse_local_path(text: str, protocols: tuple[str, ...]) -> RepoURL:
    _require_protocol("file", protocols, text)
    absolute = os.path.abspath(os.path.expanduser(text))
    canonical = "file://" + _strip_suffixes(os.path.realpath(absolute))
    return RepoURL(text, absolute, canonical, text, "file")
