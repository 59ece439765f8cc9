"""Copy a BioMAJ 3 MongoDB database into a biomaj store (``biomaj migrate --from-mongo``), and a
store into a MongoDB database (``biomaj migrate --to-mongo``, from one node to a cluster).

A copy is a merge that never overwrites: what the target lacks is added (a bank, a session by
``id``, a production or pending entry by ``release``, a history record, a user by ``id``, an API
key by its hash, a schedule by ``name``), what it has is counted as *present* and left alone. A
second run therefore writes nothing and says so, an interrupted run is completed by the next one,
and banks updated on the new installation meanwhile are not rolled back. What cannot be copied is
reported with the reason (a bank without a name, a session whose id is not a number ...).

The BioMAJ 3 source is only read. Its documents follow the reference layout
(``biomaj3-core-behaviour.md`` section 3; users: ``biomaj3-services.md`` 5.1): banks with their
sessions, production (``__N`` releases and frozen entries included), pending (also in its old
``{release: id}`` form) and properties; history; users with their bcrypt ``hashed_password`` (kept:
it still logs in, and is upgraded to argon2id at the first login) and their clear ``apikey``,
which is stored hashed like every biomaj key, so the old key keeps working.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from pymongo.errors import PyMongoError

from biomaj.auth.keys import key_hash
from biomaj.errors import BiomajError
from biomaj.redaction import redact_url
from biomaj.storage import mongo_connection
from biomaj.storage.base import Conflict, Doc, Store, check_session_id, now
from biomaj.storage.mongo import MongoStore
from biomaj.storage.mongo_documents import bank_document, plain

log = logging.getLogger(__name__)

KINDS = ("banks", "sessions", "production", "pending", "history", "users", "api_keys", "schedules")
BANK_POINTERS = ("current", "last_update_session", "last_remove_session")
LEGACY_KEY_LABEL = "BioMAJ 3 key"

Progress = Callable[[str], None]


class MigrationError(BiomajError):
    """The source cannot be read, or source and target are the same database."""

    exit_code = 2


@dataclass(frozen=True)
class Skipped:
    """Something of the source that was not copied, and why."""

    kind: str
    name: str
    reason: str


@dataclass
class MigrationReport:
    """What a copy did (or, in a dry run, would do)."""

    source: str
    target: str
    dry_run: bool = False
    copied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    present: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Existing banks whose empty current / last_update_session / last_remove_session were set.
    filled: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when the copy wrote (or would write) anything."""
        return any(self.copied.values()) or bool(self.filled)

    def skip(self, kind: str, name: str, reason: str) -> None:
        self.skipped.append(Skipped(kind, name, reason))
        log.info("migrate: %s %s not copied: %s", kind, name, reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "target": self.target, "dry_run": self.dry_run,
            "changed": self.changed, "copied": dict(self.copied), "present": dict(self.present),
            "skipped": [{"kind": s.kind, "name": s.name, "reason": s.reason} for s in self.skipped],
            "notes": list(self.notes), "filled": list(self.filled),
        }


# ---- sources ---------------------------------------------------------------------------------


class Source(Protocol):
    """What a copy reads; documents may be malformed (the copy checks them)."""

    def describe(self) -> str: ...

    def banks(self) -> AsyncIterator[Doc]:
        """Full bank documents (with sessions), by name."""

    async def history(self) -> list[Doc]:
        """Every history record, oldest insertion first."""

    async def users(self) -> list[tuple[Doc, list[Doc]]]:
        """``(user document, API key records {id, hash, label, created})``."""

    async def schedules(self) -> list[Doc]: ...


class Biomaj3Source:
    """A BioMAJ 3 MongoDB database, read only: ``banks`` and ``history`` in ``database``,
    ``users`` in ``users_database`` (biomaj-user's own database in a micro-service install)."""

    def __init__(self, url: str, database: str | None = None, users_database: str | None = None) -> None:
        self.url = url
        self.database = database or mongo_connection.database_of(url)
        self.users_database = users_database or self.database
        self._client: Any = None
        self.notes: list[str] = []

    def describe(self) -> str:
        users = "" if self.users_database == self.database else f", users from {self.users_database}"
        return f"mongodb {redact_url(self.url)} (database {self.database}{users})"

    async def open(self) -> None:
        try:
            self._client = mongo_connection.connect(self.url)  # looked up now: tests substitute the double
            await self._client[self.database].command("ping")
            names = set(await self._client[self.database].list_collection_names())
            user_names = set(await self._client[self.users_database].list_collection_names())
        except (PyMongoError, ValueError, TypeError) as exc:
            await self.close()
            raise MigrationError(f"cannot read the BioMAJ 3 database at {redact_url(self.url)}:"
                                 f" {mongo_connection.error_text(exc, self.url)}") from None
        if "banks" not in names:
            self.notes.append(f"database {self.database} has no banks collection: is it BioMAJ 3's db.name?")
        if "users" not in user_names:
            self.notes.append(f"database {self.users_database} has no users collection: no user copied"
                              " (BioMAJ 3 micro-services keep them in biomaj_user, or microbiomaj: see --users-db)")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def banks(self) -> AsyncIterator[Doc]:
        async for doc in self._client[self.database]["banks"].find({}).sort([("name", 1)]):
            yield doc

    async def history(self) -> list[Doc]:
        return await self._client[self.database]["history"].find({}).sort([("_id", 1)]).to_list()

    async def users(self) -> list[tuple[Doc, list[Doc]]]:
        found = await self._client[self.users_database]["users"].find({}).sort([("id", 1)]).to_list()
        return [(user, legacy_keys(user)) for user in found]

    async def schedules(self) -> list[Doc]:
        return []  # biomaj-cron's crontab lines are not schedules: see docs/storage.md


def legacy_keys(user: Doc) -> list[Doc]:
    """The API key record for a BioMAJ 3 user's clear ``apikey``: its hash, and an id derived
    from the hash (so that a second migration finds the same key)."""
    key = user.get("apikey")
    if not isinstance(key, str) or not key:
        return []
    digest = key_hash(key)
    return [{"id": "b3" + digest[:6], "hash": digest, "label": LEGACY_KEY_LABEL, "created": now()}]


class StoreSource:
    """A biomaj :class:`Store` (the configured one, for ``--to-mongo``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.notes: list[str] = []

    def describe(self) -> str:
        return self.store.describe()

    async def banks(self) -> AsyncIterator[Doc]:
        for summary in await self.store.list_banks():
            doc = await self.store.get_bank(summary["name"])
            if doc is not None:
                yield doc

    async def history(self) -> list[Doc]:
        return list(reversed(await self.store.list_history(limit=None)))

    async def users(self) -> list[tuple[Doc, list[Doc]]]:
        keys = await _api_keys_of(self.store, self.notes)
        by_user: dict[str, list[Doc]] = {}
        for key in keys:
            by_user.setdefault(key["user"], []).append(key)
        return [(user, by_user.get(user["id"], [])) for user in await self.store.list_users()]

    async def schedules(self) -> list[Doc]:
        return await self.store.list_schedules()


async def _api_keys_of(store: Store, notes: list[str]) -> list[Doc]:
    try:
        return await store.export_api_keys()
    except NotImplementedError:
        pass
    notes.append(f"{store.describe()} cannot export API key hashes: no API key copied")
    return []


# ---- the copy --------------------------------------------------------------------------------


def _history_key(entry: Doc) -> str:
    return json.dumps({k: v for k, v in entry.items() if k != "_id"}, sort_keys=True, default=str)


async def copy_store(source: Source, target: Store, *, dry_run: bool = False,
                     progress: Progress | None = None) -> MigrationReport:
    """Copy ``source`` into ``target`` (both open); see the module docstring."""
    report = MigrationReport(source.describe(), target.describe(), dry_run)
    say = progress or (lambda _message: None)
    write = not dry_run
    async for raw in source.banks():
        await _copy_bank(raw, target, report, write, say)
    await _copy_history(await source.history(), target, report, write)
    say(f"history: {report.copied['history']} copied, {report.present['history']} already there")
    await _copy_users(await source.users(), target, report, write)
    say(f"users: {report.copied['users']} copied, {report.present['users']} already there")
    await _copy_schedules(await source.schedules(), target, report, write)
    report.notes.extend(getattr(source, "notes", []))
    return report


async def _copy_bank(raw: Doc, target: Store, report: MigrationReport, write: bool, say: Progress) -> None:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        report.skip("banks", f"_id {plain(raw.get('_id'))}", "the document has no name")
        return
    doc = bank_document(raw)
    existing = await target.get_bank(name)
    is_new = existing is None
    if is_new:
        report.copied["banks"] += 1
        if write:
            existing = await target.ensure_bank(name, doc["properties"])
            if doc["status"]:
                await target.set_status(name, doc["status"])
    else:
        report.present["banks"] += 1
    have = existing or {}
    counts = Counter()

    sessions = {s.get("id") for s in have.get("sessions", [])}
    for session in doc["sessions"]:
        try:
            sid = check_session_id(session if isinstance(session, dict) else {})
        except ValueError:
            report.skip("sessions", name, f"a session's id is not a number: {_short(session)}")
            continue
        if sid in sessions:
            report.present["sessions"] += 1
            continue
        sessions.add(sid)
        report.copied["sessions"] += 1
        counts["sessions"] += 1
        if write:
            await target.save_session(name, session)

    releases = {p.get("release") for p in have.get("production", [])}
    seen: set[str] = set()
    for entry in doc["production"]:
        release = entry.get("release") if isinstance(entry, dict) else None
        if not isinstance(release, str) or not release:
            report.skip("production", name, f"an entry has no release: {_short(entry)}")
            continue
        if release in seen:
            report.skip("production", f"{name} {release}", "the release is twice in production; the first entry was kept")
            continue
        seen.add(release)
        if release in releases:
            report.present["production"] += 1
            continue
        report.copied["production"] += 1
        counts["production"] += 1
        if write:
            await target.add_production(name, entry)

    pending = {p.get("release") for p in have.get("pending", [])}
    for entry in doc["pending"]:
        release = entry.get("release") if isinstance(entry, dict) else None
        sid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(release, str) or not release or isinstance(sid, bool) or not isinstance(sid, (int, float)):
            report.skip("pending", name, f"an entry lacks a release or a session id: {_short(entry)}")
            continue
        if release in pending:
            report.present["pending"] += 1
            continue
        pending.add(release)
        report.copied["pending"] += 1
        counts["pending"] += 1
        if write:
            await target.add_pending(name, release, float(sid))

    # The published session and the last update/remove: only where the target has none.
    pointers = {k: doc[k] for k in BANK_POINTERS if doc.get(k) is not None and have.get(k) is None}
    if pointers and not is_new:  # a bank that an interrupted run left without them
        report.filled.append(f"{name}: {', '.join(pointers)}")
    if pointers and write:
        await target.set_bank_fields(name, **pointers)
    say(f"bank {name} ({'new' if is_new else 'already there'}): {counts['sessions']} sessions,"
        f" {counts['production']} production, {counts['pending']} pending copied")


async def _copy_history(entries: list[Doc], target: Store, report: MigrationReport, write: bool) -> None:
    # History records have no identity: the target keeps as many copies of a record as it had,
    # the source adds those it has more of. Records go in oldest first, so ties keep their order.
    there = Counter(_history_key(h) for h in await target.list_history(limit=None))
    for raw in entries:
        entry = plain({k: v for k, v in raw.items() if k != "_id"})
        key = _history_key(entry)
        if there[key] > 0:
            there[key] -= 1
            report.present["history"] += 1
            continue
        report.copied["history"] += 1
        if write:
            await target.add_history(entry)


async def _copy_users(users: list[tuple[Doc, list[Doc]]], target: Store, report: MigrationReport,
                      write: bool) -> None:
    for raw, keys in users:
        name = raw.get("id")
        if not isinstance(name, str) or not name:
            report.skip("users", f"_id {plain(raw.get('_id'))}", "the document has no id (user name)")
            continue
        # BioMAJ 3's clear apikey is not copied: it becomes a hashed key record below.
        doc = plain({k: v for k, v in raw.items() if k not in ("_id", "apikey")})
        exists = await target.get_user(name) is not None
        if exists:
            report.present["users"] += 1
        else:
            report.copied["users"] += 1
            if write:
                try:
                    await target.create_user(doc)
                except Conflict:  # created meanwhile
                    pass
        for key in keys:
            if await target.find_api_key(key["hash"]) is not None:
                report.present["api_keys"] += 1
                continue
            report.copied["api_keys"] += 1
            if write:
                try:
                    await target.add_api_key(name, key["id"], key["hash"], key.get("label") or "",
                                             key.get("created") or now())
                except Conflict:
                    report.copied["api_keys"] -= 1
                    report.skip("api_keys", f"{name} {key['id']}", "another key has this id or hash in the target")


async def _copy_schedules(schedules: list[Doc], target: Store, report: MigrationReport, write: bool) -> None:
    for raw in schedules:
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            report.skip("schedules", _short(raw), "the schedule has no name")
            continue
        if write:
            added = await target.put_schedule(name, plain(raw), replace=False)
        else:
            added = await target.get_schedule(name) is None
        (report.copied if added else report.present)["schedules"] += 1


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(plain(value), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- the two directions ----------------------------------------------------------------------


async def import_biomaj3(url: str, target: Store, *, database: str | None = None,
                         users_database: str | None = None, dry_run: bool = False,
                         progress: Progress | None = None) -> MigrationReport:
    """Copy the BioMAJ 3 database at ``url`` into ``target`` (open)."""
    source = Biomaj3Source(url, database, users_database)
    await source.open()
    try:
        return await copy_store(source, target, dry_run=dry_run, progress=progress)
    finally:
        await source.close()


async def export_to_mongo(source: Store, url: str, *, database: str | None = None, dry_run: bool = False,
                          progress: Progress | None = None) -> MigrationReport:
    """Copy ``source`` (open) into the MongoDB database at ``url``, which becomes a biomaj MongoDB
    store (BioMAJ 3's layout plus biomaj's collections and indexes)."""
    target = MongoStore(url, database=database)
    if _same_database(source, target):
        raise MigrationError(f"{target.describe()} is the configured store already: nothing to export")
    await target.open()
    try:
        return await copy_store(StoreSource(source), target, dry_run=dry_run, progress=progress)
    finally:
        await target.close()


def _same_database(store: Store, other: MongoStore) -> bool:
    if not isinstance(store, MongoStore):
        return False
    return _hosts(store.url) == _hosts(other.url) and store.database == other.database


def _hosts(url: str) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1].lower()
