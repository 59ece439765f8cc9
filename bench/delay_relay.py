#!/usr/bin/env python3
"""A user-space TCP delay relay: a WAN's latency on loopback, for bench/wan.py.

This kernel has no `netem` (no `tc qdisc ... delay`), so latency is added in user space: the relay
listens on LISTEN:PORT for every port given and forwards each connection to TARGET:PORT (the real
server), releasing every chunk it read `--delay-ms` after it read it, in both directions, in order.
Back-pressure is kept: each direction of a connection holds at most `--buffer` bytes in flight;
past that the relay stops reading, the socket buffers fill and TCP's window closes on the sender,
as on a real link whose bandwidth-delay product is bounded by the window.

The TCP handshake: the client's kernel completes its connect() at once (a user-space relay cannot
delay the SYN-ACK), so the relay charges that round trip on the first bytes instead. It opens the
connection to the server 3 one-way delays after accepting (SYN, SYN-ACK, ACK: when a distant server
would see it) and delivers nothing the client sent before then. A new connection's first answer
thus arrives 2 round trips after connect(), as over a real link: for an HTTP GET, curl's
time_connect is ~0 and its time_starttransfer ~4 x delay; for FTP the banner comes after 4 x delay.

The relay acknowledges the server's bytes at once (loopback), so a server that waits for the
client's acknowledgements sees none of the delay. The one place where that shows is FTP: vsftpd
sends its 226 after closing the data connection with SO_LINGER, i.e. over a real link one round
trip after its 150 at the earliest. For the groups named with --ftp-control, the relay holds a
226/426/451 reply until 2 x delay after the 150/125 before it was released.

It counts the connections open at once per group of ports (e.g. http, ftp control, ftp data), as
the server would see them over the link (from the relay's connection to the server until the
client's end of stream reaches the server or the server closes), and keeps the maximum since the
last reset: that is how bench/wan.py checks a per-host connection
budget. A Unix socket answers one command per connection, one JSON line back:
    stats     {"groups": {NAME: {"open", "max", "total", "bytes_up", "bytes_down"}, ...}, "cpu": S}
    reset     the same stats, then max := open, total and byte counters := 0

    python3 bench/delay_relay.py --listen 127.0.0.1 --target 127.0.0.2 --delay-ms 30 \
        --port http=18090 --port ftp=12131 --port ftp-data=12200-12299 --ftp-control ftp \
        --control /tmp/relay.sock

    python3 bench/delay_relay.py --control /tmp/relay.sock --ask stats

Standard library only. Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import signal
import socket
import sys

CHUNK = 256 * 1024


class Group:
    """Connection counters of one group of listening ports."""

    def __init__(self, name: str, ftp_control: bool = False):
        self.name = name
        self.ftp_control = ftp_control  # FTP control connections: replies paced (Relay.read_into)
        self.open = self.max = self.total = 0
        self.bytes_up = self.bytes_down = 0  # client -> server, server -> client

    def opened(self) -> None:
        self.open += 1
        self.total += 1
        self.max = max(self.max, self.open)

    def as_dict(self) -> dict:
        return {"open": self.open, "max": self.max, "total": self.total,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}

    def reset(self) -> None:
        self.max, self.total, self.bytes_up, self.bytes_down = self.open, 0, 0, 0


class DelayLine:
    """One direction of one connection: (release time, bytes) in order, at most `limit` bytes held.
    b"" is the end of the stream."""

    def __init__(self, limit: int):
        self.items: collections.deque[tuple[float, bytes]] = collections.deque()
        self.size = 0
        self.limit = limit
        self.changed = asyncio.Event()

    def put(self, when: float, data: bytes) -> None:
        self.items.append((when, data))
        self.size += len(data)
        self.changed.set()

    async def get(self) -> tuple[float, bytes]:
        while not self.items:
            self.changed.clear()
            await self.changed.wait()
        when, data = self.items.popleft()
        self.size -= len(data)
        self.changed.set()
        return when, data

    async def room(self) -> None:
        while self.size >= self.limit:
            self.changed.clear()
            await self.changed.wait()


class Relay:
    def __init__(self, target: str, delay: float, buffer: int):
        self.target, self.delay, self.buffer = target, delay, buffer
        self.groups: dict[str, Group] = {}

    async def read_into(self, reader: asyncio.StreamReader, line: DelayLine, not_before: float, count, at_end=None,
                        ftp_replies: bool = False) -> None:
        loop = asyncio.get_running_loop()
        opened: float | None = None  # release time of the last 150/125 reply (ftp_replies)
        while True:
            await line.room()
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""
            when = max(loop.time() + self.delay, not_before)
            if not data:
                line.put(when, data)
                if at_end:
                    at_end()
                return
            count(len(data))
            if not ftp_replies:
                line.put(when, data)
                continue
            # An FTP control connection, server to client: vsftpd closes a data connection with
            # SO_LINGER, so over a real link its 226 (or 426/451) leaves only once the client has
            # acknowledged the last bytes, one round trip after the 150 reached it at the earliest.
            # Here the relay acknowledges at once: hold that reply until then. (It also keeps the
            # 150 and the 226 in separate segments: aria2c 1.36 waits out its 60 s timeout when
            # they come in one.)
            for piece in data.splitlines(keepends=True):
                code = piece[:4]
                if code in (b"150 ", b"125 "):
                    opened = when
                elif code[:3] in (b"226", b"426", b"451") and opened is not None:
                    when = max(when, opened + 2 * self.delay)
                    opened = None
                line.put(when, piece)

    @staticmethod
    async def write_from(line: DelayLine, writer: asyncio.StreamWriter, at_end=None) -> None:
        loop = asyncio.get_running_loop()
        while True:
            when, data = await line.get()
            wait = when - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if at_end:
                    at_end()
                if writer.can_write_eof():
                    try:
                        writer.write_eof()
                    except OSError:
                        pass
                return
            writer.write(data)
            await writer.drain()

    async def handle(self, group: Group, port: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        up_line, down_line = DelayLine(self.buffer), DelayLine(self.buffer)
        server_w = None
        tasks: list[asyncio.Task] = []
        counted = False

        def up(n: int) -> None:
            group.bytes_up += n

        def down(n: int) -> None:
            group.bytes_down += n

        def ended() -> None:
            """The server's view: the connection ends when the client's end of stream reaches it or
            when it closes its side, whichever comes first (a client that closes one connection and
            opens another is never seen with both open, as over a real link)."""
            nonlocal counted
            if counted:
                counted = False
                group.open -= 1

        try:
            # What the client sends now reaches the server once the handshake would be over.
            tasks.append(asyncio.create_task(self.read_into(client_r, up_line, accepted + 3 * self.delay, up)))
            await asyncio.sleep(max(0.0, accepted + 3 * self.delay - loop.time()))
            server_r, server_w = await asyncio.open_connection(self.target, port)
            group.opened()
            counted = True
            tasks += [asyncio.create_task(self.write_from(up_line, server_w, ended)),
                      asyncio.create_task(self.read_into(server_r, down_line, 0.0, down, ended, group.ftp_control)),
                      asyncio.create_task(self.write_from(down_line, client_w))]
            # Done when both directions have delivered their end of stream, or on the first error.
            writers = {tasks[1], tasks[3]}
            while writers:
                done, _ = await asyncio.wait(writers, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    writers.discard(t)
                    if t.exception() is not None:
                        raise t.exception()
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            for w in (client_w, server_w):
                if w is not None:
                    w.transport.abort()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (client_w, server_w):
                if w is not None:
                    w.close()
            ended()

    def stats(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"groups": {n: g.as_dict() for n, g in self.groups.items()}, "cpu": round(ru.ru_utime + ru.ru_stime, 3),
                "delay_ms": self.delay * 1000, "pid": os.getpid()}

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            cmd = (await reader.readline()).decode(errors="replace").strip()
            out = self.stats()
            if cmd == "reset":
                for g in self.groups.values():
                    g.reset()
            elif cmd != "stats":
                out = {"error": f"unknown command {cmd!r} (stats, reset)"}
            writer.write(json.dumps(out).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()


def parse_ports(specs: list[str]) -> list[tuple[str, int]]:
    """["http=18090", "ftp-data=12200-12299"] -> [(group, port), ...]"""
    out = []
    for spec in specs:
        name, _, ports = spec.partition("=")
        first, _, last = ports.partition("-")
        if not name or not first.isdigit() or (last and not last.isdigit()):
            raise SystemExit(f"bad --port {spec!r}: expected NAME=PORT or NAME=FIRST-LAST")
        out += [(name, p) for p in range(int(first), int(last or first) + 1)]
    return out


async def main(a: argparse.Namespace) -> None:
    relay = Relay(a.target, a.delay_ms / 1000.0, a.buffer)
    servers = []
    for name, port in parse_ports(a.port):
        group = relay.groups.setdefault(name, Group(name, name in a.ftp_control))
        servers.append(await asyncio.start_server(
            lambda r, w, g=group, p=port: relay.handle(g, p, r, w), a.listen, port, reuse_address=True, backlog=256))
    if a.control:
        if os.path.exists(a.control):
            os.unlink(a.control)
        servers.append(await asyncio.start_unix_server(relay.control, a.control))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"delay relay: {a.listen} -> {a.target}, {a.delay_ms:g} ms each way, ports "
          + ", ".join(f"{n}={p}" for n, p in parse_ports(a.port)[:3]) + (" ..." if len(parse_ports(a.port)) > 3 else ""),
          flush=True)
    await stop.wait()
    for s in servers:
        s.close()
    if a.control and os.path.exists(a.control):
        os.unlink(a.control)


def ask(control: str, command: str = "stats", timeout: float = 10.0) -> dict:
    """One command to a running relay's control socket (used by bench/wan.py)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(control)
        s.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--target", default="127.0.0.2")
    ap.add_argument("--delay-ms", type=float, default=30.0, help="added each way (default 30)")
    ap.add_argument("--buffer", type=int, default=4 << 20, help="bytes in flight per direction and connection (4 MiB)")
    ap.add_argument("--port", action="append", default=[], help="NAME=PORT or NAME=FIRST-LAST (repeatable)")
    ap.add_argument("--control", help="Unix socket for the stats/reset commands")
    ap.add_argument("--ftp-control", action="append", default=[], metavar="NAME",
                    help="a group of FTP control ports: transfer-complete replies paced as over a real link")
    ap.add_argument("--ask", choices=("stats", "reset"), help="send this command to the relay at --control, print its answer")
    args = ap.parse_args()
    if args.ask:
        if not args.control:
            ap.error("--ask needs --control")
        print(json.dumps(ask(args.control, args.ask)))
        sys.exit(0)
    if not args.port:
        ap.error("at least one --port")
    asyncio.run(main(args))
