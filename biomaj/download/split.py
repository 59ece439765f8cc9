"""Split transfers: one big file fetched as byte ranges over several connections to its server.

Public bank servers cap the rate of each connection; a file read over N connections at once comes
N times faster, up to the link. A :class:`SplitTransfer` starts with one stream (or, for a protocol
whose ``Features.split_start`` says so, that many equal ranges at once), measures the rate
and adds streams while the rate still rises: four times as many while each new stream brings as
much as the first (the server caps each connection), twice as many while it brings at least half
of that, one at a time once it rises less; up to ``max_streams`` and never past the host budget:
an extra stream only starts when the pool has a connection free at once (else it is asked again
each window). A new stream takes the second half of
the range with the most bytes left, so a slow stream's rest is taken over by a quicker one, and a
stream that finishes its range takes half of another's.

Each range is written in place into the preallocated part file, and a small journal beside it
(``<part>.segments``, JSON) says how far each range is on disk: a restart, or another download
node after this one was killed, resumes every range where it stopped. The journal is written once
a second and when the transfer stops; a range never counts bytes that are not written yet.

A server that ignores ``Range``/``REST`` answers from byte 0: the transfer falls back to one
stream, says so once in the log, and carries on.

The digests a fetch needs (the sha256 to record, a provider's checksum) are computed while the
ranges come in: a follower reads the file's bytes in order as far as the ranges have written them
(from the page cache, in a thread) instead of reading the whole file again once it is complete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from biomaj.download.verify import Digests
from biomaj.protocols.base import RemoteConfig, RemoteEntry, RemoteError, RetryableError

if TYPE_CHECKING:
    from biomaj.download.engine import ClientPool

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".segments"
WINDOW = 0.4  # seconds of measured rate behind each decision to add streams
START_WAIT = 5.0  # longest wait for a new stream's first bytes before judging the rate anyway
MIN_PIECE = 1024 * 1024  # a range with less than twice this left is not split again
FLUSH_SIZE = 1024 * 1024  # bytes of one range gathered before one write
HASH_BLOCK = 1024 * 1024  # bytes the digest follower reads at once
JOURNAL_EVERY = 1.0  # seconds between two journal writes
DOUBLING_GAIN = 0.5  # share of the ideal gain that keeps the stream count doubling
LEAP_GAIN = 0.8  # share of the ideal gain that shows a per-connection cap: four times as many streams
STEAL_SECONDS = 0.5  # a range is split only if its second half keeps a new stream busy this long,
# and at least twice as long as the slowest answer to this transfer's range requests: a new range
# costs that wait (a round trip or two on a WAN; on moto the whole object read before it answers)

#: waits for permission to go on with ``n`` more bytes (the bandwidth limit), or None
Pacer = Callable[[int], Awaitable[None]] | None


@dataclass
class Segment:
    """One byte range ``[start, end)`` of the file; ``written`` bytes from ``start`` are on disk
    up to the offset ``written``; ``received`` (>= written) counts what is buffered too."""

    start: int
    end: int  # lowered when another stream takes the rest
    written: int
    received: int
    active: bool = False

    @property
    def left(self) -> int:
        return self.end - self.received


class SplitTransfer:
    """Fetches ``entry`` into ``part`` over up to ``max_streams`` connections (see the module)."""

    def __init__(self, pool: ClientPool, config: RemoteConfig, entry: RemoteEntry, part: Path, *,
                 max_streams: int, start_streams: int = 1, on_bytes: Callable[[int], None] | None = None,
                 pace: Pacer = None, digests: Digests | None = None):
        """``digests``: fed the whole file in order while the ranges come in (see :attr:`hashed`)."""
        if entry.size is None:
            raise ValueError("a split transfer needs the file's size")
        self.pool = pool
        self.config = config
        self.entry = entry
        self.size = entry.size
        self.part = part
        self.journal = part.with_name(part.name + JOURNAL_SUFFIX)
        self.max_streams = max(1, max_streams)
        self.start_streams = max(1, min(start_streams, self.max_streams, self.size // (2 * MIN_PIECE) or 1))
        self.on_bytes = on_bytes
        self.pace = pace
        self.segments: list[Segment] = []
        self.single = False  # the server ignores ranges: one stream from 0
        self.received = 0  # bytes received by this run
        self.resumed = 0  # bytes already on disk when this run started
        self.streams = 0  # streams running now
        self.peak_streams = 0
        self._fd: int | None = None
        self._starting = 0  # streams added that have not received a byte yet
        self._changed = asyncio.Event()
        self._error: BaseException | None = None
        self._journal_saved = 0.0
        self._started_at = time.monotonic()
        self._answer = 0.0  # the slowest seconds from a range's request to the server's answer
        self.digests = digests
        self.hashed = 0  # bytes from 0 fed to ``digests``: the whole file when it equals ``size``
        self._written = asyncio.Event()  # set after each write, for the follower
        self._streams_done = False
        self._hash_stop = False

    # -- the whole transfer --------------------------------------------------------------------

    async def run(self) -> int:
        """Fetch what is missing; the bytes received by this run. RemoteError (retryable or not)
        when no stream could finish: the journal then holds the progress for the next try."""
        await asyncio.to_thread(self._open)
        self._started_at = time.monotonic()
        tasks: set[asyncio.Task] = set()
        follower: asyncio.Task | None = None
        try:
            if self._complete():
                return 0
            if self.digests:
                follower = asyncio.create_task(self._follow(), name=f"split-{self.entry.name}-hash")
            tasks.add(asyncio.create_task(self._stream(wait=True), name=f"split-{self.entry.name}-0"))
            await self._control(tasks, await self._add_streams(tasks, self.start_streams - 1))
            await asyncio.gather(*tasks)
            if not self._complete():
                error = self._error or RetryableError(f"{self.entry.path}: split transfer ended early")
                raise error
            self._streams_done = True
            self._written.set()
            if follower is not None:
                await follower
            return self.received
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if follower is not None:  # stopped, not cancelled: its thread must be done before the close
                self._hash_stop = True
                self._written.set()
                await asyncio.gather(follower, return_exceptions=True)
            self._close()

    async def _follow(self) -> None:
        """Feed ``digests`` the file's bytes in order, as far as the ranges have written them, until
        the file is whole or the streams are done (the caller then reads the rest itself)."""
        while self.hashed < self.size and not self._hash_stop:
            self._written.clear()
            ready = self._written_from(self.hashed)
            if ready > self.hashed:
                await asyncio.to_thread(self._hash, self.hashed, ready)
            elif self._streams_done:
                return
            else:
                await self._written.wait()

    def _written_from(self, position: int) -> int:
        """The end of the bytes on disk without a gap from ``position`` (ranges sorted by start)."""
        for segment in self.segments:
            if segment.end <= position:
                continue
            if segment.start > position:
                break
            position = max(position, segment.written)
            if segment.written < segment.end:
                break
        return position

    def _hash(self, start: int, end: int) -> None:
        while start < end and not self._hash_stop and self.digests is not None:
            block = os.pread(self._fd, min(HASH_BLOCK, end - start), start)
            if not block:
                break
            self.digests.update(block)
            start += len(block)
            self.hashed = start

    def finished(self) -> None:
        """The file is complete and checked: the journal goes."""
        self.journal.unlink(missing_ok=True)

    async def _control(self, tasks: set[asyncio.Task], wanted: int = 0) -> None:
        """Every WINDOW seconds: save the journal, and add streams while the rate still rises.
        ``wanted``: streams of the start that found no free connection yet."""
        last_rate: float | None = None
        last_count = self.start_streams
        growing = self.max_streams > 1
        retry_at = time.monotonic() + WINDOW  # ``wanted`` streams are asked for again from then
        added_at = time.monotonic()  # streams added then may still wait for their first bytes
        # a window opens once every stream delivers: time spent waiting for an answer or a first
        # byte would read as a slow rate (and make a range look worth splitting)
        window_start: float | None = None
        window_bytes = self.received
        while any(not t.done() for t in tasks):
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), WINDOW)
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - self._journal_saved >= JOURNAL_EVERY:
                await asyncio.to_thread(self._save_journal)
            if not growing or self.single:
                continue
            if wanted:  # the host had no free connection: try again each window, without judging
                if now >= retry_at:
                    wanted = await self._add_streams(tasks, wanted)
                    retry_at = now + WINDOW
                    if not wanted:
                        window_start, added_at = None, time.monotonic()
                continue
            if not self.received or (self._starting and now - added_at < START_WAIT):
                window_start = None  # judge once every stream delivers
                continue
            if window_start is None:
                window_start, window_bytes = now, self.received
                continue
            if now - window_start < WINDOW:
                continue
            rate = (self.received - window_bytes) / (now - window_start)
            window_start, window_bytes = now, self.received
            count = self.streams
            # the share of its ideal gain the last streams added brought (1: each as much as the first)
            share = ((rate / last_rate - 1) / ((count - last_count) / last_count)
                     if last_rate and count > last_count else 0.0)
            if last_rate is None:
                add = 1
            elif share >= LEAP_GAIN:
                add = 3 * count  # each stream brought its full share: the server caps connections
            elif share >= DOUBLING_GAIN:
                add = count  # each stream still adds nearly its share: double
            elif rate > last_rate * 1.1:
                add = 1
            else:
                growing = False  # the rate stopped rising: the link, not the connections, is the limit
                log.debug("%s: %d stream(s), rate %.1f MiB/s", self.entry.path, count, rate / 2**20)
                continue
            add = min(add, self.max_streams - count)
            if add <= 0 or not self._splittable():
                growing = False
                continue
            last_rate, last_count = rate, count
            wanted = await self._add_streams(tasks, add)
            retry_at = time.monotonic() + WINDOW
            window_start, added_at = None, time.monotonic()

    async def _add_streams(self, tasks: set[asyncio.Task], count: int) -> int:
        """Start up to ``count`` more streams, each only if the host has a free connection now;
        returns how many could not start."""
        while count and self._splittable():
            started = asyncio.Event()
            task = asyncio.create_task(self._stream(wait=False, started=started),
                                       name=f"split-{self.entry.name}-{len(tasks)}")
            tasks.add(task)
            waiter = asyncio.create_task(started.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not started.is_set():
                return count  # no free connection to the host now
            count -= 1
        return 0

    # -- one stream ------------------------------------------------------------------------------

    async def _stream(self, *, wait: bool, started: asyncio.Event | None = None) -> None:
        """One connection: read ranges until none is left to take. ``wait``: the file's own slot
        (waits for the host budget); else an extra one, only if a slot is free at once."""
        opener = self.pool.client(self.config) if wait else self.pool.try_client(self.config)
        try:
            async with opener as client:
                if client is None:
                    return
                self.streams += 1
                self.peak_streams = max(self.peak_streams, self.streams)
                fresh = [not wait]  # an extra stream counts as starting until its first bytes
                self._starting += fresh[0]
                try:
                    segment = self._take()
                    if started is not None:
                        started.set()
                    while segment is not None:
                        await self._read(client, segment, fresh)
                        segment = self._take()
                finally:
                    self.streams -= 1
                    self._starting -= fresh[0]
        except RemoteError as exc:
            self._error = exc
            log.debug("%s: a stream ended: %s", self.entry.path, exc)
        finally:
            self._changed.set()

    def _take(self) -> Segment | None:
        """The next range for a stream: one nobody works on (a resumed transfer), else the second
        half of the range with the most bytes left."""
        for segment in self.segments:
            if not segment.active and segment.written < segment.end:
                segment.active = True
                return segment
        if self.single:
            return None
        return self._split()

    def _splittable(self) -> bool:
        least = self._least_split()
        return any(not s.active and s.written < s.end for s in self.segments) or any(
            s.left >= least for s in self.segments)

    def _least_split(self) -> int:
        """Bytes a range must have left to be split in two: twice MIN_PIECE, and enough that its
        second half keeps a stream busy STEAL_SECONDS, or twice the slowest answer seen, at the
        rate each stream gets now (on a fast link a new request for the last few MiB costs more
        than it saves)."""
        streaming = time.monotonic() - self._started_at - self._answer  # the rate once answered
        if not self.received or streaming <= 0 or not self.streams:
            return 2 * MIN_PIECE
        per_stream = self.received / streaming / max(1, self.streams - self._starting)  # those delivering
        return max(2 * MIN_PIECE, int(2 * per_stream * max(STEAL_SECONDS, 2 * self._answer)))

    def _split(self) -> Segment | None:
        victim = max(self.segments, key=lambda s: s.left, default=None)
        if victim is None or victim.left < self._least_split():
            return None
        middle = victim.received + victim.left // 2
        middle -= middle % 65536  # block-aligned writes
        segment = Segment(middle, victim.end, middle, middle, active=True)
        victim.end = middle
        self.segments.append(segment)
        self.segments.sort(key=lambda s: s.start)
        return segment

    async def _read(self, client, segment: Segment, fresh: list[bool]) -> None:
        """Read ``segment`` from where it is on disk to its end (which may move down while
        reading), writing every FLUSH_SIZE bytes. ``fresh``: [True] until the stream's first bytes."""
        chunks: list[bytes] = []
        buffered = 0
        flushed = asked = time.monotonic()
        try:
            async with client.open(self.entry.path, segment.written, size=self.size, end=segment.end) as stream:
                # the server's answer (headers, 150 ...), not the first chunk: at a capped rate a
                # chunk takes its own time to fill, which a new range would not save
                self._answer = max(self._answer, time.monotonic() - asked)
                if stream.offset != segment.written:
                    self._ranges_ignored(segment)
                    return
                async for chunk in stream:
                    if fresh[0] or not self.received:  # first bytes: the controller's window may open
                        self._starting -= fresh[0]
                        fresh[0] = False
                        self._changed.set()
                    room = segment.end - segment.received
                    if room <= 0:
                        break
                    if len(chunk) > room:
                        chunk = chunk[:room]
                    if self.pace is not None:
                        await self.pace(len(chunk))
                    chunks.append(chunk)
                    buffered += len(chunk)
                    segment.received += len(chunk)
                    self.received += len(chunk)
                    if self.on_bytes is not None:
                        self.on_bytes(len(chunk))
                    if (buffered >= FLUSH_SIZE or segment.received >= segment.end
                            or time.monotonic() - flushed >= JOURNAL_EVERY):  # a slow link's bytes too
                        batch, chunks, buffered = chunks, [], 0
                        await asyncio.to_thread(self._write, segment, batch)
                        self._written.set()
                        flushed = time.monotonic()
                    if segment.received >= segment.end:
                        break
            if segment.received < segment.end:
                raise RetryableError(f"{self.entry.path}: connection ended at byte {segment.received} "
                                     f"of the range {segment.start}-{segment.end}")
        except BaseException:
            if chunks:  # what was received stays: a resume goes on from there
                try:
                    self._write(segment, chunks)
                except OSError:
                    log.warning("could not keep %d received bytes of %s", buffered, self.part, exc_info=True)
            segment.received = segment.written
            raise
        finally:
            segment.active = False

    def _ranges_ignored(self, segment: Segment) -> None:
        """The server sent the file from 0: one stream does it all. The range that started at 0,
        if a stream is reading it, is stretched to the end; every other range is dropped."""
        if not self.single:
            log.warning("%s does not honour byte ranges: %s is fetched over one connection",
                        self.config.address, self.entry.path)
        self.single = True
        self._hash_stop = True  # bytes may come again from 0: the whole file is read once complete
        first = next((s for s in self.segments if s.start == 0), None)
        for other in self.segments:
            if other is not first or first is segment:
                other.end = other.received  # its stream stops at its next chunk
        if first is None or first is segment or not first.active:
            first = Segment(0, self.size, 0, 0)  # nobody reads from 0: start again from 0
        first.end = self.size
        self.segments = [first]

    # -- the part file and its journal -------------------------------------------------------------

    def _open(self) -> None:
        segments = self._load_journal()
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
        self._fd = os.open(self.part, flags, 0o644)
        if segments is None:
            os.ftruncate(self._fd, 0)
            os.ftruncate(self._fd, self.size)  # sparse: the ranges fill it in place
            segments = self._first_ranges()
            self._save_journal(segments)
        self.segments = segments
        self.resumed = sum(s.written - s.start for s in segments)

    def _first_ranges(self) -> list[Segment]:
        """``start_streams`` equal ranges of the file (block-aligned): each first stream takes one."""
        bounds = [0]
        for index in range(1, self.start_streams):
            cut = self.size * index // self.start_streams
            bounds.append(cut - cut % 65536)
        bounds.append(self.size)
        return [Segment(a, b, a, a) for a, b in zip(bounds, bounds[1:]) if b > a]

    def _load_journal(self) -> list[Segment] | None:
        """The journal's ranges when it belongs to this remote file and the part file is there."""
        try:
            data = json.loads(self.journal.read_text())
            if (data.get("size") != self.size or data.get("mtime") != self.entry.mtime
                    or data.get("token") != self.entry.hash or self.part.stat().st_size != self.size):
                raise ValueError("another version of the file")
            segments = [Segment(int(a), int(b), int(c), int(c)) for a, b, c in data["segments"]]
            covered = 0
            for segment in segments:
                if segment.start != covered or not segment.start <= segment.written <= segment.end:
                    raise ValueError("ranges do not cover the file")
                covered = segment.end
            if covered != self.size:
                raise ValueError("ranges do not cover the file")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.info("%s: journal not used (%s); starting again", self.part, exc)
            return None
        log.info("%s: resuming %d range(s), %d of %d bytes on disk", self.entry.path,
                 sum(s.written < s.end for s in segments), sum(s.written - s.start for s in segments), self.size)
        return segments

    def _save_journal(self, segments: list[Segment] | None = None) -> None:
        segments = list(self.segments if segments is None else segments)
        data = {"size": self.size, "mtime": self.entry.mtime, "token": self.entry.hash,
                "segments": [[s.start, s.end, s.written] for s in segments]}
        temporary = self.journal.with_name(self.journal.name + ".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, self.journal)
        self._journal_saved = time.monotonic()

    def _write(self, segment: Segment, chunks: list[bytes]) -> None:
        segment.written += write_chunks(self._fd, chunks, segment.written)

    def _complete(self) -> bool:
        return all(s.written >= s.end for s in self.segments)

    def _close(self) -> None:
        if self._fd is not None:
            try:
                self._save_journal()
            except OSError:
                log.warning("could not save the journal of %s", self.part, exc_info=True)
            os.close(self._fd)
            self._fd = None


def write_chunks(fd: int, chunks: list[bytes], offset: int | None = None) -> int:
    """Write every chunk with as few system calls as possible (no joining copy), at ``offset``
    (pwritev) or at the file's position (writev); the bytes written."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    total = 0
    while views:
        if offset is None:
            written = os.writev(fd, views[:1024])
        else:
            written = os.pwritev(fd, views[:1024], offset + total)
        total += written
        while written and views:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0
    return total


def contiguous_prefix(part: Path) -> int | None:
    """For a one-stream resume of a part file a split transfer left: the bytes from 0 that are
    surely on disk (up to the first range not finished). The journal goes and the part file is cut
    there. None when there is no journal (the part file's size is the offset)."""
    journal = part.with_name(part.name + JOURNAL_SUFFIX)
    try:
        ranges = json.loads(journal.read_text())["segments"]
        prefix = 0
        for start, end, written in sorted(ranges):
            if start != prefix:
                break
            prefix = written
            if written < end:
                break
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        prefix = 0
    journal.unlink(missing_ok=True)
    try:
        os.truncate(part, prefix)
    except FileNotFoundError:
        return 0
    return prefix
