"""The ``##BIOMAJ#`` lines a process prints on stdout to declare the files it produced.

A process tells BioMAJ what it made with lines of the form::

    ##BIOMAJ#<format>#<types, comma separated>#<tags k:v,k:v>#<files, comma separated>
    ##BIOMAJ#blast#nucleic#organism:hg19,chr:chr1#blast/chr1/chr1db

(BioMAJ 3 ``MetaProcess._get_metata_from_outputfile``). The processor only parses them
(:func:`parse_lines`); the manager, which knows the process's ``.format``, ``.types``, ``.tags``
and ``.files`` properties, completes them with :func:`apply_defaults` into the per-format shape
stored in the session: ``{format: [{"tags": {..}, "types": [..], "files": [..]}]}``.

Deliberate differences with BioMAJ 3, which crashes or stores junk on bad lines: missing
trailing fields are empty, a tag without ``:`` is ignored (BioMAJ 3 raises IndexError), a tag
value may contain ``:`` (``url:http://x`` keeps ``http://x``), empty items of a list are
dropped (BioMAJ 3 keeps ``[""]``), and an entry whose format is still empty after the defaults
is dropped instead of being stored under the format ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["PREFIX", "apply_defaults", "parse_line", "parse_lines", "parse_tags"]

PREFIX = "##BIOMAJ#"


def parse_tags(text: str | None) -> dict[str, str]:
    """``"organism:hg19,chr:chr1"`` -> ``{"organism": "hg19", "chr": "chr1"}``.

    Items without ``:`` or with an empty key are ignored; the value is everything after the
    first ``:``.
    """
    tags: dict[str, str] = {}
    for item in (text or "").split(","):
        key, colon, value = item.partition(":")
        key = key.strip()
        if colon and key:
            tags[key] = value.strip()
    return tags


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_line(line: str) -> dict[str, Any] | None:
    """One ``##BIOMAJ#`` line as ``{"format", "types", "tags", "files"}``, or None for another
    line. Empty fields stay empty ("" / [] / {}): the process's defaults come later."""
    line = line.strip()
    if not line.startswith(PREFIX):
        return None
    fields = line[len(PREFIX):].split("#", 3)  # the files field keeps any further '#'
    fields += [""] * (4 - len(fields))
    fmt, types, tags, files = fields
    return {"format": fmt.strip(), "types": _split_list(types), "tags": parse_tags(tags), "files": _split_list(files)}


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Every ``##BIOMAJ#`` line of ``text`` (a process's stdout), parsed, in order."""
    entries = []
    for line in text.splitlines():
        entry = parse_line(line)
        if entry is not None:
            entries.append(entry)
    return entries


def apply_defaults(
    entries: Iterable[Mapping[str, Any]],
    *,
    format: str | None,
    types: list[str],
    tags: Mapping[str, str],
    files: list[str],
) -> dict[str, list[dict[str, Any]]]:
    """Complete parsed entries with a process's properties, grouped by format (BioMAJ 3).

    ``format``, ``types``, ``tags`` and ``files`` are the process's ``.format``, ``.types``
    (split), ``.tags`` (see :func:`parse_tags`) and ``.files`` (split). An empty format, types or
    tags field takes the property; files never default. When the process has both ``.files`` and
    ``.format``, whatever its lines said for that format is replaced by one entry made of the
    properties.
    """
    result: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        fmt = entry.get("format") or format or ""
        if not fmt:
            continue
        result.setdefault(fmt, []).append({
            "tags": dict(entry.get("tags") or tags),
            "types": list(entry.get("types") or types),
            "files": list(entry.get("files") or []),
        })
    if files and format:
        result[format] = [{"tags": dict(tags), "types": list(types), "files": list(files)}]
    return result
