"""The MongoDB store's schema: the collections, the indexes biomaj creates in them, and the schema
version of the biomaj-owned parts, checked and recorded when a store opens (:func:`prepare`).

``banks`` and ``history`` keep BioMAJ 3's layout whatever the version, and ``users``
biomaj-user's; the unique indexes are what makes names, API keys and one active job per dedup key
unique under concurrent writers.
"""

from __future__ import annotations

from typing import Any

from biomaj.storage.base import IncompatibleSchema, now

#: Schema of the biomaj-owned parts (indexes, api_keys, schedules, jobs); banks and history
#: keep BioMAJ 3's layout whatever this number.
SCHEMA_VERSION = 1

BANKS, HISTORY, USERS = "banks", "history", "users"  # BioMAJ 3's collections
API_KEYS, SCHEDULES, JOBS, COUNTERS, SCHEMA = "api_keys", "schedules", "jobs", "counters", "biomaj_schema"

#: Job field present while the job is queued or running: the unique sparse index on it allows
#: one active job per dedup key.
ACTIVE_DEDUP = "active_dedup_key"

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


async def stored_version(schema: Any) -> int:
    """The version recorded in the ``biomaj_schema`` collection ``schema`` (0: none)."""
    found = await schema.find_one({"_id": "store"})
    return int((found or {}).get("version") or 0)


async def prepare(db: Any, where: str) -> None:
    """Check the schema version, create the indexes, record the version (each idempotent).

    ``where`` names the database in errors (without secrets).
    """
    version = await stored_version(db[SCHEMA])
    if version > SCHEMA_VERSION:
        raise IncompatibleSchema(
            f"{where}: schema version {version}, newer than the"
            f" {SCHEMA_VERSION} this biomaj knows; upgrade biomaj to use it"
        )
    for collection, keys, options in INDEXES:
        await db[collection].create_index(keys, **options)
    await db[SCHEMA].update_one(
        {"_id": "store"}, {"$max": {"version": SCHEMA_VERSION}, "$setOnInsert": {"created": now()}},
        upsert=True,
    )
