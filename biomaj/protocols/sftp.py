"""SFTP on asyncssh: one SSH connection and one SFTP session per instance, reused for every call.

Options (BioMAJ ``options.*``):

- ``ssh_key``: path of a private key to log in with (besides or instead of the password);
- ``ssh_hosts_file``: the known_hosts file, ``~/.ssh/known_hosts`` by default;
- ``ssh_new_host``: what to do with a host missing from that file: ``reject`` (default),
  ``accept`` (trust it for this connection) or ``add`` (trust it and append it to the file).
  A host whose key differs from the file's is always refused.

Without a password or ``ssh_key``, the default keys of ``~/.ssh`` and the SSH agent are tried.
An entry's ``hash`` is its size and mtime (BioMAJ 3 had no SFTP listing to stay compatible with).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import posixpath
from collections.abc import AsyncIterator

import asyncssh

from biomaj.protocols.base import (
    unreachable,
    checked_path,
    FatalError,
    Features,
    Protocol,
    RemoteConfig,
    RemoteEntry,
    RemoteError,
    RemoteNotFound,
    RemoteStream,
    RetryableError,
    UnsafePath,
)

log = logging.getLogger(__name__)

# Options -----------------------------------------------------------------------------------------

DEFAULT_HOSTS_FILE = "~/.ssh/known_hosts"
NEW_HOST_POLICIES = ("reject", "accept", "add")
DEFAULT_PORT = 22

BLOCK = 256 * 1024  # bytes per SFTP read request (less when the server's limit is lower)
IN_FLIGHT = 8 * 1024 * 1024  # bytes requested ahead of the reader: keeps the pipe full
CHUNK = 1024 * 1024  # blocks already received are handed over in chunks of up to this size
WINDOW = 2 * IN_FLIGHT  # SSH channel window: never the limit on the reads in flight
# AES-GCM first: with AES instructions it is the fastest cipher asyncssh has (twice chacha20's
# throughput over loopback); the server still picks among all of them.
CIPHERS = [
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes128-ctr", "aes192-ctr", "aes256-ctr",
]


def _encode(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


# The protocol ------------------------------------------------------------------------------------


class SftpProtocol(Protocol):
    """A remote tree over SFTP; one login serves every list, stat and open of this instance."""

    names = ("sftp",)
    features = Features(resume=True, mtime_precision=1.0)

    def __init__(self, config: RemoteConfig):
        super().__init__(config)
        policy = config.options.get("ssh_new_host", "reject") or "reject"
        if policy not in NEW_HOST_POLICIES:
            raise FatalError(f"options.ssh_new_host={policy!r}: expected one of {', '.join(NEW_HOST_POLICIES)}")
        self._policy = policy
        self._hosts_file = os.path.expanduser(config.options.get("ssh_hosts_file") or DEFAULT_HOSTS_FILE)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()

    # Connection helpers --------------------------------------------------------------------------

    async def _session(self) -> asyncssh.SFTPClient:
        """The SFTP session, opened (again) when there is none or the last one was lost."""
        async with self._lock:
            if self._sftp is not None and self._conn is not None and not self._conn.is_closed():
                return self._sftp
            self._drop()
            self._conn, self._sftp = await self._connect()
            return self._sftp

    async def _connect(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        config = self.config
        checker = _HostKeyCheck(self._known_hosts(), self._policy, self._hosts_file, config.address)
        options: dict = {
            "username": config.user or None,
            "password": config.password or None,
            "known_hosts": checker.known,
            "connect_timeout": config.connect_timeout,
            "config": None,  # ~/.ssh/config must not redirect or re-credential a bank's server
            "encryption_algs": CIPHERS,
            "window": WINDOW,
        }
        key_path = config.options.get("ssh_key")
        if key_path:
            options["client_keys"] = [self._load_key(key_path)]
            options["agent_path"] = None
        elif config.password:
            options["client_keys"] = None
            options["agent_path"] = None
        conn = None
        try:
            conn = await asyncssh.connect(
                config.host, config.port or DEFAULT_PORT, client_factory=lambda: checker, **options
            )
            async with asyncio.timeout(config.connect_timeout):
                sftp = await conn.start_sftp_client()
        except BaseException as exc:
            if conn is not None:
                conn.abort()
            if conn is None and isinstance(exc, OSError):  # refused, unknown host, no answer
                raise unreachable(config.server_url, exc) from exc
            if isinstance(exc, Exception):
                raise _translate_error(exc, config.address, host_key=checker.problem) from exc
            raise
        log.debug("sftp: logged in to %s as %s", config.address, config.user or "(local user)")
        return conn, sftp

    def _known_hosts(self) -> asyncssh.SSHKnownHosts:
        try:
            return asyncssh.read_known_hosts(self._hosts_file)
        except FileNotFoundError:
            return asyncssh.SSHKnownHosts()
        except (OSError, ValueError) as exc:
            raise FatalError(f"options.ssh_hosts_file={self._hosts_file}: cannot read it ({exc})") from exc

    @staticmethod
    def _load_key(path: str) -> asyncssh.SSHKey:
        try:
            return asyncssh.read_private_key(os.path.expanduser(path))
        except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            raise FatalError(f"options.ssh_key={path}: cannot load the private key ({exc})") from exc

    def _drop(self) -> None:
        """Forget the connection (it is broken or in doubt); the next call opens a new one."""
        if self._conn is not None:
            self._conn.abort()
        self._conn = self._sftp = None

    def _fail(self, exc: BaseException, what: str) -> RemoteError:
        """``exc`` translated; the connection is dropped unless the server answered cleanly."""
        error = _translate_error(exc, f"{self.config.address}: {what}")
        if isinstance(error, RetryableError) and not isinstance(exc, asyncssh.SFTPFailure):
            self._drop()
        return error

    def _remote(self, path: str) -> bytes:
        root = self.config.root or "."
        return _encode(posixpath.join(root, path) if path else root)

    @staticmethod
    def _entry(path: str, attrs: asyncssh.SFTPAttrs, *, is_link: bool = False) -> RemoteEntry:
        mtime = float(attrs.mtime) if attrs.mtime is not None else None
        if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            return RemoteEntry(path, None, mtime, True, is_link, f"d:{attrs.mtime}")
        return RemoteEntry(path, attrs.size, mtime, False, is_link, f"{attrs.size}:{attrs.mtime}")

    async def _timed(self, awaitable, what: str):
        try:
            async with asyncio.timeout(self.config.read_timeout):
                return await awaitable
        except StopAsyncIteration:
            raise
        except Exception as exc:
            raise self._fail(exc, what) from exc

    # list / stat / open --------------------------------------------------------------------------

    async def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        """Stream the directory with SFTP readdir (entries are yielded as each batch arrives)."""
        path = checked_path(path)
        prefix = f"{path}/" if path else ""
        what = f"listing {path or '/'}"
        sftp = await self._session()
        names = sftp.scandir(self._remote(path)).__aiter__()
        # One watchdog for the whole listing: a timeout context per entry would cost more than
        # the rest of the work on 100,000 entries.
        watchdog = _Watchdog(self.config.read_timeout)
        try:
            while True:
                try:
                    with watchdog:
                        name = await anext(names)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    raise self._fail(exc, what) from exc
                filename = name.filename.decode("utf-8", "surrogateescape")
                if filename in (".", ".."):
                    continue
                if "/" in filename or "\x00" in filename:
                    raise UnsafePath(f"unsafe remote name {filename!r} in {path or '/'}: not a file name")
                entry_path = prefix + filename
                if name.attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK:
                    entry = await self._follow(entry_path)
                    if entry is not None:
                        yield entry
                else:
                    yield self._entry(entry_path, name.attrs)
        finally:
            watchdog.stop()
            with contextlib.suppress(Exception):
                await names.aclose()

    async def _follow(self, path: str) -> RemoteEntry | None:
        """A symbolic link described by its target; None for a link to nothing."""
        sftp = await self._session()
        try:
            attrs = await self._timed(sftp.stat(self._remote(path)), f"stat {path}")
        except RemoteNotFound:
            log.warning("sftp: %s is a symbolic link to nothing: left out", path)
            return None
        return self._entry(path, attrs, is_link=True)

    async def stat(self, path: str) -> RemoteEntry:
        """lstat, then stat when the path is a symbolic link."""
        path = checked_path(path)
        sftp = await self._session()
        attrs = await self._timed(sftp.lstat(self._remote(path)), f"stat {path}")
        if attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK:
            attrs = await self._timed(sftp.stat(self._remote(path)), f"stat {path}")
            return self._entry(path, attrs, is_link=True)
        return self._entry(path, attrs)

    @contextlib.asynccontextmanager
    async def open(self, path: str, offset: int = 0, *, size: int | None = None, end: int | None = None) -> AsyncIterator[RemoteStream]:
        """Read the file from ``offset`` with many read requests in flight (pipelined)."""
        path = checked_path(path)
        sftp = await self._session()
        # block_size=0: plain read requests; the pipelining is ours, so we can cancel it cleanly.
        try:
            file = await self._timed(sftp.open(self._remote(path), "rb", block_size=0), f"open {path}")
        except asyncio.CancelledError:
            self._drop()  # the handle may be open on the server: do not leave it behind
            raise
        stream = None
        try:
            attrs = await self._timed(file.stat(), f"stat {path}")
            if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                raise FatalError(f"{self.config.address}: {path} is a directory, not a file")
            block = max(1024, min(BLOCK, sftp.limits.max_read_len or BLOCK))
            stream = _SftpStream(self, file, path, offset, block, attrs, end)
            yield stream
        except asyncio.CancelledError:
            # The server may still be busy with our reads: do not wait for it, start afresh later.
            self._drop()
            raise
        finally:
            if stream is not None:
                await stream.abort()
            if self._conn is not None and not self._conn.is_closed():
                try:
                    async with asyncio.timeout(self.config.read_timeout):
                        await file.close()
                except Exception as exc:  # the data is already read; only the session is in doubt
                    self._fail(exc, f"close {path}")

    async def close(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await conn.wait_closed()


class _SftpStream(RemoteStream):
    """Read requests of one block each, up to IN_FLIGHT bytes ahead, consumed in order."""

    def __init__(self, protocol: SftpProtocol, file, path: str, offset: int, block: int, attrs,
                 end: int | None = None):
        self._protocol = protocol
        self._end = end  # no read asked for at or past it (a split transfer's range)
        self._file = file
        self._path = path
        self._block = block
        self._depth = max(4, min(IN_FLIGHT // block, 128))
        self._pending: collections.deque[tuple[int, int, asyncio.Task]] = collections.deque()
        self.offset = offset
        self.size = attrs.size
        self.mtime = float(attrs.mtime) if attrs.mtime is not None else None

    def _request(self, offset: int, size: int) -> tuple[int, int, asyncio.Task]:
        return offset, size, asyncio.ensure_future(self._file.read(size, offset))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        timeout = self._protocol.config.read_timeout
        next_offset = self.offset
        eof = False
        try:
            while True:
                while not eof and len(self._pending) < self._depth:
                    if self._end is not None and next_offset >= self._end:
                        eof = True
                        break
                    length = self._block if self._end is None else min(self._block, self._end - next_offset)
                    self._pending.append(self._request(next_offset, length))
                    next_offset += length
                if not self._pending:
                    return
                chunks: list[bytes] = []
                received = 0
                # Wait for the oldest request only; take every later one that is already done.
                while self._pending and received < CHUNK and (not chunks or self._pending[0][2].done()):
                    offset, size, task = self._pending[0]
                    if not task.done():
                        done, _ = await asyncio.wait((task,), timeout=timeout)
                        if not done:
                            raise self._protocol._fail(
                                TimeoutError(f"no data for {timeout:g} s"), f"reading {self._path}"
                            )
                    self._pending.popleft()
                    try:
                        data = task.result()
                    except Exception as exc:
                        raise self._protocol._fail(exc, f"reading {self._path}") from exc
                    if not data:  # end of file: the requests after it are useless
                        eof = True
                        await self.abort()
                        break
                    if len(data) < size:  # a short read: ask for the rest before anything else
                        self._pending.appendleft(self._request(offset + len(data), size - len(data)))
                    chunks.append(data)
                    received += len(data)
                if chunks:
                    yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            await self.abort()

    async def abort(self) -> None:
        """Cancel the read requests still in flight (their answers are discarded)."""
        pending, self._pending = self._pending, collections.deque()
        for _, _, task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*(task for _, _, task in pending), return_exceptions=True)


class _Watchdog:
    """``with watchdog: await ...`` fails with TimeoutError after ``timeout`` seconds of waiting.

    Cheap to enter and leave (no timer per use): one timer checks now and then whether the
    current wait has lasted too long, and cancels the waiting task if so.
    """

    def __init__(self, timeout: float):
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self._since = 0.0
        self._expired = False
        self._timer = self._loop.call_later(timeout, self._check)

    def _check(self) -> None:
        if self._task is None:
            self._timer = self._loop.call_later(self._timeout, self._check)
            return
        waited = self._loop.time() - self._since
        if waited >= self._timeout:
            self._expired = True
            self._task.cancel()
        else:
            self._timer = self._loop.call_later(self._timeout - waited, self._check)

    def __enter__(self) -> None:
        self._task = asyncio.current_task()
        self._since = self._loop.time()

    def __exit__(self, exc_type, exc, tb) -> None:
        self._task = None
        if self._expired and exc_type is asyncio.CancelledError:
            self._expired = False
            asyncio.current_task().uncancel()
            raise TimeoutError(f"no answer for {self._timeout:g} s") from exc

    def stop(self) -> None:
        self._timer.cancel()


class _HostKeyCheck(asyncssh.SSHClient):
    """Host keys missing from known_hosts go through ``ssh_new_host``; a changed key never passes."""

    def __init__(self, known: asyncssh.SSHKnownHosts, policy: str, hosts_file: str, address: str):
        self.known = known
        self.policy = policy
        self.hosts_file = hosts_file
        self.address = address
        self.problem: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        # Only called for keys the known_hosts file does not trust.
        match = self.known.match(host, addr, port if port != DEFAULT_PORT else None)
        described = f"{key.get_algorithm()} key {key.get_fingerprint()}"
        if match[0] or match[1]:
            self.problem = (
                f"the host key of {self.address} has CHANGED: the server shows {described}, "
                f"{self.hosts_file} holds another one (remove the old line if the change is expected)"
            )
            return False
        if self.policy == "reject":
            self.problem = (
                f"unknown host {self.address} ({described}) is not in {self.hosts_file}; accept it with "
                "options.ssh_new_host=add (saved in the file) or accept (this time only), or add it to the file"
            )
            return False
        if self.policy == "add":
            self._save(host, port, key)
        else:
            log.info("sftp: accepting unknown host %s (%s) without saving it", self.address, described)
        return True

    def _save(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        pattern = host if port == DEFAULT_PORT else f"[{host}]:{port}"
        algorithm, data = key.export_public_key("openssh").decode().split()[:2]
        line = f"{pattern} {algorithm} {data}"
        try:
            directory = os.path.dirname(self.hosts_file)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            with open(self.hosts_file, "a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            log.warning("sftp: accepted %s but could not save it in %s: %s", self.address, self.hosts_file, exc)
            return
        log.info("sftp: added %s to %s", self.address, self.hosts_file)


# Errors ------------------------------------------------------------------------------------------


def _translate_error(exc: BaseException, where: str, *, host_key: str | None = None) -> RemoteError:
    """Map an asyncssh / socket error onto the shared errors (messages never hold credentials)."""
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath, asyncssh.SFTPNotADirectory)):
        return RemoteNotFound(f"{where}: no such file or directory")
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return FatalError(f"{where}: permission denied")
    if isinstance(exc, asyncssh.SFTPFileIsADirectory) or (
        isinstance(exc, asyncssh.SFTPFailure) and "is a directory" in str(exc.reason).lower()
    ):
        return FatalError(f"{where}: is a directory, not a file")
    if isinstance(exc, asyncssh.SFTPOpUnsupported):
        return FatalError(f"{where}: the server does not support this operation ({exc.reason})")
    if isinstance(exc, (asyncssh.SFTPFailure, asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)):
        return RetryableError(f"{where}: {exc.reason or 'SFTP failure'}")
    if isinstance(exc, asyncssh.SFTPError):
        return RetryableError(f"{where}: SFTP error {exc.code}: {exc.reason}")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return FatalError(f"sftp {host_key or f'{where}: host key not trusted ({exc.reason})'}")
    if isinstance(exc, asyncssh.PermissionDenied):
        return FatalError(f"{where}: authentication failed (check server.credentials or options.ssh_key)")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return FatalError(f"{where}: the server refused the SFTP session ({exc.reason})")
    if isinstance(exc, asyncssh.DisconnectError):
        return RetryableError(f"{where}: disconnected ({exc.reason})")
    if isinstance(exc, TimeoutError):
        return RetryableError(f"{where}: timed out{f' ({exc})' if str(exc) else ''}")
    if isinstance(exc, OSError):
        return RetryableError(f"{where}: {exc.strerror or exc}")
    return RetryableError(f"{where}: {type(exc).__name__}: {exc}")
