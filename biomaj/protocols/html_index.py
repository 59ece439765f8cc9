"""HTML directory index pages (Apache 2.2/2.4, nginx, lighttpd, python http.server), parsed as a
stream of lines so that a 100,000-entry page never sits in memory as one string.

Two modes, chosen by the bank's :class:`~biomaj.protocols.base.HttpParse`:

- **regexps** (``http.parse.dir.line`` / ``http.parse.file.line`` set): BioMAJ 3's semantics
  (``curl.py:_http_parse_result``): group numbers, ``-1`` for an absent date or size,
  ``http.group.file.date_format`` for strptime, else ``DD-Mon-YYYY`` / ``DD-MM-YYYY``. The
  regexps are applied to each line rather than to the whole page (they never span lines in
  practice: ``.`` does not match a newline).
- **auto-detection** (the default): every ``<a href>`` that names a child of the listed directory
  is an entry; the text after it, up to the next link or the end of the row, gives the date
  (``DD-Mon-YYYY HH:MM`` of Apache 2.2 and nginx, ``YYYY-MM-DD HH:MM`` of Apache 2.4,
  ``YYYY-Mon-DD HH:MM:SS`` of lighttpd, ``DD-MM-YYYY HH:MM``) and, right after the date, the size.
  Pages without dates (python http.server, plain lists) give names only.

Sizes are exact only when printed as a plain number of bytes; ``12M`` or ``9.8K`` give None (the
transfer tells the real size). Dates are read as UTC.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import logging
import re
from calendar import timegm
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote, unquote, urljoin, urlsplit

from biomaj.protocols.base import FatalError, HttpParse

log = logging.getLogger(__name__)

#: BioMAJ 3's ``BiomajConfig.DEFAULTS`` (Apache 2.2 FancyIndexing), used when only one regexp is set.
BIOMAJ_DIR_LINE = (
    r'<img[\s]+src="[\S]+"[\s]+alt="\[DIR\]"[\s]*/?>[\s]*<a[\s]+href="([\S]+)/"[\s]*>.*'
    r"([\d]{2}-[\w\d]{2,5}-[\d]{4}\s[\d]{2}:[\d]{2})"
)
BIOMAJ_FILE_LINE = (
    r'<img[\s]+src="[\S]+"[\s]+alt="\[[\s]+\]"[\s]*/?>[\s]<a[\s]+href="([\S]+)".*'
    r"([\d]{2}-[\w\d]{2,5}-[\d]{4}\s[\d]{2}:[\d]{2})[\s]+([\d\.]+[MKG]{0,1})"
)

MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun",
                                      "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}

#: Date layouts of known index pages, tried in this order on the text after a link.
_DATES = tuple(re.compile(p) for p in (
    r"(?P<d>\d{1,2})-(?P<mon>[A-Za-z]{3})-(?P<y>\d{4})\s+(?P<H>\d{1,2}):(?P<M>\d\d)(?::(?P<S>\d\d))?",  # Apache 2.2, nginx
    r"(?P<y>\d{4})-(?P<m>\d\d)-(?P<d>\d\d)[ T](?P<H>\d\d):(?P<M>\d\d)(?::(?P<S>\d\d))?",  # Apache 2.4
    r"(?P<y>\d{4})-(?P<mon>[A-Za-z]{3})-(?P<d>\d\d)\s+(?P<H>\d\d):(?P<M>\d\d)(?::(?P<S>\d\d))?",  # lighttpd
    r"(?P<d>\d\d)-(?P<m>\d\d)-(?P<y>\d{4})\s+(?P<H>\d\d):(?P<M>\d\d)(?::(?P<S>\d\d))?",
))
_SIZE = re.compile(r"\s*(?:-|(?P<num>\d+(?:\.\d+)?)\s?(?P<unit>[KMGTPEkmgtpe](?:i?B)?|B|bytes)?)(?![\w.])")
_UNITS = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15, "e": 10**18}

# One event of a page: a link (its href), or the start/end of a table row.
_EVENT = re.compile(
    r"""<a\s[^>]*?\bhref\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s>"']+))[^>]*>"""
    r"|<(?P<row>/?)tr\b",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_CLOSE_A = re.compile(r"</a\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_MAX_TAIL = 4096  # characters of text kept after a link while looking for its date and size


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One child of the listed directory; ``name`` is URL-decoded, never contains ``/``."""

    name: str
    is_dir: bool
    size: int | None = None
    mtime: float | None = None
    hash: str | None = None
    size_hint: int | None = None  # what a rounded size (``9.8K``) says when ``size`` is None


# Values ------------------------------------------------------------------------------------------


def _mtime(y: int, mo: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> float | None:
    try:
        datetime(y, mo, d, hh, mm, ss)  # validates (31-Feb, month 13, ...)
    except ValueError:
        return None
    return float(timegm((y, mo, d, hh, mm, ss, 0, 0, 0)))


def _month(text: str) -> int | None:
    if text.isdigit():
        return int(text) if 1 <= int(text) <= 12 else None
    return MONTHS.get(text[:3].lower())


def _auto_date(match: re.Match[str]) -> float | None:
    g = match.groupdict()
    month = _month(g["mon"]) if g.get("mon") else int(g["m"])
    if month is None:
        return None
    return _mtime(int(g["y"]), month, int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"] or 0))


def _biomaj_date(text: str, date_format: str | None) -> float | None:
    """BioMAJ's date group: strptime with ``file_date_format`` (``%%`` read as ``%``), else
    ``DD-Mon-YYYY[ HH:MM]`` / ``DD-MM-YYYY[ HH:MM]``; the known index layouts as a last resort."""
    text = text.strip()
    if date_format:
        try:
            parsed = datetime.strptime(text, date_format.replace("%%", "%"))
        except ValueError:
            return None
        return parsed.replace(tzinfo=timezone.utc).timestamp()
    fields = text.split()
    parts = fields[0].split("-") if fields else []
    if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit() and len(parts[2]) == 4:
        month = _month(parts[1])
        hh, _, mm = fields[1].partition(":") if len(fields) > 1 else ("0", "", "0")
        if month is not None and hh.isdigit() and mm[:2].isdigit():
            return _mtime(int(parts[2]), month, int(parts[0]), int(hh), int(mm[:2]))
    for layout in _DATES:
        found = layout.search(text)
        if found:
            return _auto_date(found)
    return None


def parse_size(text: str) -> tuple[int | None, int]:
    """(exact size or None, BioMAJ's humanfriendly reading used in hashes): ``"1234"`` ->
    (1234, 1234), ``"9.8K"`` -> (None, 9800), ``"-"`` -> (None, 0)."""
    text = text.strip()
    found = _SIZE.match(text)
    if not found or found["num"] is None or found.end() != len(text):
        return None, 0
    unit = found["unit"] or ""
    factor = 1 if unit in ("", "B", "bytes") else _UNITS[unit[0].lower()]
    number = found["num"]
    exact = int(number) if factor == 1 and number.isdigit() else None
    return exact, int(float(number) * factor)


def entry_hash(name: str, date_text: str, size_for_hash: int) -> str:
    """BioMAJ 3's remote file hash: md5 of name + date text + size."""
    return hashlib.md5(f"{name}{date_text}{size_for_hash}".encode("utf-8", "surrogatepass")).hexdigest()


# Parser ------------------------------------------------------------------------------------------


class IndexParser:
    """Turns the lines of one index page into :class:`IndexEntry` objects.

    ``base_url`` is the URL of the listed directory (after redirects, ending with ``/``): links
    are kept only when they name a direct child of it, so parent links, sort links
    (``?C=N;O=D``), anchors, ``mailto:``, other hosts and paths outside the directory are skipped.
    """

    def __init__(self, base_url: str, http_parse: HttpParse | None = None):
        if not base_url.endswith("/"):
            base_url += "/"
        self._base = base_url
        split = urlsplit(base_url)
        self._origin = (split.scheme.lower(), split.netloc.lower())
        self._base_path = split.path or "/"
        self._seen: set[str] = set()
        self._regexps: tuple[re.Pattern[str], re.Pattern[str]] | None = None
        parse = http_parse or HttpParse()
        self._parse = parse
        if parse.dir_line is not None or parse.file_line is not None:
            try:
                self._regexps = (re.compile(parse.dir_line or BIOMAJ_DIR_LINE),
                                 re.compile(parse.file_line or BIOMAJ_FILE_LINE))
            except re.error as exc:
                raise FatalError(f"http.parse.*.line is not a valid regular expression: {exc}") from None
        # auto mode: the link whose row is being read
        self._pending: tuple[str, bool] | None = None
        self._tail: list[str] = []
        self._tail_len = 0
        self._in_row = False

    def feed(self, line: str) -> list[IndexEntry]:
        """Entries completed by this line (one line of the page, without its newline)."""
        if self._regexps is not None:
            return self._feed_regexps(line)
        out: list[IndexEntry] = []
        pos = 0
        for event in _EVENT.finditer(line):
            if self._pending is not None:
                self._add_tail(line[pos:event.start()])
            pos = event.end()
            if event["row"] is not None:
                self._flush(out)
                self._in_row = not event["row"]
                continue
            href = event["dq"] if event["dq"] is not None else event["sq"] if event["sq"] is not None else event["bare"]
            child = self.child_name(href)
            if self._pending is not None and child is not None and child[0] == self._pending[0]:
                self._tail, self._tail_len = [], 0  # same link twice (icon + name): the last one has the row
            else:
                self._flush(out)
            self._pending = child
        if self._pending is not None:
            self._add_tail(line[pos:])
            if not self._in_row or self._tail_len > _MAX_TAIL:
                self._flush(out)
        return out

    def close(self) -> list[IndexEntry]:
        """Entries still pending at the end of the page."""
        out: list[IndexEntry] = []
        self._flush(out)
        return out

    def child_name(self, href: str) -> tuple[str, bool] | None:
        """(name, is_dir) when ``href`` names a direct child of the listed directory, else None."""
        if "&" in href:
            href = html.unescape(href)
        href = href.strip()
        if not href or href[0] in "?#":
            return None
        for sep in ("#", "?"):
            href = href.partition(sep)[0]
        if ".." in href and ".." in unquote(href).split("/"):
            if unquote(href).rstrip("/") != "..":  # not the parent directory link every index has
                log.warning("index of %s: refused unsafe name %r (it would leave the directory)", self._base, href)
            return None  # a hostile page; URL resolution would clamp '../x' at the root into 'x'
        if _SCHEME.match(href) or href.startswith(("/", ".")) or "/" in href[:-1]:
            url = urljoin(self._base, href)
            split = urlsplit(url)
            if (split.scheme.lower(), split.netloc.lower()) != self._origin:
                return None
            if split.path.startswith(self._base_path):
                href = split.path[len(self._base_path):]
            else:  # the same path written with other escapes ("~" or "%7E")?
                plain, base = unquote(split.path), unquote(self._base_path)
                if not plain.startswith(base):
                    return None
                href = quote(plain[len(base):], safe="/")
        is_dir = href.endswith("/")
        raw = href[:-1] if is_dir else href
        if not raw or "/" in raw:
            return None
        name = unquote(raw)
        if name in (".", "..") or "/" in name or "\x00" in name:
            log.debug("index link %r skipped: not a plain name", href)
            return None
        return name, is_dir

    # auto mode

    def _add_tail(self, text: str) -> None:
        if text and self._tail_len <= _MAX_TAIL:
            self._tail.append(text)
            self._tail_len += len(text)

    def _flush(self, out: list[IndexEntry]) -> None:
        pending, tail = self._pending, "".join(self._tail)
        self._pending, self._tail, self._tail_len = None, [], 0
        if pending is None:
            return
        name, is_dir = pending
        if name in self._seen:
            return
        self._seen.add(name)
        closed = _CLOSE_A.search(tail)
        if closed:
            tail = tail[closed.end():]
        text = _TAG.sub(" ", tail)
        if "&" in text:
            text = html.unescape(text)
        mtime, size, date_text, size_for_hash = None, None, "", 0
        for layout in _DATES:
            found = layout.search(text)
            if found:
                mtime, date_text = _auto_date(found), found.group(0)
                sized = _SIZE.match(text, found.end())
                if sized and sized["num"] is not None:
                    size, size_for_hash = parse_size(sized.group(0))
                break
        digest = None if is_dir or not date_text else entry_hash(name, date_text, size_for_hash)
        hint = size_for_hash if size is None and size_for_hash and not is_dir else None
        out.append(IndexEntry(name, is_dir, None if is_dir else size, mtime, digest, hint))

    # regexp mode

    def _feed_regexps(self, line: str) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        dir_re, file_re = self._regexps
        p = self._parse
        for found in dir_re.finditer(line):
            child = self._group(found, p.dir_name)
            if child is None:
                continue
            date = self._group_text(found, p.dir_date)
            mtime = _biomaj_date(date, None) if date else None
            out.append(IndexEntry(child[0], True, None, mtime, None))
        for found in file_re.finditer(line):
            child = self._group(found, p.file_name)
            if child is None:
                continue
            size, size_for_hash = parse_size(self._group_text(found, p.file_size) or "")
            date = self._group_text(found, p.file_date)
            mtime = _biomaj_date(date, p.file_date_format) if date else None
            digest = entry_hash(child[0], date, size_for_hash) if date else None
            out.append(IndexEntry(child[0], False, size, mtime, digest, size_for_hash if size is None and size_for_hash else None))
        return out

    def _group(self, found: re.Match[str], number: int) -> tuple[str, bool] | None:
        text = self._group_text(found, number)
        return self.child_name(text.rstrip("/")) if text else None

    @staticmethod
    def _group_text(found: re.Match[str], number: int) -> str | None:
        if number < 0:
            return None
        try:
            return found.group(number)
        except IndexError:
            raise FatalError(f"http.group.*: the regexp has no group {number}") from None


# Lines -------------------------------------------------------------------------------------------


class LineSplitter:
    """Bytes of a page in, decoded lines out; a page without newlines is cut before links so that
    no line grows without bound."""

    MAX_LINE = 64 * 1024
    _CUT = re.compile(r"<(?:a\s|tr\b|li\b|br\b)", re.IGNORECASE)

    def __init__(self, encoding: str = "utf-8"):
        try:
            self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        except LookupError:
            self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._rest = ""

    def feed(self, data: bytes, final: bool = False) -> list[str]:
        """Complete lines of ``data`` (all of the rest when ``final``), without line ends."""
        lines = (self._rest + self._decoder.decode(data, final)).split("\n")
        last = lines.pop()
        if final:
            if last:
                lines.append(last)
            last = ""
        elif len(last) > self.MAX_LINE:
            cuts = [m.start() for m in self._CUT.finditer(last)]
            cut = cuts[-1] if cuts and cuts[-1] > 0 else len(last) - 1024
            lines.append(last[:cut])
            last = last[cut:]
        self._rest = last
        return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_index(text: str | Iterable[str], base_url: str, http_parse: HttpParse | None = None) -> Iterator[IndexEntry]:
    """Entries of a whole page (a string or its lines); for tests and small pages."""
    parser = IndexParser(base_url, http_parse)
    lines = text.split("\n") if isinstance(text, str) else text
    for line in lines:
        yield from parser.feed(line)
    yield from parser.close()
