"""The change report of an update: what its release adds, removes and changes against the previous
production release, as the session keeps it in ``session["changes"]`` (docs/changes.md)::

    {"added": {"count": 1, "bytes": 10}, "removed": {...}, "changed": {...}, "unchanged": {...},
     "against": "1",          # the previous production release, None for a bank's first one
     "dry_run": False,        # made by `biomaj ctl update --dry-run`
     "files": {"added": [...], "removed": [...], "changed": [...]}}   # names, sorted, at most 1000 each

The workflow fills it (``workflow/changes.py``, which decides what "changed" means); the reports,
the web API, the UI, the mail and the webhooks read it. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from biomaj.sizes import human_size

__all__ = ["KINDS", "LISTED", "MAX_NAMES", "ChangeTally", "file_lines", "summary", "tally_of", "transfer_summary"]

KINDS = ("added", "removed", "changed", "unchanged")
LISTED = ("added", "removed", "changed")  # the kinds whose file names the report keeps
MAX_NAMES = 1000  # names kept per kind: a session document stays small whatever the bank


class ChangeTally:
    """Files counted by kind while two file lists are compared; :meth:`report` is the dict."""

    def __init__(self) -> None:
        self.count = dict.fromkeys(KINDS, 0)
        self.bytes = dict.fromkeys(KINDS, 0)
        self.names: dict[str, list[str]] = {kind: [] for kind in LISTED}

    def add(self, kind: str, name: str, size: int | None) -> None:
        """One file of ``kind``; a size the listing does not give counts 0 bytes."""
        self.count[kind] += 1
        self.bytes[kind] += size or 0
        if kind in self.names:
            self.names[kind].append(name)

    def report(self, against: str | None, *, dry_run: bool = False) -> dict[str, Any]:
        return {
            **{kind: {"count": self.count[kind], "bytes": self.bytes[kind]} for kind in KINDS},
            "against": against,
            "dry_run": dry_run,
            "files": {kind: sorted(self.names[kind])[:MAX_NAMES] for kind in LISTED},
        }


def tally_of(changes: Mapping[str, Any], kind: str) -> tuple[int, int]:
    """(count, bytes) of one kind; (0, 0) where a stored report lacks it."""
    part = changes.get(kind)
    if not isinstance(part, Mapping):
        return 0, 0
    return int(part.get("count") or 0), int(part.get("bytes") or 0)


def summary(changes: Mapping[str, Any]) -> str:
    """One line: ``1 added (10 B), 1 removed (5 B), 1 changed (12 B), 9 unchanged (100 B) against
    release 1``; a first release says so."""
    parts = []
    for kind in KINDS:
        count, size = tally_of(changes, kind)
        parts.append(f"{count} {kind} ({human_size(size)})")
    against = changes.get("against")
    return ", ".join(parts) + (f" against release {against}" if against else " (first release of the bank)")


def file_lines(changes: Mapping[str, Any], limit: int = 20) -> list[str]:
    """``added: a, b (and 3 more)``: one line per listed kind that has files, at most ``limit``
    names each."""
    lines = []
    files = changes.get("files") if isinstance(changes.get("files"), Mapping) else {}
    for kind in LISTED:
        names = [str(name) for name in files.get(kind) or []]
        if not names:
            continue
        count = max(tally_of(changes, kind)[0], len(names))
        more = count - min(len(names), limit)
        lines.append(f"{kind}: {', '.join(names[:limit])}" + (f" (and {more} more)" if more else ""))
    return lines


def transfer_summary(transfer: Mapping[str, Any]) -> str:
    """What a dry run found the update would move (its ``transfer``: ``fetch``, ``reuse`` and
    ``present``, each a count and bytes) in one line."""
    fetch, reuse, present = (_files(*tally_of(transfer, key)) for key in ("fetch", "reuse", "present"))
    return (f"would download {fetch} from the server, reuse {reuse} of the previous release, keep {present} "
            "already in the offline directory")


def _files(count: int, size: int) -> str:
    return f"{count} file{'' if count == 1 else 's'} ({human_size(size)})"
