"""The SQLite store's connection and transactions: opening the file (WAL mode, the schema brought
up to date), and the one-transaction-per-method discipline every query of the store runs under.

Every public method runs in one transaction; writes use ``BEGIN IMMEDIATE`` so that the write
lock is held from the first read, which makes read-modify-write safe against another process
(the server and a ``biomaj ctl`` command) using the same file. Inside one process, an
``asyncio.Lock`` keeps coroutines sharing the connection from interleaving transactions.
Free-form parts of the stored documents are JSON text (:func:`to_json`, :func:`from_json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from biomaj.errors import ConfigError
from biomaj.storage.base import IncompatibleSchema, Store
from biomaj.storage.sqlite_schema import current_version, migrate


def to_json(value: Any) -> str:
    """``value`` as the compact JSON text the tables store."""
    return json.dumps(value, separators=(",", ":"))


def from_json(text: str | None) -> Any:
    """A stored JSON text as its value (None stays None)."""
    return None if text is None else json.loads(text)


def placeholders(values: Iterable[Any]) -> str:
    """``?,?,...``: one SQL parameter mark per value."""
    return ",".join("?" for _ in values)


class SQLiteConnection(Store):
    """The connection and transactions of :class:`~biomaj.storage.sqlite.SQLiteStore`.

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
        await db.execute("BEGIN IMMEDIATE")  # two processes opening at once migrate once
        try:
            await migrate(db, self.path)
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback(db)
            raise

    async def schema_version(self) -> int:
        async with self._tx() as db:
            return await current_version(db)

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
