"""A BioMAJ 3 MongoDB database, laid out in the Mongo test double from documents that follow the
reference schema (biomaj3-core-behaviour.md section 3: ``banks``, ``history``, ``db_schema``;
biomaj3-services.md 5.1: biomaj-user's ``users``).

It has what a real site accumulates: releases with ``__N`` suffixes, a frozen production entry, a
pending (unfinished) update, a remove session, a session kept with ``deleted``
(``keep.old.sessions``), a bank still in the old ``pending: {release: id}`` form, a private bank,
an LDAP user, a password stored as ``str()`` of bcrypt bytes, clear API keys, and history of
every action. :data:`EXPECTED` counts what a migration must copy; :data:`BROKEN` adds documents
that it must skip, with a reason.
"""

from __future__ import annotations

import copy
import datetime

import bcrypt
from bson import ObjectId

from tests.storage.mongo_double import sync_client

PASSWORDS = {"biomaj": "old biomaj3 secret", "alice": "alice's old password"}
API_KEYS = {"biomaj": "K2J4M6P8R0", "alice": "A1B2C3D4E5", "ldapbob": "ZX9Y8W7V6U"}


def _hash(password: str) -> bytes:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4))


def _session(sid: float, release: str, remote: str, *, over: bool = True, update: bool = True,
             **extra: object) -> dict:
    tasks = ["init", "check", "depends", "preprocess", "release", "download", "postprocess", "publish", "over"]
    status = {t: (over or t in ("init", "check", "release")) for t in tasks}
    if not over:
        status["download"] = False
        for t in ("postprocess", "publish", "over"):
            status[t] = None
    return {
        "id": sid, "action": "update", "status": status, "workflow_status": over, "update": update,
        "remove": False, "release": release, "remoterelease": remote, "previous_release": None,
        "formats": {"blast": [{"tags": {"organism": "hg19"}, "types": ["nucleic"], "files": ["blast/alu.n.nsq"]}]},
        "process": {"preprocess": {}, "postprocess": {"BLOCK1": {"META0": {"PROC0": True}}}, "removeprocess": {}},
        "per_process_metadata": {"META0_PROC0": {"blast": [{"tags": {}, "types": ["nucleic"], "files": ["x"]}]}},
        "data_dir": "/db", "dir_version": "ncbi/blast/alu", "log_file": f"/var/log/biomaj/alu/{release}/alu.log",
        "last_modified": 1699990000.0, "last_update_time": sid + 60, "files": [], "download_files": [],
        "depends": {}, "stats": {"workflow": {"init": 0.1, "download": 12.5}, "nb_downloaded_files": 3},
        "fullsize": 123456, **extra,
    }


def _production(bank: str, release: str, remote: str, sid: float, *, freeze: bool = False) -> dict:
    return {
        "release": release, "remoterelease": remote, "session": sid, "formats": ["blast"],
        "types": ["nucleic"], "size": 123456, "data_dir": "/db", "dir_version": f"ncbi/blast/{bank}",
        "prod_dir": f"{bank}_{release}", "log_file": f"/var/log/biomaj/{bank}/{release}/{bank}.log",
        "freeze": freeze,
    }


def banks() -> list[dict]:
    alu = {
        "name": "alu",
        "current": 1700000300.25,
        "sessions": [
            _session(1700000000.5, "2003-11-26", "2003-11-26"),
            # The same remote release downloaded again: the local release gets __1.
            _session(1700000300.25, "2003-11-26__1", "2003-11-26", previous_release="2003-11-26"),
            # An update that failed in download: its release is pending.
            _session(1700000600.0, "2004-01-01", "2004-01-01", over=False, update=False),
        ],
        "production": [
            _production("alu", "2003-11-26", "2003-11-26", 1700000000.5, freeze=True),
            _production("alu", "2003-11-26__1", "2003-11-26", 1700000300.25),
        ],
        "pending": [{"release": "2004-01-01", "id": 1700000600.0}],
        "properties": {"visibility": "public", "type": ["nucleic"], "tags": [], "owner": "biomaj",
                       "desc": "alu.n : alu repeat element"},
        "status": {"log_file": {"status": "/var/log/biomaj/alu/2004-01-01/alu.log", "progress": 0},
                   "session": 1700000600.0, "init": {"status": True, "progress": 0},
                   "download": {"status": False, "progress": 0, "total": 0},
                   "over": {"status": None, "progress": 0}},
        "last_update_session": 1700000600.0,
        "last_remove_session": None,
    }
    pdb = {
        "name": "pdb",
        "current": 1600000000.0,
        "sessions": [
            {"id": 1500000000.0, "action": "update", "status": {"over": True}, "workflow_status": True,
             "update": True, "release": "2017-07", "remoterelease": "2017-07",
             # keep.old.sessions: the release was removed, the session kept
             "deleted": 1550000000.0,
             # a date written by a BioMAJ 3 plugin: the store gives epoch seconds back
             "last_update_time": datetime.datetime(2017, 7, 14, 2, 40)},
            {"id": 1550000000.0, "action": "remove", "status": {"remove_release": True}, "workflow_status": True,
             "update": False, "remove": True, "release": "2017-07", "update_session_id": 1500000000.0},
            {"id": 1600000000.0, "action": "update", "status": {"over": True}, "workflow_status": True,
             "update": True, "release": "2020-09", "remoterelease": "2020-09"},
            {"id": 1650000000.0, "action": "update", "status": {"over": False}, "workflow_status": False,
             "update": False, "release": "2022-03", "remoterelease": "2022-03"},
        ],
        "production": [_production("pdb", "2020-09", "2020-09", 1600000000.0, freeze=True)],
        # BioMAJ 3 before its migrate_pendings() kept pending as {release: session id}
        "pending": {"2022-03": 1650000000.0},
        "properties": {"visibility": "private", "type": ["protein", "structure"], "tags": [],
                       "owner": "alice", "desc": "Protein Data Bank"},
        "status": {},
        "last_update_session": 1650000000.0,
        "last_remove_session": 1550000000.0,
    }
    # A bank created by a first access and never updated (Bank.__init__'s document).
    fresh = {"name": "newbank", "current": None, "sessions": [], "production": [], "pending": [],
             "properties": {"visibility": "public", "type": [], "tags": [], "owner": "biomaj", "desc": ""},
             "status": {}, "last_update_session": None, "last_remove_session": None}
    return [alu, pdb, fresh]


def history() -> list[dict]:
    return [
        {"bank": "pdb", "error": False, "start": 1500000000.0, "end": 1500003600.0, "action": "update", "updated": True},
        {"bank": "pdb", "error": False, "start": 1550000000.0, "end": 1550000100.0, "action": "remove", "updated": None},
        {"bank": "pdb", "error": False, "start": 1600000000.0, "end": 1600003600.0, "action": "update", "updated": True},
        {"bank": "pdb", "error": True, "start": 1650000000.0, "end": 1650000500.0, "action": "update", "updated": False},
        {"bank": "alu", "error": False, "start": 1700000000.5, "end": 1700000100.0, "action": "update", "updated": True},
        {"bank": "alu", "error": False, "start": 1700000300.25, "end": 1700000400.0, "action": "update", "updated": True},
        {"bank": "alu", "error": False, "start": 1700000450.0, "end": 1700000460.0, "action": "repair", "updated": False},
        # a no-change update recorded twice in the same second: both are kept
        {"bank": "alu", "error": False, "start": 1700000500.0, "end": 1700000500.0, "action": "update", "updated": False},
        {"bank": "alu", "error": False, "start": 1700000500.0, "end": 1700000500.0, "action": "update", "updated": False},
        {"bank": "alu", "error": True, "start": 1700000600.0, "end": 1700000700.0, "action": "update", "updated": False},
    ]


def users() -> list[dict]:
    return [
        # Python 3 + pyca bcrypt: str() of the bytes, as BioMAJ 3's docker image could write it
        {"id": "biomaj", "hashed_password": str(_hash(PASSWORDS["biomaj"])), "email": "admin@example.org",
         "is_ldap": False, "apikey": API_KEYS["biomaj"]},
        {"id": "alice", "hashed_password": _hash(PASSWORDS["alice"]).decode(), "email": "alice@example.org",
         "is_ldap": False, "apikey": API_KEYS["alice"]},
        {"id": "ldapbob", "email": "bob@example.org", "is_ldap": True, "apikey": API_KEYS["ldapbob"]},
    ]


#: What a migration of :func:`build` copies into an empty store.
EXPECTED = {"banks": 3, "sessions": 7, "production": 3, "pending": 2, "history": 10, "users": 3,
            "api_keys": 3, "schedules": 0}

#: Documents a migration must skip: (kind, name as reported, part of the reason).
BROKEN = [
    ("banks", "_id ", "no name"),
    ("sessions", "broken", "not a number"),
    ("production", "broken", "no release"),
    ("production", "broken 7", "twice in production"),
    ("pending", "broken", "lacks a release"),
    ("users", "_id ", "no id"),
]


def broken_documents() -> tuple[list[dict], list[dict]]:
    """(bank documents, user documents) with the defects of :data:`BROKEN`; the good parts of
    bank ``broken`` (one session, one production entry, one pending entry) are copied."""
    bank = {"name": "broken", "current": None,
            "sessions": [{"id": "yesterday", "action": "update"}, {"id": 5.0, "action": "update", "release": "7"}],
            "production": [{"session": 5.0}, _production("broken", "7", "7", 5.0),
                           _production("broken", "7", "7", 5.0, freeze=True)],
            "pending": [{"release": "8"}, {"release": "9", "id": 9.0}],
            "properties": {"visibility": "public", "type": [], "tags": [], "owner": "x", "desc": ""},
            "status": {}, "last_update_session": 5.0, "last_remove_session": None}
    return [{"current": None, "sessions": []}, bank], [{"email": "nobody@example.org"}]


def build(url: str, database: str = "biomaj", users_database: str = "biomaj_user", *,
          broken: bool = False) -> dict:
    """Lay the BioMAJ 3 database out on the double's server of ``url``; returns what was inserted."""
    client = sync_client(url)
    db = client[database]
    bank_docs, user_docs = banks(), users()
    if broken:
        more_banks, more_users = broken_documents()
        bank_docs += more_banks
        user_docs += more_users
    db["banks"].insert_many(copy.deepcopy(bank_docs))
    # History documents get increasing ObjectIds, as BioMAJ 3's inserts did.
    db["history"].insert_many([{"_id": ObjectId(), **h} for h in history()])
    db["db_schema"].insert_one({"id": 1, "version": "3.1.23"})
    client[users_database]["users"].insert_many(copy.deepcopy(user_docs))
    return {"banks": bank_docs, "history": history(), "users": user_docs}


def snapshot(url: str) -> dict:
    """Every document of every database on the double's server of ``url``."""
    client = sync_client(url)
    return {name: {c: list(client[name][c].find({})) for c in client[name].list_collection_names()}
            for name in client.list_database_names()}
