"""Fetch one remote file into the offline directory: resumable, verified, retried, polite.

A file is written to ``<dest>.biomaj-part`` and renamed to ``<dest>`` only when it is complete and
verified, so a half-downloaded file never looks finished. A partial file left by a cut connection,
a crash or a restart is resumed from its size when the protocol can (HTTP Range, FTP REST, SFTP
offset, rsync --partial). Writing happens in a worker thread while the next chunk is received.
A compressed file received whole is tested (gzip, bz2, xz) while it is written, never read again.
A small file received whole (FetchSettings.inline_max) is held in memory to its end, checked, and
written straight to ``<dest>`` in one call on the event loop itself, its remote date set last: its
few system calls on a local disk cost less than one trip to a worker thread (the trips, and the GIL
hand-overs that come with them, were most of the cost of a small file), and a rename per file cost
as much as the write. A crash in that call leaves a file without the remote size or date, which
the same-file rule (:mod:`biomaj.download.same_file`) never takes for complete; a small file cut mid-way leaves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path

from biomaj.download.limits import HostBudget, Slot
from biomaj.download.retry import RetryPolicy
from biomaj.download.same_file import facts_of_entry, local_facts, same_file
from biomaj.download.split import SplitTransfer, contiguous_prefix, write_chunks
from biomaj.download import verify
from biomaj.download.verify import VerificationFailed
from biomaj.protocols import open_protocol, protocol_class
from biomaj.protocols.base import (
    FatalError,
    PipelineUnsupported,
    Protocol,
    RemoteConfig,
    RemoteEntry,
    RemoteError,
    RemoteNotFound,
    RemoteStream,
    RetryableError,
    Throttled,
)

log = logging.getLogger(__name__)

PART_SUFFIX = ".biomaj-part"
FLUSH_SIZE = 1024 * 1024  # bytes gathered before one write in the worker thread
INLINE_MAX = 256 * 1024  # default FetchSettings.inline_max
SPLIT_MIN_SIZE = 64 * 1024 * 1024  # default FetchSettings.split_min_size (download.split.min_size)
SPLIT_MAX = 8  # default FetchSettings.split_max (download.split.max)
LANE_MIN = 4  # files per pipelined connection at least (fewer: one request at a time is as quick)


class FetchFailed(RemoteError):
    """A file could not be fetched; the message says why and after how many attempts.
    ``got_checksum``: ``algo:hex`` the file had when it did not match its expected checksum."""

    def __init__(self, message: str, *, retryable: bool, got_checksum: str | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.got_checksum = got_checksum


@dataclass(frozen=True)
class FetchResult:
    """What one fetch did."""

    path: Path
    size: int
    mtime: float | None
    transferred: int  # bytes received in this fetch (0 when the file was already there)
    resumed_from: int  # offset of the first attempt (0: from the start)
    attempts: int
    elapsed: float
    digest: str | None = None  # hex digest when one was asked for
    skipped: bool = False  # already complete in the offline directory


@dataclass
class FetchSettings:
    """How hard to try and what to check."""

    retry: RetryPolicy = field(default_factory=RetryPolicy.parse)
    check_archives: bool = True  # BioMAJ's archive test; option skip_check_uncompress disables it
    # files of a known size up to this are written on the event loop, not in a worker thread
    # (0: never; a network file system where each call waits on a server may want 0)
    inline_max: int = INLINE_MAX
    # a file at least this big is fetched as ranges over up to split_max connections (split.py)
    split_min_size: int = SPLIT_MIN_SIZE
    split_max: int = SPLIT_MAX
    # waits until n more bytes may come (the node's and the bank's bandwidth limits), or None
    pace: Callable[[int], Awaitable[None]] | None = None


@dataclass(frozen=True)
class FetchItem:
    """One file of :meth:`Fetcher.fetch_many`."""

    entry: RemoteEntry
    dest: Path  # built with biomaj.download.paths.safe_join
    digest: str | None = None
    checksum: str | None = None  # "algo:hex" the file must have (a provider's manifest)


#: told of each item as it ends: (its index, its FetchResult or the exception that ended it)
ItemDone = Callable[[int, "FetchResult | BaseException"], Awaitable[None]]

#: A file that does not match its checksum (a provider's manifest) is fetched again this many
#: times, whatever the retry policy: a transfer that went wrong gets its second chance, and a
#: file that differs from its manifest on the server is not fetched over and over.
CHECKSUM_REFETCHES = 1


def _expected(checksum: str | None, digest: str | None) -> tuple[tuple[str, str] | None, str | None]:
    """(the (algorithm, hex) a file must have, the digest to compute as it streams in)."""
    expected = verify.parse_checksum(checksum) if checksum else None
    if expected is not None and digest is None:
        digest = expected[0]
    return expected, digest


def _client_key(config: RemoteConfig) -> tuple:
    return (
        config.protocol, config.host, config.port, config.root, config.direct_file, config.user,
        config.method, tuple(sorted(config.params.items())), tuple(sorted(config.options.items())),
        config.proxy,
    )


IDLE_TIMEOUT = 2.0
"""Seconds a connection stays open unused in its pool, holding its slot of the host budget: long
enough to serve the next file or batch, short enough to let other nodes of the cluster have it."""


@dataclass(eq=False)
class _Idle:
    client: Protocol
    slot: Slot
    host: str
    since: float


class _Held:
    """The client a task keeps between its calls to :meth:`ClientPool.client` (see
    :meth:`ClientPool.held_between_calls`)."""

    __slots__ = ("pool", "task", "entry", "busy")

    def __init__(self, pool: ClientPool):
        self.pool, self.task = pool, asyncio.current_task()
        self.entry: tuple[tuple, str, Protocol, Slot] | None = None  # (key, host, client, slot)
        self.busy = False


_HELD: ContextVar[_Held | None] = ContextVar("biomaj_held_client", default=None)


class ClientPool:
    """Protocol clients kept open and reused (one login serves many files), within the node's
    host budget (:class:`~biomaj.download.limits.HostBudget`).

    Each client holds a slot of its host's budget from its opening to its closing, busy or idle:
    the budget counts the connections open, as the server does. An idle client is closed after
    ``idle_timeout`` seconds unused, and at once when its slot is wanted: by a task waiting for
    the host (in this pool for another remote config, in another pool of the node), or because
    the host's limit went down. A client given back while a task of this pool waits for the same
    remote config goes to that task as it is. ``share`` (below 1) caps the slots this pool holds
    per host to that part of the host's limit (at least one): the manager's listings
    (:data:`~biomaj.download.limits.LISTING_SHARE`)."""

    def __init__(self, budget: HostBudget | None = None, *, share: float = 1.0, idle_timeout: float = IDLE_TIMEOUT):
        self.budget = budget if budget is not None else HostBudget()
        self.share = share
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple, list[_Idle]] = {}
        self._wanting: dict[asyncio.Future, tuple] = {}  # this pool's waiters -> their client key
        self._held: dict[str, int] = {}  # slots this pool holds per host (busy and idle)
        self._room = asyncio.Condition() if share < 1 else None  # a slot of a shared-out host came back
        self._reaper: asyncio.Task | None = None
        self._closed = False

    @staticmethod
    def host_of(config: RemoteConfig) -> str:
        """The key of ``config``'s server in the host budget (``host:port``)."""
        return config.address or f"{config.protocol}:{config.root}"

    def limit(self, config: RemoteConfig) -> int:
        """Connections this pool may have open to ``config``'s server now: what to size parallel
        work by."""
        limit = self.budget.limit(self.host_of(config))
        return limit if self.share >= 1 else max(1, int(limit * self.share))

    def throttled(self, config: RemoteConfig, retry_after: float | None = None) -> None:
        """``config``'s server asked us to slow down."""
        self.budget.throttled(self.host_of(config), retry_after)

    @asynccontextmanager
    async def client(self, config: RemoteConfig) -> AsyncIterator[Protocol]:
        """A connected-or-connectable client for `config` (waits for a slot of its server),
        returned to the pool afterwards; a client that failed with a transient error is closed
        rather than reused."""
        held = _HELD.get()
        if held is not None and held.pool is self and not held.busy and held.task is asyncio.current_task():
            async with self._keep(held, config) as client:
                yield client
            return
        async with self._lend(await self._checkout(config, wait=True)) as client:
            yield client

    @asynccontextmanager
    async def held_between_calls(self) -> AsyncIterator[None]:
        """The calls of this task to :meth:`client` keep their client from one to the next
        (given back at the end of the block), instead of putting it back in the line of the
        server's waiters after each: one worker's consecutive files go over one connection, so an
        FTP session stays in its directory (eight batches of 64 files, each of 4 workers, handed
        a connection in turn after every file had an FTP client change directory for 2 files out
        of 3). Tasks this one starts (split ranges) take that client first when it is unused."""
        held = _Held(self)
        token = _HELD.set(held)
        try:
            yield
        finally:
            _HELD.reset(token)
            if held.entry is not None:
                entry, held.entry = held.entry, None
                await self._settle(*entry, True)

    @asynccontextmanager
    async def _keep(self, held: _Held, config: RemoteConfig) -> AsyncIterator[Protocol]:
        held.busy = True
        try:
            entry, held.entry = held.entry, None
            key = _client_key(config)
            if entry is not None and (entry[0] != key or self._closed or self.budget.over(entry[1])):
                await self._settle(*entry, True)  # another server, or fewer connections wanted now
                entry = None
            if entry is None:
                entry = await self._checkout(config, wait=True)
            async with self._lend(entry, held) as client:
                yield client
        finally:
            held.busy = False

    @asynccontextmanager
    async def try_client(self, config: RemoteConfig) -> AsyncIterator[Protocol | None]:
        """As :meth:`client` when a slot of the server is free now (or an idle client is there),
        else None at once (also once the pool is closed): for work that only adds a connection
        when the budget allows one (a split transfer adds a stream only then)."""
        got = await self._checkout(config, wait=False)
        if got is None:
            yield None
            return
        async with self._lend(got) as client:
            yield client

    @asynccontextmanager
    async def _lend(self, checked_out, held: _Held | None = None) -> AsyncIterator[Protocol]:
        """A checked-out client for the caller's block, settled afterwards (a throttled server
        lowers its budget; a failed client is closed, a healthy one kept: by ``held`` when
        given, else in the pool)."""
        key, host, client, slot = checked_out
        healthy = False
        try:
            yield client
            healthy = True
        except Throttled as exc:
            self.budget.throttled(host, exc.retry_after)
            raise
        finally:
            if held is not None and healthy and not self._closed:
                held.entry = checked_out
            else:
                await self._settle(key, host, client, slot, healthy)

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        idle = [entry for entries in self._idle.values() for entry in entries]
        self._idle.clear()
        for entry in idle:
            self.budget.unpark(entry.slot)
        await asyncio.gather(*(self._drop(entry.host, entry.client, entry.slot) for entry in idle))

    # --- lending -------------------------------------------------------------------------------

    async def _checkout(self, config: RemoteConfig, *, wait: bool) -> tuple[tuple, str, Protocol, Slot] | None:
        if self._closed:
            if not wait:
                return None
            raise RuntimeError("client pool is closed")
        key = _client_key(config)
        held = _HELD.get()
        if held is not None and held.pool is self and held.entry is not None and held.entry[0] == key:
            entry, held.entry = held.entry, None  # the worker's own client, unused now: a split range of its file
            return entry
        idle = self._idle.get(key)
        if idle:
            entry = idle.pop()
            self.budget.unpark(entry.slot)
            return key, entry.host, entry.client, entry.slot
        host = self.host_of(config)
        while self._room is not None and self._held.get(host, 0) >= self.limit(config):
            other = self._idle_on(host)  # this pool's idle client of another remote config
            if other is not None:
                await _close_quietly(other.client)
                return key, host, open_protocol(config), other.slot
            if not wait:
                return None
            async with self._room:
                await self._room.wait()
            if self._idle.get(key):
                return await self._checkout(config, wait=wait)
        self._held[host] = self._held.get(host, 0) + 1
        try:
            slot = await self.budget.try_acquire(host)
            if slot is None:
                if not wait:
                    await self._freed(host)
                    return None
                got = await self._wait(key, host)
                if not isinstance(got, Slot):  # a client of this remote, handed over with its slot
                    self._held[host] -= 1
                    return (key, host, *got)
                slot = got
        except BaseException:
            await self._freed(host)
            raise
        return key, host, open_protocol(config), slot

    async def _wait(self, key: tuple, host: str) -> Slot | tuple[Protocol, Slot]:
        waiter = self.budget.enqueue(host)
        self._wanting[waiter] = key
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted as we were cancelled
                got = waiter.result()
                if isinstance(got, Slot):
                    got.release()
                else:
                    await self._drop(host, *got)
            raise
        finally:
            del self._wanting[waiter]

    async def _settle(self, key: tuple, host: str, client: Protocol, slot: Slot, healthy: bool) -> None:
        """A client back from use: kept for the next use, handed to the task first in line for
        the same remote, or closed (after a transient error, when someone else is first in line,
        or the host's limit went down)."""
        if healthy and not self._closed and not self.budget.over(host):
            head = self.budget.first_waiter(host)
            if head is None:
                entry = _Idle(client, slot, host, time.monotonic())
                self._idle.setdefault(key, []).append(entry)
                self.budget.park(slot, lambda: self._evict(key, entry))
                if self._reaper is None:
                    self._reaper = asyncio.create_task(self._reap(), name="client-pool-reaper")
                return
            if self._wanting.get(head) == key:
                head.set_result((client, slot))
                return
        await self._drop(host, client, slot)

    def _evict(self, key: tuple, entry: _Idle) -> Awaitable[None]:
        """The budget wants an idle client's slot: out of the pool now, closed next."""
        idle = self._idle.get(key, [])
        if entry in idle:
            idle.remove(entry)
        return self._closed_evicted(entry)

    async def _closed_evicted(self, entry: _Idle) -> None:
        await _close_quietly(entry.client)
        await self._freed(entry.host)  # the budget releases the slot

    async def _drop(self, host: str, client: Protocol, slot: Slot) -> None:
        """Close a client, then give its slot back (never before: the server would count both)."""
        try:
            await _close_quietly(client)
        finally:
            slot.release()
            await self._freed(host)

    async def _freed(self, host: str) -> None:
        self._held[host] -= 1
        if self._room is not None:
            async with self._room:
                self._room.notify_all()

    def _idle_on(self, host: str) -> _Idle | None:
        """An idle client of ``host``, out of the pool and out of the budget's parked slots."""
        for idle in self._idle.values():
            for entry in idle:
                if entry.host == host:
                    idle.remove(entry)
                    self.budget.unpark(entry.slot)
                    return entry
        return None

    async def _reap(self) -> None:
        """Close the clients idle for idle_timeout seconds, while there are idle ones (a look
        every idle_timeout / 2 seconds, not a timer per client)."""
        try:
            while True:
                await asyncio.sleep(self.idle_timeout / 2)
                if not any(self._idle.values()):
                    return
                now, stale = time.monotonic(), []
                for idle in self._idle.values():
                    stale += [entry for entry in idle if now - entry.since >= self.idle_timeout]
                    idle[:] = [entry for entry in idle if now - entry.since < self.idle_timeout]
                for entry in stale:
                    self.budget.unpark(entry.slot)
                await asyncio.gather(*(self._drop(entry.host, entry.client, entry.slot) for entry in stale))
        finally:
            self._reaper = None


async def _close_quietly(client: Protocol) -> None:
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - a client we drop anyway
        log.debug("closing %s client failed", client.config.protocol, exc_info=True)


class _PartWriter:
    """Writes a stream to the part file from a worker thread, one flush behind the network."""

    def __init__(self, part: Path, offset: int, digests: tuple[str | None, ...], on_bytes: Callable[[int], None] | None,
                 check: verify.StreamCheck | None = None, direct: bool = False):
        self.part = part  # with ``direct``: the file's own name
        self.direct = direct  # written whole at the end, straight to its name: nothing to keep on failure
        self.offset = offset
        self.hash = verify.Digests(digests) or None  # computed as the file streams in
        self.on_bytes = on_bytes
        self.check = check  # the archive test, done on the chunks as they are written
        self.broken = False  # the check failed: the part file is gone, nothing more is written
        self.received = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None
        self._pending: asyncio.Future | None = None

    def _open(self) -> None:
        if not self.offset:  # a new file: two system calls fewer than a resume
            # O_NOFOLLOW: a link planted under the file's name (an archive, an earlier run) is
            # refused, never written through (safe_join checked it; this closes the gap after)
            self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            return
        self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        os.ftruncate(self._fd, self.offset)
        os.lseek(self._fd, self.offset, os.SEEK_SET)
        if self.hash is not None and self.offset:
            with self.part.open("rb") as existing:  # resumed: the digest covers the whole file
                remaining = self.offset
                while remaining:
                    block = existing.read(min(remaining, FLUSH_SIZE))
                    if not block:
                        break
                    self.hash.update(block)
                    remaining -= len(block)

    def _write(self, chunks: list[bytes], final: bool, checked: bool = True) -> None:
        if self.broken:
            return
        if self.check is not None and checked:
            try:
                for chunk in chunks:
                    self.check.feed(chunk)
                if final:
                    self.check.finish()
            except VerificationFailed:
                self.broken = True  # a corrupt part is not resumed: it goes
                self._close_fd()
                self.part.unlink(missing_ok=True)
                raise
        if self._fd is None:
            self._open()
        write_chunks(self._fd, chunks)
        if self.hash is not None:
            for chunk in chunks:
                self.hash.update(chunk)
        if final:
            os.close(self._fd)
            self._fd = None

    async def _flush(self) -> None:
        if self._pending is not None:
            await self._pending
            self._pending = None
        chunks, self._buffer, self._buffered = self._buffer, [], 0
        self._pending = asyncio.get_running_loop().run_in_executor(None, self._write, chunks, False)

    async def add(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        self.received += len(chunk)
        if self.on_bytes is not None:
            self.on_bytes(len(chunk))
        if self._buffered >= FLUSH_SIZE:
            await self._flush()

    async def finish(self, then: Callable[[], None], inline: bool = False) -> None:
        """Write the rest, close, and run `then` in the same worker-thread trip (a small file
        costs one trip for open, write, close, checks and rename), or right here when ``inline``
        and nothing was flushed to a thread before."""
        if self._pending is not None:
            await self._pending
            self._pending = None
            inline = False
        chunks, self._buffer, self._buffered = self._buffer, [], 0

        def last_trip() -> None:
            self._write(chunks, True)
            then()

        if inline:
            last_trip()
        else:
            await asyncio.to_thread(last_trip)

    def abort(self) -> None:
        """Stop after an error or a cancel: put what was received on disk (a resume continues
        from there), then close. Runs on the event loop; at most FLUSH_SIZE bytes to write."""
        chunks, self._buffer, self._buffered = self._buffer, [], 0
        if self.direct:  # nothing of it is kept: its name must never hold a part of it
            if self._fd is not None:
                self._close_fd()
                self.part.unlink(missing_ok=True)
            return

        def write_rest(_future=None) -> None:
            try:
                if chunks:
                    self._write(chunks, final=False, checked=False)
            except OSError:
                log.warning("could not keep %d received bytes of %s", sum(map(len, chunks)), self.part, exc_info=True)
            finally:
                self._close_fd()

        if self._pending is not None and not self._pending.done():
            self._pending.add_done_callback(write_rest)
        else:
            write_rest()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


class Fetcher:
    """Fetches files with a shared client pool, retry policy and checks."""

    def __init__(self, pool: ClientPool, settings: FetchSettings | None = None):
        self.pool = pool
        self.settings = settings or FetchSettings()
        self._dirs: set[Path] = set()  # folders known to exist: no mkdir trip for the next file

    async def fetch(
        self,
        config: RemoteConfig,
        entry: RemoteEntry,
        dest: Path,
        *,
        digest: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
        check_archive: bool | None = None,
        checksum: str | None = None,
    ) -> FetchResult:
        """Fetch `entry` to `dest` (whose folder must be inside the offline directory: the caller
        builds it with :func:`biomaj.download.paths.safe_join`). ``checksum`` (``algo:hex``): the
        whole file is checked against it before it takes its name (computed as it streams in),
        instead of the archive test, which only guesses at what the checksum proves; a mismatch
        is fetched again once, whatever the retry policy, and a second one is final (see
        :data:`CHECKSUM_REFETCHES`)."""
        return await self._fetch(config, entry, dest, digest=digest, on_bytes=on_bytes,
                                 check_archive=check_archive, checksum=checksum)

    async def _fetch(self, config: RemoteConfig, entry: RemoteEntry, dest: Path, *, digest: str | None,
                     on_bytes: Callable[[int], None] | None, check_archive: bool | None, checksum: str | None,
                     mismatches: int = 0) -> FetchResult:
        """:meth:`fetch`; ``mismatches``: checksum mismatches of this file already (a pipelined attempt)."""
        started = time.monotonic()
        expected, digest = _expected(checksum, digest)
        part = dest.with_name(dest.name + PART_SUFFIX)
        inline = self._small(entry)
        entry = await self._exact_size(config, entry)
        split = self._splits(config, entry)
        skipped, offset = await self._local_state(entry, dest, inline, split)
        if skipped is not None:
            return skipped
        archive_name = self._archive_name(dest, check_archive) if expected is None else None
        policy = self.settings.retry
        attempt, transferred, first_offset = 0, 0, offset
        while True:
            attempt += 1
            try:
                finisher = _Finisher(part, dest, entry.size, archive_name, expected, digest)
                if split:
                    transfer = SplitTransfer(self.pool, config, entry, part, max_streams=self.settings.split_max,
                                             start_streams=protocol_class(config.protocol).features.split_start,
                                             on_bytes=on_bytes, pace=self.settings.pace,
                                             digests=verify.Digests((expected[0] if expected else None, digest)))
                    try:
                        size, mtime, got, hexdigest = await self._split(transfer, digest, finisher)
                    finally:
                        transferred += transfer.received
                        first_offset = first_offset if attempt > 1 else transfer.resumed
                    return FetchResult(dest, size, mtime, transferred, first_offset, attempt,
                                       time.monotonic() - started, hexdigest)
                if attempt > 1:
                    offset = await asyncio.to_thread(_resume_offset, part, entry)
                size, mtime, got, hexdigest = await self._attempt(
                    config, entry, part, offset, digest, on_bytes, finisher, inline and archive_name is None)
                transferred += got
                return FetchResult(dest, size, mtime, transferred, first_offset, attempt,
                                   time.monotonic() - started, hexdigest)
            except verify.ChecksumMismatch as exc:
                mismatches += 1
                if mismatches > CHECKSUM_REFETCHES:
                    raise FetchFailed(
                        f"{entry.path}: {exc} (fetched {mismatches} times: the file does not match its checksum)",
                        retryable=False, got_checksum=f"{exc.algorithm}:{exc.got}",
                    ) from exc
                wait = policy.wait(attempt)
                log.warning("%s: %s; fetched again in %.1fs", entry.path, exc, wait)
                await asyncio.sleep(wait)
            except (RetryableError, VerificationFailed) as exc:
                elapsed = time.monotonic() - started
                if policy.stop(attempt, elapsed):
                    raise FetchFailed(
                        f"{entry.path}: {exc} (gave up after {attempt} attempt(s): {policy.description})",
                        retryable=True,
                    ) from exc
                wait = policy.wait(attempt)
                if isinstance(exc, Throttled) and exc.retry_after is not None:
                    wait = max(wait, exc.retry_after)
                log.warning("%s: attempt %d failed (%s); retrying in %.1fs", entry.path, attempt, exc, wait)
                await asyncio.sleep(wait)
            except FatalError as exc:
                raise FetchFailed(f"{entry.path}: {exc}", retryable=False) from exc
            except RemoteError as exc:  # not found and other definitive answers
                raise FetchFailed(f"{entry.path}: {exc}", retryable=False) from exc

    async def fetch_many(self, config: RemoteConfig, items: Sequence[FetchItem], on_done: ItemDone, *,
                         on_bytes: Callable[[int], None] | None = None) -> None:
        """Fetch every item, the host's budget at a time, telling ``on_done`` of each as it ends.

        New small files (``inline_max``) of a protocol that pipelines (HTTP/1.1) go several to a
        connection, asked for at once; the others, and any file the pipeline did not deliver
        (an error other than "not found" or "refused", a redirect, a server that cannot
        pipeline), go one by one through :meth:`fetch`, with its retries."""
        singles: list[int] = []
        lanes: list[list[int]] = []
        if protocol_class(config.protocol).features.pipelining and self.settings.inline_max > 0:
            fresh = []
            for index, item in enumerate(items):
                if not self._small(item.entry):
                    singles.append(index)
                    continue
                skipped, offset = await self._local_state(item.entry, item.dest, True)
                if skipped is not None:
                    await on_done(index, skipped)
                elif offset:  # a part file to resume: one by one, with Range
                    singles.append(index)
                else:
                    fresh.append(index)
            count = min(self.pool.limit(config), len(fresh) // LANE_MIN)
            if count:
                lanes = [fresh[n::count] for n in range(count)]
            else:
                singles.extend(fresh)
        else:
            singles = list(range(len(items)))

        mismatched: set[int] = set()  # items whose pipelined attempt did not match their checksum

        async def one(index: int) -> None:
            item = items[index]
            try:
                result: FetchResult | BaseException = await self._fetch(
                    config, item.entry, item.dest, digest=item.digest, on_bytes=on_bytes, check_archive=None,
                    checksum=item.checksum, mismatches=1 if index in mismatched else 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the caller turns it into the file's outcome
                result = exc
            await on_done(index, result)

        async def lane(indexes: list[int]) -> None:
            left = await self._pipelined(config, items, indexes, on_done, on_bytes, mismatched)
            for index in left:
                await one(index)

        work = iter([(lane, indexes) for indexes in lanes] + [(one, index) for index in singles])

        async def worker() -> None:
            async with self.pool.held_between_calls():
                for run, arg in work:
                    await run(arg)

        await asyncio.gather(*(worker() for _ in range(min(self.pool.limit(config), len(lanes) + len(singles)))))

    async def _exact_size(self, config: RemoteConfig, entry: RemoteEntry) -> RemoteEntry:
        """A file an index listed as about big enough to split (``12M``) with its exact size and
        date, asked to the server (HEAD, SIZE+MDTM); as it was when the server does not say."""
        if (entry.size is not None or entry.size_hint is None or entry.size_hint < self.settings.split_min_size
                or not self._splits(config, replace(entry, size=entry.size_hint))):
            return entry
        try:
            async with self.pool.client(config) as client:
                found = await client.stat(entry.path)
        except RemoteError as exc:
            log.debug("%s: no exact size (%s): one stream", entry.path, exc)
            return entry
        if found.size is None:
            return entry
        return replace(entry, size=found.size, mtime=entry.mtime if entry.mtime is not None else found.mtime,
                       hash=entry.hash or found.hash)

    def _splits(self, config: RemoteConfig, entry: RemoteEntry) -> bool:
        """A file big enough to go over several connections, by a protocol that reads ranges."""
        features = protocol_class(config.protocol).features
        return (entry.size is not None and entry.size >= self.settings.split_min_size
                and self.settings.split_max > 1 and features.split and features.resume and not features.native_fetch)

    async def _split(self, transfer: SplitTransfer, digest: str | None, finisher: _Finisher):
        """Run a split transfer, then check the whole file (size, archive test, digest) and
        rename it: (size, mtime, received, digest)."""
        await transfer.run()
        mtime = transfer.entry.mtime
        streamed = transfer.digests if transfer.digests and transfer.hashed == transfer.size else None
        try:
            await asyncio.to_thread(finisher.run, transfer.size, mtime, streamed)
        except VerificationFailed:
            transfer.finished()  # the part file is gone: its journal too
            raise
        transfer.finished()
        if not digest:
            return transfer.size, mtime, transfer.received, None
        hexdigest = streamed.hexdigest(digest) if streamed is not None else None
        if hexdigest is None:
            hexdigest = await asyncio.to_thread(finisher.digest_after)
        return transfer.size, mtime, transfer.received, hexdigest

    def _small(self, entry: RemoteEntry) -> bool:
        """Up to ``inline_max`` by the listing (its exact size, else its rounded one)."""
        expected = entry.size if entry.size is not None else entry.size_hint
        return expected is not None and expected <= self.settings.inline_max

    async def _local_state(self, entry: RemoteEntry, dest: Path, small: bool,
                           split: bool = False) -> tuple[FetchResult | None, int]:
        """(the skipped result when ``dest`` is complete already, else None; the offset to resume
        from, 0 for a split transfer, which has its journal). A small file's known folder is
        looked at on the event loop, else in a thread."""
        part = dest.with_name(dest.name + PART_SUFFIX)
        make_dir = dest.parent not in self._dirs
        if small and not make_dir:
            complete, offset = _prepare(dest, part, entry, make_dir, split)
        else:
            complete, offset = await asyncio.to_thread(_prepare, dest, part, entry, make_dir, split)
        self._dirs.add(dest.parent)
        if complete:
            return FetchResult(dest, entry.size or 0, entry.mtime, 0, 0, 0, 0.0, None, skipped=True), 0
        return None, offset

    def _archive_name(self, dest: Path, check_archive: bool | None = None) -> str | None:
        """``dest``'s name when the archive test applies to it."""
        check = self.settings.check_archives if check_archive is None else check_archive
        return dest.name if check and verify.archive_kind(dest.name) else None

    async def _pipelined(self, config: RemoteConfig, items: Sequence[FetchItem], indexes: list[int],
                         on_done: ItemDone, on_bytes, mismatched: set[int]) -> list[int]:
        """Fetch ``indexes`` over one pipelining client; returns those left for one-by-one fetches
        (and adds to ``mismatched`` those of them that did not match their checksum)."""
        by_path = {items[i].entry.path: i for i in indexes}
        left = dict.fromkeys(indexes)  # in order
        try:
            async with self.pool.client(config) as client:
                async for path, stream in client.open_many([items[i].entry.path for i in indexes]):
                    index = by_path[path]
                    item = items[index]
                    started = time.monotonic()
                    if isinstance(stream, (RemoteNotFound, FatalError)):
                        del left[index]
                        await on_done(index, FetchFailed(f"{path}: {stream}", retryable=False))
                        continue
                    if isinstance(stream, RemoteError):
                        if isinstance(stream, Throttled):
                            self.pool.throttled(config, stream.retry_after)
                        continue  # a redirect, a 5xx ...: one by one, with the retries
                    part = item.dest.with_name(item.dest.name + PART_SUFFIX)
                    expected, digest = _expected(item.checksum, item.digest)
                    archive_name = self._archive_name(item.dest) if expected is None else None
                    finisher = _Finisher(part, item.dest, item.entry.size, archive_name, expected, digest)
                    try:
                        size, mtime, got, hexdigest = await _receive(
                            stream, item.entry, part, digest, on_bytes, finisher, True, self.settings.pace)
                    except (RemoteError, VerificationFailed) as exc:
                        if isinstance(exc, verify.ChecksumMismatch):
                            mismatched.add(index)
                        log.debug("%s: pipelined transfer failed (%s); fetched again on its own", path, exc)
                        continue
                    except Exception as exc:  # noqa: BLE001 - the local side (disk full ...): the file's outcome
                        del left[index]
                        await on_done(index, exc)
                        continue
                    del left[index]
                    await on_done(index, FetchResult(item.dest, size, mtime, got, 0, 1,
                                                     time.monotonic() - started, hexdigest))
        except PipelineUnsupported as exc:
            log.debug("%s: %s", config.address, exc)
        except RemoteError as exc:  # the connection failed: each file left gets its own retries
            log.debug("%s: pipelined requests failed (%s); the rest one by one", config.address, exc)
        return list(left)

    async def _attempt(self, config, entry, part, offset, digest, on_bytes, finisher: _Finisher, inline: bool):
        async with self.pool.client(config) as client:
            if type(client).features.native_fetch:
                fetched = await client.fetch(entry.path, str(part), offset=offset, on_bytes=on_bytes)
                mtime = fetched.mtime or entry.mtime
                size = await asyncio.to_thread(finisher.run_native, mtime)
                hexdigest = await asyncio.to_thread(finisher.digest_after) if digest else None
                return size, mtime, size - offset, hexdigest
            async with client.open(entry.path, offset, size=entry.size) as stream:
                result = await _receive(stream, entry, part, digest, on_bytes, finisher, inline, self.settings.pace)
            if offset and finisher.part == finisher.dest:  # the server sent it whole: the old part goes
                await asyncio.to_thread(part.unlink, missing_ok=True)
            return result


async def _receive(stream: RemoteStream, entry: RemoteEntry, part: Path, digest: str | None,
                   on_bytes: Callable[[int], None] | None, finisher: _Finisher, inline: bool,
                   pace: Callable[[int], Awaitable[None]] | None = None):
    """Write an open stream to the part file, then check and rename it: (size, mtime, received, digest)."""
    # the archive test on the stream itself when the file is received whole
    check = (verify.StreamCheck.for_name(finisher.archive_name)
             if finisher.archive_name and not stream.offset else None)
    finisher.checked_while_written = check is not None
    if inline and not stream.offset:
        # A small file is held whole until its end, then written with one call: straight to its
        # name, not to a part file renamed afterwards (a rename cost as much as the write here).
        # A crash in that call leaves a file without the remote size or date, never taken for
        # complete (biomaj.download.same_file), and fetched again.
        finisher.part = part = finisher.dest
    writer = _PartWriter(part, stream.offset, (digest, finisher.checksum and finisher.checksum[0]), on_bytes, check,
                         direct=part == finisher.dest)
    try:
        # Each protocol bounds the silence between chunks (config.read_timeout) itself,
        # without a timer per chunk here.
        if pace is None:
            async for chunk in stream:
                await writer.add(chunk)
        else:  # a bandwidth limit: each chunk waits for its turn
            async for chunk in stream:
                await pace(len(chunk))
                await writer.add(chunk)
        size = stream.offset + writer.received
        mtime = entry.mtime if entry.mtime is not None else stream.mtime
        await writer.finish(lambda: finisher.run(size, mtime, writer.hash), inline)
    except BaseException:
        writer.abort()
        raise
    hexdigest = writer.hash.hexdigest(digest) if writer.hash is not None else None
    return size, mtime, writer.received, hexdigest


class _Finisher:
    """The last steps of a fetch, run in the writer's thread right after the last write: size
    check, archive test, mtime, rename. On a failed check the part file is removed."""

    def __init__(self, part: Path, dest: Path, expected_size: int | None, archive_name: str | None,
                 checksum: tuple[str, str] | None = None, digest: str | None = None):
        self.part = part
        self.dest = dest
        self.expected_size = expected_size
        self.archive_name = archive_name
        self.checksum = checksum  # (algorithm, hex) the whole file must have
        self.checked_while_written = False  # the archive test was done on the stream
        self.digest = digest  # the digest asked of the fetch: computed by the same read as the checksum's
        self.read: verify.Digests | None = None  # what the checksum's read of the file computed

    def run(self, size: int, mtime: float | None, streamed=None) -> None:
        """``streamed``: the digests of the whole file, when they were computed as it streamed in."""
        try:
            if self.expected_size is not None and size != self.expected_size:
                raise VerificationFailed(f"size mismatch: listed {self.expected_size} bytes, received {size}")
            if self.checksum is not None:
                algorithm, wanted = self.checksum
                got = streamed.hexdigest(algorithm) if streamed is not None else None
                if got is None:
                    self.read = verify.file_digests(self.part, (algorithm, self.digest))
                    got = self.read.hexdigest(algorithm)
                if got != wanted:
                    raise verify.ChecksumMismatch(algorithm, got, wanted)
            if self.archive_name is not None and not self.checked_while_written:
                verify.check_archive(self.part, self.archive_name)
        except VerificationFailed:
            self.part.unlink(missing_ok=True)
            raise
        if mtime is not None:
            os.utime(self.part, (mtime, mtime))
        if self.part != self.dest:
            os.replace(self.part, self.dest)

    def digest_after(self) -> str | None:
        """The fetch's digest of a file not read as it streamed in (split, native): from the
        checksum's read of it when there was one, else read now."""
        if not self.digest:
            return None
        if self.read is not None and (got := self.read.hexdigest(self.digest)) is not None:
            return got
        return verify.file_digest(self.dest, self.digest)

    def run_native(self, mtime: float | None) -> int:
        size = self.part.stat().st_size
        self.run(size, mtime)
        return size


def _prepare(dest: Path, part: Path, entry: RemoteEntry, make_dir: bool, split: bool) -> tuple[bool, int]:
    """One trip to a worker thread before a fetch: is the file already complete (BioMAJ's
    offline resume: same size and date), else from which offset to resume."""
    if make_dir:
        dest.parent.mkdir(parents=True, exist_ok=True)
    if same_file(local_facts(dest), facts_of_entry(entry)):
        return True, 0
    return False, 0 if split else _resume_offset(part, entry)


def _resume_offset(part: Path, entry: RemoteEntry) -> int:
    """Where a one-stream fetch resumes: the part file's size, or, for a part file a split
    transfer left (its journal beside it), the bytes surely there from its start."""
    try:
        size = part.stat().st_size
    except FileNotFoundError:
        return 0
    prefix = contiguous_prefix(part)
    if prefix is not None:
        return prefix
    if entry.size is not None and size > entry.size:
        part.unlink()
        return 0
    return size
