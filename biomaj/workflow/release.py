"""Release strings: read from a file name or content, derived from file dates, suffixed ``__N``.

Pure functions; the workflow's release task lists and downloads, then asks these.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Iterable, Sequence

from packaging.version import InvalidVersion, Version

from biomaj.errors import BiomajError
from biomaj.protocols.base import RemoteEntry

MAX_SUFFIX = 99  # BioMAJ 3 looks for __1 .. __99
_SAFE_RELEASE = re.compile(r"^[\w][\w.+:@=~,-]*$")


class ReleaseError(BiomajError):
    """The release could not be determined, or is not usable as a directory name."""


def checked_release(release: str, origin: str) -> str:
    """``release`` stripped, or ReleaseError when it cannot name a directory safely (a remote
    string never becomes a path with '/', '..', spaces or control characters)."""
    value = release.strip()
    if not value or len(value) > 200 or not _SAFE_RELEASE.match(value) or ".." in value:
        raise ReleaseError(
            f"release {release!r} from {origin} is not usable as a directory name "
            "(letters, digits and . _ - + : @ = ~ , only)"
        )
    return value


def most_recent(entries: Sequence[RemoteEntry]) -> RemoteEntry:
    """The entry with the latest mtime (entries without one come last); the first on ties."""
    return max(entries, key=lambda e: e.mtime if e.mtime is not None else float("-inf"))


def release_from_name(pattern: str, name: str) -> str:
    """Group 1 of ``release.file`` searched in ``name`` (``test_(\\d+)\\.txt`` -> ``100``)."""
    found = re.search(pattern, name)
    if not found or not found.groups() or found.group(1) is None:
        raise ReleaseError(
            f"release.file={pattern!r} matched {name!r} but has no capture group giving the release; "
            "add one, or set release.regexp to read the release inside the file"
        )
    return found.group(1)


def _version_key(value: str) -> tuple:
    try:
        return (1, Version(value), value)
    except InvalidVersion:
        return (0, Version("0"), value)


def release_from_content(regexp: str, text: str, name: str) -> str:
    """``release.regexp`` applied to the release file: the highest match by version order.

    With several groups, the first group is the release (BioMAJ 3 breaks on tuples there).
    """
    try:
        compiled = re.compile(regexp)
    except re.error as exc:
        raise ReleaseError(f"release.regexp={regexp!r} is not a valid regular expression ({exc})") from None
    found = []
    for match in compiled.finditer(text):
        value = match.group(1) if compiled.groups else match.group(0)
        if value:
            found.append(value)
    if not found:
        raise ReleaseError(f"release.regexp={regexp!r} found nothing in {name}")
    return max(found, key=_version_key)


def release_from_dates(mtimes: Iterable[float | None], release_format: str | None, today: datetime.date | None = None) -> str:
    """The date-based release: the most recent file date as ``Y-M-D`` without zero padding (as
    BioMAJ 3 does, so existing releases keep their names), or ``strftime(release.format)``."""
    dates = [m for m in mtimes if m is not None]
    day = datetime.date.fromtimestamp(max(dates)) if dates else (today or datetime.date.today())
    if release_format:
        return day.strftime(release_format.replace("%%", "%"))
    return f"{day.year}-{day.month}-{day.day}"


def next_free_release(bank_dir: Path, bank: str, separator: str, release: str) -> str:
    """``release`` when ``<bank><sep><release>`` does not exist under ``bank_dir``, else
    ``release__N`` with N one more than the highest existing suffix (at most 99)."""
    if not (bank_dir / f"{bank}{separator}{release}").exists():
        return release
    highest = 0
    for n in range(1, MAX_SUFFIX + 1):
        if (bank_dir / f"{bank}{separator}{release}__{n}").exists():
            highest = n
    if highest >= MAX_SUFFIX:
        raise ReleaseError(f"release {release}: {MAX_SUFFIX} copies already exist in {bank_dir}")
    return f"{release}__{highest + 1}"


def file_list_identical(current: Sequence[dict], previous: Sequence[dict] | None) -> bool:
    """release.control: same number of files and the same hashes (a missing list counts as
    identical, as in BioMAJ 3)."""
    if previous is None:
        return True
    if len(current) != len(previous):
        return False
    key = lambda f: str(f.get("hash") or f"{f.get('name')}:{f.get('size')}:{f.get('mtime')}")  # noqa: E731
    return sorted(map(key, current)) == sorted(map(key, previous))
