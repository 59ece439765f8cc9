"""SQLite-only behaviour: the file, WAL, migrations, several connections and processes, URLs."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import textwrap
from pathlib import Path

import aiosqlite
import pytest

from biomaj.errors import BiomajError, ConfigError
from biomaj.storage import IncompatibleSchema, open_store
from biomaj.storage import sqlite_schema
from biomaj.storage.sqlite import SQLiteStore

PROPS = {"visibility": "public", "type": [], "tags": [], "owner": "bob", "desc": ""}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "biomaj.sqlite"


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


async def test_wal_mode_and_foreign_keys(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await store.ensure_bank("alu", PROPS)
        with raw(db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db = store._db
        assert (await (await db.execute("PRAGMA foreign_keys")).fetchone())[0] == 1
        assert (await (await db.execute("PRAGMA busy_timeout")).fetchone())[0] == 30000


async def test_data_persists_across_reopen(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await store.ensure_bank("alu", PROPS)
        await store.save_session("alu", {"id": 1.5, "release": "1"}, last_update_session=1.5)
        await store.add_production("alu", {"release": "1", "session": 1.5})
        await store.create_user({"id": "bob"})
        await store.add_api_key("bob", "k", "h", "", 1.0)
        await store.put_schedule("s", {"cron": "* * * * *"})
        job_id = await store.add_job({"kind": "update", "bank": "alu"}, dedup_key="update:alu")
        await store.claim_job("w")
    async with SQLiteStore(db_path) as store:
        bank = await store.get_bank("alu")
        assert bank["sessions"] == [{"id": 1.5, "release": "1"}]
        assert bank["production"] == [{"release": "1", "session": 1.5}]
        assert bank["last_update_session"] == 1.5
        assert (await store.find_api_key("h"))[0] == {"id": "bob"}
        assert await store.get_schedule("s") == {"cron": "* * * * *", "name": "s"}
        assert (await store.get_job(job_id))["state"] == "running"
        assert await store.requeue_running("w") == [job_id]


async def test_use_before_open_is_a_programming_error(db_path: Path) -> None:
    with pytest.raises(RuntimeError):
        await SQLiteStore(db_path).get_bank("alu")


# ---- migrations ------------------------------------------------------------------------------


async def _add_note_column(db: aiosqlite.Connection) -> None:
    await db.execute("ALTER TABLE banks ADD COLUMN note TEXT")
    await db.execute("UPDATE banks SET note = 'migrated'")


async def test_an_older_database_is_migrated_forward(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_1 = list(sqlite_schema.MIGRATIONS[:1])
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", version_1)
    async with SQLiteStore(db_path) as store:
        assert await store.schema_version() == 1
        await store.ensure_bank("alu", PROPS)

    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", [*version_1, _add_note_column])
    async with SQLiteStore(db_path) as store:
        assert await store.schema_version() == 2
        assert (await store.get_bank("alu"))["properties"] == PROPS
    with raw(db_path) as conn:
        assert conn.execute("SELECT note FROM banks").fetchall() == [("migrated",)]
        versions = conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
        assert versions == [(1,), (2,)]


async def test_a_failing_migration_changes_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_1 = list(sqlite_schema.MIGRATIONS[:1])
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", version_1)
    async with SQLiteStore(db_path) as store:
        await store.ensure_bank("alu", PROPS)

    async def broken(db: aiosqlite.Connection) -> None:
        await _add_note_column(db)
        await db.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", [*version_1, broken])
    with pytest.raises(BiomajError):
        await SQLiteStore(db_path).open()
    with raw(db_path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(banks)")]
        assert "note" not in columns
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (1,)


async def test_a_newer_database_is_refused(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await store.ensure_bank("alu", PROPS)
    with raw(db_path) as conn:
        conn.execute("INSERT INTO schema_version (version, applied) VALUES (99, 0)")
    with pytest.raises(IncompatibleSchema, match=r"schema version 99.*upgrade biomaj") as err:
        await SQLiteStore(db_path).open()
    assert str(db_path) in str(err.value)
    assert isinstance(err.value, BiomajError)


async def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with raw(other) as conn:
        conn.execute("CREATE TABLE things (x)")
    with pytest.raises(IncompatibleSchema, match="not a biomaj database"):
        await SQLiteStore(other).open()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(IncompatibleSchema, match="garbage.sqlite"):
        await SQLiteStore(garbage).open()


# ---- concurrency -----------------------------------------------------------------------------


async def test_two_stores_on_one_file_write_concurrently(db_path: Path) -> None:
    async with SQLiteStore(db_path) as one, SQLiteStore(db_path) as two:
        await one.ensure_bank("alu", PROPS)
        await asyncio.gather(
            *[one.add_history({"bank": "alu", "start": i, "src": 1}) for i in range(50)],
            *[two.add_history({"bank": "alu", "start": i, "src": 2}) for i in range(50)],
            *[one.save_session("alu", {"id": float(i)}) for i in range(0, 40, 2)],
            *[two.save_session("alu", {"id": float(i)}) for i in range(1, 40, 2)],
        )
        assert len(await two.list_history(limit=None)) == 100
        assert [s["id"] for s in (await one.get_bank("alu"))["sessions"]] == [
            float(i) for i in range(40)]


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from biomaj.storage.sqlite import SQLiteStore

    async def main(path):
        async with SQLiteStore(path) as store:
            print("open", flush=True)
            for i in range(100):
                await store.update_status_task("alu", f"child{i}", {"status": True})
                await store.claim_job("child")

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_second_process_writes_concurrently(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await store.ensure_bank("alu", PROPS)
        for i in range(100):
            await store.add_job({"kind": "update", "bank": f"b{i}"})
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(db_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        assert await child.stdout.readline() == b"open\n"
        mine = []
        for i in range(100):
            await store.update_status_task("alu", f"parent{i}", {"status": True})
            if job := await store.claim_job("parent"):
                mine.append(job["id"])
        _, stderr = await child.communicate()
        assert child.returncode == 0, stderr.decode()
        status = (await store.get_bank("alu"))["status"]
        assert len(status) == 200
        running = await store.list_jobs(state="running", limit=None)
        assert len(running) == 100
        theirs = [j["id"] for j in running if j["worker"] == "child"]
        assert len(theirs) + len(mine) == 100 and not set(theirs) & set(mine)


# ---- open_store ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["", None, "sqlite:", "sqlite://", "  "])
def test_open_store_default_path(url: str | None, tmp_path: Path) -> None:
    store = open_store(url, tmp_path)
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "db" / "biomaj.sqlite"
    assert (tmp_path / "db").is_dir()


def test_open_store_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "x.sqlite"
    assert open_store(f"sqlite:///{target}", tmp_path / "root").path == target
    assert open_store(f"sqlite:////{target}", tmp_path / "root").path == target


@pytest.mark.parametrize("url", ["postgres://x", "sqlite:relative.db", "/abs/path", "sqlite:///"])
def test_open_store_rejects_other_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage\.url.*sqlite:///"):
        open_store(url, tmp_path)


def test_open_store_reports_an_unusable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "root"
    blocker.write_text("a file where the root directory should be")
    with pytest.raises(ConfigError, match=str(blocker / "db")):
        open_store("", blocker)


async def test_store_open_reports_an_unusable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=str(tmp_path / "file")):
        await SQLiteStore(tmp_path / "file" / "db" / "biomaj.sqlite").open()
