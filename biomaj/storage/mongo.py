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

Only the subset of the driver's API that ``tests/storage/mongo_double.py`` implements is used, so
that the conformance suite runs the same code on the double and on a real server.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from biomaj.errors import ConfigError
from biomaj.redaction import redact_url
from biomaj.storage.base import (
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
    StoreError,
    check_bank_fields,
    check_job_state,
    check_limit,
    check_session_id,
    new_bank_document,
    new_job_id,
    now,
)

#: The database when the URL names none: BioMAJ 3's ``db.name`` default.
DEFAULT_DATABASE = "biomaj"
#: Schema of the biomaj-owned parts (indexes, api_keys, schedules, jobs); banks and history
#: keep BioMAJ 3's layout whatever this number.
SCHEMA_VERSION = 1

BANKS, HISTORY, USERS = "banks", "history", "users"  # BioMAJ 3's collections
API_KEYS, SCHEDULES, JOBS, COUNTERS, SCHEMA = "api_keys", "schedules", "jobs", "counters", "biomaj_schema"

#: Job field present while the job is queued or running: the unique sparse index on it allows
#: one active job per dedup key.
ACTIVE_DEDUP = "active_dedup_key"
_JOB_PRIVATE = ("_id", ACTIVE_DEDUP)

#: (collection, keys, options) created at open; creating an existing index does nothing.
INDEXES: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
    (BANKS, [("name", 1)], {"unique": True}),
    (HISTORY, [("start", -1)], {}),
    (HISTORY, [("bank", 1), ("start", -1)], {}),
    (USERS, [("id", 1)], {"unique": True}),
    (API_KEYS, [("id", 1)], {"unique": True}),
    (API_KEYS, [("hash", 1)], {"unique": True}),
    (API_KEYS, [("user_oid", 1)], {}),
    (SCHEDULES, [("name", 1)], {"unique": True}),
    (JOBS, [("id", 1)], {"unique": True}),
    (JOBS, [("state", 1), ("_id", 1)], {}),
    (JOBS, [("bank", 1), ("_id", -1)], {}),
    (JOBS, [(ACTIVE_DEDUP, 1)], {"unique": True, "sparse": True}),
]

_RETRIES = 20  # compare-and-set attempts before giving up (each lost only to another writer)
_SERVER_SELECTION_MS = 10_000


def connect(url: str) -> Any:
    """A new ``AsyncMongoClient`` for ``url`` (it connects lazily, at the first operation).

    Tests replace this function (or pass ``client_factory``) with the mongomock double.
    """
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(url, serverSelectionTimeoutMS=_SERVER_SELECTION_MS, tz_aware=False)


def database_of(url: str, default: str = DEFAULT_DATABASE) -> str:
    """The database a ``mongodb://`` URL names (its path), else ``default``."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return default
    return unquote(path.lstrip("/")) or default


def scrub(message: str, url: str) -> str:
    """``message`` without the password of ``url`` (driver errors may quote a URL)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        for form in {password, unquote(password)}:
            message = message.replace(form, "***")
    return message


def error_text(exc: BaseException, url: str) -> str:
    """A driver error in one short line, without the password of ``url``."""
    text = scrub(str(exc), url).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.sub(r" \(configured timeouts: [^)]*\)", "", first)
    if ", Timeout:" in first:  # server selection: drop the topology description
        first = first.split(", Timeout:")[0] + f" (no server answered in {_SERVER_SELECTION_MS / 1000:g} s)"
    return first


def plain(value: Any) -> Any:
    """``value`` with BSON-only types made plain (the Store returns what JSON can encode):
    ObjectId as its hex string, datetime as epoch seconds, bytes as text, Decimal128 as float."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # the driver's datetimes are UTC
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if type(value).__name__ == "Decimal128":
        return float(str(value))
    return str(value)  # ObjectId, Regex, Timestamp ...


def _strip(doc: Mapping[str, Any] | None, private: Iterable[str] = ("_id",)) -> Doc | None:
    if doc is None:
        return None
    hidden = set(private)
    return plain({k: v for k, v in doc.items() if k not in hidden})


def check_keys(fields: Mapping[str, Any], what: str) -> None:
    """MongoDB reads ``a.b`` and ``$x`` in an update as paths and operators: refuse such keys."""
    for key in fields:
        if not isinstance(key, str) or not key or "." in key or key.startswith("$"):
            raise ValueError(f"{what}: invalid key {key!r} (no dots, no leading $)")


def bank_document(raw: Mapping[str, Any], sessions: bool = True) -> Doc:
    """A bank document as the Store returns it: every key of BioMAJ 3's layout present, sessions
    ordered by id. A BioMAJ 3 document may lack keys, or keep pending as ``{release: id}`` (the
    layout before its ``migrate_pendings``)."""
    doc = new_bank_document(str(raw.get("name")), {})
    doc.update(_strip(raw) or {})
    for key in ("sessions", "production", "pending"):
        if not isinstance(doc.get(key), list) and not (key == "pending" and isinstance(doc.get(key), dict)):
            doc[key] = []
    if isinstance(doc["pending"], dict):
        doc["pending"] = [{"release": r, "id": i} for r, i in doc["pending"].items()]
    for key in ("properties", "status"):
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
    if sessions:
        doc["sessions"] = sorted(doc["sessions"], key=_session_order)
    else:
        doc.pop("sessions", None)
    return doc


def _session_order(session: Any) -> float:
    sid = session.get("id") if isinstance(session, dict) else None
    return float(sid) if isinstance(sid, (int, float)) and not isinstance(sid, bool) else float("-inf")


def _release_of(entry: Mapping[str, Any]) -> str:
    release = entry.get("release")
    if not isinstance(release, str) or not release:
        raise ValueError(f"production entry: 'release' must be a non-empty string: {release!r}")
    return release


class MongoStore(Store):
    """A :class:`Store` in a MongoDB database, shared safely by any number of processes and nodes.

    ``client_factory(url)`` builds the client (default :func:`connect`); ``database`` overrides
    the URL's database.
    """

    def __init__(self, url: str, *, database: str | None = None,
                 client_factory: Callable[[str], Any] | None = None) -> None:
        self.url = url
        self.database = database or database_of(url)
        self._factory = client_factory
        self._client: Any = None
        self._db: Any = None

    def describe(self) -> str:
        return f"mongodb {redact_url(self.url)} (database {self.database})"

    # ---- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        factory = self._factory or connect  # looked up now, so that tests can substitute it
        where = redact_url(self.url)
        try:
            client = factory(self.url)
        except (PyMongoError, ValueError, TypeError) as exc:
            raise ConfigError(f"storage.url: invalid MongoDB URL {where}: {error_text(exc, self.url)}") from None
        try:
            db = client[self.database]
            await db.command("ping")
            await self._prepare(db)
        except BaseException as exc:
            await client.close()
            if isinstance(exc, OperationFailure) and exc.code in (11000, 11001):  # an index on duplicates
                raise IncompatibleSchema(
                    f"{where} database {self.database}: cannot create the unique indexes biomaj needs"
                    f" ({error_text(exc, self.url)})"
                ) from None
            if isinstance(exc, PyMongoError):
                raise ConfigError(f"storage.url: cannot use MongoDB at {where}: {error_text(exc, self.url)}") from None
            raise
        self._client, self._db = client, db

    async def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is not None:
            await client.close()

    async def _prepare(self, db: Any) -> None:
        """Check the schema version, create the indexes, record the version (each idempotent)."""
        found = await db[SCHEMA].find_one({"_id": "store"})
        version = int((found or {}).get("version") or 0)
        if version > SCHEMA_VERSION:
            raise IncompatibleSchema(
                f"{redact_url(self.url)} database {self.database}: schema version {version}, newer than the"
                f" {SCHEMA_VERSION} this biomaj knows; upgrade biomaj to use it"
            )
        for collection, keys, options in INDEXES:
            await db[collection].create_index(keys, **options)
        await db[SCHEMA].update_one(
            {"_id": "store"}, {"$max": {"version": SCHEMA_VERSION}, "$setOnInsert": {"created": now()}},
            upsert=True,
        )

    async def schema_version(self) -> int:
        found = await self._col(SCHEMA).find_one({"_id": "store"})
        return int((found or {}).get("version") or 0)

    def _col(self, name: str) -> Any:
        if self._db is None:
            raise RuntimeError("MongoStore used before open()")
        return self._db[name]

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
        for _ in range(_RETRIES):
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
        for _ in range(_RETRIES):
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
        release = _release_of(entry)
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
        _release_of(fields)  # renaming the release: it must be valid and free

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
        return [_strip(doc) for doc in await cursor.to_list()]

    # ---- users and API keys ----------------------------------------------------------------
    # An API key record points at its user's _id (user_oid): the keys of a deleted user can never
    # come back to a new user of the same name, even if deleting them was interrupted.

    async def create_user(self, user: Mapping[str, Any]) -> None:
        name = user.get("id")
        if not isinstance(name, str) or not name:
            raise ValueError(f"user: 'id' (the user name) must be a non-empty string: {name!r}")
        try:
            await self._col(USERS).insert_one({k: v for k, v in user.items() if k != "_id"})
        except DuplicateKeyError:
            raise Conflict(f"user {name}: already exists") from None

    async def get_user(self, name: str) -> Doc | None:
        return _strip(await self._col(USERS).find_one({"id": name}))

    async def list_users(self) -> list[Doc]:
        return [_strip(doc) for doc in await self._col(USERS).find({}).sort([("id", 1)]).to_list()]

    async def update_user(self, name: str, fields: Mapping[str, Any]) -> None:
        if fields.get("id", name) != name:
            raise ValueError(f"user {name}: 'id' cannot be changed")
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
        return None if user is None else (_strip(user), self._key_record(key))

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
        for _ in range(_RETRIES):
            try:
                await schedules.replace_one({"name": name}, record, upsert=True)
                return True
            except DuplicateKeyError:
                continue  # two upserts raced to insert: the next try replaces the winner's
        raise StoreError(f"schedule {name}: kept changing under concurrent writes")

    async def get_schedule(self, name: str) -> Doc | None:
        return _strip(await self._col(SCHEDULES).find_one({"name": name}))

    async def list_schedules(self) -> list[Doc]:
        return [_strip(d) for d in await self._col(SCHEDULES).find({}).sort([("name", 1)]).to_list()]

    async def update_schedule(self, name: str, fields: Mapping[str, Any]) -> None:
        if fields.get("name", name) != name:
            raise ValueError(f"schedule {name}: 'name' cannot be changed")
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
        fields = dict(fields or {})
        if "name" in fields or "last_run" in fields:
            raise ValueError(f"schedule {name}: fields cannot set 'name' or 'last_run'")
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

    # ---- durable jobs ----------------------------------------------------------------------

    async def _next_seq(self, counter: str) -> int:
        for _ in range(_RETRIES):
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
        return _strip(raw, _JOB_PRIVATE)

    async def _job_or_not_found(self, job_id: str) -> Doc:
        job = self._job_out(await self._col(JOBS).find_one({"id": job_id}))
        if job is None:
            raise NotFound(f"job {job_id}: not in the store")
        return job

    async def add_job(self, doc: Mapping[str, Any], dedup_key: str | None = None) -> str:
        if not isinstance(doc.get("kind"), str) or not doc["kind"]:
            raise ValueError(f"job: 'kind' must be a non-empty string: {doc.get('kind')!r}")
        check_keys(doc, "job")
        job = {
            "bank": None, "options": {}, "user": None, "result": None, "error": None,
            **{k: v for k, v in doc.items() if k not in _JOB_PRIVATE},
            "id": doc.get("id") or new_job_id(), "state": JOB_QUEUED, "dedup_key": dedup_key,
            "worker": None, "attempts": 0, "cancel_requested": False,
            "created": now(), "started": None, "finished": None,
        }
        jobs = self._col(JOBS)
        for _ in range(_RETRIES):
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
            states = [state] if isinstance(state, str) else list(state)
            for s in states:
                check_job_state(s)
            query["state"] = {"$in": states}
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
        for _ in range(_RETRIES):
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
