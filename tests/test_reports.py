"""The read-command tables (biomaj.reports) on hand-built BioMAJ 3 bank documents.

Dates are shown in local time; the tests run with the zone fixed at UTC+2 (``XYZ-2`` in POSIX
TZ syntax, no tz database needed), so 08:00 UTC prints as 10:00.
"""

from __future__ import annotations

import copy
import json
import os
import time
from datetime import UTC, datetime

import pytest

from biomaj.errors import BiomajError
from biomaj.reports import (
    AccessForbidden,
    Table,
    UnknownRelease,
    Viewer,
    format_time,
    history,
    human_size,
    render,
    search,
    show,
    stats,
    stats_records,
    status_all,
    status_bank,
    status_ko,
    whatsup,
)


@pytest.fixture(autouse=True)
def utc_plus_two():
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "XYZ-2"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# Session ids (epoch floats, as BioMAJ 3's time.time()).
ALU_S1 = utc(2024, 1, 10, 8, 0, 0) + 0.25  # release 100; session pruned since
ALU_S2 = utc(2024, 2, 10, 8, 0, 0) + 0.5  # release 100__1, published
ALU_S3 = utc(2024, 3, 10, 8, 0, 0) + 0.75  # release 101, failed in postprocess -> pending
SECRET_T1 = utc(2024, 1, 5, 22, 30, 0)  # release 2024-01-05, published

GIB = 1024**3

ALU_FORMATS = {
    "blast": [{"tags": {"organism": "hg19"}, "types": ["nucleic"], "files": ["blast/chr1db"]}],
    "fasta": [
        {
            "tags": {"organism": "hg19", "source": "ucsc"},
            "types": ["sequence", "nucleic"],
            "files": ["fasta/chr1.fa", "fasta/chr2.fa"],
        }
    ],
}


def alu_bank() -> dict:
    """Public, owned by bob; 100 (frozen, old data.dir, session pruned), 100__1 published, 101 pending."""
    return {
        "name": "alu",
        "current": ALU_S2,
        "sessions": [
            {
                "id": ALU_S2, "action": "update", "status": {"init": True, "download": True, "over": True},
                "workflow_status": True, "update": True, "release": "100__1", "remoterelease": "100",
                "formats": ALU_FORMATS, "last_update_time": ALU_S2 + 60, "log_file": "/log/alu/s2.log",
            },
            {
                "id": ALU_S3, "action": "update",
                "status": {"init": True, "download": True, "postprocess": False, "over": False},
                "workflow_status": False, "update": True, "release": "101", "remoterelease": "101",
                "formats": {}, "last_update_time": ALU_S3 + 60, "log_file": "/log/alu/s3.log",
            },
        ],
        "production": [
            {
                "release": "100", "remoterelease": "100", "session": ALU_S1,
                "formats": ["blast"], "types": ["nucleic"], "size": 1536,
                "data_dir": "/old/db", "dir_version": "genomes/alu", "prod_dir": "alu_100",
                "log_file": "/log/alu/s1.log", "freeze": True,
            },
            {
                "release": "100__1", "remoterelease": "100", "session": ALU_S2,
                "formats": ["blast", "fasta"], "types": ["nucleic", "sequence"], "size": 2 * GIB,
                "data_dir": "/db/", "dir_version": "genomes/alu", "prod_dir": "alu_100__1",
                "log_file": "/log/alu/s2.log", "freeze": False,
            },
        ],
        "pending": [{"release": "101", "id": ALU_S3}],
        "properties": {"visibility": "public", "type": ["nucleic", "genome"], "tags": [], "owner": "bob",
                       "desc": "Alu repeats"},
        "status": {},
        "last_update_session": ALU_S3,
        "last_remove_session": None,
    }


def secret_bank() -> dict:
    """Private, owned by alice; one published release."""
    return {
        "name": "secret",
        "current": SECRET_T1,
        "sessions": [
            {
                "id": SECRET_T1, "action": "update", "status": {"init": True, "over": True},
                "workflow_status": True, "update": True, "release": "2024-01-05", "remoterelease": "2024-01-05",
                "formats": {"fasta": [{"tags": {}, "types": ["protein"], "files": ["secret.fa"]}]},
                "last_update_time": SECRET_T1, "log_file": "/log/secret/t1.log",
            }
        ],
        "production": [
            {
                "release": "2024-01-05", "remoterelease": "2024-01-05", "session": SECRET_T1,
                "formats": ["fasta"], "types": ["protein"], "size": 0,
                "data_dir": "/db", "dir_version": "secret", "prod_dir": "secret_2024-01-05",
                "log_file": "/log/secret/t1.log", "freeze": False,
            }
        ],
        "pending": [],
        "properties": {"visibility": "private", "type": ["protein"], "tags": [], "owner": "alice", "desc": ""},
        "status": {},
        "last_update_session": SECRET_T1,
        "last_remove_session": None,
    }


def new_bank() -> dict:
    """Public, just created: nothing run yet."""
    return {
        "name": "fresh", "current": None, "sessions": [], "production": [], "pending": [],
        "properties": {"visibility": "public", "type": [], "tags": [], "owner": "bob", "desc": ""},
        "status": {}, "last_update_session": None, "last_remove_session": None,
    }


def full_banks() -> list[dict]:
    return [secret_bank(), new_bank(), alu_bank()]  # deliberately not sorted


def summaries() -> list[dict]:
    """What store.list_banks() returns: documents without sessions."""
    return [{k: v for k, v in bank.items() if k != "sessions"} for bank in full_banks()]


ANONYMOUS = Viewer(None)
BOB = Viewer("bob")
ALICE = Viewer("alice")
ADMIN = Viewer("root", frozenset({"root"}))


# ---- helpers -----------------------------------------------------------------------------------


def test_format_time_is_local_time_and_na_when_missing():
    assert format_time(ALU_S2) == "2024-02-10 10:00:00"
    assert format_time(None) == "N/A"


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (1536, "1.5 KB"), (1024**2 - 1, "1.0 MB"),
     (2 * GIB, "2.0 GB"), (5 * 1024**4, "5.0 TB"), (None, "0 B")],
)
def test_human_size(size, text):
    assert human_size(size) == text


def test_table_records_and_tuples():
    table = Table(["Bank", "Size"], [["alu", 3]])
    assert table.headers == ("Bank", "Size")
    assert table.rows == (("alu", 3),)
    assert table.records() == [{"Bank": "alu", "Size": 3}]
    with pytest.raises(ValueError, match="2 headers"):
        Table(["Bank", "Size"], [["alu"]])


def test_table_to_dict_and_back_through_json():
    entries = [{"bank": "alu", "action": "update", "start": ALU_S3, "end": None, "updated": None, "error": True}]
    titled = Table(["Bank", "Size"], [["alu", 3]], "Disk")
    tables = [*status_bank(alu_bank(), ADMIN), history(entries), titled, status_all([], ADMIN)]
    for table in tables:
        data = json.loads(json.dumps(table.to_dict()))
        assert list(data) == ["title", "headers", "rows"]
        assert Table.from_dict(data) == table
        assert render(Table.from_dict(data)) == render(table)
    assert titled.to_dict() == {"title": "Disk", "headers": ["Bank", "Size"], "rows": [["alu", 3]]}
    with pytest.raises(ValueError, match="2 headers"):
        Table.from_dict({"headers": ["Bank", "Size"], "rows": [["alu"]]})


# ---- visibility --------------------------------------------------------------------------------


def test_viewer_rules():
    alu, secret = alu_bank(), secret_bank()
    assert ANONYMOUS.can_see(alu) and not ANONYMOUS.can_see(secret)
    assert not ANONYMOUS.is_owner(alu)
    assert BOB.is_owner(alu) and not BOB.is_owner(secret) and not BOB.can_see(secret)
    assert ALICE.is_owner(secret) and ALICE.can_see(secret) and not ALICE.is_owner(alu)
    assert ADMIN.is_owner(alu) and ADMIN.is_owner(secret) and ADMIN.can_see(secret)
    no_visibility = {"name": "x", "properties": {"owner": "alice"}}
    assert not BOB.can_see(no_visibility) and ALICE.can_see(no_visibility)


@pytest.mark.parametrize(
    ("viewer", "names"),
    [(ANONYMOUS, ["alu", "fresh"]), (BOB, ["alu", "fresh"]), (ALICE, ["alu", "fresh", "secret"]),
     (ADMIN, ["alu", "fresh", "secret"])],
)
def test_private_banks_are_hidden_from_non_owners(viewer, names):
    assert [row[0] for row in status_all(summaries(), viewer).rows] == names
    assert [r["bank"] for r in stats_records(summaries(), viewer) if r["release"] == "All"] == names
    assert sorted({row[0] for row in search(summaries(), viewer, [], []).rows}) == [n for n in names if n != "fresh"]


# ---- status ------------------------------------------------------------------------------------


def test_status_all():
    table = status_all(summaries(), ADMIN)
    assert table.headers == ("Name", "Type(s)", "Release", "Visibility", "Last update")
    assert table.rows == (
        # Quirk 15 fixed: the local release 100__1, not the remote 100.
        ("alu", "nucleic,genome", "100__1", "public", "2024-03-10 10:00:00"),
        ("fresh", "", "N/A", "public", "N/A"),
        ("secret", "protein", "2024-01-05", "private", "2024-01-06 00:30:00"),
    )


def test_status_all_release_is_na_when_current_matches_no_production():
    bank = alu_bank()
    bank["current"] = 12.0
    assert status_all([bank], ANONYMOUS).rows[0][2] == "N/A"


def test_status_bank():
    summary, productions, pending = status_bank(alu_bank(), ANONYMOUS)
    assert summary.headers == ("Name", "Type(s)", "Last update status", "Published release")
    assert summary.rows == (("alu", "nucleic,genome", "2024-03-10 10:00:00", "100__1"),)
    assert productions.headers == (
        "Session", "Remote release", "Release", "Directory", "Freeze", "Format(s)", "Log file",
    )
    assert productions.rows == (
        # Quirk 4 fixed: each entry's own data_dir (the old /old/db for release 100).
        ("2024-01-10 10:00:00", "100", "100", "/old/db/genomes/alu/alu_100", "yes", "blast", "/log/alu/s1.log"),
        ("2024-02-10 10:00:00", "100", "100__1", "/db/genomes/alu/alu_100__1", "no", "blast,fasta",
         "/log/alu/s2.log"),
    )
    assert pending.headers == ("Pending release", "Last run")
    assert pending.rows == (("101", "2024-03-10 10:00:00"),)


def test_status_bank_without_pending_has_two_tables():
    tables = status_bank(secret_bank(), ALICE)
    assert len(tables) == 2
    assert tables[0].rows == (("secret", "protein", "2024-01-06 00:30:00", "2024-01-05"),)


def test_status_bank_of_a_new_bank():
    summary, productions = status_bank(new_bank(), ANONYMOUS)
    assert summary.rows == (("fresh", "", "N/A", "N/A"),)
    assert productions.rows == ()


@pytest.mark.parametrize("viewer", [ANONYMOUS, BOB])
def test_status_bank_of_a_private_bank_is_forbidden(viewer):
    with pytest.raises(AccessForbidden, match="Access forbidden") as caught:
        status_bank(secret_bank(), viewer)
    assert isinstance(caught.value, BiomajError) and caught.value.exit_code == 1


def test_status_ko_lists_unfinished_failed_updates():
    table = status_ko(full_banks(), ADMIN)
    assert table.headers == ("Name", "Type(s)", "Release", "Visibility", "Last run")
    # alu: last update session S3 not over, workflow_status False. secret is over, fresh never ran.
    assert table.rows == (("alu", "nucleic,genome", "100__1", "public", "2024-03-10 10:00:00"),)


def test_status_ko_rules():
    missing = alu_bank()
    del missing["sessions"][1]["workflow_status"]
    over = alu_bank()
    over["sessions"][1]["status"]["over"] = True
    succeeded = alu_bank()
    succeeded["sessions"][1]["workflow_status"] = True
    session_gone = alu_bank()
    del session_gone["sessions"][1]
    assert [row[0] for row in status_ko([missing], ANONYMOUS).rows] == ["alu"]
    assert status_ko([over], ANONYMOUS).rows == ()
    assert status_ko([succeeded], ANONYMOUS).rows == ()
    assert status_ko([session_gone], ANONYMOUS).rows == ()


def test_status_ko_hides_private_banks():
    secret = secret_bank()
    secret["sessions"][0]["status"]["over"] = False
    secret["sessions"][0]["workflow_status"] = False
    assert status_ko([secret], ANONYMOUS).rows == ()
    assert [row[0] for row in status_ko([secret], ALICE).rows] == ["secret"]


# ---- show --------------------------------------------------------------------------------------


def test_show_every_production():
    table = show(alu_bank(), ANONYMOUS)
    assert table.headers == ("Name", "Release", "Format(s)", "Type(s)", "Tag(s)", "File(s)")
    assert table.rows == (
        # Session S1 is gone: the production's own formats and types, no tags or files.
        ("alu", "100", "blast", "nucleic", "", ""),
        # Every format (BioMAJ 3 shows only the last), sorted unique types and key:value tags.
        ("alu", "100__1 (current)", "blast,fasta", "nucleic,sequence", "organism:hg19,source:ucsc",
         "blast/chr1db,fasta/chr1.fa,fasta/chr2.fa"),
    )


def test_show_one_release_by_release_or_prod_dir():
    by_release = show(alu_bank(), ANONYMOUS, release="100")
    by_dir = show(alu_bank(), ANONYMOUS, release="alu_100__1")
    assert [row[1] for row in by_release.rows] == ["100"]
    assert [row[1] for row in by_dir.rows] == ["100__1 (current)"]


def test_show_unknown_release():
    with pytest.raises(UnknownRelease, match="101") as caught:
        show(alu_bank(), ANONYMOUS, release="101")  # pending, not in production
    assert isinstance(caught.value, BiomajError)


def test_show_private_bank():
    with pytest.raises(AccessForbidden):
        show(secret_bank(), BOB)
    assert show(secret_bank(), ADMIN).rows == (
        ("secret", "2024-01-05 (current)", "fasta", "protein", "", "secret.fa"),
    )


# ---- search ------------------------------------------------------------------------------------


def names_and_releases(table: Table) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in table.rows]


def test_search_headers_and_rows():
    table = search(summaries(), ADMIN, ["blast"], [])
    assert table.headers == ("Name", "Release", "Format(s)", "Type(s)", "Published")
    assert table.rows == (  # release descending
        ("alu", "100__1", "blast,fasta", "nucleic,sequence", "yes"),
        ("alu", "100", "blast", "nucleic", "no"),
    )


def test_search_empty_lists_match_everything():
    assert names_and_releases(search(summaries(), ADMIN, [], [])) == [
        ("alu", "100__1"), ("alu", "100"), ("secret", "2024-01-05"),
    ]


def test_search_matches_any_format_and_any_type():
    assert names_and_releases(search(summaries(), ADMIN, ["fasta", "gff"], [])) == [
        ("alu", "100__1"), ("secret", "2024-01-05"),
    ]
    # sequence is a type of the 100__1 production only.
    assert names_and_releases(search(summaries(), ADMIN, [], ["sequence", "rna"])) == [("alu", "100__1")]
    assert names_and_releases(search(summaries(), ADMIN, ["fasta"], ["protein"])) == [("secret", "2024-01-05")]
    assert search(summaries(), ADMIN, ["gff"], []).rows == ()


def test_search_type_from_bank_properties():
    # genome is declared by alu's properties.type, not by any production.
    assert names_and_releases(search(summaries(), ADMIN, [], ["genome"])) == [("alu", "100__1"), ("alu", "100")]
    assert names_and_releases(search(summaries(), ADMIN, ["blast"], ["genome"])) == [
        ("alu", "100__1"), ("alu", "100"),
    ]


def test_search_sorts_releases_in_natural_descending_order():
    bank = new_bank()
    bank["production"] = [
        {"release": r, "session": float(i), "formats": [], "types": []} for i, r in enumerate(["9", "10__1", "10"])
    ]
    assert [row[1] for row in search([bank], ANONYMOUS, [], []).rows] == ["10__1", "10", "9"]


# ---- stats, history, whatsup -------------------------------------------------------------------


def test_stats():
    table = stats(summaries(), ADMIN)
    assert table.headers == ("Bank", "Release", "Size")
    assert table.rows == (
        ("alu", "All", "2.0 GB"),
        ("alu", "100", "1.5 KB"),
        ("alu", "100__1", "2.0 GB"),
        ("fresh", "All", "0 B"),
        ("secret", "All", "0 B"),
        ("secret", "2024-01-05", "0 B"),
    )


def test_stats_records_keep_raw_bytes():
    assert stats_records(summaries(), ANONYMOUS) == [
        {"bank": "alu", "release": "All", "size": 2 * GIB + 1536},
        {"bank": "alu", "release": "100", "size": 1536},
        {"bank": "alu", "release": "100__1", "size": 2 * GIB},
        {"bank": "fresh", "release": "All", "size": 0},
    ]


def test_stats_missing_size_counts_as_zero():
    bank = alu_bank()
    bank["production"][1]["size"] = None
    assert [r["size"] for r in stats_records([bank], ANONYMOUS)] == [1536, 1536, 0]


def test_history_keeps_the_given_order():
    entries = [
        {"bank": "alu", "action": "update", "start": ALU_S3, "end": ALU_S3 + 90, "updated": None, "error": True},
        {"bank": "alu", "action": "remove", "start": ALU_S1, "end": None, "updated": False, "error": False},
    ]
    table = history(entries)
    assert table.headers == ("Bank", "Action", "Start", "End", "Updated", "Error")
    assert table.rows == (
        ("alu", "update", "2024-03-10 10:00:00", "2024-03-10 10:01:30", None, True),
        ("alu", "remove", "2024-01-10 10:00:00", "N/A", False, False),
    )


def test_whatsup():
    locks = [{"bank": "alu", "owner": "node-1"}, {"bank": "biomaj", "owner": "admin"}]
    jobs = [{"bank": "secret", "kind": "update"}, {"bank": "alu", "kind": "remove"}]
    table = whatsup(locks, jobs)
    assert table.headers == ("Type", "Bank", "Status")
    assert table.rows == (
        ("system", "alu", "running"),
        ("system", "biomaj", "running"),
        ("queue", "secret", "pending (update)"),
        ("queue", "alu", "pending (remove)"),
    )
    assert whatsup([], []).rows == ()


def test_functions_do_not_modify_their_input():
    banks = full_banks()
    before = copy.deepcopy(banks)
    status_all(banks, ADMIN), status_ko(banks, ADMIN), search(banks, ADMIN, [], []), stats(banks, ADMIN)
    for bank in banks:
        status_bank(bank, ADMIN), show(bank, ADMIN)
    assert banks == before


# ---- render ------------------------------------------------------------------------------------

SMALL = Table(("Bank", "Release", "Size"), [("alu", "100__1", 12), ("secret", None, 3456)], title="Disk usage")


def test_render_psql():
    assert render(SMALL) == (
        "Disk usage\n"
        "+--------+-----------+--------+\n"
        "| Bank   | Release   |   Size |\n"
        "|--------+-----------+--------|\n"
        "| alu    | 100__1    |     12 |\n"
        "| secret |           |   3456 |\n"
        "+--------+-----------+--------+"
    )


def test_render_grid():
    assert render(SMALL, "grid") == (
        "Disk usage\n"
        "+--------+-----------+--------+\n"
        "| Bank   | Release   |   Size |\n"
        "+========+===========+========+\n"
        "| alu    | 100__1    |     12 |\n"
        "+--------+-----------+--------+\n"
        "| secret |           |   3456 |\n"
        "+--------+-----------+--------+"
    )


def test_render_without_rows_or_title():
    empty = Table(("Type", "Bank", "Status"), [])
    assert render(empty) == (
        "+--------+--------+----------+\n"
        "| Type   | Bank   | Status   |\n"
        "|--------+--------+----------|\n"
        "+--------+--------+----------+"
    )
    assert render(empty, "grid") == (
        "+--------+--------+----------+\n"
        "| Type   | Bank   | Status   |\n"
        "+========+========+==========+\n"
        "+--------+--------+----------+"
    )


def test_render_rejects_an_unknown_style():
    with pytest.raises(ValueError, match="psql"):
        render(SMALL, "html")
