"""Repository URLs: validation, the cache key, and redaction of credentials.

Two URLs share one cache entry only when they name the same repository for certain: ``.../repo``,
``.../repo.git`` and ``.../repo/``, another case of the host, with or without an http password,
a local path and the ``file://`` URL of it. They never share one when the repository could
differ: over ssh the login decides the home directory a relative path starts from, so
``alice@host:x``, ``bob@host:x`` and ``host:x`` stay apart, and ``ssh://host/x`` (absolute) is not
``host:x`` (home-relative). No credential may reach a directory name, a log line, an error
message, a repr or git's argument vector.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from urllib.parse import (
    SplitResult,
    quote,
    quote_from_bytes,
    unquote,
    unquote_to_bytes,
    urlsplit,
    urlunsplit,
)

from .errors import InvalidInputError

__all__ = [
    "DEFAULT_PROTOCOLS",
    "RepoURL",
    "carries_secret",
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
# ``user:password@host:path``: git reads host "user" and path "password@host:path", but the
# writer meant a password; it must be hidden and refused. Greedy: the last '@' before a host.
_SCP_PASSWORD_RE = re.compile(r"^(?P<user>[^@/:]+):(?P<password>.*)@(?P<rest>[^@/:\[\]]+:.*)$")
# What may follow the '@' that ends a userinfo: a host and port, malformed ones included (the
# password before them must be found all the same), up to the path, query or fragment.
_HOST_AFTER_AT_RE = re.compile(r"[^/?#@]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NAME_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")
_SCHEME_ALIASES = {"git+ssh": "ssh", "ssh+git": "ssh"}
#: Forges whose ssh paths are repository names, not file paths, compared case-insensitively.
_FORGES = ("github.com", "gitlab.com", "bitbucket.org")
_PERCENT_ENCODE_HINT = (
    "percent-encode special characters of the user name and password ('/' as %2F, '?' as %3F, "
    "'#' as %23, '@' as %40), and an '@' in the path as %40"
)


@dataclass(frozen=True)
class RepoURL:
    """A validated repository URL and everything derived from it."""

    original: str
    #: What git is given: absolute for local paths, never carrying a password.
    fetch_url: str
    #: The identity of the repository: host lowercased, trailing ``/`` and ``.git`` removed,
    #: passwords and http user names dropped, the ssh user kept (it picks the home directory).
    canonical: str
    #: Safe to show anywhere.
    redacted: str
    scheme: str
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        # The generated repr would show ``original`` and ``password``: reprs end up in pytest's
        # failure reports and in logs.
        return f"RepoURL({self.redacted!r}, canonical={self.canonical!r})"

    @property
    def key(self) -> str:
        """Cache directory name: readable, deterministic, never the raw URL."""
        digest = hashlib.sha256(self.canonical.encode()).hexdigest()[:16]
        last = unquote(self.canonical.rstrip("/").rsplit("/", 1)[-1])
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


def _find_any(text: str, chars: str, start: int) -> int:
    """Index of the first of ``chars`` in ``text`` from ``start``, or ``len(text)``."""
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found, default=len(text))


def _userinfo_ends(text: str, start: int) -> tuple[int, int]:
    """Where the userinfo that begins at ``start`` (after ``://``) ends: ``(standard, robust)``
    indexes of its ``@``, -1 for none.

    Standard (git, curl, urllib): the authority ends at the first ``/``, ``?`` or ``#``, the
    userinfo at the authority's last ``@``. A password with an unencoded ``/``, ``?`` or ``#``
    ends the authority early and its tail lands in the path, query or fragment. Robust: the last
    ``@`` of the whole URL that something other than ``/``, ``?``, ``#`` follows (a host), since
    a password may hold any character but a host cannot. The two differ only when a userinfo
    holds ``/``, ``?`` or ``#`` or the path holds an ``@``; the text alone cannot tell which.
    """
    standard = text.rfind("@", start, _find_any(text, "/?#", start))
    at = len(text)
    while (at := text.rfind("@", start, at)) > standard:
        if _HOST_AFTER_AT_RE.match(text, at + 1):
            return standard, at
    return standard, standard


def redact(url: str) -> str:
    """Return ``url`` with any password (and any http token given as a user name) hidden.

    Never fails, and errs on the side of hiding: if an ``@`` followed by a host appears anywhere
    after ``://``, everything before it is treated as a userinfo, so that a password holding an
    unencoded ``/``, ``?`` or ``#`` is hidden whole (a path holding ``@`` is over-redacted).
    """
    __tracebackhide__ = True  # its arguments may hold a secret
    scheme = _SCHEME_RE.match(url)
    if scheme is None:
        scp = _SCP_PASSWORD_RE.match(url)
        return url if scp is None else f"{scp.group('user')}:***@{scp.group('rest')}"
    name = scheme.group(1).lower()
    if name == "file":  # no credentials in file URLs; '@' is just a character of the path
        return url
    start = scheme.end()
    _, at = _userinfo_ends(url, start)
    if at < 0:
        return url
    user, has_password, _ = url[start:at].partition(":")
    if has_password:
        userinfo = f"{user}:***"
    elif name in ("http", "https"):
        # A bare user name over http is how tokens are usually passed (https://TOKEN@host/).
        userinfo = "***"
    else:
        return url  # an ssh user name is no secret
    return f"{url[:start]}{userinfo}{url[at:]}"


def carries_secret(url: str) -> bool:
    """Whether ``url`` holds something :func:`redact` hides: a password, an http user name (a
    token), or a userinfo too malformed to tell. Such a URL must never be written to disk."""
    __tracebackhide__ = True  # its arguments may hold a secret
    return redact(url) != url


def parse_url(url: object, protocols: tuple[str, ...] = DEFAULT_PROTOCOLS) -> RepoURL:
    """Validate ``url`` and derive the fetch URL, cache key and redacted form.

    Rejects, before git sees them, the inputs git would misread: a leading ``-`` (an option), a
    ``transport::address`` or scheme outside ``protocols``, control characters, absurd lengths,
    credentials that would not parse the same way everywhere.
    """
    __tracebackhide__ = True  # its arguments may hold a secret
    if not isinstance(url, (str, os.PathLike)):
        raise InvalidInputError(f"Repository URL must be a string, not {type(url).__name__}")
    text = os.fspath(url)
    if not isinstance(text, str):
        raise InvalidInputError("Repository URL must be a str path, not bytes")
    shown = redact(text)
    _refuse_misreadable(text, shown)
    scheme_match = _SCHEME_RE.match(text)
    if scheme_match:
        return _parse_scheme_url(text, scheme_match, protocols)
    scp = _SCP_RE.match(text)
    if scp and not os.path.exists(text) and "/" not in text.split(":", 1)[0]:
        if _SCP_PASSWORD_RE.match(text):
            raise InvalidInputError(
                "Repository URL looks like user:password@host:path; git would read 'user' as "
                "the host, and scp-like syntax cannot carry a password",
                url=shown,
                hint="use ssh://user@host/path with a key, or https://user:password@host/path",
            )
        return _parse_scp_url(text, scp, protocols)
    return _parse_local_path(text, protocols)


def _refuse_misreadable(text: str, shown: str) -> None:
    """What git would misread, refused before it sees it (``shown`` is redacted)."""
    __tracebackhide__ = True  # its arguments may hold a secret
    if not text.strip():
        raise InvalidInputError("Repository URL is empty")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidInputError(
            f"Repository URL is {len(text)} characters long (at most {MAX_URL_LENGTH})",
            # Cut after redacting: a cut inside the userinfo would leave no '@' to redact by.
            url=shown[:80] + "...",
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


def _require_protocol(scheme: str, protocols: tuple[str, ...], shown: str) -> None:
    __tracebackhide__ = True  # its arguments may hold a secret
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


def _malformed(shown: str) -> str:
    """Why urllib rejects a URL, worded from its redacted form: urllib's messages quote the
    offending part (the whole netloc, for one), which may be the password."""
    try:
        parts = urlsplit(shown)
        _ = parts.hostname, parts.port
    except ValueError as exc:
        return str(exc)
    return "it cannot be parsed"


def _file_url(path: str) -> str:
    """A ``file://`` URL of an absolute path; git percent-decodes it back to ``path``."""
    return "file://" + quote_from_bytes(os.fsencode(path))


def _file_canonical(path: str) -> str:
    """The identity of a local repository, whichever spelling named it. Percent-encoded (as
    ``Path.as_uri`` does) so that it parses back to itself: ``cache_admin`` relies on that."""
    return _file_url(_strip_suffixes(os.path.realpath(path)))


def _parse_scheme_url(text: str, match: re.Match[str], protocols: tuple[str, ...]) -> RepoURL:
    __tracebackhide__ = True  # its arguments may hold a secret
    shown = redact(text)
    scheme = _SCHEME_ALIASES.get(match.group(1).lower(), match.group(1).lower())
    _require_protocol(scheme, protocols, shown)
    if scheme == "file":
        return _parse_file_url(text, match.end(), shown)
    standard, robust = _userinfo_ends(text, match.end())
    if standard != robust:
        # Either reading may be wrong: taking the password's tail for a path sends it to a
        # host named after the user; taking a path's '@' for a userinfo sends credentials to
        # the wrong host. git and curl take the first; refuse rather than guess.
        raise InvalidInputError(
            "Repository URL is ambiguous: its user name or password holds an unencoded '/', "
            "'?' or '#', or its path an '@'",
            url=shown,
            hint=_PERCENT_ENCODE_HINT,
        )
    try:
        parts: SplitResult = urlsplit(text)
        hostname = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise InvalidInputError(
            f"Repository URL is malformed: {_malformed(shown)}", url=shown
        ) from None
    if not hostname:
        raise InvalidInputError("Repository URL has no host", url=shown)
    if hostname.startswith("-"):
        raise InvalidInputError("Repository host starts with '-'", url=shown)
    # git decodes %-escapes in credentials; so must we, before handing them to git.
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    host = f"[{hostname}]" if ":" in hostname else hostname
    netloc = host if port is None else f"{host}:{port}"
    canonical = _network_canonical(scheme, parts, hostname, netloc, username)
    if scheme in ("http", "https"):
        # Credentials go to git through its environment (see _git.credential_args), not argv.
        fetch_netloc = netloc
    else:
        fetch_netloc = netloc if parts.username is None else f"{parts.username}@{netloc}"
    fetch_url = urlunsplit((parts.scheme, fetch_netloc, parts.path, parts.query, parts.fragment))
    return RepoURL(text, fetch_url, canonical, shown, scheme, username, password)


def _network_canonical(
    scheme: str, parts: SplitResult, hostname: str, netloc: str, username: str | None
) -> str:
    """The identity of a repository reached over the network (see RepoURL.canonical)."""
    if scheme == "ssh":
        # git percent-decodes a whole ssh:// URL; a '?' or '#' is part of the path to it.
        raw_path = parts.path + (f"?{parts.query}" if parts.query else "")
        raw_path += f"#{parts.fragment}" if parts.fragment else ""
        return _ssh_canonical(username, netloc, _remote_path(unquote(raw_path)))
    path = _strip_suffixes(parts.path)
    if hostname in _FORGES:
        # These hosts treat paths case-insensitively; one entry per repository.
        path = path.lower()
    # http credentials only authenticate: the repository is the same with any of them.
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def _parse_file_url(text: str, start: int, shown: str) -> RepoURL:
    # Split as git does (the host ends at the first '/', the rest is the path, '?' and '#'
    # included) and percent-decode to the bytes of the file name, as git does: that is what
    # Path.as_uri() produces for a name with a space or a non-ASCII character.
    slash = text.find("/", start)
    host = text[start:] if slash < 0 else text[start:slash]
    if host.lower() not in ("", "localhost"):
        raise InvalidInputError("file:// URLs cannot name a remote host", url=shown)
    raw_path = "" if slash < 0 else text[slash:]
    path = os.path.normpath(os.fsdecode(unquote_to_bytes(raw_path))) if raw_path else ""
    if not path.startswith("/"):
        raise InvalidInputError("file:// URL must have an absolute path", url=shown)
    return RepoURL(text, _file_url(path), _file_canonical(path), shown, "file")


def _remote_path(path: str) -> str:
    """The path git sends to the remote end of an ssh URL (connect.c): ``/~user/x`` and
    ``/~/x`` lose their first slash, and are then relative to a home directory."""
    return path[1:] if path[1:2] == "~" else path


def _ssh_canonical(user: str | None, netloc: str, path: str) -> str:
    """The identity of an ssh repository, ``path`` being what git sends to the remote.

    The login picks the home directory that a relative path starts from, so the user stays
    (no user means the local login name or ~/.ssh/config's, which may be anyone: it stays
    distinct too). A relative ``x`` is ``~/x`` for git-upload-pack; an absolute one is not.
    """
    host = netloc.lower()
    if host.split(":", 1)[0] in _FORGES:
        # Their paths name repositories, not files: 'org/repo', '/org/repo' and '/Org/Repo'
        # are one repository.
        path = "/" + path.lstrip("/").lower()
    elif path.startswith("~"):
        path = "/" + path
    elif not path.startswith("/"):
        path = "/~/" + path
    userinfo = "" if user is None else quote(user, safe="") + "@"
    return f"ssh://{userinfo}{host}{quote(_strip_suffixes(path), safe='/~')}"


def _parse_scp_url(text: str, match: re.Match[str], protocols: tuple[str, ...]) -> RepoURL:
    __tracebackhide__ = True  # its arguments may hold a secret
    _require_protocol("ssh", protocols, text)
    host = match.group("host").lower()
    if host.startswith("-"):
        raise InvalidInputError("Repository host starts with '-'", url=text)
    # scp-like syntax is not percent-decoded by git: the path is sent as written.
    path = _remote_path(match.group("path"))
    user = match.group("user")
    return RepoURL(text, text, _ssh_canonical(user, host, path), text, "ssh", user)


def _parse_local_path(text: str, protocols: tuple[str, ...]) -> RepoURL:
    __tracebackhide__ = True  # its arguments may hold a secret
    _require_protocol("file", protocols, text)
    absolute = os.path.abspath(os.path.expanduser(text))
    return RepoURL(text, absolute, _file_canonical(absolute), text, "file")
