"""The MongoDB store's durable job queue (the ``jobs`` collection): queueing with a dedup key,
claiming the oldest queued job, finishing, cancelling, requeueing after a crash, listing, purging.

Jobs are claimed, finished and cancelled with ``find_one_and_update`` on their state, so a job is
never handed to two claimers; they are ordered by an ``_id`` drawn from an atomic ``$inc``
counter (the ``counters`` collection); the ``active_dedup_key`` field, present while a job is
queued or running, carries the unique index that allows one active job per dedup key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from biomaj.storage.base import (
    FINAL_JOB_STATES,
    JOB_CANCELLED,
    JOB_QUEUED,
    JOB_RUNNING,
    Conflict,
    Doc,
    DuplicateJob,
    NotFound,
    StoreError,
    check_job_state,
    check_job_states,
    check_limit,
    new_job_document,
    now,
)
from biomaj.storage.mongo_connection import RETRIES, MongoConnection
from biomaj.storage.mongo_documents import check_keys, strip_private
from biomaj.storage.mongo_schema import ACTIVE_DEDUP, COUNTERS, JOBS

_JOB_PRIVATE = ("_id", ACTIVE_DEDUP)


class MongoJobQueue(MongoConnection):
    """The durable-jobs methods of :class:`~biomaj.storage.mongo.MongoStore`."""

    async def _next_seq(self, counter: str) -> int:
        for _ in range(RETRIES):
            try:
                doc = await self._col(COUNTERS).find_one_and_update(
                    {"_id": counter}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER
                )
                return int(doc["seq"])
            except DuplicateKeyError:
                continue  # two first upserts raced: the counter exists now
        raise StoreError(f"counter {counter}: could not be incremented")

    @staticmethod
    def _job_out(raw: Mapping[str, Any] | None) -> Doc | None:
        return strip_private(raw, _JOB_PRIVATE)

    async def _job_or_not_found(self, job_id: str) -> Doc:
        job = self._job_out(await self._col(JOBS).find_one({"id": job_id}))
        if job is None:
            raise NotFound(f"job {job_id}: not in the store")
        return job

    async def add_job(self, doc: Mapping[str, Any], dedup_key: str | None = None) -> str:
        job = new_job_document({k: v for k, v in doc.items() if k not in _JOB_PRIVATE}, dedup_key)
        check_keys(doc, "job")
        jobs = self._col(JOBS)
        for _ in range(RETRIES):
            if dedup_key is not None:
                active = await jobs.find_one({ACTIVE_DEDUP: dedup_key})
                if active is not None:
                    raise DuplicateJob(f"{dedup_key}: job {active['id']} is already {active['state']}",
                                       active["id"])
            record = {**job, "_id": await self._next_seq(JOBS)}
            if dedup_key is not None:
                record[ACTIVE_DEDUP] = dedup_key
            try:
                await jobs.insert_one(record)
                return job["id"]
            except DuplicateKeyError:
                if await jobs.find_one({"id": job["id"]}, {"_id": 1}) is not None:
                    raise Conflict(f"job {job['id']}: a job with this id exists") from None
                # else another job took the dedup key first: the next turn reports it
        raise StoreError(f"job {job['id']}: could not be queued under concurrent writes")

    async def get_job(self, job_id: str) -> Doc | None:
        return self._job_out(await self._col(JOBS).find_one({"id": job_id}))

    async def list_jobs(
        self,
        state: str | Iterable[str] | None = None,
        bank: str | None = None,
        limit: int | None = 100,
    ) -> list[Doc]:
        check_limit(limit)
        query: dict[str, Any] = {}
        if state is not None:
            query["state"] = {"$in": check_job_states(state)}
        if bank is not None:
            query["bank"] = bank
        cursor = self._col(JOBS).find(query).sort([("_id", -1)])
        if limit is not None:
            cursor = cursor.limit(limit)
        return [self._job_out(raw) for raw in await cursor.to_list()]

    async def claim_job(self, worker: str, job_id: str | None = None) -> Doc | None:
        query: dict[str, Any] = {"state": JOB_QUEUED}
        if job_id is not None:
            query["id"] = job_id
        claimed = await self._col(JOBS).find_one_and_update(
            query,
            {"$set": {"state": JOB_RUNNING, "worker": worker, "started": now()}, "$inc": {"attempts": 1}},
            sort=[("_id", 1)],
            return_document=ReturnDocument.AFTER,
        )
        return self._job_out(claimed)

    async def finish_job(
        self, job_id: str, state: str, result: Any = None, error: str | None = None
    ) -> Doc:
        check_job_state(state, FINAL_JOB_STATES)
        done = await self._col(JOBS).find_one_and_update(
            {"id": job_id, "state": JOB_RUNNING},
            {"$set": {"state": state, "result": result, "error": error, "finished": now()},
             "$unset": {ACTIVE_DEDUP: ""}},
            return_document=ReturnDocument.AFTER,
        )
        if done is not None:
            return self._job_out(done)
        job = await self._job_or_not_found(job_id)
        raise Conflict(f"job {job_id}: cannot finish it, it is {job['state']}")

    async def requeue_running(self, worker: str | None = None, job_id: str | None = None) -> list[str]:
        query: dict[str, Any] = {"state": JOB_RUNNING}
        if worker is not None:
            query["worker"] = worker
        if job_id is not None:
            query["id"] = job_id
        jobs = self._col(JOBS)
        requeued = []
        for raw in await jobs.find(query, {"id": 1}).sort([("_id", 1)]).to_list():
            # Conditional on still running (for that worker): a job finished meanwhile stays so.
            result = await jobs.update_one({**query, "id": raw["id"]},
                                           {"$set": {"state": JOB_QUEUED, "worker": None, "started": None}})
            if result.modified_count:
                requeued.append(raw["id"])
        return requeued

    async def cancel_job(self, job_id: str) -> Doc:
        jobs = self._col(JOBS)
        for _ in range(RETRIES):
            cancelled = await jobs.find_one_and_update(
                {"id": job_id, "state": JOB_QUEUED},
                {"$set": {"state": JOB_CANCELLED, "finished": now()}, "$unset": {ACTIVE_DEDUP: ""}},
                return_document=ReturnDocument.AFTER,
            )
            if cancelled is not None:
                return self._job_out(cancelled)
            flagged = await jobs.find_one_and_update(
                {"id": job_id, "state": JOB_RUNNING}, {"$set": {"cancel_requested": True}},
                return_document=ReturnDocument.AFTER,
            )
            if flagged is not None:  # its worker sees the flag and finishes the job
                return self._job_out(flagged)
            job = await self._job_or_not_found(job_id)
            if job["state"] in FINAL_JOB_STATES:
                return job
            # requeued between our two writes: try again
        raise StoreError(f"job {job_id}: kept changing state under concurrent writes")

    async def purge_jobs(self, before: float) -> int:
        result = await self._col(JOBS).delete_many(
            {"state": {"$in": list(FINAL_JOB_STATES)}, "finished": {"$lt": before}}
        )
        return result.deleted_count
