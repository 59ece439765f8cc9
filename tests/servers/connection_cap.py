"""A TCP front for a test server that allows ``limit`` connections open at once, as a public
server does per client: the next one gets ``refusal`` (an HTTP 503 by default, or an FTP 421)
and is closed. It records the most connections it saw open at once, and how many it refused.

Connections are counted in the protocol callbacks themselves (opened on accept, closed on the
client's end of stream or a reset), in the order the event loop sees them, so that a client
closing one connection and opening the next is counted as the server sees it.
"""

from __future__ import annotations

import asyncio
import contextlib

HTTP_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
FTP_421 = b"421 Too many connections from your host, try later.\r\n"
SETTLE = 0.02  # seconds: how long a connection over the limit waits for an end of stream on its way


class _Relay(asyncio.Protocol):
    """One side of a relayed connection."""

    def __init__(self, on_lost=None):
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None
        self.pending: list[bytes] = []
        self.on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        self._lost()
        return False  # close this side

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()
        if self.transport is not None:
            self.transport.close()


class ConnectionCap:
    """``await ConnectionCap(port, limit).start()``: listens on 127.0.0.1 (``.port``) and relays
    to 127.0.0.1:``target_port``, at most ``limit`` connections at once."""

    def __init__(self, target_port: int, limit: int, refusal: bytes = HTTP_503):
        self.target_port = target_port
        self.limit = limit
        self.refusal = refusal
        self.port = 0
        self.open = 0
        self.peak = 0
        self.refused = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> ConnectionCap:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._client_side, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _client_side(self) -> _Relay:
        return _Front(self)

    def _closed(self) -> None:
        self.open -= 1

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        for task in list(self._tasks):
            task.cancel()


class _Front(_Relay):
    def __init__(self, cap: ConnectionCap):
        super().__init__()
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.cap.open >= self.cap.limit:
            # A client that closed one connection and opened the next: both reach this process in
            # the same turn of the loop, in either order. The end of stream that was on its way
            # counts first, as the server's kernel saw it first.
            asyncio.get_running_loop().call_later(SETTLE, self._admit, transport)
            return
        self._admit(transport)

    def _admit(self, transport: asyncio.BaseTransport) -> None:
        cap = self.cap
        if transport.is_closing():  # the client left while it waited
            return
        if cap.open >= cap.limit:
            cap.refused += 1
            transport.write(cap.refusal)  # type: ignore[attr-defined]
            transport.close()
            return
        cap.open += 1
        cap.accepted += 1
        cap.peak = max(cap.peak, cap.open)
        self.on_lost = cap._closed
        task = asyncio.get_running_loop().create_task(self._connect())
        cap._tasks.add(task)
        task.add_done_callback(cap._tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, back = await loop.create_connection(_Relay, "127.0.0.1", self.cap.target_port)
        except OSError:
            self._lost()
            return
        back.peer, self.peer = self, back
        for data in self.pending:
            back.transport.write(data)
        self.pending.clear()
        if self.on_lost is None:  # the client left meanwhile
            back.transport.close()
