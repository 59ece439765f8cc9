"""The change report of an update and ``update --dry-run``, over a real HTTP server on 127.0.0.1.

A first update adds every file; a second, after one file changed, one added and one removed on
the server, reports exactly those (counts and bytes) against the first release. The dry run
before it fetches no file body (only the listing), records nothing, leaves no lock, and reports
the same sets as the real update that follows, with the bytes that update then moves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.servers import http_server
from tests.servers.faults import Faults
from tests.workflow.harness import Site

BANK = "local"
DAY1 = 1_704_888_000  # 2024-01-10 12:00:00 UTC
DAY2 = DAY1 + 86_400
FIRST = {"a.txt": b"a" * 10, "b.txt": b"b" * 20, "c.txt": b"c" * 30, "d.txt": b"d" * 40}


def write(root: Path, name: str, data: bytes, mtime: int) -> None:
    (root / name).write_bytes(data)
    os.utime(root / name, (mtime, mtime))


def first_tree(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in FIRST.items():
        write(root, name, data, DAY1)


def second_tree(root: Path) -> None:
    """b.txt changed (25 bytes, a day later), d.txt removed, e.txt added (50 bytes)."""
    write(root, "b.txt", b"B" * 25, DAY2)
    (root / "d.txt").unlink()
    write(root, "e.txt", b"e" * 50, DAY2)


def bodies(server) -> list[str]:
    """The files whose body the server sent (GET of a file, not of an index page), then forgets."""
    got = sorted(s["path"].lstrip("/") for s in server.seen if s["method"] == "GET" and not s["path"].endswith("/"))
    server.seen.clear()
    return got


def sets(changes: dict) -> dict:
    return {kind: changes["files"][kind] for kind in ("added", "removed", "changed")}


@pytest.fixture
async def served(site: Site, tmp_path: Path):
    root = tmp_path / "www"
    first_tree(root)
    server = await http_server.start(root, Faults(), protocol="http", style="apache24")
    site.add_bank(BANK, protocol="http", server=f"127.0.0.1:{server.config.port}", remote__dir="/",
                  remote__files=r"^[a-e]\.txt$", local__files=r"^[a-e]\.txt$")
    try:
        yield root, server
    finally:
        await server.close()


async def test_first_update_adds_every_file(site: Site, served):
    root, server = served
    outcome = await site.update(BANK)
    assert outcome.ok and outcome.updated, outcome.error
    changes = (await site.session(BANK))["changes"]
    assert changes == {
        "added": {"count": 4, "bytes": 100}, "removed": {"count": 0, "bytes": 0},
        "changed": {"count": 0, "bytes": 0}, "unchanged": {"count": 0, "bytes": 0},
        "against": None, "dry_run": False,
        "files": {"added": ["a.txt", "b.txt", "c.txt", "d.txt"], "removed": [], "changed": []},
    }
    assert "4 added (100 B), 0 removed (0 B), 0 changed (0 B), 0 unchanged (0 B) (first release of the bank)" \
        in Path(outcome.log_file).read_text()


async def test_dry_run_moves_nothing_and_matches_the_update_that_follows(site: Site, served):
    root, server = served
    first = await site.update(BANK)
    assert first.ok and first.updated, first.error
    second_tree(root)
    server.seen.clear()
    doc_before = await site.doc(BANK)
    history_before = await site.store.list_history(BANK, None)
    offline = site.data / "offline" / "suite" / "local_tmp"
    offline_before = sorted(p.name for p in offline.iterdir()) if offline.exists() else []

    dry = await site.update(BANK, dry_run=True)

    assert dry.ok and not dry.updated, dry.error
    asked = [(s["method"], s["path"]) for s in server.seen]
    assert asked == [("GET", "/")], asked  # the listing only: no file body, not even a HEAD
    server.seen.clear()
    details = dry.details
    assert details["dry_run"] is True and details["update"] is True
    expected = {"added": ["e.txt"], "removed": ["d.txt"], "changed": ["b.txt"]}
    assert sets(details["changes"]) == expected
    counts = {kind: details["changes"][kind] for kind in ("added", "removed", "changed", "unchanged")}
    assert counts == {"added": {"count": 1, "bytes": 50}, "removed": {"count": 1, "bytes": 40},
                      "changed": {"count": 1, "bytes": 25}, "unchanged": {"count": 2, "bytes": 40}}
    assert details["changes"]["against"] == first.release and details["changes"]["dry_run"] is True
    assert details["transfer"] == {"fetch": {"count": 2, "bytes": 75}, "reuse": {"count": 2, "bytes": 40},
                                   "present": {"count": 0, "bytes": 0}}
    # nothing recorded, locked, linked or cached
    doc_after = await site.doc(BANK)
    assert [s["id"] for s in doc_after["sessions"]] == [s["id"] for s in doc_before["sessions"]]
    assert doc_after["production"] == doc_before["production"]
    assert doc_after["last_update_session"] == doc_before["last_update_session"]
    assert await site.store.list_history(BANK, None) == history_before
    assert not list((site.root / "lock").glob("*.lock"))
    assert (sorted(p.name for p in offline.iterdir()) if offline.exists() else []) == offline_before
    assert len(list((site.root / "cache").glob("files_*"))) == 1  # the first release's list only

    real = await site.update(BANK)

    assert real.ok and real.updated, real.error
    assert bodies(server) == ["b.txt", "e.txt"]  # the bytes the dry run said would move
    changes = (await site.session(BANK))["changes"]
    assert sets(changes) == expected
    assert {kind: changes[kind] for kind in counts} == counts
    assert changes["against"] == first.release and changes["dry_run"] is False
    assert real.release == dry.release


async def test_dry_run_with_nothing_new_says_so(site: Site, served):
    root, server = served
    first = await site.update(BANK)
    assert first.ok, first.error
    server.seen.clear()
    dry = await site.update(BANK, dry_run=True)
    assert dry.ok and dry.details["update"] is False and dry.details["changes"] is None
    assert dry.release == first.release
    assert bodies(server) == []


async def test_a_failed_update_keeps_its_change_report(site: Site, served):
    """The report is made before the download: a download that fails leaves it in the session."""
    root, server = served
    assert (await site.update(BANK)).ok
    second_tree(root)
    server.faults.transient_errors["e.txt"] = 1000  # every GET of it fails
    site.set(BANK, stop_condition="stop_after_attempt(2)", wait_policy="wait_fixed(0)")
    failed = await site.update(BANK)
    assert not failed.ok and failed.failed_task == "download", failed
    session = await site.session(BANK)
    assert sets(session["changes"]) == {"added": ["e.txt"], "removed": ["d.txt"], "changed": ["b.txt"]}

    # a dry run now tells what the next update, resuming this one, would move: b.txt (fetched) and
    # a.txt, c.txt (linked) are in the offline directory already; from scratch, nothing is kept nor reused
    server.seen.clear()
    resumed = await site.update(BANK, dry_run=True)
    assert resumed.release == session["release"] and sets(resumed.details["changes"]) == sets(session["changes"])
    assert resumed.details["transfer"] == {"fetch": {"count": 1, "bytes": 50}, "reuse": {"count": 0, "bytes": 0},
                                           "present": {"count": 3, "bytes": 65}}
    scratch = await site.update(BANK, dry_run=True, fromscratch=True)
    assert scratch.details["transfer"] == {"fetch": {"count": 4, "bytes": 115}, "reuse": {"count": 0, "bytes": 0},
                                           "present": {"count": 0, "bytes": 0}}
    assert bodies(server) == []


async def test_dry_run_of_an_update_resumed_past_its_download(site: Site, served):
    """An update stopped after its download resumes at postprocess: its report stands, nothing moves."""
    root, server = served
    assert (await site.update(BANK)).ok
    second_tree(root)
    stopped = await site.update(BANK, stop_after="download")
    assert stopped.ok and stopped.stopped
    server.seen.clear()
    dry = await site.update(BANK, dry_run=True)
    assert dry.details["update"] is True and dry.release == stopped.release
    assert dry.details["changes"] == (await site.session(BANK))["changes"]
    assert dry.details["transfer"]["fetch"] == {"count": 0, "bytes": 0}
    assert server.seen == []


async def test_dry_run_refuses_options_of_a_resumed_run(site: Site, served):
    from biomaj.errors import BiomajError

    with pytest.raises(BiomajError, match="--dry-run .* not --stop-after"):
        await site.update(BANK, dry_run=True, stop_after="download")


# --- the comparison itself, on real file lists of a bank ------------------------------------------


def record(name: str, size: int | None, mtime: float | None = DAY1, **extra) -> dict:
    return {"name": name, "save_as": name, "size": size, "mtime": mtime, **extra}


def wanted(name: str, size: int | None, mtime: float | None = DAY1, checksum: str | None = None):
    from biomaj.protocols.base import RemoteConfig, RemoteEntry
    from biomaj.workflow.remote_files import Wanted

    return Wanted(RemoteConfig(protocol="http", host="127.0.0.1"), RemoteEntry(name, size, mtime), name,
                  checksum=checksum)


def test_compare_follows_the_one_same_file_rule(site: Site):
    from biomaj.download.verify import file_digest
    from biomaj.workflow.bank import Bank
    from biomaj.workflow.changes import compare, previous_release

    site.add_bank(BANK)
    bank = Bank.load(site.global_properties, BANK)
    bank.write_file_list(1.0, [
        record("same.txt", 10), record("minute.txt", 10, DAY1 + 7), record("sum.txt", 10, checksum="md5:aa"),
        record("resum.txt", 10, checksum="md5:bb"), record("gone.txt", 4), record("hashed.txt", 3),
        record("fixed.txt", 3)])
    entry = {"release": "1", "session": 1.0, "data_dir": str(site.data), "dir_version": "suite/local",
             "prod_dir": "local_1"}
    flat = Bank.production_dir(entry) / "flat"
    flat.mkdir(parents=True)
    for name in ("hashed.txt", "fixed.txt"):  # recorded without a checksum: their copies are hashed
        (flat / name).write_bytes(b"abc")
    assert previous_release([entry, {"release": "2", "session": 2.0}], 2.0) is entry  # never its own
    assert previous_release([{"release": "2", "session": 2.0}], 2.0) is None
    md5 = file_digest(flat / "hashed.txt", "md5")
    new = [wanted("same.txt", 10), wanted("minute.txt", 10, DAY1),  # a listing to the minute: the same
           wanted("sum.txt", 10, DAY2, "md5:aa"),  # a new date, the same checksum: the same
           wanted("resum.txt", 10, checksum="md5:cc"),  # the same size and date, another checksum
           wanted("hashed.txt", 3, checksum=f"md5:{md5}"),  # the copy's digest is the provider's
           wanted("fixed.txt", 3, checksum="md5:" + "0" * 32),  # a fix under the same size and date
           wanted("new.txt", None)]
    digests: dict = {}
    changes = compare(bank, new, entry, dry_run=True, digests=digests)
    assert changes["files"] == {"added": ["new.txt"], "removed": ["gone.txt"], "changed": ["fixed.txt", "resum.txt"]}
    assert changes["unchanged"] == {"count": 4, "bytes": 33} and changes["added"] == {"count": 1, "bytes": 0}
    assert changes["dry_run"] is True and "previous_files_unknown" not in changes
    assert digests == {(str(flat / "hashed.txt"), "md5"): md5, (str(flat / "fixed.txt"), "md5"): md5}  # once

    gone = compare(bank, new, {**entry, "session": 9.0})  # that release's file list is gone
    assert gone["previous_files_unknown"] is True and gone["added"]["count"] == 7 and gone["against"] == "1"


async def test_dry_run_with_checksum_manifests_finds_a_fix_under_the_same_release(site: Site, tmp_path: Path):
    """b.txt fixed upstream under the same size, date and release: the provider's SHA256SUMS tells
    it. The dry run reads the manifest (a wanted file too) without writing it in the offline
    directory, fetches no data file, and reports what the update then does."""
    import hashlib

    root = tmp_path / "www"
    first_tree(root)

    def sums() -> None:
        lines = "".join(f"{hashlib.sha256((root / n).read_bytes()).hexdigest()}  {n}\n" for n in sorted(FIRST))
        write(root, "SHA256SUMS", lines.encode(), DAY1)

    sums()
    server = await http_server.start(root, Faults(), protocol="http", style="apache24")
    try:
        site.add_bank(BANK, protocol="http", server=f"127.0.0.1:{server.config.port}", remote__dir="/",
                      remote__files=r"^([a-e]\.txt|SHA256SUMS)$", local__files=r"^([a-e]\.txt|SHA256SUMS)$",
                      remote__checksums="SHA256SUMS")
        first = await site.update(BANK)
        assert first.ok and first.updated, first.error
        write(root, "b.txt", b"X" * 20, DAY1)  # same size, same date
        sums()
        offline = site.data / "offline" / "suite" / "local_tmp"
        offline_before = sorted(p.name for p in offline.iterdir()) if offline.exists() else []
        server.seen.clear()

        dry = await site.update(BANK, dry_run=True)

        assert dry.ok and dry.details["update"] is True, dry.error
        assert dry.release == f"{first.release}__1"
        assert bodies(server) == ["SHA256SUMS"]  # the manifest only
        assert (sorted(p.name for p in offline.iterdir()) if offline.exists() else []) == offline_before
        # the manifest has no checksum of its own: same size and date, it counts as unchanged
        assert sets(dry.details["changes"]) == {"added": [], "removed": [], "changed": ["b.txt"]}
        assert dry.details["transfer"]["fetch"] == {"count": 1, "bytes": 20}

        real = await site.update(BANK)
        assert real.ok and real.updated and real.release == dry.release, real.error
        assert bodies(server) == ["SHA256SUMS", "b.txt"]
        assert sets((await site.session(BANK))["changes"]) == sets(dry.details["changes"])
    finally:
        await server.close()
