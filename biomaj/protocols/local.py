"""A local directory as a remote tree (BioMAJ's ``protocol=local``): ``remote.dir`` is the path.

Blocking file-system calls run in worker threads: listings in batches of ``BATCH`` entries,
reads in chunks of ``CHUNK`` bytes with the next chunk read while the current one is consumed.
Symbolic links are followed, as BioMAJ's ``os.stat`` did, and flagged ``is_link``; a link to
nothing is left out of listings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat as stat_module
from collections.abc import AsyncIterator

from biomaj.protocols.base import (
    checked_path,
    FatalError,
    Features,
    Protocol,
    RemoteEntry,
    RemoteError,
    RemoteNotFound,
    RemoteStream,
    RetryableError,
)

log = logging.getLogger(__name__)

# Options -----------------------------------------------------------------------------------------

BATCH = 1000  # directory entries stat-ed per thread hop
CHUNK = 1024 * 1024  # bytes per read


def entry_hash(name: str, st: os.stat_result) -> str:
    """BioMAJ's hash of a local file: md5 of name + mtime + size (``localcopy.py``)."""
    return hashlib.md5(f"{name}{st.st_mtime}{st.st_size}".encode("utf-8", "surrogateescape")).hexdigest()


def _entry(path: str, name: str, st: os.stat_result, is_link: bool) -> RemoteEntry:
    is_dir = stat_module.S_ISDIR(st.st_mode)
    size = None if is_dir else st.st_size
    return RemoteEntry(path, size, st.st_mtime, is_dir, is_link, entry_hash(name, st))


# The protocol ------------------------------------------------------------------------------------


class LocalProtocol(Protocol):
    """Files of a local (or NFS-mounted) directory, read in worker threads."""

    names = ("local",)
    features = Features(resume=True, mtime_precision=1.0, split=False)

    def _local(self, path: str) -> str:
        return os.path.join(self.config.root or ".", path) if path else (self.config.root or ".")

    async def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        """``os.scandir`` in a worker thread, entries handed over ``BATCH`` at a time."""
        path = checked_path(path)
        prefix = f"{path}/" if path else ""
        try:
            entries = await asyncio.to_thread(os.scandir, self._local(path))
        except OSError as exc:
            raise _translate_error(exc, path or "/") from exc
        try:
            while True:
                try:
                    batch = await asyncio.to_thread(_next_batch, entries, prefix)
                except OSError as exc:
                    raise _translate_error(exc, path or "/") from exc
                if not batch:
                    return
                for entry in batch:
                    yield entry
        finally:
            entries.close()

    async def stat(self, path: str) -> RemoteEntry:
        path = checked_path(path)
        try:
            return await asyncio.to_thread(_stat, self._local(path), path)
        except OSError as exc:
            raise _translate_error(exc, path) from exc

    @contextlib.asynccontextmanager
    async def open(self, path: str, offset: int = 0, *, size: int | None = None, end: int | None = None) -> AsyncIterator[RemoteStream]:
        """The file from ``offset``, in chunks of ``CHUNK`` bytes read by a worker thread."""
        path = checked_path(path)
        try:
            fd, st = await asyncio.to_thread(_open, self._local(path))
        except OSError as exc:
            raise _translate_error(exc, path) from exc
        stream = _LocalStream(fd, path, offset, st)
        try:
            yield stream
        finally:
            await stream.close()


def _next_batch(entries, prefix: str) -> list[RemoteEntry]:
    batch: list[RemoteEntry] = []
    for item in entries:
        is_link = item.is_symlink()
        try:
            st = item.stat()  # follows links
        except FileNotFoundError:
            if is_link:
                log.warning("local: %s%s is a symbolic link to nothing: left out", prefix, item.name)
                continue
            raise
        batch.append(_entry(prefix + item.name, item.name, st, is_link))
        if len(batch) >= BATCH:
            break
    return batch


def _stat(local: str, path: str) -> RemoteEntry:
    is_link = stat_module.S_ISLNK(os.lstat(local).st_mode)
    return _entry(path, os.path.basename(path), os.stat(local), is_link)


def _open(local: str) -> tuple[int, os.stat_result]:
    fd = os.open(local, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat_module.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", local)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


class _LocalStream(RemoteStream):
    """Chunks read with ``os.pread`` in a worker thread, one read ahead of the consumer."""

    def __init__(self, fd: int, path: str, offset: int, st: os.stat_result):
        self._fd: int | None = fd
        self._path = path
        self._ahead: asyncio.Future | None = None
        self.offset = offset
        self.size = st.st_size
        self.mtime = st.st_mtime

    def _read(self, position: int) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(None, os.pread, self._fd, CHUNK, position)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        position = self.offset
        self._ahead = self._read(position)
        while True:
            try:
                data = await self._ahead
            except OSError as exc:
                self._ahead = None
                raise _translate_error(exc, self._path) from exc
            if not data:
                self._ahead = None
                return
            position += len(data)
            self._ahead = self._read(position)
            yield data

    async def close(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead.done():
            self._close_fd()
            return
        # Never close the descriptor under a running read: close it when the read is over, even
        # if we are cancelled while waiting for that.
        ahead.add_done_callback(self._read_over)
        with contextlib.suppress(Exception):
            await asyncio.shield(ahead)

    def _read_over(self, ahead: asyncio.Future) -> None:
        if not ahead.cancelled():
            ahead.exception()  # retrieved: an error of a read nobody waits for is not news
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# Errors ------------------------------------------------------------------------------------------


def _translate_error(exc: OSError, path: str) -> RemoteError:
    """Map an OSError of the local file system onto the shared errors."""
    where = f"local {path}"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return RemoteNotFound(f"{where}: no such file or directory")
    if isinstance(exc, PermissionError):
        return FatalError(f"{where}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return FatalError(f"{where}: is a directory, not a file")
    # EIO, ESTALE, ETIMEDOUT ... on network file systems may pass.
    return RetryableError(f"{where}: {exc.strerror or exc}")
