"""The change report's shape and text (biomaj/change_report.py) and the reports built from stored
documents (biomaj/reports.py ``change_records`` and ``changes``)."""

from __future__ import annotations

import pytest

from biomaj import change_report, reports
from biomaj.change_report import ChangeTally


def report(added=(), removed=(), changed=(), unchanged=(), against="1") -> dict:
    tally = ChangeTally()
    for kind, files in (("added", added), ("removed", removed), ("changed", changed), ("unchanged", unchanged)):
        for name, size in files:
            tally.add(kind, name, size)
    return tally.report(against)


def test_the_tally_counts_bytes_and_keeps_sorted_names_of_three_kinds():
    changes = report(added=[("z", 5), ("a", None)], removed=[("r", 7)], unchanged=[("u", 9)])
    assert changes == {"added": {"count": 2, "bytes": 5}, "removed": {"count": 1, "bytes": 7},
                       "changed": {"count": 0, "bytes": 0}, "unchanged": {"count": 1, "bytes": 9},
                       "against": "1", "dry_run": False,
                       "files": {"added": ["a", "z"], "removed": ["r"], "changed": []}}


def test_at_most_max_names_per_kind_but_every_file_counted():
    changes = report(added=[(f"f{i:05d}", 1) for i in range(change_report.MAX_NAMES + 5)])
    assert changes["added"]["count"] == change_report.MAX_NAMES + 5
    assert len(changes["files"]["added"]) == change_report.MAX_NAMES
    more = change_report.MAX_NAMES + 3
    assert change_report.file_lines(changes, limit=2) == [f"added: f00000, f00001 (and {more} more)"]


def test_summary_and_transfer_lines():
    changes = report(added=[("e", 50)], removed=[("d", 40)], changed=[("b", 3 * 1024)])
    assert change_report.summary(changes) == (
        "1 added (50 B), 1 removed (40 B), 1 changed (3.0 KB), 0 unchanged (0 B) against release 1")
    assert change_report.summary(report(against=None)).endswith("(first release of the bank)")
    assert change_report.summary({}) == (
        "0 added (0 B), 0 removed (0 B), 0 changed (0 B), 0 unchanged (0 B) (first release of the bank)")
    transfer = {"fetch": {"count": 1, "bytes": 10}, "reuse": {"count": 2, "bytes": 0}}
    assert change_report.transfer_summary(transfer) == (
        "would download 1 file (10 B) from the server, reuse 2 files (0 B) of the previous release, "
        "keep 0 files (0 B) already in the offline directory")


def bank(**fields) -> dict:
    doc = {"name": "alu", "properties": {"visibility": "private", "owner": "alice"}, "current": 2.0,
           "production": [{"release": "1", "session": 1.0, "prod_dir": "alu_1"},
                          {"release": "2", "session": 2.0, "prod_dir": "alu_2"}],
           "sessions": [{"id": 0.5, "release": "0", "changes": report(against=None)},  # a release removed since
                        {"id": 1.0, "release": "1"},  # made before change reports existed
                        {"id": 2.0, "release": "2", "changes": report(added=[("e", 5)])},
                        {"id": 3.0, "release": "3", "changes": report(changed=[("b", 1)], against="2")}],
           "last_update_session": 3.0}
    doc.update(fields)
    return doc


OWNER = reports.Viewer("alice")


def test_change_records_of_the_productions_then_of_an_unfinished_last_update():
    records = reports.change_records(bank(), OWNER)
    assert [(r["release"], r["session"], r["state"], r["against"]) for r in records] == [
        ("2", 2.0, "published", "1"), ("3", 3.0, "unfinished", "2")]
    assert reports.change_records(bank(last_update_session=2.0), OWNER)[-1]["release"] == "2"
    assert [r["release"] for r in reports.change_records(bank(), OWNER, "alu_2")] == ["2"]
    assert reports.change_records(bank(), OWNER, "1") == []  # no report for that release
    with pytest.raises(reports.UnknownRelease, match="has no release 9"):
        reports.change_records(bank(), OWNER, "9")
    with pytest.raises(reports.AccessForbidden):
        reports.change_records(bank(), reports.Viewer(None))


def test_the_changes_table():
    table = reports.changes(reports.change_records(bank(), OWNER))
    assert table.title == "Changes against the previous release"
    assert table.rows == (("2 (current)", "1", "1 (5 B)", "0 (0 B)", "0 (0 B)", "0 (0 B)"),
                          ("3 (unfinished)", "2", "0 (0 B)", "0 (0 B)", "1 (1 B)", "0 (0 B)"))
    first = reports.changes([{**report(against=None), "release": "1", "state": "production"}])
    assert first.rows[0][:2] == ("1", "none")
