"""The MongoDB store's connection: the driver's client (:func:`connect`, which tests replace with
the in-memory double), the database a URL names, driver errors told without the password, and
opening and closing a store (:class:`MongoConnection`), which prepares the schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from pymongo.errors import OperationFailure, PyMongoError

from biomaj.errors import ConfigError
from biomaj.redaction import redact_url
from biomaj.storage.base import IncompatibleSchema, Store
from biomaj.storage.mongo_schema import SCHEMA, prepare, stored_version

#: The database when the URL names none: BioMAJ 3's ``db.name`` default.
DEFAULT_DATABASE = "biomaj"

#: Compare-and-set attempts before giving up (each lost only to another writer).
RETRIES = 20
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


class MongoConnection(Store):
    """The connection of :class:`~biomaj.storage.mongo.MongoStore`: ``client_factory(url)``
    builds the client (default :func:`connect`); ``database`` overrides the URL's database.
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
            await prepare(db, f"{where} database {self.database}")
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

    async def schema_version(self) -> int:
        return await stored_version(self._col(SCHEMA))

    def _col(self, name: str) -> Any:
        if self._db is None:
            raise RuntimeError("MongoStore used before open()")
        return self._db[name]
