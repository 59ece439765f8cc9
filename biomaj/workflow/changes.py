"""The change report of an update, computed (its shape: :mod:`biomaj.change_report`).

The new release's files (the listing's, with the providers' checksums) against those of the
previous production release (its session's file list, ``Bank.read_file_list``): a name only the
new list has is added, a name only the old one has is removed, a name in both is unchanged when
the project's one rule (``download/same_file.py``, through ``fetching.same_as_old``, the test the
download task reuses a file with) says the old file is the new one, else changed.
The download task makes the report before it fetches anything (so a failed update has it too),
and ``biomaj ctl update --dry-run`` makes the same one without downloading (docs/changes.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from biomaj.change_report import ChangeTally

from .bank import Bank
from .fetching import Digests, same_as_old
from .remote_files import Wanted


def previous_release(production: Sequence[dict], session_id: Any) -> dict | None:
    """The production entry a session's release is compared with: the last one that is not the
    session's own (``--from-task download`` runs again a release already in production)."""
    for entry in reversed(production):
        if entry.get("session") != session_id:
            return entry
    return None


def _name(record: dict) -> str:
    return record.get("save_as") or record["name"]


def compare(bank: Bank, wanted: Sequence[Wanted], previous: dict | None, *, dry_run: bool = False,
            digests: Digests | None = None) -> dict[str, Any]:
    """The change report of ``wanted`` (the new release's files) against the ``previous``
    production entry (None: the bank's first release, every file is added), by the rule the
    download task reuses files with (:func:`~biomaj.workflow.fetching.same_as_old`; ``digests``:
    the run's, shared with that task). When the previous release's file list is gone (a bank
    migrated without its cache), every file counts as added and the report says
    ``previous_files_unknown``."""
    tally = ChangeTally()
    old_files = bank.read_file_list(previous["session"]) if previous is not None else None
    known = {_name(record): record for record in old_files or []}
    flat = Bank.production_dir(previous) / "flat" if previous is not None else None
    for item in wanted:
        old = known.pop(item.save_as, None)
        if old is None:
            kind = "added"
        elif same_as_old(old, flat / item.save_as, item, digests):
            kind = "unchanged"
        else:
            kind = "changed"
        tally.add(kind, item.save_as, item.entry.size)
    for name, old in known.items():
        tally.add("removed", name, old.get("size"))
    report = tally.report(previous.get("release") if previous is not None else None, dry_run=dry_run)
    if previous is not None and old_files is None:
        report["previous_files_unknown"] = True
    return report


def transfer(to_fetch: Sequence[Wanted], reused: Sequence[str], present: Sequence[str], wanted: Sequence[Wanted],
             ) -> dict[str, dict[str, int]]:
    """What an update would move (the dry run's answer), from the download task's plan: files
    (count, bytes) to ``fetch`` from the server, to ``reuse`` from the previous release (a local
    hard link or copy) and ``present`` in the offline directory already. A file of unknown size
    counts its listing's rough size (an index's ``64K``), or 0."""
    sizes = {w.save_as: w.entry.size if w.entry.size is not None else (w.entry.size_hint or 0) for w in wanted}

    def total(names: Sequence[str]) -> dict[str, int]:
        return {"count": len(names), "bytes": sum(sizes.get(name, 0) for name in names)}

    return {"fetch": total([w.save_as for w in to_fetch]), "reuse": total(reused), "present": total(present)}
