"""The SQLite store: one file (``<root>/db/biomaj.sqlite`` by default), WAL mode.

:class:`SQLiteStore` keeps the records here: banks with their sessions, production and pending
releases, the history, users and API keys, schedules. The rest of it lives beside this module:

* ``sqlite_schema.py``: the tables, the schema version and the migrations applied at open;
* ``sqlite_connection.py``: opening the file, and the transaction each method runs in
  (``BEGIN IMMEDIATE`` for writes, so read-modify-write is safe against another process);
* ``sqlite_jobs.py``: the durable job queue.

Tables are normalised where the store itself looks things up (banks, sessions, production,
pending, users, API keys, jobs); free-form parts (a session, a production entry, a user) are
JSON text.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import aiosqlite

from biomaj.storage.base import (
    Conflict,
    Doc,
    NotFound,
    check_bank_fields,
    check_claim_fields,
    check_limit,
    check_release,
    check_session_id,
    check_unchanged,
    check_user_id,
    now,
)
from biomaj.storage.sqlite_connection import from_json, placeholders, to_json
from biomaj.storage.sqlite_jobs import SQLiteJobQueue


class SQLiteStore(SQLiteJobQueue):
    """A :class:`~biomaj.storage.base.Store` in one SQLite file, safe for several processes on one
    host: ``SQLiteStore(path, busy_timeout=30.0)``, ``busy_timeout`` being how long (seconds) a
    write waits for another process's write lock.

    Its connection and transactions come from
    :class:`~biomaj.storage.sqlite_connection.SQLiteConnection`, its job queue from
    :class:`~biomaj.storage.sqlite_jobs.SQLiteJobQueue`.
    """

    # ---- bank transactions -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _bank_tx(self, name: str) -> AsyncIterator[tuple[aiosqlite.Connection, int]]:
        """A write transaction on an existing bank: yields (connection, bank id)."""
        async with self._tx(write=True) as db:
            yield db, await self._bank_id(db, name)

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
                production=[], pending=[], properties=from_json(props), status=from_json(status),
                last_update_session=last_update, last_remove_session=last_remove,
            )
        ids = tuple(docs)
        marks = f"bank_id IN ({placeholders(ids)})"
        if not ids:
            return []
        for bid, doc in await db.execute_fetchall(
            f"SELECT bank_id, doc FROM production WHERE {marks} ORDER BY seq", ids
        ):
            docs[bid]["production"].append(from_json(doc))
        for bid, release, sid in await db.execute_fetchall(
            f"SELECT bank_id, release, session_id FROM pending WHERE {marks} ORDER BY seq", ids
        ):
            docs[bid]["pending"].append({"release": release, "id": sid})
        if sessions:
            for bid, doc in await db.execute_fetchall(
                f"SELECT bank_id, doc FROM sessions WHERE {marks} ORDER BY id", ids
            ):
                docs[bid]["sessions"].append(from_json(doc))
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
                (name, to_json(dict(properties))),
            )
            return (await self._bank_docs(db, "WHERE name = ?", (name,), sessions=True))[0]

    async def list_banks(self, names: Iterable[str] | None = None) -> list[Doc]:
        wanted = None if names is None else tuple(dict.fromkeys(names))
        if wanted == ():
            return []
        where = "" if wanted is None else f"WHERE name IN ({placeholders(wanted)})"
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
            values = [to_json(v) if k == "properties" else v for k, v in fields.items()]
            assignments = ", ".join(f"{k} = ?" for k in fields)
            await db.execute(f"UPDATE banks SET {assignments} WHERE id = ?", (*values, bank_id))

    async def set_bank_fields(self, name: str, **fields: Any) -> None:
        check_bank_fields(fields)
        async with self._bank_tx(name) as (db, bank_id):
            await self._set_fields(db, bank_id, fields)

    async def set_status(self, name: str, status: Mapping[str, Any]) -> None:
        async with self._bank_tx(name) as (db, bank_id):
            await db.execute(
                "UPDATE banks SET status = ? WHERE id = ?", (to_json(dict(status)), bank_id)
            )

    async def update_status_task(self, name: str, task: str, fields: Mapping[str, Any]) -> None:
        async with self._bank_tx(name) as (db, bank_id):
            row = await self._one(db, "SELECT status FROM banks WHERE id = ?", (bank_id,))
            status = from_json(row[0])
            entry = status.get(task)
            status[task] = {**(entry if isinstance(entry, dict) else {}), **fields}
            await db.execute("UPDATE banks SET status = ? WHERE id = ?", (to_json(status), bank_id))

    # ---- sessions --------------------------------------------------------------------------

    async def save_session(self, name: str, session: Mapping[str, Any], **bank_fields: Any) -> None:
        sid = check_session_id(session)
        check_bank_fields(bank_fields)
        async with self._bank_tx(name) as (db, bank_id):
            await db.execute(
                "INSERT INTO sessions (bank_id, id, doc) VALUES (?, ?, ?)"
                " ON CONFLICT (bank_id, id) DO UPDATE SET doc = excluded.doc",
                (bank_id, sid, to_json(dict(session))),
            )
            await self._set_fields(db, bank_id, bank_fields)

    async def get_session(self, name: str, session_id: float) -> Doc | None:
        rows = await self._read(
            "SELECT s.doc FROM sessions s JOIN banks b ON b.id = s.bank_id"
            " WHERE b.name = ? AND s.id = ?",
            (name, session_id),
        )
        return from_json(rows[0][0]) if rows else None

    async def delete_session(self, name: str, session_id: float, *, keep: bool = False) -> bool:
        async with self._bank_tx(name) as (db, bank_id):
            key = (bank_id, session_id)
            row = await self._one(db, "SELECT doc FROM sessions WHERE bank_id = ? AND id = ?", key)
            if row is not None and keep:
                doc = {**from_json(row[0]), "deleted": now()}
                await db.execute(
                    "UPDATE sessions SET doc = ? WHERE bank_id = ? AND id = ?", (to_json(doc), *key)
                )
            elif row is not None:
                await db.execute("DELETE FROM sessions WHERE bank_id = ? AND id = ?", key)
            await db.execute("DELETE FROM production WHERE bank_id = ? AND session = ?", key)
            await db.execute("DELETE FROM pending WHERE bank_id = ? AND session_id = ?", key)
            return row is not None

    # ---- production and pending ------------------------------------------------------------

    async def add_production(self, name: str, entry: Mapping[str, Any]) -> None:
        release = check_release(entry)
        async with self._bank_tx(name) as (db, bank_id):
            await db.execute(
                "DELETE FROM production WHERE bank_id = ? AND release = ?", (bank_id, release)
            )
            await db.execute(
                "INSERT INTO production (bank_id, release, session, doc) VALUES (?, ?, ?, ?)",
                (bank_id, release, entry.get("session"), to_json(dict(entry))),
            )

    async def update_production(self, name: str, release: str, fields: Mapping[str, Any]) -> bool:
        async with self._bank_tx(name) as (db, bank_id):
            row = await self._one(
                db, "SELECT seq, doc FROM production WHERE bank_id = ? AND release = ?",
                (bank_id, release),
            )
            if row is None:
                return False
            doc = {**from_json(row[1]), **fields}
            try:
                await db.execute(
                    "UPDATE production SET release = ?, session = ?, doc = ? WHERE seq = ?",
                    (check_release(doc), doc.get("session"), to_json(doc), row[0]),
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
            (entry.get("bank"), entry.get("start"), to_json(dict(entry))),
        )

    async def list_history(self, bank: str | None = None, limit: int | None = 100) -> list[Doc]:
        check_limit(limit)
        where, params = ("WHERE bank = ?", (bank,)) if bank is not None else ("", ())
        rows = await self._read(
            f"SELECT doc FROM history {where} ORDER BY start DESC, seq DESC LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [from_json(r[0]) for r in rows]

    # ---- users and schedules: (name, JSON document) tables ---------------------------------

    async def _get_doc(self, table: str, name: str) -> Doc | None:
        rows = await self._read(f"SELECT doc FROM {table} WHERE name = ?", (name,))
        return from_json(rows[0][0]) if rows else None

    async def _list_docs(self, table: str) -> list[Doc]:
        return [from_json(r[0]) for r in await self._read(f"SELECT doc FROM {table} ORDER BY name")]

    async def _merge_doc(self, table: str, name: str, fields: Mapping[str, Any]) -> None:
        async with self._tx(write=True) as db:
            row = await self._one(db, f"SELECT doc FROM {table} WHERE name = ?", (name,))
            if row is None:
                raise NotFound(f"{table[:-1]} {name}: not in the store")
            doc = {**from_json(row[0]), **fields}
            await db.execute(f"UPDATE {table} SET doc = ? WHERE name = ?", (to_json(doc), name))

    async def create_user(self, user: Mapping[str, Any]) -> None:
        name = check_user_id(user)
        try:
            await self._write(
                "INSERT INTO users (name, doc) VALUES (?, ?)", (name, to_json(dict(user)))
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"user {name}: already exists") from exc

    async def get_user(self, name: str) -> Doc | None:
        return await self._get_doc("users", name)

    async def list_users(self) -> list[Doc]:
        return await self._list_docs("users")

    async def update_user(self, name: str, fields: Mapping[str, Any]) -> None:
        check_unchanged("user", name, "id", fields)
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
        return (from_json(rows[0][4]), self._key_record(rows[0][:4])) if rows else None

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
            (name, to_json({**doc, "name": name})),
        ) > 0

    async def get_schedule(self, name: str) -> Doc | None:
        return await self._get_doc("schedules", name)

    async def list_schedules(self) -> list[Doc]:
        return await self._list_docs("schedules")

    async def update_schedule(self, name: str, fields: Mapping[str, Any]) -> None:
        check_unchanged("schedule", name, "name", fields)
        await self._merge_doc("schedules", name, fields)

    async def delete_schedule(self, name: str) -> bool:
        return await self._write("DELETE FROM schedules WHERE name = ?", (name,)) > 0

    async def claim_schedule_run(self, name: str, run: float, *, previous: float | None,
                                 fields: Mapping[str, Any] | None = None) -> bool:
        fields = check_claim_fields(name, fields)
        async with self._tx(write=True) as db:  # BEGIN IMMEDIATE: the read and the write are one step
            row = await self._one(db, "SELECT doc FROM schedules WHERE name = ?", (name,))
            if row is None:
                raise NotFound(f"schedule {name}: not in the store")
            doc = from_json(row[0])
            if doc.get("last_run") != previous:
                return False
            doc.update(fields, last_run=run)
            await db.execute("UPDATE schedules SET doc = ? WHERE name = ?", (to_json(doc), name))
            return True
