"""HTTP/1.1 pipelining: the GETs of many small files sent ahead on one kept-alive connection.

A small file over a plain request/response client costs a round trip and the client's whole
request machinery; on a link with latency, the round trip is all of it. Here up to ``depth``
requests are written at once and the answers are read back in order (RFC 9112 9.3.2) with
httptools, the C parser behind uvicorn; each body is handed to its consumer chunk by chunk,
with back-pressure (the socket is paused past ``HIGH_WATER`` buffered bytes).

Requests a connection did not answer are sent again on a new one: a server closes a kept-alive
connection after N requests (Apache's MaxKeepAliveRequests, 100 by default) or when it likes.
What pipelining cannot carry is refused with :class:`PipelineUnsupported` and goes the ordinary way,
one request at a time: a body of unknown length (an HTTP/1.0 answer that ends at close), an
upgrade, a TLS failure; a server that closes two connections in a row without answering ends the
pipeline with a RetryableError, and the files not delivered go the ordinary way too.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator

import httptools

from biomaj.protocols.base import PipelineUnsupported, RetryableError, unreachable

DEPTH = 16  # requests in flight on one connection
HIGH_WATER = 1024 * 1024  # buffered body bytes past which the socket is paused
LOW_WATER = 256 * 1024  # ... and resumed below
FRUITLESS_LIMIT = 2  # connections in a row that answered nothing before pipelining is given up


class Answer:
    """One response: status, headers (lower-case names) and the body, read in order."""

    def __init__(self, conn: _Connection, target: str):
        self._conn = conn
        self.target = target
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: collections.deque[bytes] = collections.deque()
        self.complete = False
        self.discarded = False
        self.error: BaseException | None = None
        self._wake: asyncio.Future | None = None

    async def body(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; RetryableError when the connection is cut first."""
        conn = self._conn
        while True:
            while self.chunks:
                chunk = self.chunks.popleft()
                conn.consumed(len(chunk))
                yield chunk
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            await self._wait()

    async def _wait(self) -> None:
        """Until more of the answer came, it ended, or its connection failed."""
        self._wake = asyncio.get_running_loop().create_future()
        try:
            await self._wake
        finally:
            self._wake = None

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def discard(self) -> None:
        """The consumer will not read the rest: drop what is buffered, and what comes later."""
        self._conn.consumed(sum(map(len, self.chunks)))
        self.chunks.clear()
        self.discarded = True


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: requests written ahead, answers parsed in order."""

    def __init__(self, read_timeout: float):
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sent: collections.deque[str] = collections.deque()  # targets asked for, answer not begun
        self.requested: collections.deque[str] = collections.deque()  # targets whose answer is not taken
        self.ready: collections.deque[Answer] = collections.deque()  # answers begun, not yet taken
        self.current: Answer | None = None  # the answer being parsed
        self.answered = 0
        self.closing = False  # the server said this answer is its last on this connection
        self.lost: BaseException | None = None
        self.buffered = 0
        self.paused = False
        self._wake: asyncio.Future | None = None
        self.read_timeout = read_timeout
        self.last_read = loop.time()
        self._watchdog: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.read_timeout:
            self._watchdog = self.loop.call_later(self.read_timeout, self._check_silence)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(PipelineUnsupported("the server switched protocols"))
        except httptools.HttpParserCallbackError as exc:  # raised by a callback below
            cause = exc.__context__
            self._fail(cause if isinstance(cause, (PipelineUnsupported, RetryableError))
                       else RetryableError(f"malformed HTTP answer ({cause or exc})"))
        except httptools.HttpParserError as exc:
            self._fail(RetryableError(f"malformed HTTP answer ({exc})"))

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.lost is None:
            self.lost = RetryableError(f"connection closed by the server ({exc or 'end of stream'})")
        if self.current is not None and not self.current.complete and self.current.error is None:
            self.current.error = self.lost
            self.current._notify()
        self._notify()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if not self.sent:
            raise RetryableError("an answer to no request")
        self.current = Answer(self, self.sent.popleft())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        answer = self.current
        answer.status = self.parser.get_status_code()
        headers = answer.headers
        if "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower():
            if answer.status not in (204, 304) and answer.status >= 200:
                # the body would end with the connection: only a request on its own can tell
                raise PipelineUnsupported("an answer without Content-Length")
        self.ready.append(answer)
        self._notify()

    def on_body(self, body: bytes) -> None:
        answer = self.current
        if answer.discarded:
            return
        answer.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        answer._notify()

    def on_message_complete(self) -> None:
        answer, self.current = self.current, None
        answer.complete = True
        self.answered += 1
        if not self.parser.should_keep_alive():
            self.closing = True
        answer._notify()

    # the consumer's side

    def consumed(self, n: int) -> None:
        self.buffered -= n
        if self.paused and self.buffered < LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def send(self, targets: list[str], head: bytes) -> None:
        self.sent.extend(targets)
        self.requested.extend(targets)
        self.transport.write(b"".join(b"GET %s HTTP/1.1\r\n%s\r\n" % (t.encode("ascii"), head) for t in targets))

    async def next_answer(self) -> Answer | None:
        """The next answer whose headers have arrived, or None when the connection ended first."""
        while not self.ready:
            if self.lost is not None or (self.closing and self.current is None):
                return None
            self._wake = self.loop.create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        self.requested.popleft()
        return self.ready.popleft()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.lost = exc
        if self.current is not None and self.current.error is None and not self.current.complete:
            self.current.error = exc if isinstance(exc, RetryableError) else RetryableError(str(exc))
            self.current._notify()
        self.close()
        self._notify()

    def _check_silence(self) -> None:
        if self.paused:  # the consumer is behind, not the server
            self.last_read = self.loop.time()
        idle = self.loop.time() - self.last_read
        if (self.sent or self.current is not None) and idle >= self.read_timeout:
            self._fail(RetryableError(f"no data for {self.read_timeout:g} s (read timeout)"))
            return
        wait = self.read_timeout - idle if self.sent or self.current is not None else self.read_timeout
        self._watchdog = self.loop.call_later(max(wait, 0.05), self._check_silence)

    @property
    def usable(self) -> bool:
        return self.lost is None and not self.closing and self.transport is not None \
            and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Pipeline:
    """Pipelined GETs to one origin, over one connection at a time (kept between batches)."""

    def __init__(self, host: str, port: int, *, host_header: str, headers: dict[str, str],
                 ssl_context: ssl.SSLContext | None, connect_timeout: float, read_timeout: float,
                 depth: int = DEPTH):
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.depth = max(1, depth)
        lines = [f"Host: {host_header}", *(f"{k}: {v}" for k, v in headers.items())]
        self._head = "".join(line + "\r\n" for line in lines).encode("latin-1")
        self._conn: _Connection | None = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(self.read_timeout), self.host, self.port, ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context is not None else None,
            ), self.connect_timeout or None)
        except (OSError, asyncio.TimeoutError) as exc:
            raise unreachable(f"{self.host}:{self.port}", exc if isinstance(exc, OSError) else TimeoutError()) from None
        except ssl.SSLError as exc:
            raise PipelineUnsupported(f"TLS failure ({exc})") from None  # the ordinary path says it best
        return conn

    async def get(self, targets: list[str]) -> AsyncIterator[Answer]:
        """One Answer per target, in order. The consumer reads (or leaves) each body before it
        asks for the next. RetryableError / PipelineUnsupported end the iteration: the targets
        not answered yet are the caller's to fetch another way."""
        todo = collections.deque(targets)
        fruitless = 0
        while todo:
            conn = self._conn
            if conn is None or not conn.usable:
                if conn is not None:
                    conn.close()
                conn = self._conn = await self._connect()
            answered_before = conn.answered
            try:
                while todo or conn.requested:
                    room = self.depth - len(conn.requested)
                    if room > 0 and todo and conn.usable:
                        batch = [todo.popleft() for _ in range(min(room, len(todo)))]
                        conn.send(batch, self._head)
                    answer = await conn.next_answer()
                    if answer is None:
                        break
                    yield answer
                    if not answer.complete:
                        answer.discard()
                        # what is left of it is skipped as it arrives: wait for its end before the next
                        while not answer.complete and answer.error is None:
                            await answer._wait()
            except BaseException:
                conn.close()
                self._conn = None
                raise
            if isinstance(conn.lost, PipelineUnsupported):
                conn.close()
                self._conn = None
                raise conn.lost
            unanswered = list(conn.requested)
            if unanswered:  # ended early: ask again for what it did not answer, first
                todo.extendleft(reversed(unanswered))
                conn.close()
                self._conn = None
            fruitless = fruitless + 1 if conn.answered == answered_before else 0
            if fruitless >= FRUITLESS_LIMIT:
                raise conn.lost if isinstance(conn.lost, RetryableError) else RetryableError(
                    "the server closed the connection before answering")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

