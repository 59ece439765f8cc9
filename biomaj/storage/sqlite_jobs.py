"""The SQLite store's durable job queue: queueing with a dedup key, claiming the oldest queued job,
finishing, cancelling, requeueing after a crash, listing and purging (the ``jobs`` table).

The fields the queue looks jobs up by are columns (:data:`_JOB_COLUMNS`); the rest of a job
(options, user, result ...) is JSON. Each method is one transaction of
:class:`~biomaj.storage.sqlite_connection.SQLiteConnection`, a write one wherever a read decides
the write, so a job is never handed to two claimers, even by two processes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import aiosqlite

from biomaj.storage.base import (
    ACTIVE_JOB_STATES,
    FINAL_JOB_STATES,
    JOB_CANCELLED,
    JOB_QUEUED,
    JOB_RUNNING,
    Conflict,
    Doc,
    DuplicateJob,
    NotFound,
    check_job_state,
    check_job_states,
    check_limit,
    new_job_document,
    now,
)
from biomaj.storage.sqlite_connection import SQLiteConnection, from_json, placeholders, to_json

# Job fields the store queries are columns; the rest (options, user, result...) is JSON.
_JOB_COLUMNS = (
    "id", "kind", "bank", "state", "dedup_key", "worker", "created", "started", "finished"
)


class SQLiteJobQueue(SQLiteConnection):
    """The durable-jobs methods of :class:`~biomaj.storage.sqlite.SQLiteStore`."""

    _JOB_SELECT = f"SELECT {', '.join(_JOB_COLUMNS)}, doc FROM jobs"
    _JOB_INSERT = (
        f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS[1:])}, doc, id)"
        f" VALUES ({placeholders(_JOB_COLUMNS)}, ?)"
    )
    _JOB_UPDATE = f"UPDATE jobs SET {' = ?, '.join(_JOB_COLUMNS[1:])} = ?, doc = ? WHERE id = ?"

    @staticmethod
    def _job_doc(row: Any) -> Doc:
        return {**from_json(row[-1]), **dict(zip(_JOB_COLUMNS, row[:-1]))}

    @staticmethod
    def _job_params(job: Mapping[str, Any]) -> tuple[Any, ...]:
        """Parameters of _JOB_INSERT and _JOB_UPDATE."""
        rest = {k: v for k, v in job.items() if k not in _JOB_COLUMNS}
        return (*(job.get(c) for c in _JOB_COLUMNS[1:]), to_json(rest), job["id"])

    async def _load_job(self, db: aiosqlite.Connection, job_id: str) -> Doc:
        row = await self._one(db, f"{self._JOB_SELECT} WHERE id = ?", (job_id,))
        if row is None:
            raise NotFound(f"job {job_id}: not in the store")
        return self._job_doc(row)

    async def add_job(self, doc: Mapping[str, Any], dedup_key: str | None = None) -> str:
        job = new_job_document(doc, dedup_key)
        async with self._tx(write=True) as db:
            if dedup_key is not None:
                row = await self._one(
                    db,
                    f"SELECT id, state FROM jobs WHERE dedup_key = ?"
                    f" AND state IN ({placeholders(ACTIVE_JOB_STATES)})",
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
            states = check_job_states(state)
            conditions.append(f"state IN ({placeholders(states)})")
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
            f"DELETE FROM jobs WHERE state IN ({placeholders(FINAL_JOB_STATES)}) AND finished < ?",
            (*FINAL_JOB_STATES, before),
        )
