"""The ``store`` fixture: every conformance test runs once per backend.

* ``sqlite``: always runs.
* ``mongo-double``: always runs. ``storage.url: mongodb://...`` opens the real
  :class:`~biomaj.storage.mongo.MongoStore` code, whose driver is replaced by the in-memory
  double of ``tests/storage/mongo_double.py`` (mongomock behind AsyncMongoClient's methods).
  It checks the store's queries and update operators, not a MongoDB server.
* ``mongo``: the same suite on a real MongoDB server, **only when ``BIOMAJ_TEST_MONGO_URL`` is
  set** (e.g. ``mongodb://127.0.0.1:27017``); it skips otherwise, **in CI too**: no MongoDB
  server can run on the machines that run biomaj's CI (unlike Redis and RabbitMQ, whose
  service tests fail when CI=true and the service is missing). Each test gets its own
  database, dropped at teardown.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from biomaj.storage import Store, open_store
from biomaj.storage import mongo_connection
from tests.conftest import MONGO_MISSING, ONE_LINE_SKIPS
from tests.storage import mongo_double

BACKENDS = ["sqlite", "mongo-double", pytest.param("mongo", marks=pytest.mark.service)]


def _store_url(backend: str, tmp_path: Path) -> str:
    """A URL naming a fresh, empty database for one test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'biomaj.sqlite'}"
    database = f"biomaj_test_{uuid.uuid4().hex[:12]}"
    if backend == "mongo-double":
        return f"mongodb://double-{uuid.uuid4().hex[:8]}.invalid:27017/{database}"
    if backend == "mongo":
        base = os.environ.get("BIOMAJ_TEST_MONGO_URL")
        if not base:
            pytest.skip(MONGO_MISSING)
        return _with_database(base, database)
    raise AssertionError(f"unknown store backend {backend}")


ONE_LINE_SKIPS[MONGO_MISSING] = (__file__, _store_url.__code__.co_firstlineno - 1)


def _with_database(base: str, database: str) -> str:
    """``base`` (a server URL, maybe with a path and options) naming ``database`` instead; its
    credentials keep authenticating where they did (the path is the default authSource)."""
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    query = parts.query
    if "@" in parts.netloc and "authsource=" not in query.lower():
        source = f"authSource={parts.path.strip('/') or 'admin'}"
        query = f"{query}&{source}" if query else source
    return parts._replace(path=f"/{database}", query=query).geturl()


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = _store_url(store_backend, tmp_path)
    if store_backend == "mongo-double":
        monkeypatch.setattr(mongo_connection, "connect", mongo_double.AsyncMongoClientDouble)
    yield url
    if store_backend == "mongo-double":
        mongo_double.forget(url)


@pytest.fixture
async def store_factory(
    store_backend: str, store_url: str, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """Open another Store on the same database, as a second process or manager would."""
    opened: list[Store] = []

    async def factory() -> Store:
        s = open_store(store_url, tmp_path)
        await s.open()
        opened.append(s)
        return s

    yield factory
    for s in opened:
        await s.close()
    if store_backend == "mongo":
        client = mongo_connection.connect(store_url)
        try:
            await client.drop_database(mongo_connection.database_of(store_url))
        finally:
            await client.close()


@pytest.fixture
async def store(store_factory: Callable[[], Awaitable[Store]]) -> Store:
    return await store_factory()


@pytest.fixture
async def other_store(store_factory: Callable[[], Awaitable[Store]], store: Store) -> Store:
    """A second, independent Store on the database of ``store``."""
    return await store_factory()
