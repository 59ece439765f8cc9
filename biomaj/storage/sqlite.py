"""The SQLite store: one file (``<root>/db/biomaj.sqlite`` by default), WAL mode.

Every public method runs in one transaction; writes use ``BEGIN IMMEDIATE`` so that the write
lock is held from the first read, which makes read-modify-write safe against another process
(the server and a ``biomaj ctl`` command) using the same file. Inside one process, an
``asyncio.Lock`` keeps coroutines sharing the connection from interleaving transactions.

Tables are normalised where the store itself looks things up (banks, sessions, production,
pending, users, API keys, jobs); free-form parts (a session, a production entry, a user) are
JSON text. The schema evolves through :data:`MIGRATIONS`, applied in order at open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiosqlite

from biomaj.errors import ConfigError
from biomaj.storage.base import (
    ACTIVE_JOB_STATES,
    FINAL_JOB_STATES,
    JOB_CANCELLED,
    JOB_QUEUED,
    JOB_RUNNING,
    Conflict,
    Doc,
    DuplicateJob,
    IncompatibleSchema,
    NotFound,
    Store,
    check_bank_fields,
    check_job_state,
    check_limit,
    check_session_id,
    new_job_id,
    now,
)

Migration = Callable[[aiosqlite.Connection], Awaitable[None]]

# ---- schema and migrations -----------------------------------------------------------------

_SCHEMA_1 = [
    """CREATE TABLE banks (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        current REAL,
        properties TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT '{}',
        last_update_session REAL,
        last_remove_session REAL
    )""",
    """CREATE TABLE sessions (
        bank_id INTEGER NOT NULL REFERENCES banks(id) ON DELETE CASCADE,
        id REAL NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (bank_id, id)
    )""",
    """CREATE TABLE production (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        bank_id INTEGER NOT NULL REFERENCES banks(id) ON DELETE CASCADE,
        release TEXT NOT NULL,
        session REAL,
        doc TEXT NOT NULL,
        UNIQUE (bank_id, release)
    )""",
    """CREATE TABLE pending (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        bank_id INTEGER NOT NULL REFERENCES banks(id) ON DELETE CASCADE,
        release TEXT NOT NULL,
        session_id REAL NOT NULL,
        UNIQUE (bank_id, release)
    )""",
    """CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        bank TEXT,
        start REAL,
        doc TEXT NOT NULL
    )""",
    "CREATE INDEX history_start ON history (start, seq)",
    "CREATE INDEX history_bank_start ON history (bank, start, seq)",
    "CREATE TABLE users (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        hash TEXT NOT NULL UNIQUE,
        label TEXT,
        created REAL
    )""",
    "CREATE INDEX api_keys_user ON api_keys (user)",
    "CREATE TABLE schedules (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    """CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        bank TEXT,
        state TEXT NOT NULL,
        dedup_key TEXT,
        worker TEXT,
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        doc TEXT NOT NULL
    )""",
    "CREATE INDEX jobs_state ON jobs (state, seq)",
    "CREATE INDEX jobs_bank ON jobs (bank, seq)",
    # Second line of defence behind add_job's check: one active job per dedup key.
    """CREATE UNIQUE INDEX jobs_active_dedup ON jobs (dedup_key)
        WHERE dedup_key IS NOT NULL AND state IN ('queued', 'running')""",
]


async def _migration_1(db: aiosqlite.Connection) -> None:
    """Initial schema."""
    for statement in _SCHEMA_1:
        await db.execute(statement)


# MIGRATIONS[i] brings a database from version i to version i + 1. Append, never edit or
# reorder. Each runs inside the open's BEGIN IMMEDIATE transaction with foreign keys ON, so
# a table rebuild must use PRAGMA defer_foreign_keys rather than turning them off.
MIGRATIONS: list[Migration] = [_migration_1]


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _placeholders(values: Iterable[Any]) -> str:
    return ",".join("?" for _ in values)


# Job fields the store queries are columns; the rest (options, user, result...) is JSON.
_JOB_COLUMNS = (
    "id", "kind", "bank", "state", "dedup_key", "worker", "created", "started", "finished"
)


class SQLiteStore(Store):
    """A :class:`Store` in one SQLite file, safe for several processes on one host.

    ``busy_timeout`` is how long (seconds) a write waits for another process's write lock.
    """

    def __init__(self, path: Path | str, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"sqlite {self.path}"

    # ---- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        self._lock = asyncio.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"storage.url: cannot open the database {self.path}: {exc}") from exc
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL
            await db.execute("PRAGMA foreign_keys = ON")
            await self._migrate(db)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, disk full...
                raise ConfigError(
                    f"storage.url: cannot use the database {self.path}: {exc}"
                ) from exc
            if isinstance(exc, sqlite3.DatabaseError):  # "file is not a database"
                raise IncompatibleSchema(f"{self.path}: not a biomaj database ({exc})") from exc
            raise
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        migrations = MIGRATIONS  # looked up now, so that tests can substitute the list
        await db.execute("BEGIN IMMEDIATE")  # two processes opening at once migrate once
        try:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied REAL NOT NULL)"
            )
            current = await self._version(db)
            if current > len(migrations):
                raise IncompatibleSchema(
                    f"{self.path}: the database has schema version {current}, newer than the"
                    f" {len(migrations)} this biomaj knows; upgrade biomaj to use it"
                )
            if current == 0 and await db.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT IN ('schema_version', 'sqlite_sequence')"
            ):
                raise IncompatibleSchema(
                    f"{self.path}: not a biomaj database (it has tables but no schema version);"
                    " point storage.url at another file"
                )
            for version in range(current + 1, len(migrations) + 1):
                await migrations[version - 1](db)
                await db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, now()))
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback(db)
            raise

    @staticmethod
    async def _version(db: aiosqlite.Connection) -> int:
        rows = await db.execute_fetchall("SELECT MAX(version) FROM schema_version")
        return int(list(rows)[0][0] or 0)

    async def schema_version(self) -> int:
        async with self._tx() as db:
            return await self._version(db)

    # ---- transactions and helpers ----------------------------------------------------------

    @staticmethod
    async def _rollback(db: aiosqlite.Connection) -> None:
        # Shielded so that a second cancellation cannot leave the transaction open.
        with contextlib.suppress(sqlite3.Error):
            await asyncio.shield(db.execute("ROLLBACK"))

    @contextlib.asynccontextmanager
    async def _tx(self, write: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction; ``write`` takes the database write lock at once."""
        db = self._db
        if db is None:
            raise RuntimeError("SQLiteStore used before open()")
        async with self._lock:
            try:
                # BEGIN inside the try: when cancelled, the statement still runs in aiosqlite's
                # thread, and the ROLLBACK queued after it closes the transaction.
                await db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield db
                await db.execute("COMMIT")
            except BaseException:
                await self._rollback(db)
                raise

    @contextlib.asynccontextmanager
    async def _bank_tx(self, name: str) -> AsyncIterator[tuple[aiosqlite.Connection, int]]:
        """A write transaction on an existing bank: yields (connection, bank id)."""
        async with self._tx(write=True) as db:
            yield db, await self._bank_id(db, name)

    @staticmethod
    async def _one(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = list(await db.execute_fetchall(sql, tuple(params)))
        return rows[0] if rows else None

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """All rows of one query, in its own transaction."""
        async with self._tx() as db:
            return list(await db.execute_fetchall(sql, tuple(params)))

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one statement in its own write transaction; returns the changed row count."""
        async with self._tx(write=True) as db:
            return (await db.execute(sql, tuple(params))).rowcount

    async def _bank_id(self, db: aiosqlite.Connection, name: str) -> int:
        row = await self._one(db, "SELECT id FROM banks WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"bank {name}: not in the store")
        return row[0]

    # ---- banks -----------------------------------------------------------------------------

    async def _bank_docs(
        self, db: aiosqlite.Connection, where: str, params: tuple[Any, ...], sessions: bool
    ) -> list[Doc]:
        rows = await db.execute_fetchall(
            "SELECT id, name, current, properties, status, last_update_session,"
            f" last_remove_session FROM banks {where} ORDER BY name",
            params,
        )
        docs: dict[int, Doc] = {}
        for bid, name, current, props, status, last_update, last_remove in rows:
            docs[bid] = {"name": name, "current": current, **({"sessions": []} if sessions else {})}
            docs[bid].update(
                production=[], pending=[], properties=_load(props), status=_load(status),
                last_update_session=last_update, last_remove_session=last_remove,
            )
        ids = tuple(docs)
        marks = f"bank_id IN ({_placeholders(ids)})"
        if not ids:
            return []
        for bid, doc in await db.execute_fetchall(
            f"SELECT bank_id, doc FROM production WHERE {marks} ORDER BY seq", ids
        ):
            docs[bid]["production"].append(_load(doc))
        for bid, release, sid in await db.execute_fetchall(
            f"SELECT bank_id, release, session_id FROM pending WHERE {marks} ORDER BY seq", ids
        ):
            docs[bid]["pending"].append({"release": release, "id": sid})
        if sessions:
            for bid, doc in await db.execute_fetchall(
                f"SELECT bank_id, doc FROM sessions WHERE {marks} ORDER BY id", ids
            ):
                docs[bid]["sessions"].append(_load(doc))
        return list(docs.values())

    async def get_bank(self, name: str) -> Doc | None:
        async with self._tx() as db:
            docs = await self._bank_docs(db, "WHERE name = ?", (name,), sessions=True)
        return docs[0] if docs else None

    async def ensure_bank(self, name: str, properties: Mapping[str, Any]) -> Doc:
        existing = await self.get_bank(name)  # the common case takes no write lock
        if existing is not None:
            return existing
        async with self._tx(write=True) as db:
            await db.execute(
                "INSERT INTO banks (name, properties) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, _dump(dict(properties))),
            )
            return (await self._bank_docs(db, "WHERE name = ?", (name,), sessions=True))[0]

    async def list_banks(self, names: Iterable[str] | None = None) -> list[Doc]:
        wanted = None if names is None else tuple(dict.fromkeys(names))
        if wanted == ():
            return []
        where = "" if wanted is None else f"WHERE name IN ({_placeholders(wanted)})"
        async with self._tx() as db:
            return await self._bank_docs(db, where, wanted or (), sessions=False)

    async def delete_bank(self, name: str) -> bool:
        return await self._write("DELETE FROM banks WHERE name = ?", (name,)) > 0

    async def rename_bank(self, name: str, new_name: str) -> None:
        async with self._bank_tx(name) as (db, bank_id):
            try:
                await db.execute("UPDATE banks SET name = ? WHERE id = ?", (new_name, bank_id))
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"bank {new_name}: already exists, cannot rename {name}") from exc

    @staticmethod
    async def _set_fields(
        db: aiosqlite.Connection, bank_id: int, fields: Mapping[str, Any]
    ) -> None:
        if fields:  # names were checked by check_bank_fields
            values = [_dump(v) if k == "properties" else v for k, v in fields.items()]
            assignments = ", ".join(f"{k} = ?" for k in fields)
            await db.execute(f"UPDATE banks SET {assignments} WHERE id = ?", (*values, bank_id))

    async def set_bank_fields(self, name: str, **fields: Any) -> None:
        check_bank_fields(fields)
        async with self._bank_tx(name) as (db, bank_id):
            await self._set_fields(db, bank_id, fields)

    async def set_status(self, name: str, status: Mapping[str, Any]) -> None:
        async with self._bank_tx(name) as (db, bank_id):
            await db.execute(
                "UPDATE banks SET status = ? WHERE id = ?", (_dump(dict(status)), bank_id)
            )

    async def update_status_task(self, name: str, task: str, fields: Mapping[str, Any]) -> None:
        async with self._bank_tx(name) as (db, bank_id):
            row = await self._one(db, "SELECT status FROM banks WHERE id = ?", (bank_id,))
            status = _load(row[0])
            entry = status.get(task)
            status[task] = {**(entry if isinstance(entry, dict) else {}), **fields}
            await db.execute("UPDATE banks SET status = ? WHERE id = ?", (_dump(status), bank_id))

    # ---- sessions --------------------------------------------------------------------------

    async def save_session(self, name: str, session: Mapping[str, Any], **bank_fields: Any) -> None:
        sid = check_session_id(session)
        check_bank_fields(bank_fields)
        async with self._bank_tx(name) as (db, bank_id):
            await db.execute(
                "INSERT INTO sessions (bank_id, id, doc) VALUES (?, ?, ?)"
                " ON CONFLICT (bank_id, id) DO UPDATE SET doc = excluded.doc",
                (bank_id, sid, _dump(dict(session))),
            )
            await self._set_fields(db, bank_id, bank_fields)

    async def get_session(self, name: str, session_id: float) -> Doc | None:
        rows = await self._read(
            "SELECT s.doc FROM sessions s JOIN banks b ON b.id = s.bank_id"
            " WHERE b.name = ? AND s.id = ?",
            (name, session_id),
        )
        return _load(rows[0][0]) if rows else None

    async def delete_session(self, name: str, session_id: float, *, keep: bool = False) -> bool:
        async with self._bank_tx(name) as (db, bank_id):
            key = (bank_id, session_id)
            row = await self._one(db, "SELECT doc FROM sessions WHERE bank_id = ? AND id = ?", key)
            if row is not None and keep:
                doc = {**_load(row[0]), "deleted": now()}
                await db.execute(
                    "UPDATE sessions SET doc = ? WHERE bank_id = ? AND id = ?", (_dump(doc), *key)
                )
            elif row is not None:
                await db.execute("DELETE FROM sessions WHERE bank_id = ? AND id = ?", key)
            await db.execute("DELETE FROM production WHERE bank_id = ? AND session = ?", key)
            await db.execute("DELETE FROM pending WHERE bank_id = ? AND session_id = ?", key)
            return row is not None

    # ---- production and pending ------------------------------------------------------------

    @staticmethod
    def _release_of(entry: Mapping[str, Any]) -> str:
        release = entry.get("release")
        if not isinstance(release, str) or not release:
            raise ValueError(f"production entry: 'release' must be a non-empty string: {release!r}")
        return release

    async def add_production(self, name: str, entry: Mapping[str, Any]) -> None:
        release = self._release_of(entry)
        async with self._bank_tx(name) as (db, bank_id):
            await db.execute(
                "DELETE FROM production WHERE bank_id = ? AND release = ?", (bank_id, release)
            )
            await db.execute(
                "INSERT INTO production (bank_id, release, session, doc) VALUES (?, ?, ?, ?)",
                (bank_id, release, entry.get("session"), _dump(dict(entry))),
            )

    async def update_production(self, name: str, release: str, fields: Mapping[str, Any]) -> bool:
        async with self._bank_tx(name) as (db, bank_id):
            row = await self._one(
                db, "SELECT seq, doc FROM production WHERE bank_id = ? AND release = ?",
                (bank_id, release),
            )
            if row is None:
                return False
            doc = {**_load(row[1]), **fields}
            try:
                await db.execute(
                    "UPDATE production SET release = ?, session = ?, doc = ? WHERE seq = ?",
                    (self._release_of(doc), doc.get("session"), _dump(doc), row[0]),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"bank {name}: release {doc['release']} is in production") from exc
            return True

    async def remove_production(self, name: str, release: str) -> bool:
        async with self._bank_tx(name) as (db, bank_id):
            cur = await db.execute(
                "DELETE FROM production WHERE bank_id = ? AND release = ?", (bank_id, release)
            )
            return cur.rowcount > 0

    async def add_pending(self, name: str, release: str, session_id: float) -> bool:
        async with self._bank_tx(name) as (db, bank_id):
            cur = await db.execute(
                "INSERT INTO pending (bank_id, release, session_id) VALUES (?, ?, ?)"
                " ON CONFLICT (bank_id, release) DO NOTHING",
                (bank_id, release, session_id),
            )
            return cur.rowcount > 0

    async def remove_pending(
        self, name: str, release: str | None = None, session_id: float | None = None
    ) -> int:
        sql, params = "DELETE FROM pending WHERE bank_id = ?", []
        if release is not None:
            sql, params = sql + " AND release = ?", [*params, release]
        if session_id is not None:
            sql, params = sql + " AND session_id = ?", [*params, session_id]
        async with self._bank_tx(name) as (db, bank_id):
            return (await db.execute(sql, (bank_id, *params))).rowcount

    # ---- history ---------------------------------------------------------------------------

    async def add_history(self, entry: Mapping[str, Any]) -> None:
        await self._write(
            "INSERT INTO history (bank, start, doc) VALUES (?, ?, ?)",
            (entry.get("bank"), entry.get("start"), _dump(dict(entry))),
        )

    async def list_history(self, bank: str | None = None, limit: int | None = 100) -> list[Doc]:
        check_limit(limit)
        where, params = ("WHERE bank = ?", (bank,)) if bank is not None else ("", ())
        rows = await self._read(
            f"SELECT doc FROM history {where} ORDER BY start DESC, seq DESC LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [_load(r[0]) for r in rows]

    # ---- users and schedules: (name, JSON document) tables ---------------------------------

    async def _get_doc(self, table: str, name: str) -> Doc | None:
        rows = await self._read(f"SELECT doc FROM {table} WHERE name = ?", (name,))
        return _load(rows[0][0]) if rows else None

    async def _list_docs(self, table: str) -> list[Doc]:
        return [_load(r[0]) for r in await self._read(f"SELECT doc FROM {table} ORDER BY name")]

    async def _merge_doc(self, table: str, name: str, fields: Mapping[str, Any]) -> None:
        async with self._tx(write=True) as db:
            row = await self._one(db, f"SELECT doc FROM {table} WHERE name = ?", (name,))
            if row is None:
                raise NotFound(f"{table[:-1]} {name}: not in the store")
            doc = {**_load(row[0]), **fields}
            await db.execute(f"UPDATE {table} SET doc = ? WHERE name = ?", (_dump(doc), name))

    async def create_user(self, user: Mapping[str, Any]) -> None:
        name = user.get("id")
        if not isinstance(name, str) or not name:
            raise ValueError(f"user: 'id' (the user name) must be a non-empty string: {name!r}")
        try:
            await self._write(
                "INSERT INTO users (name, doc) VALUES (?, ?)", (name, _dump(dict(user)))
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"user {name}: already exists") from exc

    async def get_user(self, name: str) -> Doc | None:
        return await self._get_doc("users", name)

    async def list_users(self) -> list[Doc]:
        return await self._list_docs("users")

    async def update_user(self, name: str, fields: Mapping[str, Any]) -> None:
        if fields.get("id", name) != name:
            raise ValueError(f"user {name}: 'id' cannot be changed")
        await self._merge_doc("users", name, fields)

    async def delete_user(self, name: str) -> bool:
        # Its API keys go too, by ON DELETE CASCADE.
        return await self._write("DELETE FROM users WHERE name = ?", (name,)) > 0

    async def add_api_key(
        self, name: str, key_id: str, key_hash: str, label: str, created: float
    ) -> None:
        async with self._tx(write=True) as db:
            if await self._one(db, "SELECT 1 FROM users WHERE name = ?", (name,)) is None:
                raise NotFound(f"user {name}: not in the store")
            try:
                await db.execute(
                    "INSERT INTO api_keys (id, user, hash, label, created) VALUES (?, ?, ?, ?, ?)",
                    (key_id, name, key_hash, label, created),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"user {name}: API key {key_id} or its hash is in use") from exc

    @staticmethod
    def _key_record(row: Any) -> Doc:
        return dict(zip(("id", "user", "label", "created"), row))

    async def find_api_key(self, key_hash: str) -> tuple[Doc, Doc] | None:
        rows = await self._read(
            "SELECT k.id, k.user, k.label, k.created, u.doc FROM api_keys k"
            " JOIN users u ON u.name = k.user WHERE k.hash = ?",
            (key_hash,),
        )
        return (_load(rows[0][4]), self._key_record(rows[0][:4])) if rows else None

    async def list_api_keys(self, name: str) -> list[Doc]:
        rows = await self._read(
            "SELECT id, user, label, created FROM api_keys WHERE user = ? ORDER BY created, rowid",
            (name,),
        )
        return [self._key_record(r) for r in rows]

    async def export_api_keys(self) -> list[Doc]:
        rows = await self._read("SELECT id, user, label, created, hash FROM api_keys ORDER BY created, rowid")
        return [{**self._key_record(row[:4]), "hash": row[4]} for row in rows]

    async def revoke_api_key(self, name: str, key_id: str) -> bool:
        return await self._write(
            "DELETE FROM api_keys WHERE user = ? AND id = ?", (name, key_id)
        ) > 0

    async def put_schedule(self, name: str, doc: Mapping[str, Any], *, replace: bool = True) -> bool:
        conflict = "DO UPDATE SET doc = excluded.doc" if replace else "DO NOTHING"
        return await self._write(
            f"INSERT INTO schedules (name, doc) VALUES (?, ?) ON CONFLICT (name) {conflict}",
            (name, _dump({**doc, "name": name})),
        ) > 0

    async def get_schedule(self, name: str) -> Doc | None:
        return await self._get_doc("schedules", name)

    async def list_schedules(self) -> list[Doc]:
        return await self._list_docs("schedules")

    async def update_schedule(self, name: str, fields: Mapping[str, Any]) -> None:
        if fields.get("name", name) != name:
            raise ValueError(f"schedule {name}: 'name' cannot be changed")
        await self._merge_doc("schedules", name, fields)

    async def delete_schedule(self, name: str) -> bool:
        return await self._write("DELETE FROM schedules WHERE name = ?", (name,)) > 0

    async def claim_schedule_run(self, name: str, run: float, *, previous: float | None,
                                 fields: Mapping[str, Any] | None = None) -> bool:
        fields = dict(fields or {})
        if "name" in fields or "last_run" in fields:
            raise ValueError(f"schedule {name}: fields cannot set 'name' or 'last_run'")
        async with self._tx(write=True) as db:  # BEGIN IMMEDIATE: the read and the write are one step
            row = await self._one(db, "SELECT doc FROM schedules WHERE name = ?", (name,))
            if row is None:
                raise NotFound(f"schedule {name}: not in the store")
            doc = _load(row[0])
            if doc.get("last_run") != previous:
                return False
            doc.update(fields, last_run=run)
            await db.execute("UPDATE schedules SET doc = ? WHERE name = ?", (_dump(doc), name))
            return True

    # ---- durable jobs ----------------------------------------------------------------------

    _JOB_SELECT = f"SELECT {', '.join(_JOB_COLUMNS)}, doc FROM jobs"
    _JOB_INSERT = (
        f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS[1:])}, doc, id)"
        f" VALUES ({_placeholders(_JOB_COLUMNS)}, ?)"
    )
    _JOB_UPDATE = f"UPDATE jobs SET {' = ?, '.join(_JOB_COLUMNS[1:])} = ?, doc = ? WHERE id = ?"

    @staticmethod
    def _job_doc(row: Any) -> Doc:
        return {**_load(row[-1]), **dict(zip(_JOB_COLUMNS, row[:-1]))}

    @staticmethod
    def _job_params(job: Mapping[str, Any]) -> tuple[Any, ...]:
        """Parameters of _JOB_INSERT and _JOB_UPDATE."""
        rest = {k: v for k, v in job.items() if k not in _JOB_COLUMNS}
        return (*(job.get(c) for c in _JOB_COLUMNS[1:]), _dump(rest), job["id"])

    async def _load_job(self, db: aiosqlite.Connection, job_id: str) -> Doc:
        row = await self._one(db, f"{self._JOB_SELECT} WHERE id = ?", (job_id,))
        if row is None:
            raise NotFound(f"job {job_id}: not in the store")
        return self._job_doc(row)

    async def add_job(self, doc: Mapping[str, Any], dedup_key: str | None = None) -> str:
        if not isinstance(doc.get("kind"), str) or not doc["kind"]:
            raise ValueError(f"job: 'kind' must be a non-empty string: {doc.get('kind')!r}")
        job = {
            "bank": None, "options": {}, "user": None, "result": None, "error": None,
            **doc,
            "id": doc.get("id") or new_job_id(), "state": JOB_QUEUED, "dedup_key": dedup_key,
            "worker": None, "attempts": 0, "cancel_requested": False,
            "created": now(), "started": None, "finished": None,
        }
        async with self._tx(write=True) as db:
            if dedup_key is not None:
                row = await self._one(
                    db,
                    f"SELECT id, state FROM jobs WHERE dedup_key = ?"
                    f" AND state IN ({_placeholders(ACTIVE_JOB_STATES)})",
                    (dedup_key, *ACTIVE_JOB_STATES),
                )
                if row is not None:
                    raise DuplicateJob(f"{dedup_key}: job {row[0]} is already {row[1]}", row[0])
            try:
                await db.execute(self._JOB_INSERT, self._job_params(job))
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"job {job['id']}: a job with this id exists") from exc
        return job["id"]

    async def get_job(self, job_id: str) -> Doc | None:
        rows = await self._read(f"{self._JOB_SELECT} WHERE id = ?", (job_id,))
        return self._job_doc(rows[0]) if rows else None

    async def list_jobs(
        self,
        state: str | Iterable[str] | None = None,
        bank: str | None = None,
        limit: int | None = 100,
    ) -> list[Doc]:
        check_limit(limit)
        conditions, params = ["1"], []
        if state is not None:
            states = (state,) if isinstance(state, str) else tuple(state)
            for s in states:
                check_job_state(s)
            conditions.append(f"state IN ({_placeholders(states)})")
            params.extend(states)
        if bank is not None:
            conditions.append("bank = ?")
            params.append(bank)
        rows = await self._read(
            f"{self._JOB_SELECT} WHERE {' AND '.join(conditions)} ORDER BY seq DESC LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [self._job_doc(r) for r in rows]

    async def claim_job(self, worker: str, job_id: str | None = None) -> Doc | None:
        sql, params = f"{self._JOB_SELECT} WHERE state = ?", [JOB_QUEUED]
        if job_id is not None:
            sql, params = sql + " AND id = ?", [*params, job_id]
        async with self._tx(write=True) as db:
            row = await self._one(db, sql + " ORDER BY seq LIMIT 1", params)
            if row is None:
                return None
            job = self._job_doc(row)
            job.update(state=JOB_RUNNING, worker=worker, started=now())
            job["attempts"] = job.get("attempts", 0) + 1
            await db.execute(self._JOB_UPDATE, self._job_params(job))
        return job

    async def finish_job(
        self, job_id: str, state: str, result: Any = None, error: str | None = None
    ) -> Doc:
        check_job_state(state, FINAL_JOB_STATES)
        async with self._tx(write=True) as db:
            job = await self._load_job(db, job_id)
            if job["state"] != JOB_RUNNING:
                raise Conflict(f"job {job_id}: cannot finish it, it is {job['state']}")
            job.update(state=state, result=result, error=error, finished=now())
            await db.execute(self._JOB_UPDATE, self._job_params(job))
        return job

    async def requeue_running(self, worker: str | None = None, job_id: str | None = None) -> list[str]:
        sql, params = f"{self._JOB_SELECT} WHERE state = ?", [JOB_RUNNING]
        if worker is not None:
            sql, params = sql + " AND worker = ?", [*params, worker]
        if job_id is not None:
            sql, params = sql + " AND id = ?", [*params, job_id]
        async with self._tx(write=True) as db:
            rows = await db.execute_fetchall(sql + " ORDER BY seq", params)
            jobs = [self._job_doc(r) for r in rows]
            for job in jobs:
                job.update(state=JOB_QUEUED, worker=None, started=None)
                await db.execute(self._JOB_UPDATE, self._job_params(job))
        return [job["id"] for job in jobs]

    async def cancel_job(self, job_id: str) -> Doc:
        async with self._tx(write=True) as db:
            job = await self._load_job(db, job_id)
            if job["state"] == JOB_QUEUED:
                job.update(state=JOB_CANCELLED, finished=now())
            elif job["state"] == JOB_RUNNING:
                job["cancel_requested"] = True  # its worker sees it and finishes the job
            else:
                return job
            await db.execute(self._JOB_UPDATE, self._job_params(job))
        return job

    async def purge_jobs(self, before: float) -> int:
        return await self._write(
            f"DELETE FROM jobs WHERE state IN ({_placeholders(FINAL_JOB_STATES)}) AND finished < ?",
            (*FINAL_JOB_STATES, before),
        )
