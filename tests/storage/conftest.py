"""The ``store`` fixture: every conformance test runs once per backend.

SQLite always runs. ``mongo`` is to be appended to ``BACKENDS`` with the MongoDB backend: it skips
without ``BIOMAJ_TEST_MONGO_URL`` on a laptop and fails when ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from biomaj.storage import Store, open_store

BACKENDS = ["sqlite"]  # add "mongo" here when biomaj/storage/mongo.py exists


def _store_url(backend: str, tmp_path: Path) -> str:
    """A URL naming a fresh, empty database for one test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'biomaj.sqlite'}"
    if backend == "mongo":
        base = os.environ.get("BIOMAJ_TEST_MONGO_URL")
        if not base:
            if os.environ.get("CI") == "true":
                pytest.fail("BIOMAJ_TEST_MONGO_URL is required when CI=true")
            pytest.skip("set BIOMAJ_TEST_MONGO_URL to run the MongoDB store tests")
        # One database per test; drop it in the fixture teardown once the backend exists.
        return f"{base.rstrip('/')}/biomaj_test_{uuid.uuid4().hex[:12]}"
    raise AssertionError(f"unknown store backend {backend}")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _store_url(request.param, tmp_path)


@pytest.fixture
async def store_factory(
    store_url: str, tmp_path: Path
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


@pytest.fixture
async def store(store_factory: Callable[[], Awaitable[Store]]) -> Store:
    return await store_factory()


@pytest.fixture
async def other_store(store_factory: Callable[[], Awaitable[Store]], store: Store) -> Store:
    """A second, independent Store on the database of ``store``."""
    return await store_factory()

