"""The suite every Store backend passes. It uses the public interface only."""

from __future__ import annotations

import asyncio
import time

import pytest

from biomaj.storage import Conflict, DuplicateJob, NotFound, Store

PROPS = {"visibility": "public", "type": ["nucleic"], "tags": [], "owner": "alice", "desc": "Alu"}


def session(sid: float, **extra: object) -> dict:
    return {"id": sid, "action": "update", "status": {"init": True}, "release": None, **extra}


def prod(release: str, sid: float, **extra: object) -> dict:
    return {"release": release, "remoterelease": release, "session": sid, "freeze": False,
            "prod_dir": f"alu_{release}", **extra}


# ---- lifecycle -------------------------------------------------------------------------------


async def test_schema_version_and_describe(store: Store) -> None:
    assert await store.schema_version() >= 1
    assert isinstance(store.describe(), str) and store.describe()


async def test_open_and_close_are_idempotent(store: Store) -> None:
    await store.open()
    assert await store.get_bank("none") is None
    await store.close()
    await store.close()


# ---- banks -----------------------------------------------------------------------------------


async def test_ensure_bank_creates_the_biomaj3_document(store: Store) -> None:
    assert await store.get_bank("alu") is None
    doc = await store.ensure_bank("alu", PROPS)
    assert doc == {
        "name": "alu", "current": None, "sessions": [], "production": [], "pending": [],
        "properties": PROPS, "status": {}, "last_update_session": None,
        "last_remove_session": None,
    }
    assert await store.get_bank("alu") == doc


async def test_ensure_bank_keeps_an_existing_bank(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    await store.set_bank_fields("alu", current=12.5)
    doc = await store.ensure_bank("alu", {**PROPS, "owner": "bob"})
    assert doc["properties"]["owner"] == "alice"
    assert doc["current"] == 12.5


async def test_ensure_bank_is_idempotent_under_concurrency(
    store: Store, other_store: Store
) -> None:
    calls = [(store if i % 2 else other_store).ensure_bank("alu", PROPS) for i in range(20)]
    docs = await asyncio.gather(*calls)
    assert all(d == docs[0] for d in docs)
    assert [b["name"] for b in await store.list_banks()] == ["alu"]


async def test_list_banks_summaries(store: Store) -> None:
    for name in ("zeta", "alu", "beta"):
        await store.ensure_bank(name, PROPS)
    await store.save_session("alu", session(1.5), last_update_session=1.5)
    await store.add_production("alu", prod("1", 1.5))
    await store.add_pending("beta", "7", 2.5)
    await store.update_status_task("alu", "init", {"status": True})
    banks = await store.list_banks()
    assert [b["name"] for b in banks] == ["alu", "beta", "zeta"]
    alu = banks[0]
    assert "sessions" not in alu
    assert alu["production"] == [prod("1", 1.5)]
    assert alu["last_update_session"] == 1.5
    assert alu["status"] == {"init": {"status": True}}
    assert alu["properties"] == PROPS
    assert banks[1]["pending"] == [{"release": "7", "id": 2.5}]
    selected = await store.list_banks(["zeta", "nope", "alu"])
    assert [b["name"] for b in selected] == ["alu", "zeta"]
    assert await store.list_banks([]) == []


async def test_delete_bank_removes_everything_but_history(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    await store.save_session("alu", session(1.0))
    await store.add_production("alu", prod("1", 1.0))
    await store.add_pending("alu", "2", 2.0)
    await store.add_history({"bank": "alu", "error": False, "start": 1, "end": 2,
                             "action": "update", "updated": True})
    assert await store.delete_bank("alu") is True
    assert await store.delete_bank("alu") is False
    assert await store.get_bank("alu") is None
    fresh = await store.ensure_bank("alu", PROPS)
    assert fresh["sessions"] == fresh["production"] == fresh["pending"] == []
    assert len(await store.list_history("alu")) == 1


async def test_rename_bank(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    await store.ensure_bank("other", PROPS)
    await store.save_session("alu", session(1.0))
    await store.rename_bank("alu", "alu2")
    assert await store.get_bank("alu") is None
    assert (await store.get_bank("alu2"))["sessions"] == [session(1.0)]
    with pytest.raises(Conflict):
        await store.rename_bank("alu2", "other")
    with pytest.raises(NotFound):
        await store.rename_bank("alu", "x")


async def test_set_bank_fields(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    await store.set_bank_fields("alu", current=3.25, last_remove_session=4.0,
                                properties={**PROPS, "visibility": "private"})
    doc = await store.get_bank("alu")
    assert doc["current"] == 3.25 and doc["last_remove_session"] == 4.0
    assert doc["properties"]["visibility"] == "private"
    await store.set_bank_fields("alu", current=None)
    assert (await store.get_bank("alu"))["current"] is None
    with pytest.raises(ValueError):
        await store.set_bank_fields("alu", sessions=[])


async def test_status_reset_and_task_update(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    await store.set_status("alu", {"session": 1.0, "init": {"status": None, "progress": 0}})
    await store.update_status_task("alu", "init", {"status": True})
    await store.update_status_task("alu", "download", {"progress": 3, "total": 10})
    status = (await store.get_bank("alu"))["status"]
    assert status == {"session": 1.0, "init": {"status": True, "progress": 0},
                      "download": {"progress": 3, "total": 10}}
    await store.set_status("alu", {})
    assert (await store.get_bank("alu"))["status"] == {}


async def test_status_task_updates_do_not_clobber_each_other(
    store: Store, other_store: Store
) -> None:
    await store.ensure_bank("alu", PROPS)
    tasks = [f"t{i}" for i in range(10)]
    await asyncio.gather(
        *[(store, other_store)[i % 2].update_status_task("alu", t, {"status": True})
          for i, t in enumerate(tasks)],
        *[(store, other_store)[i % 2].update_status_task("alu", t, {"progress": i})
          for i, t in enumerate(tasks)],
    )
    status = (await store.get_bank("alu"))["status"]
    assert status == {t: {"status": True, "progress": i} for i, t in enumerate(tasks)}


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.set_bank_fields("nope", current=1.0),
        lambda s: s.set_status("nope", {}),
        lambda s: s.update_status_task("nope", "init", {"status": True}),
        lambda s: s.save_session("nope", session(1.0)),
        lambda s: s.delete_session("nope", 1.0),
        lambda s: s.add_production("nope", prod("1", 1.0)),
        lambda s: s.update_production("nope", "1", {"freeze": True}),
        lambda s: s.remove_production("nope", "1"),
        lambda s: s.add_pending("nope", "1", 1.0),
        lambda s: s.remove_pending("nope"),
    ],
)
async def test_bank_writes_on_a_missing_bank_raise_not_found(store: Store, call) -> None:
    with pytest.raises(NotFound):
        await call(store)


# ---- sessions --------------------------------------------------------------------------------


async def test_sessions_are_replaced_by_id(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    sid1, sid2 = time.time(), time.time() + 1.0
    await store.save_session("alu", session(sid2, release="2"))
    await store.save_session("alu", session(sid1, release="1"))
    await store.save_session("alu", session(sid2, release="2b", workflow_status=True))
    doc = await store.get_bank("alu")
    assert [s["id"] for s in doc["sessions"]] == [sid1, sid2]  # ordered by id, float exact
    assert doc["sessions"][1] == session(sid2, release="2b", workflow_status=True)
    assert await store.get_session("alu", sid2) == doc["sessions"][1]
    assert await store.get_session("alu", 99.0) is None
    assert await store.get_session("nope", sid1) is None


async def test_a_session_keeps_its_change_report(store: Store) -> None:
    """``changes`` (biomaj.change_report): nested counts, names, null and booleans kept as saved."""
    changes = {"added": {"count": 1, "bytes": 50}, "removed": {"count": 0, "bytes": 0},
               "changed": {"count": 2, "bytes": 2 ** 40}, "unchanged": {"count": 3, "bytes": 7},
               "against": None, "dry_run": False,
               "files": {"added": ["sub/é.txt"], "removed": [], "changed": ["a", "b"]}}
    await store.ensure_bank("alu", PROPS)
    await store.save_session("alu", session(1.0, changes=changes))
    assert (await store.get_bank("alu"))["sessions"][0]["changes"] == changes
    await store.save_session("alu", session(1.0, changes={**changes, "against": "1"}))
    assert (await store.get_session("alu", 1.0))["changes"]["against"] == "1"


async def test_save_session_sets_bank_fields_too(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    await store.save_session("alu", session(5.0), last_update_session=5.0,
                             properties={**PROPS, "desc": "new"})
    doc = await store.get_bank("alu")
    assert doc["last_update_session"] == 5.0
    assert doc["properties"]["desc"] == "new"
    with pytest.raises(ValueError):
        await store.save_session("alu", {"action": "update"})
    with pytest.raises(ValueError):
        await store.save_session("alu", session(6.0), pending=[])
    assert await store.get_session("alu", 6.0) is None


async def test_delete_session_drops_its_production_and_pending(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    for sid, rel in ((1.0, "1"), (2.0, "2")):
        await store.save_session("alu", session(sid, release=rel))
        await store.add_production("alu", prod(rel, sid))
    await store.add_pending("alu", "3", 3.0)
    await store.save_session("alu", session(3.0, release="3"))
    assert await store.delete_session("alu", 1.0) is True
    assert await store.delete_session("alu", 1.0) is False
    assert await store.delete_session("alu", 3.0, keep=True) is True
    doc = await store.get_bank("alu")
    assert [s["id"] for s in doc["sessions"]] == [2.0, 3.0]
    assert "deleted" in doc["sessions"][1] and "deleted" not in doc["sessions"][0]
    assert [p["release"] for p in doc["production"]] == ["2"]
    assert doc["pending"] == []


# ---- production and pending ------------------------------------------------------------------


async def test_add_production_replaces_the_same_release(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    await store.add_production("alu", prod("1", 1.0))
    await store.add_production("alu", prod("2", 2.0))
    await store.add_production("alu", prod("1", 3.0, size=42))
    production = (await store.get_bank("alu"))["production"]
    assert production == [prod("2", 2.0), prod("1", 3.0, size=42)]
    with pytest.raises(ValueError):
        await store.add_production("alu", {"session": 1.0})


async def test_update_and_remove_production(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    await store.add_production("alu", prod("1", 1.0))
    await store.add_production("alu", prod("2", 2.0))
    assert await store.update_production("alu", "1", {"freeze": True}) is True
    assert await store.update_production("alu", "9", {"freeze": True}) is False
    production = (await store.get_bank("alu"))["production"]
    assert production == [prod("1", 1.0, freeze=True), prod("2", 2.0)]
    assert await store.remove_production("alu", "1") is True
    assert await store.remove_production("alu", "1") is False
    assert (await store.get_bank("alu"))["production"] == [prod("2", 2.0)]


async def test_productions_of_two_banks_from_two_stores(store: Store, other_store: Store) -> None:
    await store.ensure_bank("a", PROPS)
    await store.ensure_bank("b", PROPS)
    await asyncio.gather(
        *[store.add_production("a", prod(str(i), float(i))) for i in range(10)],
        *[other_store.add_production("b", prod(str(i), float(i))) for i in range(10)],
        *[other_store.add_production("a", prod(f"x{i}", float(i))) for i in range(5)],
    )
    banks = {b["name"]: b for b in await store.list_banks()}
    assert len(banks["a"]["production"]) == 15
    assert len(banks["b"]["production"]) == 10


async def test_pending_has_no_duplicate_release(store: Store) -> None:
    await store.ensure_bank("alu", PROPS)
    assert await store.add_pending("alu", "1", 1.0) is True
    assert await store.add_pending("alu", "1", 2.0) is False
    assert await store.add_pending("alu", "2", 2.0) is True
    assert await store.add_pending("alu", "3", 3.0) is True
    assert (await store.get_bank("alu"))["pending"] == [
        {"release": "1", "id": 1.0}, {"release": "2", "id": 2.0}, {"release": "3", "id": 3.0}]
    assert await store.remove_pending("alu", release="1") == 1
    assert await store.remove_pending("alu", session_id=2.0) == 1
    assert await store.remove_pending("alu", release="3", session_id=9.0) == 0
    assert await store.remove_pending("alu", release="9") == 0
    await store.add_pending("alu", "4", 4.0)
    assert await store.remove_pending("alu") == 2
    assert (await store.get_bank("alu"))["pending"] == []


# ---- history ---------------------------------------------------------------------------------


def hist(bank: str, start: float, action: str = "update") -> dict:
    return {"bank": bank, "error": False, "start": start, "end": start + 1,
            "action": action, "updated": True}


async def test_history_newest_first_with_limit(store: Store) -> None:
    for bank, start in (("alu", 10), ("alu", 30), ("pdb", 20), ("alu", 20), ("pdb", 40)):
        await store.add_history(hist(bank, start))
    assert [(h["bank"], h["start"]) for h in await store.list_history()] == [
        ("pdb", 40), ("alu", 30), ("alu", 20), ("pdb", 20), ("alu", 10)]
    assert [h["start"] for h in await store.list_history("alu")] == [30, 20, 10]
    assert [h["start"] for h in await store.list_history("alu", limit=2)] == [30, 20]
    assert await store.list_history(limit=1) == [hist("pdb", 40)]
    assert len(await store.list_history(limit=None)) == 5
    assert await store.list_history("none") == []
    with pytest.raises(ValueError):
        await store.list_history(limit=0)


# ---- users and API keys ----------------------------------------------------------------------


async def test_users(store: Store) -> None:
    await store.create_user({"id": "bob", "email": "b@x", "is_admin": False})
    await store.create_user({"id": "alice", "email": "a@x"})
    with pytest.raises(Conflict):
        await store.create_user({"id": "bob"})
    with pytest.raises(ValueError):
        await store.create_user({"email": "nobody@x"})
    assert [u["id"] for u in await store.list_users()] == ["alice", "bob"]
    await store.update_user("bob", {"is_admin": True, "last_log": 5.0})
    assert await store.get_user("bob") == {"id": "bob", "email": "b@x", "is_admin": True,
                                           "last_log": 5.0}
    with pytest.raises(NotFound):
        await store.update_user("carol", {"email": "c@x"})
    with pytest.raises(ValueError):
        await store.update_user("bob", {"id": "robert"})
    assert await store.delete_user("bob") is True
    assert await store.delete_user("bob") is False
    assert await store.get_user("bob") is None


async def test_api_keys(store: Store) -> None:
    await store.create_user({"id": "bob"})
    await store.create_user({"id": "alice"})
    await store.add_api_key("bob", "k1", "hash1", "laptop", 1.0)
    await store.add_api_key("bob", "k2", "hash2", "ci", 2.0)
    await store.add_api_key("alice", "k3", "hash3", "", 3.0)
    with pytest.raises(Conflict):
        await store.add_api_key("alice", "k4", "hash1", "dup hash", 4.0)
    with pytest.raises(Conflict):
        await store.add_api_key("alice", "k1", "hash9", "dup id", 4.0)
    with pytest.raises(NotFound):
        await store.add_api_key("carol", "k5", "hash5", "", 5.0)
    user, key = await store.find_api_key("hash2")
    assert user == {"id": "bob"}
    assert key == {"id": "k2", "user": "bob", "label": "ci", "created": 2.0}
    assert await store.find_api_key("nope") is None
    keys = await store.list_api_keys("bob")
    assert [k["id"] for k in keys] == ["k1", "k2"]
    assert all("hash" not in k for k in keys)
    exported = await store.export_api_keys()  # for `biomaj migrate`: the only way out for hashes
    assert [(k["id"], k["user"], k["hash"]) for k in exported] == [("k1", "bob", "hash1"), ("k2", "bob", "hash2"),
                                                                 ("k3", "alice", "hash3")]
    assert await store.revoke_api_key("bob", "k1") is True
    assert await store.revoke_api_key("bob", "k3") is False  # alice's key
    assert await store.find_api_key("hash1") is None
    assert await store.delete_user("bob") is True
    assert await store.find_api_key("hash2") is None
    assert await store.list_api_keys("bob") == []
    await store.create_user({"id": "bob"})
    assert await store.list_api_keys("bob") == []


# ---- schedules -------------------------------------------------------------------------------


async def test_schedules(store: Store) -> None:
    nightly = {"cron": "0 2 * * *", "banks": ["alu"], "user": "bob", "enabled": True,
               "last_run": None, "next_run": 100.0}
    await store.put_schedule("nightly", nightly)
    await store.put_schedule("a-weekly", {**nightly, "cron": "0 3 * * 0"})
    assert await store.get_schedule("nightly") == {**nightly, "name": "nightly"}
    await store.put_schedule("nightly", {**nightly, "banks": ["alu", "pdb"]})
    assert (await store.get_schedule("nightly"))["banks"] == ["alu", "pdb"]
    await store.update_schedule("nightly", {"last_run": 100.0, "next_run": 200.0})
    got = await store.get_schedule("nightly")
    assert (got["last_run"], got["next_run"], got["banks"]) == (100.0, 200.0, ["alu", "pdb"])
    assert [s["name"] for s in await store.list_schedules()] == ["a-weekly", "nightly"]
    with pytest.raises(NotFound):
        await store.update_schedule("none", {"enabled": False})
    assert await store.delete_schedule("nightly") is True
    assert await store.delete_schedule("nightly") is False
    assert await store.get_schedule("nightly") is None


async def test_put_schedule_without_replace_creates_once(store: Store, other_store: Store) -> None:
    assert await store.put_schedule("auto:alu", {"kind": "release", "n": 0}) is True
    assert await store.put_schedule("auto:alu", {"kind": "release", "n": 1}, replace=False) is False
    assert (await store.get_schedule("auto:alu"))["n"] == 0
    made = await asyncio.gather(*[(store, other_store)[i % 2].put_schedule("auto:pdb", {"n": i}, replace=False)
                                  for i in range(10)])
    assert made.count(True) == 1
    assert (await other_store.get_schedule("auto:pdb"))["n"] == made.index(True)


async def test_claim_schedule_run_is_a_compare_and_set_of_last_run(store: Store) -> None:
    await store.put_schedule("nightly", {"cron": "0 2 * * *", "banks": ["alu"], "last_run": None})
    assert await store.claim_schedule_run("nightly", 100.0, previous=None, fields={"last_fired": 101.5}) is True
    got = await store.get_schedule("nightly")
    assert (got["last_run"], got["last_fired"], got["banks"]) == (100.0, 101.5, ["alu"])
    # A claim from a stale read (or for the same run again) changes nothing.
    assert await store.claim_schedule_run("nightly", 100.0, previous=None, fields={"last_fired": 999.0}) is False
    assert await store.claim_schedule_run("nightly", 160.0, previous=90.0) is False
    assert (await store.get_schedule("nightly"))["last_fired"] == 101.5
    assert await store.claim_schedule_run("nightly", 160.0, previous=100.0) is True
    assert (await store.get_schedule("nightly"))["last_run"] == 160.0
    # A document without last_run at all counts as never run.
    await store.put_schedule("weekly", {"cron": "0 3 * * 0", "banks": ["alu"]})
    assert await store.claim_schedule_run("weekly", 50.0, previous=None) is True
    with pytest.raises(NotFound):
        await store.claim_schedule_run("none", 1.0, previous=None)
    with pytest.raises(ValueError):
        await store.claim_schedule_run("weekly", 60.0, previous=50.0, fields={"last_run": 70.0})


async def test_one_claim_wins_among_schedulers_on_two_stores(store: Store, other_store: Store) -> None:
    await store.put_schedule("often", {"cron": "* * * * *", "banks": ["alu"], "last_run": 60.0})
    claims = [(store, other_store)[i % 2].claim_schedule_run("often", 120.0, previous=60.0, fields={"by": i})
              for i in range(10)]
    won = [i for i, ok in enumerate(await asyncio.gather(*claims)) if ok]
    assert len(won) == 1
    got = await other_store.get_schedule("often")
    assert (got["last_run"], got["by"]) == (120.0, won[0])


# ---- jobs ------------------------------------------------------------------------------------


def job(bank: str = "alu", kind: str = "update") -> dict:
    return {"kind": kind, "bank": bank, "options": {"fromscratch": False}, "user": "bob"}


async def test_add_and_get_job(store: Store) -> None:
    jid = await store.add_job(job())
    got = await store.get_job(jid)
    assert got["id"] == jid and got["state"] == "queued"
    assert (got["kind"], got["bank"], got["options"], got["user"]) == (
        "update", "alu", {"fromscratch": False}, "bob")
    assert got["worker"] is None and got["started"] is None and got["finished"] is None
    assert got["attempts"] == 0 and got["cancel_requested"] is False
    assert isinstance(got["created"], float)
    assert await store.get_job("missing") is None
    assert await store.add_job({**job(), "id": "chosen"}) == "chosen"
    with pytest.raises(Conflict):
        await store.add_job({**job(), "id": "chosen"})
    with pytest.raises(ValueError):
        await store.add_job({"bank": "alu"})


async def test_list_jobs(store: Store) -> None:
    ids = [await store.add_job(job(bank)) for bank in ("alu", "pdb", "alu")]
    await store.claim_job("w")
    assert [j["id"] for j in await store.list_jobs()] == ids[::-1]
    assert [j["id"] for j in await store.list_jobs(limit=2)] == ids[:0:-1]
    assert [j["id"] for j in await store.list_jobs(bank="alu")] == [ids[2], ids[0]]
    assert [j["id"] for j in await store.list_jobs(state="running")] == [ids[0]]
    assert [j["id"] for j in await store.list_jobs(state=["queued"], bank="alu")] == [ids[2]]
    assert len(await store.list_jobs(state=("queued", "running"))) == 3
    with pytest.raises(ValueError):
        await store.list_jobs(state="sleeping")


async def test_claim_is_fifo_and_finish(store: Store) -> None:
    assert await store.claim_job("w1") is None
    first, second = await store.add_job(job("a")), await store.add_job(job("b"))
    claimed = await store.claim_job("w1")
    assert claimed["id"] == first and claimed["state"] == "running"
    assert claimed["worker"] == "w1" and claimed["attempts"] == 1
    assert isinstance(claimed["started"], float)
    assert await store.get_job(first) == claimed
    done = await store.finish_job(first, "done", result={"updated": True})
    assert done["state"] == "done" and done["result"] == {"updated": True}
    assert isinstance(done["finished"], float)
    with pytest.raises(Conflict):
        await store.finish_job(first, "failed", error="again")
    with pytest.raises(Conflict):
        await store.finish_job(second, "done")  # still queued
    with pytest.raises(ValueError):
        await store.finish_job(second, "running")
    with pytest.raises(NotFound):
        await store.finish_job("missing", "done")
    assert (await store.claim_job("w2"))["id"] == second
    failed = await store.finish_job(second, "failed", error="boom")
    assert (failed["state"], failed["error"]) == ("failed", "boom")
    assert await store.claim_job("w1") is None


async def test_claim_a_given_job(store: Store) -> None:
    first, second = await store.add_job(job("a")), await store.add_job(job("b"))
    claimed = await store.claim_job("w1", second)
    assert claimed["id"] == second and claimed["state"] == "running"
    assert await store.claim_job("w2", second) is None  # already running
    assert await store.claim_job("w2", "missing") is None
    assert (await store.claim_job("w2"))["id"] == first


async def test_a_job_is_never_claimed_twice(store: Store, other_store: Store) -> None:
    ids = {await store.add_job(job(f"b{i}")) for i in range(5)}
    claims = await asyncio.gather(
        *[(store, other_store)[i % 2].claim_job(f"w{i}") for i in range(20)]
    )
    claimed = [c["id"] for c in claims if c is not None]
    assert len(claimed) == 5 and set(claimed) == ids
    for c in claims:
        if c is not None:
            assert (await store.get_job(c["id"]))["worker"] == c["worker"]


async def test_requeue_running(store: Store) -> None:
    a, b, c = [await store.add_job(job(x)) for x in "abc"]
    await store.claim_job("dead")
    await store.claim_job("alive")
    assert await store.requeue_running("dead") == [a]
    requeued = await store.get_job(a)
    assert requeued["state"] == "queued" and requeued["worker"] is None
    assert (await store.get_job(b))["state"] == "running"
    # the requeued job keeps its place at the head of the queue; attempts are counted
    again = await store.claim_job("new")
    assert again["id"] == a and again["attempts"] == 2
    assert sorted(await store.requeue_running()) == sorted([a, b])
    assert await store.requeue_running() == []
    assert [j["id"] for j in await store.list_jobs(state="queued")] == [c, b, a]


async def test_requeue_one_running_job(store: Store) -> None:
    a, b = [await store.add_job(job(x)) for x in "ab"]
    await store.claim_job("dead")
    await store.claim_job("dead")
    assert await store.requeue_running("alive", job_id=a) == []  # not that worker's
    assert await store.requeue_running("dead", job_id=a) == [a]
    assert (await store.get_job(a))["state"] == "queued"
    assert (await store.get_job(b))["state"] == "running"


async def test_dedup_key(store: Store) -> None:
    first = await store.add_job(job(), dedup_key="update:alu")
    with pytest.raises(DuplicateJob) as queued:
        await store.add_job(job(), dedup_key="update:alu")
    assert queued.value.job_id == first
    other = await store.add_job(job("pdb"), dedup_key="update:pdb")
    assert await store.add_job(job()) != first  # no key, no dedup
    await store.claim_job("w")
    with pytest.raises(DuplicateJob) as running:
        await store.add_job(job(), dedup_key="update:alu")
    assert running.value.job_id == first
    assert isinstance(running.value, Conflict)
    await store.finish_job(first, "done")
    again = await store.add_job(job(), dedup_key="update:alu")
    assert again not in (first, other)
    assert (await store.get_job(again))["dedup_key"] == "update:alu"


async def test_dedup_key_under_concurrency(store: Store, other_store: Store) -> None:
    results = await asyncio.gather(
        *[(store, other_store)[i % 2].add_job(job(), dedup_key="update:alu") for i in range(10)],
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, DuplicateJob)]
    assert len(created) == 1 and len(refused) == 9
    assert all(r.job_id == created[0] for r in refused)


async def test_cancel_job(store: Store) -> None:
    running, queued = await store.add_job(job("a")), await store.add_job(job("b"))
    assert (await store.claim_job("w"))["id"] == running
    cancelled = await store.cancel_job(queued)
    assert cancelled["state"] == "cancelled" and isinstance(cancelled["finished"], float)
    assert await store.claim_job("w") is None
    flagged = await store.cancel_job(running)
    assert flagged["state"] == "running" and flagged["cancel_requested"] is True
    finished = await store.finish_job(running, "cancelled")
    assert finished["state"] == "cancelled"
    assert await store.cancel_job(running) == finished
    with pytest.raises(NotFound):
        await store.cancel_job("missing")


async def test_purge_jobs(store: Store) -> None:
    old, active = await store.add_job(job("a")), await store.add_job(job("b"))
    await store.claim_job("w")
    await store.finish_job(old, "done")
    assert await store.purge_jobs(time.time() - 3600) == 0
    assert await store.purge_jobs(time.time() + 1) == 1
    assert await store.get_job(old) is None
    assert (await store.get_job(active))["state"] == "queued"


# ---- cancellation ----------------------------------------------------------------------------


async def test_cancelled_calls_leave_the_store_usable(store: Store) -> None:
    """Cancel calls at every point of their progress; each later call must still work."""
    await store.ensure_bank("alu", PROPS)
    for steps in range(30):
        calls = [asyncio.ensure_future(store.save_session("alu", session(float(i))))
                 for i in range(4)]
        calls.append(asyncio.ensure_future(store.get_bank("alu")))
        for _ in range(steps):
            await asyncio.sleep(0)  # a bare yield to the loop, so cancellation lands mid-call
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await store.add_history(hist("alu", steps))
    assert len(await store.list_history(limit=None)) == 30
    await store.save_session("alu", session(99.0))
    assert (await store.get_session("alu", 99.0)) == session(99.0)
