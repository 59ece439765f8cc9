"""The one rule that says "this local file is the remote file".

The manager uses it to keep what the offline directory already holds and to link what the last
release has unchanged; the downloader uses it to skip a file a redelivered message asks for again.
The rule (docs/download.md, "Is it the same file?"):

1. a checksum known on both sides decides alone (a provider's manifest, a recorded sha256);
2. else the size must match, when both sides know it;
3. an opaque version token (ETag, the listing's ``hash``) known on both sides must match;
4. the dates must match at the precision of the coarser side: to the second where both have
   seconds, to the minute where one was read from a listing without seconds (``Dec  7 10:15``),
   to the day where one has only a day (``Dec  7  2025``, old files in an FTP listing);
5. a remote file of unknown size (an index that prints ``64K``) is the local one only when the
   local file carries the remote date to the second: only a finished download gives it that date.
"""

from __future__ import annotations

import calendar
import os
import stat
from dataclasses import dataclass
from typing import Any

from biomaj.protocols.base import RemoteEntry

__all__ = ["FileFacts", "facts_of_entry", "facts_of_record", "local_facts", "same_file", "same_time"]

_MINUTE = 60
_DAY = 86400


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What is known of one file: each field None when unknown. ``checksum`` is ``algo:hex``."""

    size: int | None = None
    mtime: float | None = None
    token: str | None = None
    checksum: str | None = None


def facts_of_entry(entry: RemoteEntry, checksum: str | None = None) -> FileFacts:
    """A remote listing's entry as facts."""
    return FileFacts(entry.size, entry.mtime, entry.hash, checksum)


def facts_of_record(record: dict[str, Any]) -> FileFacts:
    """A release's file record (BioMAJ 3's ``download_files`` entry) as facts; a record without
    ``mtime`` (an older session) gives its day at noon UTC, compared to the day."""
    mtime = record.get("mtime")
    if mtime is None and record.get("year") and record.get("month") and record.get("day"):
        mtime = float(calendar.timegm((int(record["year"]), int(record["month"]), int(record["day"]), 0, 0, 0)))
    return FileFacts(record.get("size"), mtime, record.get("hash") or None, record.get("checksum") or None)


def local_facts(path: str | os.PathLike[str]) -> FileFacts | None:
    """Size and date of a local file; None when there is none (a folder is not a file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileFacts(st.st_size, st.st_mtime)


def _granularity(mtime: float) -> int:
    seconds = int(mtime)
    if seconds % _MINUTE:
        return 1
    if seconds % _DAY:
        return _MINUTE
    return _DAY


def same_time(a: float, b: float) -> bool:
    """Two dates equal at the precision of the coarser one (second, minute or day, UTC)."""
    step = max(_granularity(a), _granularity(b))
    return int(a) // step == int(b) // step


def same_file(local: FileFacts | None, remote: FileFacts) -> bool:
    """True when ``local`` is ``remote``, by the rule of this module's docstring."""
    if local is None:
        return False
    if local.checksum and remote.checksum:
        return local.checksum.lower() == remote.checksum.lower() and (
            local.size is None or remote.size is None or local.size == remote.size)
    if local.size is None:
        return False  # a record without a size: nothing to compare
    if remote.size is None:
        return local.mtime is not None and remote.mtime is not None and int(local.mtime) == int(remote.mtime)
    if local.size != remote.size:
        return False
    if local.token and remote.token and local.token != remote.token:
        return False
    if local.mtime is None or remote.mtime is None:
        return True
    return same_time(local.mtime, remote.mtime)
