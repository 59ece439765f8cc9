"""FTP listing parsers: MLSD/MLST facts (RFC 3659), Unix ``ls -l`` and Windows/IIS DOS LIST lines.

Pure functions over one raw line (bytes, without its CRLF). Each returns a
:class:`~biomaj.protocols.base.RemoteEntry` whose path is ``prefix + name``, or None for lines that
describe no entry (``.``, ``..``, ``total 12``, blank or unparsable lines).

Dates: MLSD ``modify`` is UTC to the second; LIST dates are taken as UTC (vsftpd's and ProFTPD's
default) to the minute, or to the day for ``Mon DD YYYY`` dates. ``hash`` is BioMAJ 3's: md5 of the
line as curl returned it (decoded as ISO-8859-1, encoded as UTF-8), the facts line for MLSD.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import re
import time

from biomaj.protocols.base import RemoteEntry

_MONTHS = {m: i for i, m in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"), 1)}

# "-rw-r--r--  1 owner group  10000 Sep 13  2020 name": anything between the mode and the size
# (link count, owner, group, some of them absent); the size is the number just before the date.
_UNIX = re.compile(
    rb"([-dlbcpsDn?])[-rwxsStTlL?]{9}\S*\s+.*?(\d+)\s+([A-Za-z]{3})\s+(\d{1,2})\s+"
    rb"(?:(\d{1,2}):(\d{2})|(\d{4}))\s(.+)"
)
# "04-27-00  09:09PM       <DIR>          licensed", "02-25-2019  09:15PM   1396 readme.txt"
_DOS = re.compile(
    rb"(\d{1,2})-(\d{1,2})-(\d{4}|\d{2})\s+(\d{1,2}):(\d{2})\s*([AaPp][Mm])?\s+(<DIR>|<JUNCTION>|\d+)\s+(.+)"
)
_FUTURE_SLACK = 86400  # a "recent" ls date up to a day ahead (server time zone) is this year's


def line_hash(raw: bytes) -> str:
    """BioMAJ 3's listing hash: md5 of the line decoded as ISO-8859-1 and encoded as UTF-8."""
    return hashlib.md5(raw if raw.isascii() else raw.decode("latin-1").encode("utf-8")).hexdigest()


def decode_name(raw: bytes) -> str:
    """A remote name as text; bytes that are not UTF-8 survive the round trip to the server."""
    return raw.decode("utf-8", "surrogateescape")


def split_lines(pending: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of ``pending + chunk`` (CRLF or LF stripped) and the incomplete rest."""
    lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
    rest = lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines], rest


# MLSD / MLST ------------------------------------------------------------------------------------


def fact(facts: bytes, name: bytes) -> bytes | None:
    """The value of fact ``name`` (given in lower case with its ``=``) in ``type=file;Size=12;...``,
    lower-cased; None when absent."""
    return _value(facts.lower(), name)


def _value(low: bytes, name: bytes) -> bytes | None:
    at = low.find(name)
    while at > 0 and low[at - 1] != 0x3B:  # a longer fact name ending like this one: not it
        at = low.find(name, at + 1)
    if at < 0:
        return None
    start = at + len(name)
    end = low.find(b";", start)
    return low[start:] if end < 0 else low[start:end]


@functools.lru_cache(maxsize=4096)
def _day(year: int, month: int, day: int) -> int:
    return calendar.timegm((year, month, day, 0, 0, 0))


def parse_mlsx_time(value: bytes | str | None) -> float | None:
    """``YYYYMMDDhhmmss[.sss]`` (UTC, MLSD ``modify`` and MDTM) as POSIX seconds, None if invalid."""
    if not value:
        return None
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    value = value.strip()
    if len(value) < 14 or not value[:14].isdigit():
        return None
    month, day, hour = int(value[4:6]), int(value[6:8]), int(value[8:10])
    minute, second = int(value[10:12]), int(value[12:14])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 62):
        return None
    try:
        fraction = float(value[14:]) if value[14:15] == b"." else 0.0
    except ValueError:
        return None
    return _day(int(value[:4]), month, day) + hour * 3600 + minute * 60 + second + fraction


def parse_mlsd_line(raw: bytes, prefix: str = "") -> RemoteEntry | None:
    """One MLSD line (``facts; name``); None for ``cdir``/``pdir`` entries and ``.``/``..``."""
    facts, sep, name = raw.partition(b" ")
    if not sep or not name or name in (b".", b".."):
        return None
    facts = facts.lower()
    kind = _value(facts, b"type=") or b""
    if kind in (b"cdir", b"pdir"):
        return None
    is_dir = kind == b"dir"
    is_link = kind.startswith((b"os.unix=symlink", b"os.unix=slink"))
    size = _value(facts, b"size=")
    return RemoteEntry(
        path=prefix + decode_name(name),
        # a link's size is the link's, not its target's
        size=int(size) if size and size.isdigit() and not (is_dir or is_link) else None,
        mtime=parse_mlsx_time(_value(facts, b"modify=")),
        is_dir=is_dir,
        is_link=is_link,
        hash=line_hash(raw),
    )


# LIST ---------------------------------------------------------------------------------------------


def parse_list_line(raw: bytes, prefix: str = "", now: float | None = None) -> RemoteEntry | None:
    """One LIST line, Unix ``ls -l`` style first, then Windows/IIS DOS style; None if neither.

    ``now`` (POSIX seconds, default the current time) resolves the year of ``Mon DD HH:MM`` dates
    as ls prints them: the latest such date not in the future (a day of slack for time zones).
    """
    if now is None:
        now = time.time()
    found = _UNIX.match(raw)
    if found:
        return _unix_entry(raw, found, prefix, now)
    found = _DOS.match(raw)
    if found:
        return _dos_entry(raw, found, prefix)
    return None


@functools.lru_cache(maxsize=8)
def _year(now: float) -> int:
    return time.gmtime(now).tm_year


def _unix_entry(raw: bytes, found: re.Match[bytes], prefix: str, now: float) -> RemoteEntry | None:
    kind, size, month_name, day, hour, minute, year, name = found.groups()
    month = _MONTHS.get(month_name.lower())
    if month is None or not 1 <= int(day) <= 31:
        return None
    is_link = kind == b"l"
    if is_link:
        name = name.split(b" -> ", 1)[0]
    if name in (b".", b".."):
        return None
    if year is not None:
        mtime = _day(int(year), month, int(day))
    else:
        this_year = _year(now)
        clock = int(hour) * 3600 + int(minute) * 60
        mtime = _day(this_year, month, int(day)) + clock
        if mtime > now + _FUTURE_SLACK:
            mtime = _day(this_year - 1, month, int(day)) + clock
    is_dir = kind == b"d"
    return RemoteEntry(
        path=prefix + decode_name(name),
        size=None if is_dir or is_link else int(size),
        mtime=float(mtime),
        is_dir=is_dir,
        is_link=is_link,
        hash=line_hash(raw),
    )


def _dos_entry(raw: bytes, found: re.Match[bytes], prefix: str) -> RemoteEntry | None:
    month, day, year, hour, minute, ampm, size, name = found.groups()
    month, day, year, hour = int(month), int(day), int(year), int(hour)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24):
        return None
    if year < 100:
        year += 2000 if year < 70 else 1900
    if ampm is not None:
        hour = hour % 12 + (12 if ampm.lower() == b"pm" else 0)
    if name in (b".", b".."):
        return None
    is_dir = size.startswith(b"<")
    return RemoteEntry(
        path=prefix + decode_name(name),
        size=None if is_dir else int(size),
        mtime=float(_day(year, month, day) + hour * 3600 + int(minute) * 60),
        is_dir=is_dir,
        hash=line_hash(raw),
    )


__all__ = [
    "decode_name",
    "fact",
    "line_hash",
    "parse_list_line",
    "parse_mlsd_line",
    "parse_mlsx_time",
    "split_lines",
]
