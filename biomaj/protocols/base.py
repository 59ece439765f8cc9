"""The contract every protocol implements: list a remote directory, stat and open a remote
file (resuming at an offset), close. Read-only on purpose (rclone's `fs` interface, minus writes).

A protocol knows nothing of banks, retries or local files: it maps its native operations and
errors onto this module's types. Retry policy, per-host limits, resume bookkeeping, verification
and writing to disk live in :mod:`biomaj.download`.

Paths given to and returned by a protocol are relative to ``RemoteConfig.root`` (BioMAJ's
``remote.dir``), ``/``-separated, without a leading ``/``; ``""`` is the root itself. For the
direct protocols (one file, no listing) ``root`` is the directory of the file and the file is
``RemoteConfig.direct_file``.
"""

from __future__ import annotations

import abc
import errno
import posixpath
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import ClassVar

from biomaj.errors import BiomajError

# Errors ------------------------------------------------------------------------------------------


class RemoteError(BiomajError):
    """A remote operation failed; subclasses say whether trying again can help."""


class RemoteNotFound(RemoteError):
    """The remote file or directory does not exist (HTTP 404, FTP 550, ENOENT)."""


class RetryableError(RemoteError):
    """A transient failure (connection reset or timeout, HTTP 5xx, FTP 4xx): try again later."""


class Throttled(RetryableError):
    """The server asks us to slow down (HTTP 429/503, FTP 421): back off, fewer connections."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Unreachable(RetryableError):
    """The server cannot be reached: connection refused, unknown host, no route, no answer."""


class FatalError(RemoteError):
    """A failure that retrying will not fix: bad credentials, permission denied, bad option."""


class PipelineUnsupported(RemoteError):
    """Several files at once cannot go this way (a proxy, an answer of unknown length ...): the
    files not delivered yet must be opened one by one."""


class UnsafePath(FatalError):
    """A remote name that would write outside the bank's offline directory (``..``, absolute, ...)."""


def checked_path(path: str, *, forbid: str = "\x00", no_dash: bool = False) -> str:
    """A path given to a protocol, without surrounding ``/``; UnsafePath when a component is
    ``..`` (it would climb out of the root), when it holds one of `forbid` (NUL always; line breaks
    for line-based protocols), or, with `no_dash`, when a component starts with ``-`` (it could be
    read as an option by a program)."""
    parts = path.strip("/").split("/")
    if ".." in parts or any(c in path for c in forbid) or (no_dash and any(p.startswith("-") for p in parts)):
        raise UnsafePath(f"unsafe remote path {path!r}: '..', a control character or a leading '-'")
    return path.strip("/")


def unreachable(server: str, exc: BaseException) -> Unreachable:
    """``cannot reach SERVER: REASON`` for a connection that failed to open, in the words an
    operator uses (``connection refused``, ``unknown host``, ``no answer``), for every protocol."""
    return Unreachable(f"cannot reach {server}: {connect_failure(exc)}")


def connect_failure(exc: BaseException) -> str:
    """Why a connection did not open, in a few plain words."""
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or f"[Errno {errno.ECONNREFUSED}]" in text:
        return "connection refused"  # a "Multiple exceptions" error of several addresses, all refused
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "no answer (connection timed out)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return text or type(exc).__name__


# Data --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """One entry of a remote listing.

    ``mtime`` is POSIX seconds (UTC) or None when the server does not say; ``size`` is exact or
    None (HTML indexes print ``12M``: None, with ``size_hint`` 12,000,000; the transfer tells the
    real size). ``hash`` is an opaque token that changes when the remote file changes (BioMAJ's
    metadata ``hash``). ``etag`` is the server's own validator, verbatim (HTTP ``ETag``), kept so
    that the next update can ask "changed since?" (:meth:`Protocol.stat_since`). ``checksum`` is
    a digest of the content the protocol knows without reading it (an S3 object's single-part
    ETag is its MD5): the download checks it as the file streams, unless a provider's manifest
    gives one.
    """

    path: str
    size: int | None = None
    mtime: float | None = None
    is_dir: bool = False
    is_link: bool = False
    hash: str | None = None
    size_hint: int | None = None  # an approximate size when ``size`` is None (an index's ``12M``)
    etag: str | None = None  # HTTP ETag as the server sent it (``"5f-1a2b"``, ``W/"..."``)
    checksum: str | None = None  # ``algo:hex`` of the content when the server says it (S3's MD5 ETag)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


@dataclass(frozen=True)
class Features:
    """What a protocol can do; the downloader adapts to it."""

    can_list: bool = True  # False for direct* protocols: one known file
    resume: bool = True  # open(path, offset>0) is honoured (it may still restart at 0)
    mtime_precision: float = 1.0  # seconds; 60 for HTML indexes without seconds
    native_fetch: bool = False  # implements fetch() itself (rsync), open() unsupported
    pipelining: bool = False  # implements open_many(): several files asked for at once (HTTP/1.1)
    split: bool = True  # a big file may be read as ranges over several connections (not local files)
    # ranges a split transfer opens at once, before measuring: 1 (then more while the rate rises) for
    # servers whose ranges are costly or whose connections are not capped; more for object stores,
    # whose ranged GETs are cheap and each connection capped (rclone and the AWS tools start so too)
    split_start: int = 1


@dataclass(frozen=True)
class HttpParse:
    """BioMAJ's ``http.parse.*`` / ``http.group.*`` settings; None fields mean "auto-detect"."""

    dir_line: str | None = None
    file_line: str | None = None
    dir_name: int = 1
    dir_date: int = 2
    file_name: int = 1
    file_date: int = 2
    file_size: int = 3
    file_date_format: str | None = None


@dataclass(frozen=True)
class RemoteConfig:
    """Everything a protocol needs to reach one remote tree. Secrets never appear in repr()."""

    protocol: str
    host: str = ""
    port: int | None = None
    root: str = "/"
    direct_file: str = ""  # direct* protocols: the file name within root
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    method: str = "GET"  # direct http(s): GET or POST
    params: Mapping[str, str] = field(default_factory=dict)  # GET query or POST form
    proxy: str | None = None  # http://host:port, socks proxies are not supported
    proxy_auth: str | None = field(default=None, repr=False)  # user:password
    connect_timeout: float = 60.0
    read_timeout: float = 300.0  # longest silence while reading; no total timeout
    options: Mapping[str, str] = field(default_factory=dict)  # BioMAJ options.* (ssl_verifypeer ...)
    http_parse: HttpParse = field(default_factory=HttpParse)

    @property
    def address(self) -> str:
        """``host:port`` for logs and per-host limits (no credentials)."""
        return f"{self.host}:{self.port}" if self.port else self.host

    @property
    def server_url(self) -> str:
        """``scheme://host:port`` of the server, for messages (no credentials)."""
        return f"{self.protocol.removeprefix('direct')}://{self.address}"

    @property
    def root_url(self) -> str:
        """The remote directory (``remote.dir``) as a URL, for messages (no credentials)."""
        root = self.root.strip("/")
        return f"{self.server_url}/{root + '/' if root else ''}"


class RemoteStream(abc.ABC):
    """An open remote file: an async iterator of byte chunks from ``offset`` to the end."""

    offset: int = 0  # where the data starts: the offset asked for, or 0 if the server restarted
    size: int | None = None  # total size of the remote file, when the server says
    mtime: float | None = None  # remote modification time, when the server says

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...


# The contract ------------------------------------------------------------------------------------


class Protocol(abc.ABC):
    """One remote tree reached by one protocol. Reuses its connections until :meth:`close`.

    Instances are used by one task at a time for :meth:`open`; the downloader keeps one instance
    per worker and host, so one FTP or SFTP login serves many files.
    """

    names: ClassVar[tuple[str, ...]] = ()  # bank `protocol` values served by this class
    features: ClassVar[Features] = Features()

    def __init__(self, config: RemoteConfig):
        self.config = config

    @abc.abstractmethod
    def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        """The entries of one directory (not recursive), streamed as they are parsed.

        Entry paths are relative to the root (``sub/file.gz`` when listing ``sub``). ``.`` and
        ``..`` are never yielded. RemoteNotFound when the directory does not exist.
        """

    @abc.abstractmethod
    async def stat(self, path: str) -> RemoteEntry:
        """Size, mtime and hash of one file (HEAD, SIZE+MDTM, stat); RemoteNotFound if absent."""

    async def stat_since(self, path: str, known: RemoteEntry) -> RemoteEntry:
        """:meth:`stat`, asked as a conditional request where the protocol has one (HTTP
        ``If-None-Match`` with ``known.etag``): ``known`` itself (with ``path``) when the server
        answers that the file has not changed since, else what :meth:`stat` gives."""
        return await self.stat(path)

    @abc.abstractmethod
    def open(
        self, path: str, offset: int = 0, *, size: int | None = None, end: int | None = None
    ) -> AbstractAsyncContextManager[RemoteStream]:
        """Stream a file from ``offset`` (HTTP Range, FTP REST, SFTP seek). ``size`` is the
        listing's size when known (a protocol may skip asking for it). ``end``: the caller stops
        reading there (a split transfer's range); a protocol that can ask for a bounded range
        (HTTP, SFTP) does, the others send on and are stopped. Leaving the context early aborts
        the transfer and leaves the connection usable or closed, never stuck."""

    async def fetch(
        self, path: str, dest: str, *, offset: int = 0, on_bytes: Callable[[int], None] | None = None
    ) -> RemoteEntry:
        """Native transfer straight to ``dest`` (protocols with ``features.native_fetch``),
        resuming a partial ``dest``; ``on_bytes(n)`` is told of progress as it happens."""
        raise NotImplementedError(f"{type(self).__name__} streams with open()")

    def open_many(self, paths: list[str]) -> AsyncIterator[tuple[str, RemoteStream | RemoteError]]:
        """Several whole files asked for at once (protocols with ``features.pipelining``): one
        ``(path, stream or error)`` per path, in order; each stream is read to its end, or left,
        before the next item is taken. Ends early with :class:`PipelineUnsupported` or a
        RemoteError: the paths not given yet are then the caller's to open one by one."""
        raise PipelineUnsupported(f"{type(self).__name__} opens one file at a time")

    async def close(self) -> None:
        """Close every connection; the instance may not be used afterwards."""

    async def __aenter__(self) -> Protocol:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
