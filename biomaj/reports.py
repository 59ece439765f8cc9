"""Tables for the read commands: status, status-ko, show, search, stats, history, whatsup.

Pure functions: they take stored documents (laid out as BioMAJ 3's MongoDB ``banks`` and
``history`` collections, see :mod:`biomaj.storage.base`) and return :class:`Table` values. No
store access and no I/O here, so ``biomaj ctl`` and the web API print and serve the same data:
the CLI calls :func:`render`, ``--json`` and the API use :meth:`Table.records`.

Headers and columns are those BioMAJ 3 prints (biomaj-daemon ``daemon/utils.py``), with three
deliberate fixes, each noted where it applies:

* ``status_all`` shows the **local** release, as the detailed view does (BioMAJ 3 shows the
  remote release in the list and the local one in the detail, quirk 15);
* ``status_bank`` builds the Directory column from the production entry's own stored
  ``data_dir``/``dir_version``/``prod_dir`` (BioMAJ 3 reads wrong keys and always shows the
  current configuration, quirk 4);
* ``show`` lists every format of a release (BioMAJ 3 shows only the last one iterated).

Visibility is BioMAJ 3's rule: a bank is seen by everyone when its visibility is ``public``,
otherwise only by its owner and the admins (:class:`Viewer`). Every function that takes a viewer
applies it (BioMAJ 3 applies it to status only; show, search and stats follow the same rule here,
so the web API never lists a private bank to a stranger).
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from biomaj import change_report
from biomaj.errors import BiomajError
from biomaj.sizes import human_size  # re-exported: the reports' sizes

__all__ = [
    "AccessForbidden",
    "Table",
    "UnknownRelease",
    "Viewer",
    "change_records",
    "changes",
    "format_time",
    "history",
    "human_size",
    "render",
    "search",
    "show",
    "split_list",
    "stats",
    "stats_records",
    "status_all",
    "status_bank",
    "status_tables",
    "buckets",
    "status_ko",
    "whatsup",
]

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
NOT_AVAILABLE = "N/A"


class AccessForbidden(BiomajError):
    """The bank is private and the viewer is neither its owner nor an admin."""

    exit_code = 1


class UnknownRelease(BiomajError):
    """No production entry of the bank has the requested release (or production directory)."""

    exit_code = 2


# ---- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Headers and rows, optionally titled. Lists given become tuples; every row has one cell per header."""

    headers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    title: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", tuple(self.headers))
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"row {row!r} has {len(row)} cells for {len(self.headers)} headers")

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by header (for ``--json`` and the web API)."""
        return [dict(zip(self.headers, row, strict=True)) for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """``{"title", "headers", "rows"}``: the whole table as JSON, for a client that renders it
        (the web API's ``format=table``); :meth:`from_dict` reads it back."""
        return {"title": self.title, "headers": list(self.headers), "rows": [list(row) for row in self.rows]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Table:
        """The table :meth:`to_dict` gave; ValueError when a row does not fit the headers."""
        return cls(data["headers"], data["rows"], data.get("title"))


@dataclass(frozen=True)
class Viewer:
    """Who asks: a user name (None when anonymous) and the admin names of the service."""

    user: str | None
    admins: frozenset[str] = frozenset()

    def is_owner(self, bank: dict[str, Any]) -> bool:
        """BioMAJ 3's ``Bank.is_owner``: the user is an admin or the bank's owner."""
        if not self.user:
            return False
        return self.user in self.admins or self.user == _properties(bank).get("owner")

    def can_see(self, bank: dict[str, Any]) -> bool:
        """Public banks are seen by everyone, private ones (or without a visibility) by owners."""
        return _properties(bank).get("visibility") == "public" or self.is_owner(bank)


def split_list(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the comma-separated formats and types of a search."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def format_time(epoch: float | None) -> str:
    """Epoch seconds as ``%Y-%m-%d %H:%M:%S`` in local time; ``N/A`` when missing."""
    if epoch is None or epoch == "":
        return NOT_AVAILABLE
    try:
        return time.strftime(TIME_FORMAT, time.localtime(float(epoch)))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(epoch)


# ---- document helpers --------------------------------------------------------------------------


def _properties(bank: dict[str, Any]) -> dict[str, Any]:
    return bank.get("properties") or {}


def _joined(values: Any) -> str:
    """A stored list as ``a,b``; a plain string is kept (older documents hold ``db.type`` as is)."""
    if not values:
        return ""
    if isinstance(values, str):
        return values
    return ",".join(str(v) for v in values)


def _bank_types(bank: dict[str, Any]) -> list[str]:
    types = _properties(bank).get("type") or []
    return [t for t in types.split(",") if t] if isinstance(types, str) else list(types)


def _productions(bank: dict[str, Any]) -> list[dict[str, Any]]:
    return list(bank.get("production") or [])


def _is_current(bank: dict[str, Any], prod: dict[str, Any]) -> bool:
    current = bank.get("current")
    return current is not None and prod.get("session") == current


def _published(bank: dict[str, Any]) -> dict[str, Any] | None:
    """The production entry of the published session, or None."""
    return next((prod for prod in _productions(bank) if _is_current(bank, prod)), None)


def _published_release(bank: dict[str, Any]) -> str:
    prod = _published(bank)
    return (prod.get("release") if prod else None) or NOT_AVAILABLE


def _session(bank: dict[str, Any], session_id: Any) -> dict[str, Any] | None:
    if session_id is None:
        return None
    return next((s for s in bank.get("sessions") or [] if s.get("id") == session_id), None)


def _visible(banks: Iterable[dict[str, Any]], viewer: Viewer) -> list[dict[str, Any]]:
    return sorted((b for b in banks if viewer.can_see(b)), key=lambda b: b.get("name") or "")


def _check_access(bank: dict[str, Any], viewer: Viewer) -> None:
    if not viewer.can_see(bank):
        raise AccessForbidden(f"Access forbidden: bank {bank.get('name')} is private and you are not its owner")


def _yes_no(flag: Any) -> str:
    return "yes" if flag else "no"


def _release_key(release: Any) -> tuple[tuple[int, int, str], ...]:
    """Natural order: ``9`` < ``10`` < ``100`` < ``100__1``; dates sort as their digits."""
    parts = re.findall(r"\d+|\D+", str(release or ""))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


# ---- status ------------------------------------------------------------------------------------

STATUS_HEADERS = ("Name", "Type(s)", "Release", "Visibility", "Last update")
STATUS_KO_HEADERS = ("Name", "Type(s)", "Release", "Visibility", "Last run")


def _status_row(bank: dict[str, Any]) -> tuple[Any, ...]:
    return (
        bank.get("name"),
        _joined(_bank_types(bank)),
        _published_release(bank),
        _properties(bank).get("visibility") or NOT_AVAILABLE,
        format_time(bank.get("last_update_session")),
    )


def status_all(banks: list[dict[str, Any]], viewer: Viewer) -> Table:
    """``biomaj ctl status``: one row per bank the viewer can see, sorted by name.

    Works on summaries (no sessions needed). Release is the **local** release of the published
    production (``100__1``), or ``N/A``. BioMAJ 3 shows the remote release here but the local
    one in the detailed view (quirk 15); we show the local release in both, as it names the
    production directory.
    """
    return Table(STATUS_HEADERS, [_status_row(bank) for bank in _visible(banks, viewer)])


def status_bank(bank: dict[str, Any], viewer: Viewer) -> list[Table]:
    """``biomaj ctl status BANK``: the bank, its productions and, if any, its pending releases.

    Raises :class:`AccessForbidden` when the viewer cannot see the bank. The Directory column
    is ``<data_dir>/<dir_version>/<prod_dir>`` from the production entry itself (BioMAJ 3's
    quirk 4 always showed the current configuration's directories).
    """
    _check_access(bank, viewer)
    summary = Table(
        ("Name", "Type(s)", "Last update status", "Published release"),
        [(bank.get("name"), _joined(_bank_types(bank)), format_time(bank.get("last_update_session")),
          _published_release(bank))],
    )
    productions = Table(
        ("Session", "Remote release", "Release", "Directory", "Freeze", "Format(s)", "Log file"),
        [
            (format_time(prod.get("session")), prod.get("remoterelease"), prod.get("release"),
             _production_dir(prod), _yes_no(prod.get("freeze")), _joined(prod.get("formats")),
             prod.get("log_file"))
            for prod in _productions(bank)
        ],
    )
    tables = [summary, productions]
    pending = bank.get("pending") or []
    if pending:
        tables.append(
            Table(("Pending release", "Last run"), [(p.get("release"), format_time(p.get("id"))) for p in pending])
        )
    return tables


BUCKETS_TITLE = "Published to buckets"
BUCKETS_HEADERS = ("Release", "Bucket", "Complete", "Current", "Uploaded")


def buckets(bank: dict[str, Any], viewer: Viewer) -> Table | None:
    """Where the releases are published besides the local tree (``publish.s3``): one row per
    release and bucket, from the production entries' ``buckets`` records; None when there is none.
    Current: the bucket's marker names the release."""
    _check_access(bank, viewer)
    rows = [(prod.get("release"), record.get("url"), _yes_no(record.get("complete")), _yes_no(record.get("current")),
             format_time(record.get("at")))
            for prod in _productions(bank) for record in prod.get("buckets") or []]
    return Table(BUCKETS_HEADERS, rows, title=BUCKETS_TITLE) if rows else None


def status_tables(bank: dict[str, Any], viewer: Viewer) -> list[Table]:
    """``ctl status BANK``'s tables: :func:`status_bank`'s, then :func:`buckets`' when there is one."""
    published = buckets(bank, viewer)
    return status_bank(bank, viewer) + ([published] if published is not None else [])


def _production_dir(prod: dict[str, Any]) -> str:
    parts = [str(prod[key]) for key in ("data_dir", "dir_version", "prod_dir") if prod.get(key)]
    return posixpath.join(*parts) if parts else NOT_AVAILABLE


def status_ko(banks_full: list[dict[str, Any]], viewer: Viewer) -> Table:
    """``biomaj ctl status-ko``: visible banks whose last update did not finish.

    Takes full documents (sessions needed): the session named by ``last_update_session`` must
    exist, not be over (``status.over`` is not True) and have a ``workflow_status`` that is
    False or missing. Last run is the date of that session.
    """
    rows = []
    for bank in _visible(banks_full, viewer):
        session = _session(bank, bank.get("last_update_session"))
        if session is None:
            continue
        over = (session.get("status") or {}).get("over") is True
        if not over and not session.get("workflow_status"):
            rows.append(_status_row(bank))
    return Table(STATUS_KO_HEADERS, rows)


# ---- show and search ---------------------------------------------------------------------------

SHOW_HEADERS = ("Name", "Release", "Format(s)", "Type(s)", "Tag(s)", "File(s)")
SEARCH_HEADERS = ("Name", "Release", "Format(s)", "Type(s)", "Published")


def show(bank: dict[str, Any], viewer: Viewer, release: str | None = None) -> Table:
    """``biomaj ctl show BANK [--release R]``: formats, types, tags and files of each production.

    Takes the full document (sessions needed). ``release`` selects the production whose release
    or production directory equals it (:class:`UnknownRelease` if none does). The published
    release is suffixed `` (current)``. From the production's session ``formats``: every format
    (BioMAJ 3 shows only the last one), the sorted union of types, the sorted unique ``key:value``
    tags and every file. A production whose session is gone shows its own formats and types.
    """
    _check_access(bank, viewer)
    prods = _selected_productions(bank, release)
    rows = []
    for prod in prods:
        label = str(prod.get("release"))
        if _is_current(bank, prod):
            label += " (current)"
        rows.append((bank.get("name"), label, *_show_columns(bank, prod)))
    return Table(SHOW_HEADERS, rows)


def _selected_productions(bank: dict[str, Any], release: str | None) -> list[dict[str, Any]]:
    """Every production, or the one whose release or directory is ``release`` (UnknownRelease)."""
    prods = _productions(bank)
    if release is None:
        return prods
    prods = [p for p in prods if release in (p.get("release"), p.get("prod_dir"))]
    if not prods:
        known = ", ".join(str(p.get("release")) for p in _productions(bank)) or "none"
        raise UnknownRelease(f"bank {bank.get('name')} has no release {release} (releases: {known})")
    return prods


def _show_columns(bank: dict[str, Any], prod: dict[str, Any]) -> tuple[str, str, str, str]:
    session = _session(bank, prod.get("session"))
    if session is None:
        return _joined(prod.get("formats")), _joined(prod.get("types")), "", ""
    formats = session.get("formats") or {}
    types: set[str] = set()
    tags: set[str] = set()
    files: list[str] = []
    for entries in formats.values():
        for entry in entries or []:
            types.update(entry.get("types") or [])
            tags.update(f"{key}:{value}" for key, value in (entry.get("tags") or {}).items())
            files.extend(entry.get("files") or [])
    return _joined(formats.keys()), _joined(sorted(types)), _joined(sorted(tags)), _joined(files)


def search(banks: list[dict[str, Any]], viewer: Viewer, formats: Sequence[str], types: Sequence[str]) -> Table:
    """``biomaj ctl search --formats a,b --types x,y``: productions of the visible banks.

    A production matches when it has at least one of ``formats`` and at least one of ``types``,
    a type matching either the production's types or the bank's ``properties.type``; an empty
    list matches everything. Works on summaries. Sorted by bank name, then release descending
    in natural order (``10`` after ``9``; BioMAJ 3 compares the strings).
    """
    wanted_formats = set(formats or [])
    wanted_types = set(types or [])
    rows = []
    for bank in _visible(banks, viewer):
        bank_types = set(_bank_types(bank))
        matched = []
        for prod in _productions(bank):
            prod_formats = set(prod.get("formats") or [])
            prod_types = set(prod.get("types") or [])
            if wanted_formats and not wanted_formats & prod_formats:
                continue
            if wanted_types and not wanted_types & (prod_types | bank_types):
                continue
            matched.append(prod)
        matched.sort(key=lambda p: _release_key(p.get("release")), reverse=True)
        rows.extend(
            (bank.get("name"), prod.get("release"), _joined(prod.get("formats")), _joined(prod.get("types")),
             _yes_no(_is_current(bank, prod)))
            for prod in matched
        )
    return Table(SEARCH_HEADERS, rows)


# ---- change reports ----------------------------------------------------------------------------

CHANGES_TITLE = "Changes against the previous release"
CHANGES_HEADERS = ("Release", "Against", "Added", "Removed", "Changed", "Unchanged")


def change_records(bank: dict[str, Any], viewer: Viewer, release: str | None = None) -> list[dict[str, Any]]:
    """The change report of each production release (``biomaj.change_report``), oldest first,
    then that of the last update when it made no release (failed, or stopped): each the stored
    report with ``release``, ``session`` and ``state`` (``published``, ``production`` or
    ``unfinished``). ``release`` keeps only that release (:class:`UnknownRelease` if none).

    Takes the full document (sessions needed); a release made before change reports existed
    has none and is left out. Raises :class:`AccessForbidden` as the other reports do.
    """
    _check_access(bank, viewer)
    prods = _selected_productions(bank, release)
    records = []
    for prod in prods:
        changes = (_session(bank, prod.get("session")) or {}).get("changes")
        if isinstance(changes, dict):
            state = "published" if _is_current(bank, prod) else "production"
            records.append({**changes, "release": prod.get("release"), "session": prod.get("session"), "state": state})
    last = _session(bank, bank.get("last_update_session"))
    in_production = {p.get("session") for p in _productions(bank)}
    if release is None and last is not None and last.get("id") not in in_production \
            and isinstance(last.get("changes"), dict):
        records.append({**last["changes"], "release": last.get("release"), "session": last.get("id"),
                        "state": "unfinished"})
    return records


def changes(records: list[dict[str, Any]]) -> Table:
    """The change reports of :func:`change_records` as a table: per release, the files added,
    removed, changed and unchanged, each ``count (size)``."""
    rows = []
    for record in records:
        label = str(record.get("release"))
        if record.get("state") in ("published", "unfinished"):
            label += " (current)" if record["state"] == "published" else " (unfinished)"
        rows.append((label, record.get("against") or "none",
                     *(_change_cell(record, kind) for kind in ("added", "removed", "changed", "unchanged"))))
    return Table(CHANGES_HEADERS, rows, title=CHANGES_TITLE)


def _change_cell(record: dict[str, Any], kind: str) -> str:
    count, size = change_report.tally_of(record, kind)
    return f"{count} ({human_size(size)})"


# ---- stats, history, whatsup -------------------------------------------------------------------


def stats_records(banks: list[dict[str, Any]], viewer: Viewer) -> list[dict[str, Any]]:
    """The rows of :func:`stats` with raw byte counts: ``{bank, release, size}``.

    Per visible bank (by name): an ``All`` total, then each production in stored order. A
    missing size counts as 0.
    """
    records = []
    for bank in _visible(banks, viewer):
        releases = [{"bank": bank.get("name"), "release": prod.get("release"), "size": int(prod.get("size") or 0)}
                    for prod in _productions(bank)]
        records.append({"bank": bank.get("name"), "release": "All", "size": sum(r["size"] for r in releases)})
        records.extend(releases)
    return records


def stats(banks: list[dict[str, Any]], viewer: Viewer) -> Table:
    """``biomaj ctl stats``: disk usage per bank and release, sizes human-readable."""
    return Table(
        ("Bank", "Release", "Size"),
        [(r["bank"], r["release"], human_size(r["size"])) for r in stats_records(banks, viewer)],
    )


def history(entries: list[dict[str, Any]]) -> Table:
    """``biomaj ctl history``: history documents in the given order, dates formatted.

    Updated and Error keep their stored values (booleans, or None for Updated).
    """
    return Table(
        ("Bank", "Action", "Start", "End", "Updated", "Error"),
        [
            (e.get("bank"), e.get("action"), format_time(e.get("start")), format_time(e.get("end")),
             e.get("updated"), e.get("error"))
            for e in entries
        ],
    )


def whatsup(locks: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> Table:
    """``biomaj ctl whatsup``: running locks, then queued jobs.

    A lock ``{bank, owner, ...}`` is ``system | <bank> | running`` (the caller passes the
    maintenance lock as bank ``biomaj``, as BioMAJ 3 shows ``biomaj.lock``); a job
    ``{bank, kind}`` is ``queue | <bank> | pending (<kind>)``.
    """
    rows = [("system", lock.get("bank"), "running") for lock in locks]
    rows += [
        ("queue", job.get("bank"), f"pending ({job['kind']})" if job.get("kind") else "pending") for job in jobs
    ]
    return Table(("Type", "Bank", "Status"), rows)


# ---- rendering ---------------------------------------------------------------------------------


def render(table: Table, style: str = "psql") -> str:
    """The table as text, drawn like ``tabulate``'s ``psql`` (BioMAJ 3's look) or ``grid``.

    As tabulate does: each column is at least its header's width plus 2, numeric columns (only
    int/float values, not bool) are right-aligned, others left-aligned; None prints empty. The
    title, if any, is on its own line above. No trailing newline.
    """
    if style not in ("psql", "grid"):
        raise ValueError(f"unknown table style {style!r}: expected 'psql' or 'grid'")
    headers = [str(h) for h in table.headers]
    cells = [["" if c is None else str(c) for c in row] for row in table.rows]
    numeric = [
        bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        for values in ([row[i] for row in table.rows if row[i] is not None] for i in range(len(headers)))
    ]
    widths = [max([len(h) + 2] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def rule(edge: str, fill: str) -> str:
        return edge + "+".join(fill * (w + 2) for w in widths) + edge

    def line(values: list[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))
        return "| " + " | ".join(padded) + " |"

    border = rule("+", "-")
    out = [table.title] if table.title else []
    if style == "psql":
        out += [border, line(headers), rule("|", "-"), *(line(row) for row in cells), border]
    else:
        out += [border, line(headers), rule("+", "=")]
        for row in cells:
            out += [line(row), border]
        if not cells:
            out.append(border)
    return "\n".join(out)
