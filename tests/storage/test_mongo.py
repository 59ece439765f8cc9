"""MongoDB-only behaviour of the store: URLs, opening a BioMAJ 3 database as it is, schema version,
the indexes, private fields. These run on the Mongo test double (tests/storage/mongo_double.py),
and the unreachable-server test on the real driver against a closed port; the conformance suite
covers the rest, on the double and, with BIOMAJ_TEST_MONGO_URL, on a real server."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from biomaj.config.service import config_from_mapping
from biomaj.errors import ConfigError
from biomaj.storage import IncompatibleSchema, open_store
from biomaj.storage import mongo_connection, mongo_schema
from biomaj.storage.mongo import MongoStore
from biomaj.storage.mongo_connection import database_of
from tests.storage import mongo_double

real_connect = mongo_connection.connect

BIOMAJ3_BANK = {
    "name": "alu", "current": 2.5,
    "sessions": [{"id": 2.5, "action": "update", "release": "3__1"}, {"id": 1.5, "action": "update", "release": "3"}],
    "production": [{"release": "3", "session": 1.5, "freeze": True, "prod_dir": "alu_3"},
                   {"release": "3__1", "session": 2.5, "freeze": False, "prod_dir": "alu_3__1"}],
    "pending": {"4": 3.5},  # BioMAJ 3's layout before its migrate_pendings()
    "properties": {"visibility": "public", "type": ["nucleic"], "tags": [], "owner": "bob", "desc": "Alu"},
    "last_update_session": 3.5,
}


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(mongo_connection, "connect", mongo_double.AsyncMongoClientDouble)
    address = f"mongodb://site-{uuid.uuid4().hex[:8]}.invalid:27017/biomaj"
    yield address
    mongo_double.forget(address)


def raw_db(url: str):
    return mongo_double.sync_client(url)["biomaj"]


@pytest.mark.parametrize("address, database", [
    ("mongodb://h:27017/biomaj3", "biomaj3"),
    ("mongodb://u:p@h1:1,h2:2/other?replicaSet=rs", "other"),
    ("mongodb://h:27017", "biomaj"),
    ("mongodb://h:27017/?authSource=admin", "biomaj"),
    ("mongodb+srv://cluster.example.org/prod", "prod"),
])
def test_open_store_picks_mongodb_without_connecting(address: str, database: str, tmp_path: Path) -> None:
    store = open_store(address, tmp_path)
    assert isinstance(store, MongoStore) and store.database == database == database_of(address)
    assert not (tmp_path / "db").exists()


def test_describe_hides_the_password() -> None:
    store = open_store("mongodb://admin:s3cr%40t@db:27017/biomaj", Path("/nonexistent"))
    assert "s3cr" not in store.describe() and "admin:***@db:27017" in store.describe()


def test_mongo_db_names_the_database_when_the_url_does_not() -> None:
    def storage(mapping: dict, env: dict) -> str:
        return config_from_mapping(mapping, None, environ=env).storage_url

    assert storage({}, {"MONGO_URL": "mongodb://h:27017"}) == "mongodb://h:27017"
    assert storage({}, {"MONGO_URL": "mongodb://h:27017", "MONGO_DB": "microbiomaj"}) == "mongodb://h:27017/microbiomaj"
    # credentials authenticated against admin before the database was added: they still do
    assert storage({"mongo": {"url": "mongodb://u:p@h/?replicaSet=rs", "db": "b3"}}, {}) == (
        "mongodb://u:p@h/b3?replicaSet=rs&authSource=admin")
    assert storage({"storage": {"url": "mongodb://h/named"}}, {"MONGO_DB": "other"}) == "mongodb://h/named"
    assert storage({"storage": {"url": "sqlite:///x.db"}, "mongo": {"url": "mongodb://h"}}, {}) == "sqlite:///x.db"


async def test_a_biomaj3_database_opens_as_it_is(url: str) -> None:
    db = raw_db(url)
    db["banks"].insert_one(copy.deepcopy(BIOMAJ3_BANK))
    db["history"].insert_one({"bank": "alu", "error": False, "start": 1.5, "end": 2.0, "action": "update",
                              "updated": True})
    db["db_schema"].insert_one({"id": 1, "version": "3.1.23"})
    before = {k: v for k, v in db["banks"].find_one({"name": "alu"}).items()}
    async with open_store(url, Path("/nonexistent")) as store:
        bank = await store.get_bank("alu")
        assert [s["id"] for s in bank["sessions"]] == [1.5, 2.5]  # in id order
        assert [p["release"] for p in bank["production"]] == ["3", "3__1"]
        assert bank["pending"] == [{"release": "4", "id": 3.5}]
        assert bank["status"] == {} and bank["last_remove_session"] is None  # missing keys are there
        [summary] = await store.list_banks()
        assert summary["current"] == 2.5 and "sessions" not in summary
        assert (await store.list_history())[0]["action"] == "update"
        assert await store.get_session("alu", 2.5) == BIOMAJ3_BANK["sessions"][0]
    assert db["banks"].find_one({"name": "alu"}) == before  # reading changed nothing
    assert db["db_schema"].find_one({}, {"_id": 0}) == {"id": 1, "version": "3.1.23"}
    assert "name_1" in db["banks"].index_information()


async def test_writes_keep_the_biomaj3_layout(url: str) -> None:
    async with open_store(url, Path("/nonexistent")) as store:
        await store.ensure_bank("alu", {"visibility": "public"})
        await store.save_session("alu", {"id": 1.0, "release": "1"}, last_update_session=1.0)
        await store.add_production("alu", {"release": "1", "session": 1.0, "freeze": False})
        await store.add_pending("alu", "2", 2.0)
        await store.add_history({"bank": "alu", "start": 1.0, "end": 2.0, "action": "update"})
    raw = raw_db(url)["banks"].find_one({"name": "alu"}, {"_id": 0})
    assert raw == {"name": "alu", "current": None, "sessions": [{"id": 1.0, "release": "1"}],
                   "production": [{"release": "1", "session": 1.0, "freeze": False}],
                   "pending": [{"release": "2", "id": 2.0}], "properties": {"visibility": "public"},
                   "status": {}, "last_update_session": 1.0, "last_remove_session": None}
    assert raw_db(url)["history"].find_one({}, {"_id": 0}) == {"bank": "alu", "start": 1.0, "end": 2.0,
                                                              "action": "update"}


async def test_a_newer_schema_is_refused(url: str) -> None:
    raw_db(url)["biomaj_schema"].insert_one({"_id": "store", "version": mongo_schema.SCHEMA_VERSION + 1})
    with pytest.raises(IncompatibleSchema, match="newer"):
        await open_store(url, Path("/nonexistent")).open()


async def test_duplicate_bank_names_cannot_get_their_unique_index(url: str) -> None:
    raw_db(url)["banks"].insert_many([{"name": "alu"}, {"name": "alu"}])
    with pytest.raises(IncompatibleSchema, match="unique indexes"):
        await open_store(url, Path("/nonexistent")).open()


async def test_private_fields_never_come_out(url: str) -> None:
    async with open_store(url, Path("/nonexistent")) as store:
        job_id = await store.add_job({"kind": "update", "bank": "alu"}, dedup_key="update:alu")
        assert set(await store.get_job(job_id)) & {"_id", mongo_schema.ACTIVE_DEDUP} == set()
        assert raw_db(url)["jobs"].find_one({"id": job_id})[mongo_schema.ACTIVE_DEDUP] == "update:alu"
        await store.claim_job("w")
        await store.finish_job(job_id, "done")
        assert mongo_schema.ACTIVE_DEDUP not in raw_db(url)["jobs"].find_one({"id": job_id})
        await store.create_user({"id": "bob"})
        assert await store.get_user("bob") == {"id": "bob"}


async def test_keys_of_a_half_deleted_user_do_not_come_back(url: str) -> None:
    """Keys point at their user's _id: if deleting them was interrupted, a new user of the same
    name does not inherit them."""
    async with open_store(url, Path("/nonexistent")) as store:
        await store.create_user({"id": "bob"})
        await store.add_api_key("bob", "k1", "hash1", "", 1.0)
        raw_db(url)["users"].delete_one({"id": "bob"})  # the first half of delete_user
        await store.create_user({"id": "bob"})
        assert await store.find_api_key("hash1") is None
        assert await store.list_api_keys("bob") == []
        assert await store.export_api_keys() == []


async def test_an_unreachable_server_is_a_config_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch, free_port
) -> None:
    monkeypatch.setattr(mongo_connection, "connect", real_connect)
    monkeypatch.setattr(mongo_connection, "_SERVER_SELECTION_MS", 300)
    store = open_store(f"mongodb://admin:hunter2@127.0.0.1:{free_port()}/biomaj", Path("/nonexistent"))
    with pytest.raises(ConfigError) as failure:
        await store.open()
    message = str(failure.value)
    assert "hunter2" not in message and "admin:***@127.0.0.1" in message and "no server answered" in message
    await store.close()  # harmless after a failed open


async def test_an_invalid_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mongo_connection, "connect", real_connect)
    with pytest.raises(ConfigError, match="invalid MongoDB URL"):
        await open_store("mongodb://u:pw@h:99999999/x", Path("/nonexistent")).open()
