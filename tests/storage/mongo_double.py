"""A TEST DOUBLE of PyMongo's ``AsyncMongoClient``: mongomock's in-memory server behind the async
methods that the MongoDB store (``biomaj/storage/mongo*.py``) and :mod:`biomaj.migration.biomaj3`
use, and no others.

No MongoDB server can run on the machines that run biomaj's tests, so the store conformance suite
and the migration tests run on this double in CI; the same suite runs on a real server when
``BIOMAJ_TEST_MONGO_URL`` is set (tests/storage/conftest.py). What the double checks and what it
cannot is listed in docs/storage.md.

* mongomock (https://github.com/mongomock/mongomock) executes the queries, the update operators
  (``$set``, ``$unset``, ``$push`` with ``$each``/``$sort``, ``$pull``, ``$inc``, ``$setOnInsert``,
  ``$max``, the positional ``$``), upserts, ``find_one_and_update``/``find_one_and_delete`` with
  ``sort``/``projection``/``return_document``, and unique (and sparse unique) indexes.
* Clients given the same host list share one in-memory server, as two managers share one
  MongoDB: :func:`forget` drops a server at the end of a test.
* Each operation runs whole between two yields to the event loop. That is where a real driver
  waits for the network, so coroutines (and two stores) interleave between operations exactly as
  they can against a server; an operation itself is atomic, as a single-document write is on
  the server.
* A method the store does not use is missing on purpose (``AttributeError``): the store must stay
  within the subset that the double runs.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any
from urllib.parse import urlsplit

import mongomock
from mongomock.store import ServerStore

_servers: dict[str, ServerStore] = {}


def _host_key(url: str) -> str:
    netloc = urlsplit(url).netloc
    return netloc.rsplit("@", 1)[-1].lower()


def forget(url: str) -> None:
    """Drop the in-memory server that ``url`` names (test teardown)."""
    _servers.pop(_host_key(url), None)


def sync_client(url: str) -> mongomock.MongoClient:
    """A synchronous mongomock client on the server of ``url``: to lay out test data (a BioMAJ 3
    database) and to look at it, outside the code under test."""
    return mongomock.MongoClient(_store=_servers.setdefault(_host_key(url), ServerStore()))


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    await asyncio.sleep(0)  # the request travels ...
    result = function(*args, **copy.deepcopy(kwargs))
    await asyncio.sleep(0)  # ... and so does the answer
    return result


class AsyncMongoClientDouble:
    """``AsyncMongoClient(url)``: ``client[name]``, ``get_database``, ``admin``, ``drop_database``,
    ``close``."""

    def __init__(self, url: str, **_options: Any) -> None:
        if not url.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"not a MongoDB URL: {url!r}")
        store = _servers.setdefault(_host_key(url), ServerStore())
        self._client = mongomock.MongoClient(_store=store)
        self.closed = False

    def __getitem__(self, name: str) -> AsyncDatabaseDouble:
        return self.get_database(name)

    def get_database(self, name: str) -> AsyncDatabaseDouble:
        return AsyncDatabaseDouble(self._client[name])

    @property
    def admin(self) -> AsyncDatabaseDouble:
        return self.get_database("admin")

    async def list_database_names(self) -> list[str]:
        return await _call(self._client.list_database_names)

    async def drop_database(self, name: str) -> None:
        await _call(self._client.drop_database, name)

    async def close(self) -> None:
        self.closed = True
        await asyncio.sleep(0)


class AsyncDatabaseDouble:
    def __init__(self, db: Any) -> None:
        self._db = db
        self.name = db.name

    def __getitem__(self, name: str) -> AsyncCollectionDouble:
        return self.get_collection(name)

    def get_collection(self, name: str) -> AsyncCollectionDouble:
        return AsyncCollectionDouble(self._db[name])

    async def command(self, name: str, *args: Any, **kwargs: Any) -> dict:
        if name != "ping":
            raise NotImplementedError(f"the Mongo double answers only the ping command, not {name}")
        await asyncio.sleep(0)
        return {"ok": 1.0}

    async def list_collection_names(self) -> list[str]:
        return await _call(self._db.list_collection_names)


class AsyncCollectionDouble:
    def __init__(self, collection: Any) -> None:
        self._c = collection
        self.name = collection.name

    def find(self, *args: Any, **kwargs: Any) -> AsyncCursorDouble:
        return AsyncCursorDouble(self._c, args, kwargs)

    async def find_one(self, *args: Any, **kwargs: Any) -> dict | None:
        return await _call(self._c.find_one, *copy.deepcopy(args), **kwargs)

    async def insert_one(self, document: dict, **kwargs: Any) -> Any:
        # Like PyMongo, insert_one adds the generated _id to the caller's document.
        return await _call(self._c.insert_one, document, **kwargs)

    async def insert_many(self, documents: list[dict], **kwargs: Any) -> Any:
        return await _call(self._c.insert_many, documents, **kwargs)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        return await _call(self._c.update_one, *copy.deepcopy(args), **kwargs)

    async def update_many(self, *args: Any, **kwargs: Any) -> Any:
        return await _call(self._c.update_many, *copy.deepcopy(args), **kwargs)

    async def replace_one(self, *args: Any, **kwargs: Any) -> Any:
        return await _call(self._c.replace_one, *copy.deepcopy(args), **kwargs)

    async def delete_one(self, *args: Any, **kwargs: Any) -> Any:
        return await _call(self._c.delete_one, *copy.deepcopy(args), **kwargs)

    async def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        return await _call(self._c.delete_many, *copy.deepcopy(args), **kwargs)

    async def find_one_and_update(self, *args: Any, **kwargs: Any) -> dict | None:
        return await _call(self._c.find_one_and_update, *copy.deepcopy(args), **kwargs)

    async def find_one_and_delete(self, *args: Any, **kwargs: Any) -> dict | None:
        return await _call(self._c.find_one_and_delete, *copy.deepcopy(args), **kwargs)

    async def count_documents(self, *args: Any, **kwargs: Any) -> int:
        return await _call(self._c.count_documents, *copy.deepcopy(args), **kwargs)

    async def create_index(self, keys: Any, **kwargs: Any) -> str:
        return await _call(self._c.create_index, keys, **kwargs)


class AsyncCursorDouble:
    """``find()``'s cursor: ``sort``, ``limit``, then ``await to_list()`` or ``async for``."""

    def __init__(self, collection: Any, args: tuple, kwargs: dict) -> None:
        self._collection = collection
        self._args = copy.deepcopy(args)
        self._kwargs = copy.deepcopy(kwargs)
        self._sort: Any = None
        self._limit = 0

    def sort(self, key_or_list: Any, direction: int | None = None) -> AsyncCursorDouble:
        self._sort = key_or_list if direction is None else [(key_or_list, direction)]
        return self

    def limit(self, limit: int) -> AsyncCursorDouble:
        self._limit = limit
        return self

    def _run(self) -> list[dict]:
        cursor = self._collection.find(*self._args, **self._kwargs)
        if self._sort is not None:
            cursor = cursor.sort(self._sort)
        if self._limit:
            cursor = cursor.limit(self._limit)
        return list(cursor)

    async def to_list(self, length: int | None = None) -> list[dict]:
        docs = await _call(self._run)
        return docs if length is None else docs[:length]

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        for doc in await self.to_list():
            yield doc
