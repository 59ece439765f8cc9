"""Persistent state: banks, sessions, history, users, schedules and jobs behind one :class:`Store`.

``open_store(url, root)`` picks the backend from config.yml's ``storage.url``; actors only ever
see the :class:`Store` interface.
"""

from __future__ import annotations

import os
from pathlib import Path

from biomaj.errors import ConfigError
from biomaj.storage.base import Conflict, DuplicateJob, IncompatibleSchema, NotFound, Store

__all__ = [
    "Conflict",
    "DuplicateJob",
    "IncompatibleSchema",
    "NotFound",
    "Store",
    "default_sqlite_path",
    "open_store",
]

_ACCEPTED = "empty (SQLite in <root>/db/biomaj.sqlite), sqlite:///ABSOLUTE/PATH, or mongodb://..."


def default_sqlite_path(root: Path) -> Path:
    """Where the SQLite database lives when storage.url is empty."""
    return Path(root) / "db" / "biomaj.sqlite"


def open_store(url: str | None, root: Path) -> Store:
    """Build the store named by ``storage.url``; the caller opens it (``async with store:``).

    Accepted: ``""``, ``sqlite:`` or ``sqlite://`` (``<root>/db/biomaj.sqlite``),
    ``sqlite:///abs/path.sqlite``, ``mongodb://...`` and ``mongodb+srv://...`` (the database is
    the URL's path, ``biomaj`` when it has none; nothing connects before ``open()``). Anything
    else raises ConfigError, as does a database directory that cannot be created or written.
    """
    url = (url or "").strip()
    if url in ("", "sqlite:", "sqlite://"):
        return _sqlite(default_sqlite_path(root))
    if url.startswith("sqlite:///"):
        path = "/" + url[len("sqlite:///"):].lstrip("/")
        if path == "/" or path.endswith("/"):
            raise ConfigError(f"storage.url: {url!r} names a directory; expected {_ACCEPTED}")
        return _sqlite(Path(path))
    if url.startswith(("mongodb://", "mongodb+srv://")):
        return _mongo(url)
    raise ConfigError(f"storage.url: unsupported value {url!r}; expected {_ACCEPTED}")


def _mongo(url: str) -> Store:
    try:  # imported lazily: an installation on SQLite never loads the driver
        from biomaj.storage.mongo import MongoStore
    except ImportError as exc:
        raise ConfigError(
            f"storage.url: a mongodb:// store needs PyMongo 4.13.2 or later ({exc});"
            " install it with `pip install 'pymongo>=4.13.2,<5'`"
        ) from None
    return MongoStore(url)


def _sqlite(path: Path) -> Store:
    from biomaj.storage.sqlite import SQLiteStore

    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"storage.url: cannot create the database directory {directory}: {exc.strerror}"
        ) from exc
    # SQLite needs to create the -wal and -shm files next to the database.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"storage.url: the database directory {directory} is not writable")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"storage.url: the database file {path} is not readable and writable")
    return SQLiteStore(path)
