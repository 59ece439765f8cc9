"""S3-compatible buckets (AWS S3, GCS through its S3 interoperability API, MinIO, Ceph ...) on obstore.

``server`` is the endpoint and ``remote.dir`` is ``bucket/prefix/``: the paths this protocol is
given are keys under that prefix. Where the bucket is, how requests are signed, the client and
how its errors read are :mod:`biomaj.buckets`'; this module maps the contract onto
ListObjectsV2, HEAD and ranged GET.

Options (in ``RemoteConfig.options``, from the bank's keys, none of them a secret):
``s3.endpoint`` (the endpoint URL, from ``server``), ``s3.region``, ``s3.addressing``
(``auto``, ``path``, ``virtual``), ``s3.profile`` and ``s3.anonymous``.

A bucket has no directories, only keys in order. One level is listed by reading the keys from the
prefix on: a key deeper down gives its first-level sub-directory once; the keys after it in the
same page of 1,000 are passed over, and when the page ends inside the sub-directory the listing
starts again after its last possible key (S3's ``start-after``). That is one request per 1,000
keys of the level plus at most one per sub-directory, however many keys the sub-directories hold,
and the keys are streamed page by page (a prefix of a million keys stays light in memory). A
zero-byte key with keys under it is a folder marker (``dir/``), not a file.

An entry's ``hash`` and ``etag`` are the object's ETag. A single-part ETag is the object's MD5 and
becomes its ``checksum`` (checked while the file streams); a multipart ETag (``"<hex>-<parts>"``)
is not an MD5 and is never checked as one. Keys obstore cannot take as paths (a ``.``, ``..`` or
empty component: ``a/../b``, ``a//b``) are refused as unsafe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

import obstore
from obstore.exceptions import InvalidPathError

from biomaj.buckets import (
    READ_KEYS,
    Credentials,
    bank_access,
    credentials,
    diagnose,
    etag_md5,
    located,
    open_store,
    read_failure,
)
from biomaj.errors import ConfigError
from biomaj.protocols.base import (
    FatalError,
    Features,
    Protocol,
    RemoteConfig,
    RemoteEntry,
    RemoteError,
    RemoteNotFound,
    RemoteStream,
    RetryableError,
    Throttled,
    UnsafePath,
    checked_path,
    unreachable,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

# Options -----------------------------------------------------------------------------------------

LIST_PAGE = 1000  # keys per ListObjectsV2 request: S3's most
CHUNK = 256 * 1024  # bytes per chunk handed to the downloader (obstore's default is 10 MiB)
SMALL = 1024 * 1024  # a file up to this size is read whole in one call
_AFTER = "\U0010ffff"  # sorts after every key: "dir/" + _AFTER skips every key of dir/
_NO_ANSWER = ("connection refused", "unknown host", "no answer (timed out)")
_NOT_PARTIAL = "non-partial response when range requested"  # obstore's words for a 200 to a ranged GET


# The protocol ------------------------------------------------------------------------------------


class S3Protocol(Protocol):
    """One bucket prefix; one obstore client (its own connection pool) per instance."""

    names = ("s3",)
    # two ranges at once: a big file gets two connections at once, and two big files of a batch
    # share the host budget (4) at once instead of one after the other; more while the rate rises
    features = Features(resume=True, mtime_precision=1.0, split_start=2)

    def __init__(self, config: RemoteConfig):
        super().__init__(config)
        endpoint = config.options.get("s3.endpoint") or f"https://{config.address}"
        try:
            self.access = bank_access(endpoint, config.root, config.options)
        except ConfigError as exc:
            raise FatalError(str(exc)) from None
        self._creds: Credentials | None = None
        self._client: Any = None
        self._whole_gets = False  # see _ranges_answered_whole

    # Connection helpers --------------------------------------------------------------------------

    def _store(self) -> Any:
        """The obstore client, made on first use (credentials looked up then, never logged)."""
        if self._client is None:
            try:
                self._creds = credentials(self.access, (self.config.user, self.config.password))
            except ConfigError as exc:
                raise FatalError(str(exc)) from None
            self._client = open_store(self.access, self._creds, connect_timeout=self.config.connect_timeout)
        return self._client

    def _key(self, path: str) -> str:
        return "/".join(part for part in (self.access.prefix, path) if part)

    async def _call(self, awaitable: Awaitable[T], path: str) -> T:
        """``awaitable`` within the read timeout, its failure translated."""
        try:
            async with asyncio.timeout(self.config.read_timeout):
                return await awaitable
        except Exception as exc:
            raise await self._failed(exc, path) from None

    async def _failed(self, exc: BaseException, path: str) -> RemoteError:
        """:meth:`_error`, with the bucket's region looked up when the store redirects it (AWS's
        301 on another region's endpoint names the region in a header obstore does not pass on)."""
        return self._error(exc, path, (await located(read_failure(exc), self.access)).region)

    # list / stat / open --------------------------------------------------------------------------

    async def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        """One level under ``path``, streamed (see the module's docstring for the requests made)."""
        path = checked_path(path)
        store = self._store()
        base = self._key(path)
        under = f"{base}/" if base else ""
        shown = f"{path}/" if path else ""
        offset: str | None = None
        anything = False
        held: RemoteEntry | None = None  # a zero-byte key: a folder marker if keys under it follow
        while True:
            inside: str | None = None  # the sub-directory whose keys are being passed over
            pages = obstore.list(store, prefix=base or None, offset=offset, chunk_size=LIST_PAGE).__aiter__()
            while (page := await self._call(anext(pages, None), shown)) is not None:
                for meta in page:
                    key = meta["path"]
                    if not key.startswith(under):  # the marker "base/" of the listed folder itself
                        continue
                    anything = True
                    rest = key[len(under):]
                    name, slash, _ = rest.partition("/")
                    if held is not None:
                        if not (slash and shown + name == held.path):
                            yield held
                        held = None
                    if slash:
                        if name != inside:
                            yield RemoteEntry(shown + name, is_dir=True)
                            inside = name
                        continue
                    inside = None
                    entry = _entry(shown + rest, meta)
                    if entry.size == 0:
                        held = entry
                    else:
                        yield entry
                # obstore fills each batch across S3's pages: a short one is the last
                if inside is not None and len(page) == LIST_PAGE:
                    break  # more keys of that sub-directory may follow: ask for the keys after them
            else:
                break
            offset = f"{under}{inside}/{_AFTER}"
        if held is not None:
            yield held
        if not anything and path:
            raise RemoteNotFound(f"{self.access.url}{shown}: no such folder (no key under it)")

    async def stat(self, path: str) -> RemoteEntry:
        """HEAD of the object."""
        path = checked_path(path)
        meta = await self._call(obstore.head_async(self._store(), self._key(path)), path)
        return _entry(path, meta)

    @asynccontextmanager
    async def open(self, path: str, offset: int = 0, *, size: int | None = None,
                   end: int | None = None) -> AsyncIterator[RemoteStream]:
        """A GET of the object from ``offset`` (to ``end``, exclusive, for a split's range)."""
        path = checked_path(path)
        store, key = self._store(), self._key(path)
        options: dict[str, Any] = {}
        if self._whole_gets:
            pass  # the server cannot answer a range: the stream starts at 0, and the reader knows it
        elif end is not None and (size is None or end < size):
            options["range"] = (offset, end)
        elif offset > 0:
            options["range"] = {"offset": offset}
        result = None
        try:
            async with asyncio.timeout(self.config.read_timeout):
                result = await obstore.get_async(store, key, options=options)
        except Exception as exc:
            if options and _NOT_PARTIAL in str(exc):
                self._ranges_answered_whole()
                result = await self._call(obstore.get_async(store, key), path)
            elif read_failure(exc).status != 416:
                raise await self._failed(exc, path) from None
        if result is None:  # the range starts at or past the end: complete already, or the object changed
            entry = await self.stat(path)
            if entry.size == offset:
                yield _S3Stream(self, None, path, offset, entry)
                return
            result = await self._call(obstore.get_async(store, key), path)
        stream = _S3Stream(self, result, path, result.range[0], _entry(path, result.meta))
        try:
            yield stream
        finally:
            stream.drop()  # an unfinished body is abandoned: obstore closes its connection

    def _ranges_answered_whole(self) -> None:
        """The server answered a ranged GET with 200, not 206 (rclone's ``serve s3`` does, with the
        range's bytes; obstore refuses such an answer): this client GETs whole objects from now on,
        which the downloader takes as a server without ranges (one stream from 0, no split)."""
        if not self._whole_gets:
            log.warning("%s answers a ranged GET with 200 instead of 206 Partial Content: objects are "
                        "fetched whole (no resume, no split)", self.access.endpoint)
        self._whole_gets = True

    async def close(self) -> None:
        self._client = None  # obstore's pool closes its connections when the client goes

    # Errors --------------------------------------------------------------------------------------

    def _error(self, exc: BaseException, path: str, region: str | None = None) -> RemoteError:
        """An obstore error onto the shared errors: the cause first, then the fix. Messages say
        where the key came from, never the key or its secret (:func:`biomaj.buckets.diagnose`)."""
        if isinstance(exc, RemoteError):
            return exc
        where = f"{self.access.url}{path}"
        if isinstance(exc, TimeoutError):
            return RetryableError(f"{where}: no answer for {self.config.read_timeout:g} s")
        failure = read_failure(exc)
        if isinstance(exc, (InvalidPathError, ValueError)):
            return UnsafePath(f"unsafe remote name in {self.access.url}: {failure.message}")
        if region is not None:
            failure = replace(failure, region=region)
        status, code = failure.status, failure.code
        diagnosis = diagnose(failure, self.access, self._creds, READ_KEYS)
        if diagnosis is not None:
            cause, fix = diagnosis
            message = f"{where}: {cause} ({failure.text}); {fix}"
            return RemoteNotFound(message) if code == "NoSuchBucket" else FatalError(message)
        if isinstance(exc, FileNotFoundError) or status == 404:
            return RemoteNotFound(f"{where}: not found ({code or 'HTTP 404'})")
        if status in (429, 503) or code == "SlowDown":
            return Throttled(f"{where}: the server asks to slow down ({failure.text})")
        if status is not None and (status >= 500 or status == 408):
            return RetryableError(f"{where}: {failure.text}")
        if status is not None:
            return FatalError(f"{where}: {failure.text}")
        if failure.connection in _NO_ANSWER:
            return unreachable(self.access.endpoint, OSError(failure.connection))
        return RetryableError(f"{where}: {failure.text}")


class _S3Stream(RemoteStream):
    """The body of one GET: read whole when small, else in chunks of CHUNK, each within the read
    timeout (no total timeout)."""

    def __init__(self, protocol: S3Protocol, result: Any, path: str, offset: int, entry: RemoteEntry):
        self._protocol = protocol
        self._result = result
        self._path = path
        self.offset = offset
        self.size = entry.size
        self.mtime = entry.mtime

    async def __aiter__(self) -> AsyncIterator[bytes]:
        result = self._result
        if result is None:
            return
        start, stop = result.range
        if stop - start <= SMALL:
            data = await self._protocol._call(result.bytes_async(), self._path)
            if len(data):
                yield memoryview(data)
            return
        chunks = result.stream(min_chunk_size=CHUNK).__aiter__()
        while (chunk := await self._protocol._call(anext(chunks, None), self._path)) is not None:
            yield memoryview(chunk)

    def drop(self) -> None:
        self._result = None


def _entry(path: str, meta: Any) -> RemoteEntry:
    """An object's listing or HEAD facts; its MD5 when the ETag is one (a single-part upload)."""
    etag = meta.get("e_tag")
    modified = meta.get("last_modified")
    mtime = modified.timestamp() if modified is not None else None
    md5 = etag_md5(etag)
    return RemoteEntry(path, meta["size"], mtime, hash=etag or f"{meta['size']}:{mtime}", etag=etag,
                       checksum=f"md5:{md5}" if md5 else None)
