"""Fixtures of the migration tests: a BioMAJ 3 database in the Mongo test double (no MongoDB server
runs here; see tests/storage/mongo_double.py), and a target store, SQLite or MongoDB (double)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from biomaj.storage import Store, open_store
from biomaj.storage import mongo_connection
from tests.storage import mongo_double

from . import biomaj3_db


def double_url(database: str = "", password: str | None = None) -> str:
    """A mongodb:// URL of a fresh server of the double."""
    auth = f"admin:{password}@" if password else ""
    return f"mongodb://{auth}b3-{uuid.uuid4().hex[:8]}.invalid:27017/{database}"


@pytest.fixture
def uses_double(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every mongodb:// client is the double; yields a list where tests add URLs to forget."""
    monkeypatch.setattr(mongo_connection, "connect", mongo_double.AsyncMongoClientDouble)
    urls: list[str] = []
    yield urls
    for url in urls:
        mongo_double.forget(url)


@pytest.fixture
def biomaj3_url(uses_double: list[str]) -> str:
    """The BioMAJ 3 database of tests/migration/biomaj3_db.py (db ``biomaj``, users in
    ``biomaj_user``), behind a URL with a password."""
    url = double_url("", password="hunter2-secret")
    uses_double.append(url)
    biomaj3_db.build(url)
    return url


@pytest.fixture(params=["sqlite", "mongo-double"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path, uses_double: list[str]) -> str:
    """The configured store the migration copies into."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'target' / 'biomaj.sqlite'}"
    url = double_url("biomaj_target")
    uses_double.append(url)
    return url


@pytest.fixture
async def target(target_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(target_url, tmp_path)
    async with store:
        yield store
