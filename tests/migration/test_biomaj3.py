"""Migration of a BioMAJ 3 database (built in the Mongo test double from reference-shaped
documents) into a biomaj store, SQLite or MongoDB; and the export of a store to MongoDB."""

from __future__ import annotations

import pytest

from biomaj.auth.keys import key_hash
from biomaj.auth.users import Users
from biomaj.migration.biomaj3 import KINDS, MigrationError, export_to_mongo, import_biomaj3
from biomaj.storage import Store
from biomaj.storage.mongo import MongoStore
from biomaj.storage.mongo_connection import connect as real_connect  # taken before the fixtures put the double there
from biomaj.storage.sqlite import SQLiteStore
from tests.storage import mongo_double

from . import biomaj3_db
from .conftest import double_url


async def dump(store: Store) -> dict:
    """Everything a migration may write, comparable between two states of a store."""
    banks = [await store.get_bank(b["name"]) for b in await store.list_banks()]
    users = await store.list_users()
    return {"banks": banks, "history": await store.list_history(limit=None), "users": users,
            "keys": {u["id"]: await store.list_api_keys(u["id"]) for u in users},
            "schedules": await store.list_schedules()}


async def test_every_production_entry_session_and_history_record_is_copied(biomaj3_url, target):
    report = await import_biomaj3(biomaj3_url, target, users_database="biomaj_user")
    assert report.copied == biomaj3_db.EXPECTED
    assert report.skipped == [] and report.changed
    source = {b["name"]: b for b in biomaj3_db.banks()}
    assert [b["name"] for b in await target.list_banks()] == ["alu", "newbank", "pdb"]

    alu = await target.get_bank("alu")
    assert alu["production"] == source["alu"]["production"]  # the frozen one and the __1 one, in order
    assert [p["release"] for p in alu["production"]] == ["2003-11-26", "2003-11-26__1"]
    assert alu["production"][0]["freeze"] is True
    assert alu["sessions"] == source["alu"]["sessions"]
    assert alu["pending"] == [{"release": "2004-01-01", "id": 1700000600.0}]
    assert (alu["current"], alu["last_update_session"], alu["last_remove_session"]) == (
        1700000300.25, 1700000600.0, None)
    assert alu["properties"] == source["alu"]["properties"]
    assert alu["status"] == source["alu"]["status"]

    pdb = await target.get_bank("pdb")
    assert pdb["production"] == source["pdb"]["production"]
    assert pdb["pending"] == [{"release": "2022-03", "id": 1650000000.0}]  # from the old dict form
    assert [s["id"] for s in pdb["sessions"]] == [1500000000.0, 1550000000.0, 1600000000.0, 1650000000.0]
    assert pdb["sessions"][0]["deleted"] == 1550000000.0
    assert pdb["sessions"][0]["last_update_time"] == 1500000000.0  # a BSON date became epoch seconds
    assert pdb["sessions"][1]["update_session_id"] == 1500000000.0
    assert (pdb["current"], pdb["last_remove_session"]) == (1600000000.0, 1550000000.0)
    assert pdb["properties"]["visibility"] == "private" and pdb["properties"]["owner"] == "alice"

    newbank = await target.get_bank("newbank")
    assert newbank["sessions"] == newbank["production"] == newbank["pending"] == []

    history = await target.list_history(limit=None)
    expected = sorted(biomaj3_db.history(), key=lambda h: -h["start"])
    assert history == expected  # every record, newest first, the twin records both kept
    assert [h["start"] for h in await target.list_history("pdb")] == [
        1650000000.0, 1600000000.0, 1550000000.0, 1500000000.0]


async def test_users_keep_their_password_and_their_api_key(biomaj3_url, target):
    await import_biomaj3(biomaj3_url, target, users_database="biomaj_user")
    assert [u["id"] for u in await target.list_users()] == ["alice", "biomaj", "ldapbob"]
    for user in await target.list_users():
        assert "apikey" not in user  # the clear key is not copied ...
    users = Users(target)
    for name, key in biomaj3_db.API_KEYS.items():  # ... it works, stored hashed
        identity = await users.by_api_key(key)
        assert identity is not None and identity.name == name
        [record] = await target.list_api_keys(name)
        assert record["label"] == "BioMAJ 3 key"
    found = await target.find_api_key(key_hash(biomaj3_db.API_KEYS["alice"]))
    assert found[0]["email"] == "alice@example.org"
    # BioMAJ 3's bcrypt hashes log in, the "b'...'" form too, and are upgraded to argon2id
    for name, password in biomaj3_db.PASSWORDS.items():
        assert (await target.get_user(name))["hashed_password"].lstrip("b'").startswith("$2b$")
        assert (await users.by_password(name, password)).name == name
        assert (await target.get_user(name))["hashed_password"].startswith("$argon2id$")
        assert await users.by_password(name, "wrong password") is None
    assert (await target.get_user("ldapbob"))["is_ldap"] is True


async def test_a_second_run_changes_nothing_and_says_so(biomaj3_url, target):
    first = await import_biomaj3(biomaj3_url, target, users_database="biomaj_user")
    before = await dump(target)
    second = await import_biomaj3(biomaj3_url, target, users_database="biomaj_user")
    assert not second.changed
    assert second.copied == dict.fromkeys(KINDS, 0)
    assert second.present == first.copied
    assert await dump(target) == before


async def test_a_dry_run_counts_and_writes_nothing(biomaj3_url, target):
    report = await import_biomaj3(biomaj3_url, target, users_database="biomaj_user", dry_run=True)
    assert report.dry_run and report.copied == biomaj3_db.EXPECTED
    assert await target.list_banks() == [] and await target.list_history() == []
    assert await target.list_users() == []


async def test_the_source_is_only_read(biomaj3_url, target):
    before = biomaj3_db.snapshot(biomaj3_url)
    await import_biomaj3(biomaj3_url, target, users_database="biomaj_user")
    assert biomaj3_db.snapshot(biomaj3_url) == before


async def test_an_interrupted_or_later_run_adds_only_what_is_missing(biomaj3_url, target):
    """A run stopped after the first session of alu, then biomaj's own work on alu: a new run
    completes the copy and keeps what the target has."""
    session = biomaj3_db.banks()[0]["sessions"][0]
    await target.ensure_bank("alu", {"visibility": "public", "owner": "biomaj"})
    await target.save_session("alu", session)
    await target.add_production("alu", {"release": "2003-11-26", "session": session["id"], "freeze": False,
                                        "note": "written by biomaj after the move"})
    await target.set_bank_fields("alu", current=1800000000.0)
    await target.add_history(biomaj3_db.history()[0])
    report = await import_biomaj3(biomaj3_url, target, users_database="biomaj_user")
    expected = dict(biomaj3_db.EXPECTED)
    for kind in ("banks", "sessions", "production", "history"):
        expected[kind] -= 1
    assert report.copied == expected
    assert report.present == {**dict.fromkeys(KINDS, 0), "banks": 1, "sessions": 1, "production": 1, "history": 1}
    assert report.filled == ["alu: last_update_session"]  # empty in the target: filled
    alu = await target.get_bank("alu")
    assert alu["current"] == 1800000000.0  # not rolled back to BioMAJ 3's
    assert alu["production"][0]["note"] == "written by biomaj after the move"
    assert [p["release"] for p in alu["production"]] == ["2003-11-26", "2003-11-26__1"]
    assert len(alu["sessions"]) == 3 and alu["last_update_session"] == 1700000600.0
    assert len(await target.list_history(limit=None)) == 10


async def test_what_cannot_be_copied_is_skipped_with_the_reason(uses_double, target):
    url = double_url()
    uses_double.append(url)
    biomaj3_db.build(url, broken=True)
    report = await import_biomaj3(url, target, users_database="biomaj_user")
    assert len(report.skipped) == len(biomaj3_db.BROKEN)
    for (kind, name, reason), skipped in zip(biomaj3_db.BROKEN, sorted(
            report.skipped, key=lambda s: [k for k, *_ in biomaj3_db.BROKEN].index(s.kind))):
        assert (skipped.kind, skipped.name.startswith(name), reason in skipped.reason) == (kind, True, True)
    broken = await target.get_bank("broken")
    assert [s["id"] for s in broken["sessions"]] == [5.0]
    assert [(p["release"], p["freeze"]) for p in broken["production"]] == [("7", False)]
    assert broken["pending"] == [{"release": "9", "id": 9.0}]
    assert report.copied["banks"] == biomaj3_db.EXPECTED["banks"] + 1
    assert report.copied["production"] == biomaj3_db.EXPECTED["production"] + 1


async def test_users_in_another_database_are_noted_when_not_found(biomaj3_url, target):
    report = await import_biomaj3(biomaj3_url, target)  # users are in biomaj_user, not in biomaj
    assert report.copied["users"] == 0 and report.copied["banks"] == 3
    assert any("no users collection" in note and "--users-db" in note for note in report.notes)


async def test_an_unreachable_server_is_a_clear_error_without_the_password(monkeypatch, target, free_port):
    from biomaj.storage import mongo_connection

    monkeypatch.setattr(mongo_connection, "_SERVER_SELECTION_MS", 300)
    monkeypatch.setattr(mongo_connection, "connect", real_connect)  # the real driver, to a closed port
    url = f"mongodb://admin:hunter2-secret@127.0.0.1:{free_port()}/biomaj"
    with pytest.raises(MigrationError) as failure:
        await import_biomaj3(url, target)
    assert "hunter2" not in str(failure.value) and "admin:***@127.0.0.1" in str(failure.value)


# ---- export: a single node's store into MongoDB ------------------------------------------------


async def test_export_copies_a_store_into_mongodb_and_keys_keep_working(biomaj3_url, tmp_path, uses_double):
    async with SQLiteStore(tmp_path / "single" / "biomaj.sqlite") as single:
        await import_biomaj3(biomaj3_url, single, users_database="biomaj_user")
        users = Users(single)
        _, new_key = await users.create("carol", email="carol@example.org", password="carol's password")
        await single.put_schedule("nightly", {"cron": "0 2 * * *", "banks": ["alu"], "last_run": None})
        expected = await dump(single)

        cluster_url = double_url("biomaj_cluster")
        uses_double.append(cluster_url)
        report = await export_to_mongo(single, cluster_url)
        assert report.copied == {**biomaj3_db.EXPECTED, "users": 4, "api_keys": 4, "schedules": 1}
        assert not (await export_to_mongo(single, cluster_url)).changed

    async with MongoStore(cluster_url) as cluster:
        assert await dump(cluster) == expected
        assert (await Users(cluster).by_api_key(new_key)).name == "carol"
        assert (await Users(cluster).by_api_key(biomaj3_db.API_KEYS["alice"])).name == "alice"
        assert (await Users(cluster).by_password("carol", "carol's password")).name == "carol"
    # The exported database is in BioMAJ 3's layout: its banks read as BioMAJ 3's did.
    raw = mongo_double.sync_client(cluster_url)["biomaj_cluster"]["banks"].find_one({"name": "alu"})
    assert raw["production"][1]["release"] == "2003-11-26__1" and raw["current"] == 1700000300.25


async def test_export_refuses_the_store_itself(uses_double):
    url = double_url("biomaj")
    uses_double.append(url)
    async with MongoStore(url) as store:
        with pytest.raises(MigrationError, match="already"):
            await export_to_mongo(store, url)
