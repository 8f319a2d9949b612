"""What a superproject's commit records about its submodules, read from the cache and checked
before anything is cloned or written: the input here comes from the repository, not the user.

A commit records a submodule twice: a gitlink (a tree entry of mode 160000 holding the
submodule's commit) and a ``.gitmodules`` entry mapping a name to a path and a URL. As
``git submodule update --init`` does, the gitlinks at the paths ``.gitmodules`` names are the
submodules; a ``.gitmodules`` entry without a gitlink is ignored, and so is a gitlink that no
entry maps (git refuses to initialise one; listing every tree entry to find them would cost a
full ``ls-tree -r`` per checkout).

Everything taken from the repository is untrusted, and refused here with the reason, in the
spirit of what git learned the hard way:

* names with a ``..`` component (CVE-2018-11235: git keeps a submodule's repository under
  ``.git/modules/<name>``, so does an isolated worktree here), absolute or empty ones;
* paths that look like an option, leave the worktree (absolute, ``..``), enter a ``.git``
  directory under any spelling a filesystem may fold to it (CVE-2024-32002 and its
  ancestors), or go through a symlink of the commit;
* URLs: the store's own validation and protocol allow-list, plus relative URLs that climb
  out of the superproject's host or hide a newline (CVE-2020-11008), and local URLs from a
  superproject that is not itself local (CVE-2022-39253).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import InvalidInputError
from .urls import RepoURL, parse_url, redact

__all__ = [
    "GITLINK_MODE",
    "RecordedSubmodule",
    "SubmoduleProblem",
    "check_name",
    "check_path",
    "named_problem",
    "pair_with_gitlinks",
    "parse_gitmodules",
    "prefixes",
    "resolve_submodule_url",
]

GITLINK_MODE = "160000"
_SYMLINK_MODE = "120000"
_TREE_MODE = "040000"
#: A path or name longer than this is no submodule anyone meant.
MAX_LENGTH = 1024
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Characters HFS+ ignores in file names (git's is_hfs_dotgit): ".g\u200cit" is ".git" there.
_HFS_IGNORED = dict.fromkeys(
    map(
        ord,
        "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u206a\u206b\u206c\u206d\u206e\u206f\ufeff",
    )
)


class SubmoduleProblem(InvalidInputError):
    """Internal: why one submodule is refused; the caller names the superproject."""


@dataclass(frozen=True)
class RecordedSubmodule:
    """One submodule as a superproject's commit records it (validated, URL not yet resolved)."""

    name: str
    path: str
    #: The URL as ``.gitmodules`` spells it (possibly relative: ``../lib.git``).
    url: str
    #: The submodule's commit the gitlink records (full hex).
    commit: str
    #: ``submodule.<name>.update``: ``none`` (or a command, which git also turns into
    #: ``none`` when it comes from ``.gitmodules``) leaves the submodule unpopulated.
    populate: bool = True


def _refuse(why: str) -> SubmoduleProblem:
    return SubmoduleProblem(why)


def check_name(name: str) -> str:
    """A submodule name safe as a config subsection and as a path below ``modules/``."""
    if not name or len(name) > MAX_LENGTH or _CONTROL_RE.search(name):
        raise _refuse("its name is empty, too long or holds a control character")
    parts = re.split(r"[/\\]", name)
    if ".." in parts:
        raise _refuse("its name has a '..' component (CVE-2018-11235)")
    if name.startswith(("/", "\\")) or "" in parts or "." in parts:
        raise _refuse("its name is absolute or has an empty or '.' component")
    if any(_is_dot_git(part) for part in parts):
        raise _refuse("its name has a '.git' component")
    return name


def check_path(path: str) -> str:
    """A submodule path that stays inside the worktree and out of every ``.git``."""
    if not path or len(path) > MAX_LENGTH or _CONTROL_RE.search(path):
        raise _refuse("its path is empty, too long or holds a control character")
    if path.startswith("-"):
        raise _refuse("its path starts with '-', which git would read as an option")
    if "\\" in path:
        raise _refuse("its path holds a backslash (a directory separator on Windows)")
    parts = path.rstrip("/").split("/")
    if path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise _refuse("its path is absolute or has an empty, '.' or '..' component")
    if any(_is_dot_git(part) for part in parts):
        raise _refuse("its path goes into a '.git' directory (CVE-2024-32002)")
    return "/".join(parts)


def _is_dot_git(component: str) -> bool:
    """Whether a filesystem may take ``component`` for ``.git``: any case (case-insensitive
    systems), trailing dots and spaces (NTFS drops them), ``git~1`` (NTFS's short name),
    characters HFS+ ignores."""
    folded = unicodedata.normalize("NFC", component.translate(_HFS_IGNORED)).lower()
    return folded.rstrip(". ") in (".git", "git~1")


def parse_gitmodules(listing: str) -> dict[str, dict[str, str]]:
    """``git config --blob ... -z --list`` output as {name: {variable: value}} (submodules only).

    Keys are ``submodule.<name>.<variable>``; a name may hold dots, so it is what lies between
    the first and the last one. A variable given without a value (a bare ``path``) is empty.
    """
    found: dict[str, dict[str, str]] = {}
    for item in listing.split("\0"):
        if not item:
            continue
        key, _, value = item.partition("\n")
        section, _, rest = key.partition(".")
        name, _, variable = rest.rpartition(".")
        if section != "submodule" or not name:
            continue
        found.setdefault(name, {})[variable] = value
    return found


def pair_with_gitlinks(
    entries: dict[str, dict[str, str]], tree: dict[str, tuple[str, str]]
) -> list[RecordedSubmodule]:
    """The submodules: ``.gitmodules`` entries whose path is a gitlink in ``tree``.

    ``tree`` maps the paths `ls-tree` listed (each entry's path and the directories above
    it) to (mode, object name). Entries are refused (SubmoduleProblem, naming the submodule
    in its message) when their name or path is hostile, when their path or a directory above
    it is a symlink of the commit, or when two claim one path.
    """
    claimed: dict[str, str] = {}
    found = []
    for name, variables in sorted(entries.items()):
        raw_path = variables.get("path")
        if raw_path is None:
            continue  # git finds a submodule by its path: an entry without one is inert
        try:
            check_name(name)
            path = check_path(raw_path)
            above = prefixes(path)
            for prefix in above:
                mode = tree.get(prefix, ("", ""))[0]
                if mode == _SYMLINK_MODE:
                    raise _refuse(f"its path goes through the symlink {prefix!r} of the commit")
            if tree.get(path, ("", ""))[0] == _SYMLINK_MODE:
                raise _refuse("its path is a symlink in the commit")
            if path in claimed:
                raise _refuse(f"submodule {claimed[path]!r} claims the same path")
        except SubmoduleProblem as exc:
            raise named_problem(exc, name, raw_path, variables.get("url")) from None
        claimed[path] = name
        mode, sha = tree.get(path, ("", ""))
        if mode != GITLINK_MODE or any(tree.get(p, ("",))[0] == GITLINK_MODE for p in above):
            continue  # no gitlink there (removed; a stale entry), or inside another submodule
        url = variables.get("url")
        if not url:
            raise named_problem(_refuse("it has no URL in .gitmodules"), name, path, None)
        update = variables.get("update", "")
        found.append(
            RecordedSubmodule(
                name, path, url, sha, populate=not (update == "none" or update.startswith("!"))
            )
        )
    return sorted(found, key=lambda recorded: recorded.path)


def prefixes(path: str) -> list[str]:
    """The directories above ``path``: ``a/b/c`` -> ``a``, ``a/b``."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def named_problem(
    exc: SubmoduleProblem, name: str, path: str | None, url: str | None
) -> SubmoduleProblem:
    shown = f"Submodule {name!r}"
    if path is not None:
        shown += f" (path {path!r}"
        shown += f", URL {redact(url)!r})" if url is not None else ")"
    return SubmoduleProblem(f"{shown} refused: {exc.problem}")


def resolve_submodule_url(superproject: RepoURL, raw: str, protocols: tuple[str, ...]) -> RepoURL:
    """The submodule's URL as ``git submodule init`` resolves it, validated as a user's URL is.

    A relative URL (``./`` or ``../``) resolves against the superproject's URL, as git does
    against the superproject's remote (git's ``relative_url``), credentials included: on the
    same host they are the same user's. Raises SubmoduleProblem saying why it is refused.
    """
    if "\\" in raw and not _SCHEME_RE.match(raw):
        raise _refuse("its URL holds a backslash")
    if _CONTROL_RE.search(unquote(raw)):
        # git's check_submodule_url: appended to an http URL and percent-decoded, a newline
        # could forge credential-helper input (CVE-2020-5260).
        raise _refuse("its URL holds a control character, percent-encoded or not")
    relative = raw.startswith(("./", "../"))
    if relative:
        rest = raw
        climbs = 0
        while rest.startswith(("./", "../")):
            climbs += rest.startswith("../")
            rest = rest[3:] if rest.startswith("../") else rest[2:]
        if climbs and rest.startswith((":", "/")):
            raise _refuse("its relative URL climbs into the host part (CVE-2020-11008)")
        text = _relative_url(_base_url(superproject), raw)
        if not (_SCHEME_RE.match(text) or text.startswith("/") or ":" in text.split("/")[0]):
            # Climbed above the root: git would make it a path relative to the current
            # directory.
            raise _refuse("its relative URL climbs above the superproject URL's root")
    elif _SCHEME_RE.match(raw) or raw.startswith("/"):
        text = raw
    elif raw.startswith("-"):
        raise _refuse("its URL starts with '-', which git would read as an option")
    elif ":" in raw.split("/", 1)[0]:
        text = raw  # scp-like: host:path
    else:
        raise _refuse(
            "its URL is a relative path without './' or '../' (git would read it relative to "
            "the current directory)"
        )
    try:
        resolved = parse_url(text, protocols)
    except InvalidInputError as exc:
        raise _refuse(f"its URL is not allowed: {exc.problem}") from None
    scp_like = not relative and not _SCHEME_RE.match(raw) and not raw.startswith("/")
    if scp_like and resolved.scheme == "file":
        # parse_url takes an existing local path for one even if it looks like host:path;
        # which depends on the current directory: never for a URL from a repository.
        raise _refuse("its URL is ambiguous (a host:path that exists as a local path)")
    if resolved.scheme == "file" and superproject.scheme != "file":
        raise _refuse(
            "its URL is local (file:// or a path) but the superproject is not: git refuses "
            "that too (CVE-2022-39253)"
        )
    if relative and _host(resolved) != _host(superproject):
        raise _refuse("its relative URL climbs out of the superproject's host")
    return resolved


def _base_url(superproject: RepoURL) -> str:
    """What git resolves relative submodule URLs against: the superproject's remote URL. A
    local path is absolute here (git's remote is too), a network URL keeps its credentials."""
    return superproject.fetch_url if superproject.scheme == "file" else superproject.original


def _relative_url(remote_url: str, url: str) -> str:
    """git's ``relative_url(remote_url, url, NULL)`` (remote.c) for an absolute remote URL."""
    remote = remote_url[:-1] if remote_url.endswith("/") else remote_url
    colon_separated = False
    while url:
        if url.startswith("../"):
            url = url[3:]
            remote, colon = _chop_last_dir(remote)
            colon_separated |= colon
        elif url.startswith("./"):
            url = url[2:]
        else:
            break
    joined = f"{remote}{':' if colon_separated else '/'}{url}"
    if url.endswith("/"):
        joined = joined[:-1]
    return joined[2:] if joined.startswith("./") else joined


def _chop_last_dir(remote: str) -> tuple[str, bool]:
    """git's ``chop_last_dir``: drop the last ``/`` component, else the part after ``:``."""
    slash = remote.rfind("/")
    if slash >= 0:
        return remote[:slash], False
    colon = remote.rfind(":")
    if colon >= 0:
        return remote[:colon], True
    return ".", False


def _host(repo: RepoURL) -> str:
    """The scheme and authority of a network URL's identity (``ssh://user@host:22``)."""
    scheme, _, rest = repo.canonical.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
