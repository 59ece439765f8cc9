"""One FTP session's view of the published tree: virtual paths resolved with :mod:`biomaj.published`.

A virtual path is absolute (``/``, ``/<bank>``, ``/<bank>/current/flat/x.fasta``). ``..`` is an FTP
client's way to go up: it is applied to the virtual path and stops at ``/`` (it never reaches the file
system); what remains must be plain names. A bank the viewer may not see and a name that does not exist
are the same answer (:class:`NotFound`), so nothing tells a private bank from a missing one.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from biomaj.published import (
    Refused, Row, bank_rows, directory_rows, locate, release_dir, release_entry, release_rows, split_names,
)
from biomaj.reports import Viewer

ROOT = PurePosixPath("/")
BANKS_TTL = 2.0  # seconds a session reuses the store's list of banks (a listing stats every entry)


class NotFound(FileNotFoundError):
    """Nothing the viewer may see has this path."""


def virtual_path(current: PurePosixPath, argument: str | PurePosixPath) -> PurePosixPath:
    """``argument`` (absolute, or relative to ``current``) with ``.`` and ``..`` applied; ``..`` at the
    root stays at the root, as in a chroot."""
    path = PurePosixPath(argument)
    if not path.is_absolute():
        path = current / path
    resolved = ROOT
    for part in path.parts[1:]:
        if part == "..":
            resolved = resolved.parent
        elif part != ".":
            resolved /= part
    return resolved


@dataclass(frozen=True)
class Entry:
    """What a virtual path designates: the root, a bank, or a directory or file inside a release
    (``real``: its resolved path, ``root``: the resolved release directory)."""

    kind: Literal["root", "bank", "dir", "file"]
    path: PurePosixPath
    doc: dict[str, Any] | None = None
    real: Path | None = None
    root: Path | None = None
    info: os.stat_result | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind != "file"

    @property
    def size(self) -> int:
        return self.info.st_size if self.info is not None and self.kind == "file" else 0

    @property
    def mtime(self) -> float:
        if self.info is not None:
            return self.info.st_mtime
        sessions = [p.get("session") for p in (self.doc or {}).get("production") or []]
        return max((s for s in sessions if isinstance(s, (int, float))), default=0)


class View:
    """The banks ``viewer`` may see, read from ``store`` (refreshed every :data:`BANKS_TTL` seconds)."""

    def __init__(self, store: Any, viewer: Viewer):
        self.store = store
        self.viewer = viewer
        self._banks: list[dict[str, Any]] = []
        self._loaded = -BANKS_TTL

    async def banks(self) -> list[dict[str, Any]]:
        """The bank summaries the viewer may see that have a production release."""
        if time.monotonic() - self._loaded >= BANKS_TTL:
            docs = await self.store.list_banks()
            visible = {row.name for row in bank_rows(docs, self.viewer)}
            self._banks = [doc for doc in docs if doc.get("name") in visible]
            self._loaded = time.monotonic()
        return self._banks

    async def resolve(self, path: PurePosixPath) -> Entry:
        """The entry at ``path`` (a result of :func:`virtual_path`); :class:`NotFound` otherwise."""
        try:
            names = split_names(str(path))
        except Refused:
            raise NotFound(str(path)) from None
        if not names:
            return Entry("root", ROOT)
        doc = next((d for d in await self.banks() if d.get("name") == names[0]), None)
        if doc is None:
            raise NotFound(str(path))
        if len(names) == 1:
            return Entry("bank", path, doc)
        entry = release_entry(doc, names[1])
        directory = release_dir(entry) if entry is not None else None
        if directory is None:
            raise NotFound(str(path))
        try:
            real, info, root = await asyncio.to_thread(locate, directory, names[2:])
        except FileNotFoundError:
            raise NotFound(str(path)) from None
        return Entry("dir" if stat.S_ISDIR(info.st_mode) else "file", path, doc, real, root, info)

    async def rows(self, entry: Entry) -> list[Row]:
        """The entries of a directory, sorted by name; a file lists itself."""
        if entry.kind == "root":
            return sorted(bank_rows(await self.banks(), self.viewer), key=lambda r: r.name)
        if entry.kind == "bank":
            return await asyncio.to_thread(release_rows, entry.doc)
        if entry.kind == "dir":
            try:
                return await asyncio.to_thread(directory_rows, entry.real, entry.root)
            except OSError:
                raise NotFound(str(entry.path)) from None
        return [Row(entry.path.name, False, entry.size, entry.mtime)]


__all__ = ["Entry", "NotFound", "View", "virtual_path"]
