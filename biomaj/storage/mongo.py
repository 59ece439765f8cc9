"""The MongoDB store, on PyMongo's ``AsyncMongoClient``: for several manager nodes sharing one store,
and for sites that already run BioMAJ 3 on MongoDB.

``storage.url: mongodb://host:27017/biomaj`` (or ``MONGO_URL`` / ``MONGO_DB``) selects it; the
database is the URL's path, ``biomaj`` when it has none (BioMAJ 3's ``db.name`` default).

Collections. ``banks`` and ``history`` have BioMAJ 3's document layout (reference
``biomaj3-core-behaviour.md`` section 3), so this store can open a BioMAJ 3 database as it is and
show its banks, releases and history; ``users`` keeps biomaj-user's ``{id, hashed_password, email,
is_ldap}``. What BioMAJ 3 did not have lives in collections of its own: ``api_keys`` (hashed),
``schedules``, ``jobs``, ``counters`` (the job sequence) and ``biomaj_schema``.

Atomicity. Every write is one single-document operation, conditional where a read decides it,
so two managers never lose each other's writes and never need a transaction:

* a field or an array element changes with ``$set``/``$push``/``$pull`` on the one bank document;
* "insert unless present" writes carry the condition in their filter (``"pending.release":
  {"$ne": r}``), and "replace" writes are compare-and-set on the array they replace, retried when
  another writer changed it in between;
* uniqueness (bank, user and schedule names, API key ids and hashes, job ids, one active job per
  dedup key) is a unique index, so a lost race is a ``DuplicateKeyError``, not a duplicate;
* jobs are claimed, finished and cancelled with ``find_one_and_update`` on their state, and are
  ordered by an ``_id`` drawn from an atomic ``$inc`` counter.

Modules. This one keeps :class:`MongoStore`'s records: banks with their sessions, production and
pending releases, the history, users and API keys, schedules. ``mongo_connection.py`` has the
client and opening a store, ``mongo_schema.py`` the collections, indexes and schema version,
``mongo_documents.py`` the documents made plain, and ``mongo_jobs.py`` the durable job queue.

Only the subset of the driver's API that ``tests/storage/mongo_double.py`` implements is used, so
that the conformance suite runs the same code on the double and on a real server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from biomaj.storage.base import (
    Conflict,
    Doc,
    NotFound,
    StoreError,
    check_bank_fields,
    check_claim_fields,
    check_limit,
    check_release,
    check_session_id,
    check_unchanged,
    check_user_id,
    new_bank_document,
    now,
)
from biomaj.storage.mongo_connection import RETRIES
from biomaj.storage.mongo_documents import bank_document, check_keys, plain, strip_private
from biomaj.storage.mongo_jobs import MongoJobQueue
from biomaj.storage.mongo_schema import API_KEYS, BANKS, HISTORY, SCHEDULES, USERS


class MongoStore(MongoJobQueue):
    """A :class:`~biomaj.storage.base.Store` in a MongoDB database, shared safely by any number of
    processes and nodes: ``MongoStore(url, database=None, client_factory=None)``.

    ``client_factory(url)`` builds the client (default
    :func:`~biomaj.storage.mongo_connection.connect`); ``database`` overrides the URL's database.
    Its connection comes from :class:`~biomaj.storage.mongo_connection.MongoConnection`, its job
    queue from :class:`~biomaj.storage.mongo_jobs.MongoJobQueue`.
    """

    # ---- banks -----------------------------------------------------------------------------

    async def _bank_exists(self, name: str) -> bool:
        return await self._col(BANKS).find_one({"name": name}, {"_id": 1}) is not None

    async def _require_bank(self, name: str) -> None:
        if not await self._bank_exists(name):
            raise NotFound(f"bank {name}: not in the store")

    async def _update_bank(self, name: str, update: Mapping[str, Any]) -> None:
        """One update of an existing bank; NotFound if there is none."""
        if not any(update.values()):  # nothing to write: MongoDB refuses an empty $set
            return await self._require_bank(name)
        result = await self._col(BANKS).update_one({"name": name}, {k: v for k, v in update.items() if v})
        if result.matched_count == 0:
            raise NotFound(f"bank {name}: not in the store")

    async def get_bank(self, name: str) -> Doc | None:
        raw = await self._col(BANKS).find_one({"name": name})
        return None if raw is None else bank_document(raw)

    async def ensure_bank(self, name: str, properties: Mapping[str, Any]) -> Doc:
        existing = await self.get_bank(name)
        if existing is not None:
            return existing
        fresh = new_bank_document(name, properties)
        fresh.pop("name")  # the filter's equality sets it on insert
        try:
            await self._col(BANKS).update_one({"name": name}, {"$setOnInsert": fresh}, upsert=True)
        except DuplicateKeyError:
            pass  # another store created it between our find and our upsert
        created = await self.get_bank(name)
        if created is None:  # deleted at once by another writer
            raise NotFound(f"bank {name}: deleted while it was being created")
        return created

    async def list_banks(self, names: Iterable[str] | None = None) -> list[Doc]:
        wanted = None if names is None else list(dict.fromkeys(names))
        if wanted == []:
            return []
        query = {} if wanted is None else {"name": {"$in": wanted}}
        raws = await self._col(BANKS).find(query, {"sessions": 0}).sort([("name", 1)]).to_list()
        # A document without a name (a BioMAJ 3 database may hold one) is no bank.
        return [bank_document(raw, sessions=False) for raw in raws if isinstance(raw.get("name"), str) and raw["name"]]

    async def delete_bank(self, name: str) -> bool:
        return (await self._col(BANKS).delete_one({"name": name})).deleted_count > 0

    async def rename_bank(self, name: str, new_name: str) -> None:
        try:
            await self._update_bank(name, {"$set": {"name": new_name}})
        except DuplicateKeyError:
            raise Conflict(f"bank {new_name}: already exists, cannot rename {name}") from None

    async def set_bank_fields(self, name: str, **fields: Any) -> None:
        check_bank_fields(fields)
        await self._update_bank(name, {"$set": fields})

    async def set_status(self, name: str, status: Mapping[str, Any]) -> None:
        await self._update_bank(name, {"$set": {"status": dict(status)}})

    async def update_status_task(self, name: str, task: str, fields: Mapping[str, Any]) -> None:
        check_keys({task: None}, "status task")
        check_keys(fields, f"status.{task}")
        await self._update_bank(name, {"$set": {f"status.{task}.{k}": v for k, v in fields.items()}})

    # ---- sessions --------------------------------------------------------------------------

    async def save_session(self, name: str, session: Mapping[str, Any], **bank_fields: Any) -> None:
        sid = check_session_id(session)
        check_bank_fields(bank_fields)
        doc = dict(session)
        banks = self._col(BANKS)
        for _ in range(RETRIES):
            # Replace the session with this id, if the bank has one ...
            replaced = await banks.update_one({"name": name, "sessions.id": sid},
                                              {"$set": {"sessions.$": doc, **bank_fields}})
            if replaced.matched_count:
                return
            # ... else insert it, in id order, unless another writer just did.
            update: dict[str, Any] = {"$push": {"sessions": {"$each": [doc], "$sort": {"id": 1}}}}
            if bank_fields:
                update["$set"] = bank_fields
            added = await banks.update_one({"name": name, "sessions.id": {"$ne": sid}}, update)
            if added.matched_count:
                return
            await self._require_bank(name)
        raise StoreError(f"bank {name}: session {sid} kept changing under concurrent writes")

    async def get_session(self, name: str, session_id: float) -> Doc | None:
        raw = await self._col(BANKS).find_one(
            {"name": name, "sessions.id": session_id},
            {"_id": 0, "sessions": {"$elemMatch": {"id": session_id}}},
        )
        found = (raw or {}).get("sessions") or []
        return plain(found[0]) if found else None

    async def delete_session(self, name: str, session_id: float, *, keep: bool = False) -> bool:
        pulls: dict[str, Any] = {"production": {"session": session_id}, "pending": {"id": session_id}}
        if keep:
            update = {"$set": {"sessions.$.deleted": now()}, "$pull": pulls}
        else:
            update = {"$pull": {"sessions": {"id": session_id}, **pulls}}
        result = await self._col(BANKS).update_one({"name": name, "sessions.id": session_id}, update)
        if result.matched_count:
            return True
        await self._update_bank(name, {"$pull": pulls})  # entries of a session already gone
        return False

    # ---- production and pending ------------------------------------------------------------

    async def _replace_production(
        self, name: str, change: Callable[[list[Any]], list[Any] | None]
    ) -> bool:
        """Compare-and-set of the whole production array: ``change(old)`` returns the new array
        (None: nothing to change); retried when another writer changed the array meanwhile."""
        banks = self._col(BANKS)
        for _ in range(RETRIES):
            raw = await banks.find_one({"name": name}, {"production": 1})
            if raw is None:
                raise NotFound(f"bank {name}: not in the store")
            old = raw.get("production")
            new = change(old if isinstance(old, list) else [])
            if new is None:
                return False
            result = await banks.update_one({"name": name, "production": old}, {"$set": {"production": new}})
            if result.matched_count:
                return True
        raise StoreError(f"bank {name}: production kept changing under concurrent writes")

    async def add_production(self, name: str, entry: Mapping[str, Any]) -> None:
        release = check_release(entry)
        doc = dict(entry)
        # The usual case, a new release: one conditional $push.
        added = await self._col(BANKS).update_one(
            {"name": name, "production.release": {"$ne": release}}, {"$push": {"production": doc}}
        )
        if added.matched_count:
            return
        # The release is there: drop it and append the new entry, in one compare-and-set.
        await self._replace_production(
            name, lambda old: [p for p in old if not (isinstance(p, dict) and p.get("release") == release)] + [doc]
        )

    async def update_production(self, name: str, release: str, fields: Mapping[str, Any]) -> bool:
        fields = dict(fields)
        check_keys(fields, "production entry")
        new_release = fields.get("release", release)
        if new_release == release:
            if not fields:
                found = await self._col(BANKS).find_one({"name": name, "production.release": release}, {"_id": 1})
                if found is None:
                    await self._require_bank(name)
                return found is not None
            result = await self._col(BANKS).update_one(
                {"name": name, "production.release": release},
                {"$set": {f"production.$.{k}": v for k, v in fields.items()}},
            )
            if result.matched_count == 0:
                await self._require_bank(name)
            return result.matched_count > 0
        check_release(fields)  # renaming the release: it must be valid and free

        def rename(old: list[Any]) -> list[Any] | None:
            releases = [p.get("release") for p in old if isinstance(p, dict)]
            if release not in releases:
                return None
            if new_release in releases:
                raise Conflict(f"bank {name}: release {new_release} is in production")
            return [{**p, **fields} if isinstance(p, dict) and p.get("release") == release else p for p in old]

        return await self._replace_production(name, rename)

    async def remove_production(self, name: str, release: str) -> bool:
        result = await self._col(BANKS).update_one(
            {"name": name, "production.release": release}, {"$pull": {"production": {"release": release}}}
        )
        if result.matched_count == 0:
            await self._require_bank(name)
        return result.matched_count > 0

    async def add_pending(self, name: str, release: str, session_id: float) -> bool:
        result = await self._col(BANKS).update_one(
            {"name": name, "pending.release": {"$ne": release}},
            {"$push": {"pending": {"release": release, "id": session_id}}},
        )
        if result.matched_count == 0:
            await self._require_bank(name)
        return result.matched_count > 0

    async def remove_pending(
        self, name: str, release: str | None = None, session_id: float | None = None
    ) -> int:
        criteria: dict[str, Any] = {}
        if release is not None:
            criteria["release"] = release
        if session_id is not None:
            criteria["id"] = session_id
        update = {"$pull": {"pending": criteria}} if criteria else {"$set": {"pending": []}}
        # The document as it was before the update tells how many entries the $pull removed.
        before = await self._col(BANKS).find_one_and_update(
            {"name": name}, update, projection={"pending": 1}, return_document=ReturnDocument.BEFORE
        )
        if before is None:
            raise NotFound(f"bank {name}: not in the store")
        pending = before.get("pending") or []
        return sum(1 for p in pending
                   if isinstance(p, dict) and all(p.get(k) == v for k, v in criteria.items()))

    # ---- history ---------------------------------------------------------------------------

    async def add_history(self, entry: Mapping[str, Any]) -> None:
        await self._col(HISTORY).insert_one(dict(entry))

    async def list_history(self, bank: str | None = None, limit: int | None = 100) -> list[Doc]:
        check_limit(limit)
        query = {} if bank is None else {"bank": bank}
        # _id breaks ties: ObjectIds grow with insertion (within one process, strictly).
        cursor = self._col(HISTORY).find(query).sort([("start", -1), ("_id", -1)])
        if limit is not None:
            cursor = cursor.limit(limit)
        return [strip_private(doc) for doc in await cursor.to_list()]

    # ---- users and API keys ----------------------------------------------------------------
    # An API key record points at its user's _id (user_oid): the keys of a deleted user can never
    # come back to a new user of the same name, even if deleting them was interrupted.

    async def create_user(self, user: Mapping[str, Any]) -> None:
        name = check_user_id(user)
        try:
            await self._col(USERS).insert_one({k: v for k, v in user.items() if k != "_id"})
        except DuplicateKeyError:
            raise Conflict(f"user {name}: already exists") from None

    async def get_user(self, name: str) -> Doc | None:
        return strip_private(await self._col(USERS).find_one({"id": name}))

    async def list_users(self) -> list[Doc]:
        return [strip_private(doc) for doc in await self._col(USERS).find({}).sort([("id", 1)]).to_list()]

    async def update_user(self, name: str, fields: Mapping[str, Any]) -> None:
        check_unchanged("user", name, "id", fields)
        check_keys(fields, f"user {name}")
        fields = {k: v for k, v in fields.items() if k != "_id"}
        if not fields:
            if await self._col(USERS).find_one({"id": name}, {"_id": 1}) is None:
                raise NotFound(f"user {name}: not in the store")
            return
        if (await self._col(USERS).update_one({"id": name}, {"$set": fields})).matched_count == 0:
            raise NotFound(f"user {name}: not in the store")

    async def delete_user(self, name: str) -> bool:
        gone = await self._col(USERS).find_one_and_delete({"id": name}, projection={"_id": 1})
        if gone is None:
            return False
        await self._col(API_KEYS).delete_many({"user_oid": gone["_id"]})
        return True

    async def _user_oid(self, name: str) -> Any:
        found = await self._col(USERS).find_one({"id": name}, {"_id": 1})
        return None if found is None else found["_id"]

    @staticmethod
    def _key_record(raw: Mapping[str, Any]) -> Doc:
        return plain({k: raw.get(k) for k in ("id", "user", "label", "created")})

    async def add_api_key(
        self, name: str, key_id: str, key_hash: str, label: str, created: float
    ) -> None:
        oid = await self._user_oid(name)
        if oid is None:
            raise NotFound(f"user {name}: not in the store")
        record = {"id": key_id, "user": name, "user_oid": oid, "hash": key_hash, "label": label,
                  "created": created}
        try:
            await self._col(API_KEYS).insert_one(record)
        except DuplicateKeyError:
            raise Conflict(f"user {name}: API key {key_id} or its hash is in use") from None

    async def find_api_key(self, key_hash: str) -> tuple[Doc, Doc] | None:
        key = await self._col(API_KEYS).find_one({"hash": key_hash})
        if key is None:
            return None
        user = await self._col(USERS).find_one({"_id": key.get("user_oid")})
        return None if user is None else (strip_private(user), self._key_record(key))

    async def list_api_keys(self, name: str) -> list[Doc]:
        oid = await self._user_oid(name)
        if oid is None:
            return []
        keys = await self._col(API_KEYS).find({"user_oid": oid}).sort([("created", 1), ("_id", 1)]).to_list()
        return [self._key_record(k) for k in keys]

    async def revoke_api_key(self, name: str, key_id: str) -> bool:
        oid = await self._user_oid(name)
        if oid is None:
            return False
        return (await self._col(API_KEYS).delete_one({"user_oid": oid, "id": key_id})).deleted_count > 0

    async def export_api_keys(self) -> list[Doc]:
        """Every key record **with its hash** (``{id, user, hash, label, created}``), oldest
        first: for ``biomaj migrate`` only, never for an API."""
        keys = await self._col(API_KEYS).find({}).sort([("created", 1), ("_id", 1)]).to_list()
        users = {u["_id"]: u.get("id") for u in await self._col(USERS).find({}, {"id": 1}).to_list()}
        return [{**self._key_record(k), "hash": k.get("hash")} for k in keys if k.get("user_oid") in users]

    # ---- schedules -------------------------------------------------------------------------

    async def put_schedule(self, name: str, doc: Mapping[str, Any], *, replace: bool = True) -> bool:
        record = {**{k: v for k, v in doc.items() if k != "_id"}, "name": name}
        schedules = self._col(SCHEDULES)
        if not replace:
            try:
                await schedules.insert_one(record)
            except DuplicateKeyError:
                return False
            return True
        for _ in range(RETRIES):
            try:
                await schedules.replace_one({"name": name}, record, upsert=True)
                return True
            except DuplicateKeyError:
                continue  # two upserts raced to insert: the next try replaces the winner's
        raise StoreError(f"schedule {name}: kept changing under concurrent writes")

    async def get_schedule(self, name: str) -> Doc | None:
        return strip_private(await self._col(SCHEDULES).find_one({"name": name}))

    async def list_schedules(self) -> list[Doc]:
        return [strip_private(d) for d in await self._col(SCHEDULES).find({}).sort([("name", 1)]).to_list()]

    async def update_schedule(self, name: str, fields: Mapping[str, Any]) -> None:
        check_unchanged("schedule", name, "name", fields)
        check_keys(fields, f"schedule {name}")
        fields = {k: v for k, v in fields.items() if k != "_id"}
        schedules = self._col(SCHEDULES)
        if fields:
            if (await schedules.update_one({"name": name}, {"$set": fields})).matched_count:
                return
        elif await schedules.find_one({"name": name}, {"_id": 1}) is not None:
            return
        raise NotFound(f"schedule {name}: not in the store")

    async def delete_schedule(self, name: str) -> bool:
        return (await self._col(SCHEDULES).delete_one({"name": name})).deleted_count > 0

    async def claim_schedule_run(self, name: str, run: float, *, previous: float | None,
                                 fields: Mapping[str, Any] | None = None) -> bool:
        fields = check_claim_fields(name, fields)
        check_keys(fields, f"schedule {name}")
        schedules = self._col(SCHEDULES)
        # {"last_run": None} matches a missing last_run as well as a null one.
        claimed = await schedules.find_one_and_update(
            {"name": name, "last_run": previous}, {"$set": {**fields, "last_run": run}},
            projection={"_id": 1},
        )
        if claimed is not None:
            return True
        if await schedules.find_one({"name": name}, {"_id": 1}) is None:
            raise NotFound(f"schedule {name}: not in the store")
        return False

