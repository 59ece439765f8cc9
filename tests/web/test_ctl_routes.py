"""The routes `biomaj ctl --proxy` relies on, on a real node: `format=table` (the very tables the
command prints), the check of a bank file, the bank files, unlock and the cancel of one job."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest

from biomaj import inventory, reports
from biomaj.reports import Table, Viewer
from biomaj.runtime.lease import BankLease
from biomaj.state import LockOwner
from biomaj.storage.base import ACTIVE_JOB_STATES
from biomaj.workflow import locks

VIEWERS = {"anonymous": Viewer(None), "user": Viewer("user"), "owner": Viewer("owner"),
           "admin": Viewer("admin", frozenset({"admin"}))}
BANK_PATHS = ("/api/v1/banks/example", "/api/v1/banks/example/show")
TABLE_PATHS = ("/api/v1/banks", *BANK_PATHS, "/api/v1/search?formats=fasta", "/api/v1/history", "/api/v1/stats",
               "/api/v1/whatsup", "/api/v1/status-ko")


def _with(path: str, query: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{query}"


def _lock_dir(api):
    return locks.installation_lock_dir(api.node.config.global_properties, api.node.config.root)


def _write_lock(api, **holder) -> os.PathLike:
    lock = locks.lock_path(_lock_dir(api), "example")
    lock.write_text(json.dumps({"host": socket.gethostname(), "job": "x", "user": "u", "since": 0, **holder}))
    return lock


def _dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


async def _expected(api, viewer: Viewer) -> dict[str, list[Table]]:
    """What `biomaj ctl` computes for ``viewer``, from the node's store (history and whatsup
    with the API's visibility filter)."""
    store = api.node.store
    banks = await store.list_banks()
    doc = await store.get_bank("example")
    visible = {b["name"] for b in banks if viewer.can_see(b)}
    history = [e for e in await store.list_history(None, None) if e.get("bank") in visible][:20]
    held = [{"bank": bank, "owner": holder.describe()} for bank, holder in locks.list_locks(_lock_dir(api))
            if bank in visible | {locks.MAINTENANCE}]
    queued = [j for j in await store.list_jobs(state=ACTIVE_JOB_STATES, limit=None)
              if j["state"] == "queued" and j["bank"] in visible]
    full = [await store.get_bank(b["name"]) for b in banks]
    return {
        "/api/v1/banks": [reports.status_all(banks, viewer)],
        "/api/v1/banks/example": reports.status_bank(doc, viewer) if viewer.can_see(doc) else [],
        "/api/v1/banks/example/show": [reports.show(doc, viewer)] if viewer.can_see(doc) else [],
        "/api/v1/search?formats=fasta": [reports.search(banks, viewer, ["fasta"], [])],
        "/api/v1/history": [reports.history(history)],
        "/api/v1/stats": [reports.stats(banks, viewer)],
        "/api/v1/whatsup": [reports.whatsup(held, queued)],
        "/api/v1/status-ko": [reports.status_ko(full, viewer)],
    }


@pytest.fixture
async def failed_bank(private_bank):
    """The private example bank: release 1 published, then an update that failed (its remote has
    gone), a lock file and a queued job, so that every table has rows for its owner."""
    api = private_bank
    shutil.rmtree(api.node.config.root / "example-remote")
    response = await api.call("owner", "POST", "/api/v1/banks/example/update", json={"fromscratch": True})
    assert (await api.job_done((await response.json())["id"], "owner"))["state"] == "failed"
    _write_lock(api, pid=_dead_pid())
    await api.node.store.add_job({"kind": "remove", "bank": "example", "options": {}, "user": "owner"})
    return api


@pytest.mark.parametrize("who", list(VIEWERS))
async def test_format_table_gives_the_tables_of_the_command(failed_bank, who):
    api = failed_bank
    expected = await _expected(api, VIEWERS[who])
    for path in TABLE_PATHS:
        response = await api.call(who, "GET", _with(path, "format=table"))
        body = await response.json()
        if path in BANK_PATHS and who in ("anonymous", "user"):  # the private bank: unknown to them, as without format
            assert response.status == 404, (path, body)
            continue
        assert response.status == 200, (path, body)
        assert list(body) == ["tables"]
        tables = [Table.from_dict(table) for table in body["tables"]]
        assert tables == expected[path], path
        if who in ("owner", "admin"):
            assert all(table.rows for table in tables), (path, tables)
        else:
            assert not any(table.rows for table in tables), (path, tables)


async def test_without_format_the_answers_are_the_records(failed_bank):
    api = failed_bank
    expected = await _expected(api, VIEWERS["owner"])
    ko = await (await api.call("owner", "GET", "/api/v1/status-ko")).json()
    assert ko == expected["/api/v1/status-ko"][0].records() and ko[0]["Name"] == "example"
    assert await (await api.call("anonymous", "GET", "/api/v1/status-ko")).json() == []
    stats = await (await api.call("owner", "GET", "/api/v1/stats")).json()
    assert stats[0] == {"bank": "example", "release": "All", "size": stats[1]["size"]}  # bytes, not "1.2 KB"
    detail = await (await api.call("owner", "GET", "/api/v1/banks/example")).json()
    assert detail["name"] == "example" and "tables" not in detail


@pytest.mark.parametrize("path", TABLE_PATHS)
async def test_another_format_is_a_400(private_bank, path):
    for wanted in ("json", "TABLE", ""):
        response = await private_bank.call("anonymous", "GET", _with(path, f"format={wanted}"))
        body = await response.json()
        assert (response.status, body["status"]) == (400, 400), body
        assert "format must be 'table'" in body["error"]


async def test_the_openapi_document_shows_the_format_parameter(api):
    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    for path in TABLE_PATHS:
        path = path.split("?")[0].replace("example", "{bank}")
        assert "format" in [p["name"] for p in spec["paths"][path]["get"]["parameters"]], path


# --- check ---------------------------------------------------------------------------------------


async def test_check_a_valid_bank_file(api):
    response = await api.call("anonymous", "GET", "/api/v1/banks/example/check")  # no record yet: anyone
    body = await response.json()
    assert response.status == 200 and body["valid"] is True, body
    assert body["bank"] == "example" and body["file"] == "conf/example.properties"  # no server path
    assert list(body) == ["bank", "file", "valid", "problems"]
    assert all(p["level"] == "warning" for p in body["problems"])


async def test_check_an_invalid_bank_file_answers_200_with_its_errors(api):
    conf = api.node.config.root / "conf"
    text = (conf / "example.properties").read_text().replace("protocol=local", "protocol=gopher")
    (conf / "broken.properties").write_text(text.replace("db.name=example", "db.name=broken"))
    response = await api.call("user", "GET", "/api/v1/banks/broken/check")
    body = await response.json()
    assert response.status == 200 and body["valid"] is False, body
    assert any(p["level"] == "error" and p["key"] == "protocol" for p in body["problems"]), body


async def test_check_an_unknown_or_private_bank(private_bank):
    api = private_bank
    unknown = await api.call("admin", "GET", "/api/v1/banks/nobank/check")
    assert unknown.status == 404 and "nobank" in (await unknown.json())["error"]
    for who, status in (("anonymous", 404), ("user", 404), ("owner", 200), ("admin", 200)):
        assert (await api.call(who, "GET", "/api/v1/banks/example/check")).status == status, who


# --- bank files ----------------------------------------------------------------------------------


async def test_bank_files_leave_out_the_records_the_requester_may_not_see(private_bank):
    api = private_bank
    conf = api.node.config.root / "conf"
    shutil.copy(conf / "example.properties", conf / "extra.properties")  # never updated: no record
    (conf / "junk.properties").write_text("not a properties file")
    gpath = api.node.config.global_properties
    rows = inventory.bank_rows(gpath, inventory.conf_dir_of(gpath), await api.node.store.list_banks())
    owner = await (await api.call("owner", "GET", "/api/v1/bank-files")).json()
    assert owner == rows == await (await api.call("admin", "GET", "/api/v1/bank-files")).json()
    example = owner[0]
    assert (example["name"], example["config"], example["in_store"], example["owner"], example["visibility"],
            example["published"], example["releases"]) == ("example", "ok", True, "owner", "private", "1", 1)
    assert owner[1] == {"name": "extra", "config": "ok", "in_store": False, "visibility": None, "owner": None,
                        "published": None, "releases": 0, "pending": 0, "last_update": None}
    assert owner[2]["name"] == "junk" and owner[2]["config"].startswith("unreadable: ")
    assert await (await api.call("user", "GET", "/api/v1/bank-files")).json() == owner[1:]

    (conf / "example.properties").unlink()  # the record stays: shown, to its owner only
    gone = await (await api.call("owner", "GET", "/api/v1/bank-files")).json()
    assert [(r["name"], r["in_store"]) for r in gone] == [("extra", False), ("junk", False), ("example", True)]
    assert gone[2]["config"] == "no bank file"
    assert [r["name"] for r in await (await api.call("user", "GET", "/api/v1/bank-files")).json()] == ["extra", "junk"]


# --- unlock --------------------------------------------------------------------------------------


async def test_unlock_clears_a_stale_lock_and_refuses_a_held_one(private_bank):
    api = private_bank
    nothing = await (await api.call("owner", "POST", "/api/v1/banks/example/unlock")).json()
    assert (nothing["ok"], nothing["action"], nothing["details"]) == (True, "unlock", {"was_locked": False})

    pid = _dead_pid()
    lock = _write_lock(api, pid=pid)
    response = await api.call("owner", "POST", "/api/v1/banks/example/unlock", json={})
    body = await response.json()
    assert response.status == 200 and body["details"]["was_locked"] is True, body
    assert body["details"]["holder"].startswith(f"process {pid} on {socket.gethostname()} ")
    assert not lock.exists()

    lock = _write_lock(api, pid=os.getpid())
    refused = await api.call("owner", "POST", "/api/v1/banks/example/unlock", json={"force": False})
    assert refused.status == 409 and f"locked by process {os.getpid()}" in (await refused.json())["error"]
    assert (await api.call("user", "POST", "/api/v1/banks/example/unlock", json={"force": True})).status == 404
    assert (await api.call("owner", "POST", "/api/v1/banks/example/unlock", json={"force": "yes"})).status == 400
    assert lock.exists()
    forced = await api.call("admin", "POST", "/api/v1/banks/example/unlock", json={"force": True})
    assert forced.status == 200 and (await forced.json())["details"]["was_locked"] is True
    assert not lock.exists()


async def test_unlock_trusts_a_free_lease_of_a_shared_state_only(private_bank, monkeypatch):
    """A lock file of another host naming a job: stale when the shared state has no lease on the
    bank (its holder would keep it), unknown with a memory state (this process's own)."""
    api = private_bank
    lock = _write_lock(api, host="elsewhere.example.org", pid=12345, job="gone")
    assert (await api.call("owner", "POST", "/api/v1/banks/example/unlock")).status == 409  # memory state
    monkeypatch.setattr(api.node.config.settings.state, "url", "redis://shared.example.org:6379/0")
    async with BankLease(api.node.state, "example", LockOwner.here("live", "node-1")):
        assert (await api.call("owner", "POST", "/api/v1/banks/example/unlock")).status == 409  # a live lease
    assert lock.exists()
    response = await api.call("owner", "POST", "/api/v1/banks/example/unlock")
    assert response.status == 200 and (await response.json())["details"]["was_locked"] is True
    assert not lock.exists()


# --- cancel one job ------------------------------------------------------------------------------


async def test_a_job_is_cancelled_by_its_user_the_bank_owner_or_an_admin(private_bank):
    api = private_bank
    store = api.node.store

    async def queued(user: str) -> str:  # recorded, never sent to a manager: it stays queued
        return await store.add_job({"kind": "remove", "bank": "example", "options": {"release": "1"}, "user": user})

    mine, owners, others = await queued("user"), await queued("owner"), await queued("someone")
    response = await api.call("user", "POST", f"/api/v1/jobs/{mine}/cancel")
    body = await response.json()
    assert response.status == 200 and (body["id"], body["state"], body["user"]) == (mine, "cancelled", "user"), body

    for job in (owners, others):
        refused = await api.call("user", "POST", f"/api/v1/jobs/{job}/cancel")  # as if it did not exist
        assert refused.status == 404 and (await refused.json())["error"] == "no such job"
        assert (await store.get_job(job))["state"] == "queued"
    assert (await (await api.call("owner", "POST", f"/api/v1/jobs/{owners}/cancel")).json())["state"] == "cancelled"
    assert (await (await api.call("admin", "POST", f"/api/v1/jobs/{others}/cancel")).json())["state"] == "cancelled"
    assert (await api.call("admin", "POST", "/api/v1/jobs/nope/cancel")).status == 404
    again = await api.call("owner", "POST", f"/api/v1/jobs/{owners}/cancel")  # already over: unchanged
    assert again.status == 200 and (await again.json())["state"] == "cancelled"
