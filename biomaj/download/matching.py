"""Which remote files a bank wants: BioMAJ 3's ``remote.files`` semantics.

For each whitespace-separated pattern of ``remote.files``:

- without ``/``: ``re.match`` against the names of the files of the root directory;
- with ``/``: the first component (after a lone leading ``^``) is ``re.match``-ed against the
  sub-directory names; matching sub-directories are listed and matched with the rest;
- ``**/*``: every file, recursively.

No file at all is an error ("no file found matching expressions"). ``save_as`` comes from capture
groups as in BioMAJ 3 (``wf_download``): each pattern other than ``.*`` and ``**/*`` is anchored
on ``/`` and matched against ``/<path>`` of files in sub-directories; with capture groups the
file is saved as the groups joined by ``/``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from biomaj.download.paths import safe_relative
from biomaj.errors import ConfigError
from biomaj.protocols.base import Protocol, RemoteEntry, RemoteError, UnsafePath

log = logging.getLogger(__name__)

ALL_FILES = "**/*"

#: told of every file a listing shows, matched or not (the checksum manifests beside the files)
Seen = Callable[[RemoteEntry], None]


class NoFileMatched(RemoteError):
    """remote.files matched nothing (BioMAJ: 'no file found matching expressions')."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__(f"no file found matching expressions {' '.join(patterns)}")
        self.patterns = tuple(patterns)


@dataclass(frozen=True, slots=True)
class MatchedFile:
    """A remote file to fetch and the path it is saved as under the offline directory."""

    entry: RemoteEntry
    save_as: str


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"remote.files: {pattern!r} is not a valid regular expression ({exc})") from None


async def _walk_all(client: Protocol, path: str, out: dict[str, RemoteEntry], seen: Seen | None) -> None:
    """Every file under `path`, recursively (directories listed one after the other)."""
    pending = [path]
    while pending:
        directory = pending.pop()
        subdirs = []
        async for entry in client.list(directory):
            if entry.is_dir:
                subdirs.append(entry.path)
            else:
                out.setdefault(entry.path, entry)
                if seen is not None:
                    seen(entry)
        pending.extend(reversed(sorted(subdirs)))


async def _match_pattern(client: Protocol, pattern: str, path: str, out: dict[str, RemoteEntry],
                         seen: Seen | None) -> None:
    if pattern == ALL_FILES:
        await _walk_all(client, path, out, seen)
        return
    parts = pattern.split("/")
    if len(parts) > 1 and parts[0] == "^":
        parts = parts[1:]
    if len(parts) == 1:
        regexp = _compile(parts[0])
        async for entry in client.list(path):
            if not entry.is_dir:
                if regexp.match(entry.name):
                    out.setdefault(entry.path, entry)
                if seen is not None:
                    seen(entry)
        return
    head, rest = _compile(parts[0]), "/".join(parts[1:])
    subdirs = [entry.path async for entry in client.list(path) if entry.is_dir and head.match(entry.name)]
    for subdir in subdirs:
        await _match_pattern(client, rest, subdir, out, seen)


async def match_files(client: Protocol, patterns: Sequence[str] | str, *, path: str = "",
                      seen: Seen | None = None) -> list[MatchedFile]:
    """The files of the remote tree selected by ``remote.files`` patterns, with their save_as;
    ``seen`` is told of every file listed in the folders where files are matched.

    Raises NoFileMatched when nothing matches and UnsafePath for a remote name that would leave
    the offline directory.
    """
    if isinstance(patterns, str):
        patterns = patterns.split()
    if not patterns:
        raise ConfigError("remote.files is empty: expected whitespace-separated regular expressions")
    found: dict[str, RemoteEntry] = {}
    for pattern in patterns:
        await _match_pattern(client, pattern, path, found, seen)
    if not found:
        raise NoFileMatched(patterns)
    anchored = [_anchor(p) for p in patterns if p not in (".*", ALL_FILES)]
    matched = []
    for entry in found.values():
        save_as = save_as_for(entry.path, anchored)
        safe_relative(entry.path)  # refuse the remote name itself, not only what we save it as
        matched.append(MatchedFile(entry, safe_relative(save_as)))
    log.debug("matched %d files", len(matched))
    return matched


def _anchor(pattern: str) -> re.Pattern[str] | None:
    """BioMAJ's save_as regexp: the pattern anchored on '/' ('^x' -> '^/x', 'x' -> '/x')."""
    text = "^/" + pattern[1:] if pattern.startswith("^") else "/" + pattern
    try:
        return re.compile(text)
    except re.error:
        return None


def save_as_for(path: str, anchored: Sequence[re.Pattern[str] | None]) -> str:
    """The save_as of a remote `path`: capture groups of the first anchored pattern that has
    some, joined by '/'; else the path itself. Files of the root directory keep their name."""
    name = "/" + path if "/" in path else path
    save_as = path
    for regexp in anchored:
        if regexp is None:
            continue
        found = regexp.match(name)
        if found and found.groups():
            groups = [g for g in found.groups() if g]
            if groups:
                save_as = "/".join(groups)
    return save_as


__all__ = ["ALL_FILES", "MatchedFile", "NoFileMatched", "UnsafePath", "match_files", "save_as_for"]
