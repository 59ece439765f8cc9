"""The SQLite store's schema: the tables (DDL), the schema version and the migrations that bring an
older database up to date, applied in order when a store opens (:func:`migrate`).

A database records each version it went through in its ``schema_version`` table. One newer than
:data:`MIGRATIONS` knows, or a file with tables but no version, is refused (IncompatibleSchema).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite

from biomaj.storage.base import IncompatibleSchema, now

Migration = Callable[[aiosqlite.Connection], Awaitable[None]]

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


async def current_version(db: aiosqlite.Connection) -> int:
    """The database's schema version (0 for a new one)."""
    rows = await db.execute_fetchall("SELECT MAX(version) FROM schema_version")
    return int(list(rows)[0][0] or 0)


async def migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Create the schema or bring it up to date; the caller holds it in one ``BEGIN IMMEDIATE``
    transaction (``path`` names the database in errors)."""
    migrations = MIGRATIONS  # looked up now, so that tests can substitute the list
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, applied REAL NOT NULL)"
    )
    current = await current_version(db)
    if current > len(migrations):
        raise IncompatibleSchema(
            f"{path}: the database has schema version {current}, newer than the"
            f" {len(migrations)} this biomaj knows; upgrade biomaj to use it"
        )
    if current == 0 and await db.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        " AND name NOT IN ('schema_version', 'sqlite_sequence')"
    ):
        raise IncompatibleSchema(
            f"{path}: not a biomaj database (it has tables but no schema version);"
            " point storage.url at another file"
        )
    for version in range(current + 1, len(migrations) + 1):
        await migrations[version - 1](db)
        await db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, now()))
