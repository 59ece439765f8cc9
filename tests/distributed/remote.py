"""The remote of the cluster tests: an HTTP server (aiohttp) over a folder, with Apache index
pages, files streamed at a chosen pace, and a record of who asked for what.

Each file request is recorded with the client's TCP port, so that a test can find the download
node that is fetching a file (:func:`pid_of_client`) and kill it in the middle.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from tests.servers.http_server import _index

CHUNK = 16 * 1024


@dataclass
class Seen:
    """One file request: the file, the client's port, the Range asked (offset 0 and end None:
    the whole file; end: the last byte + 1 of a bounded range)."""

    name: str
    client_port: int
    offset: int
    end: int | None = None


class Remote:
    """``await Remote(tree).start()``: serves ``tree`` on 127.0.0.1; ``delay`` seconds before
    each file, ``pace[name]`` bytes per second for slow files, ``on_request(seen)`` called (and
    awaited if it is a coroutine function) at the start of each file transfer."""

    def __init__(self, tree: Path, *, delay: float = 0.0, pace: dict[str, int] | None = None,
                 on_request: Callable[[Seen], Awaitable[None] | None] | None = None):
        self.tree = tree
        self.delay = delay
        self.pace = pace or {}
        self.on_request = on_request
        self.seen: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> Remote:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def requests_for(self, name: str) -> list[Seen]:
        return [s for s in self.seen if s.name == name]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return web.Response(status=404)
        target = self.tree.joinpath(*parts)
        if target.is_dir():
            return web.Response(text=_index(target, request.path, "apache24", []), content_type="text/html")
        if not target.is_file():
            return web.Response(status=404)
        size = target.stat().st_size
        if request.method == "HEAD":  # a size asked before a split: not a transfer
            head = web.StreamResponse(headers={"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
            head.content_length = size
            await head.prepare(request)
            await head.write_eof()
            return head
        offset, end = 0, None
        first, dash, last = request.headers.get("Range", "").removeprefix("bytes=").partition("-")
        if dash and first.isdigit() and (last.isdigit() or not last):
            offset, end = int(first), (min(int(last) + 1, size) if last else None)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen = Seen("/".join(parts), peer[1] if peer else 0, offset, end)
        self.seen.append(seen)
        if self.on_request is not None:
            maybe = self.on_request(seen)
            if maybe is not None:
                await maybe
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        status = 200
        stop = size if end is None else end
        if offset or end is not None:
            status = 206
            headers["Content-Range"] = f"bytes {offset}-{stop - 1}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = stop - offset
        await response.prepare(request)
        pace = self.pace.get(seen.name)
        try:
            with target.open("rb") as source:
                source.seek(offset)
                left = stop - offset
                while left and (block := source.read(min(CHUNK, left))):
                    left -= len(block)
                    await response.write(block)
                    if pace:
                        await asyncio.sleep(len(block) / pace)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client died or hung up
        return response


def _socket_inode(local_port: int) -> str | None:
    """The inode of this host's TCP socket bound to 127.0.0.1:``local_port`` (client side)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == local_port and fields[9] != "0":  # 0: TIME_WAIT
                return fields[9]
    return None


async def find_client(client_port: int, candidates: Callable[[], list[int]], timeout: float = 5.0) -> int | None:
    """:func:`pid_of_client`, asked again for a while (a process just started may not be listed yet)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (pid := pid_of_client(client_port, candidates())) is None:
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(0.05)
    return pid


def pid_of_client(client_port: int, candidates: list[int]) -> int | None:
    """Which of ``candidates`` (pids) owns the TCP connection coming from ``client_port``."""
    inode = _socket_inode(client_port)
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in candidates:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None
