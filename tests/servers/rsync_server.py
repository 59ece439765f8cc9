"""A real rsync daemon for tests: ``rsync --daemon --no-detach`` on 127.0.0.1, a read-only module
``data`` over `tree`, reached through a small TCP relay that injects the faults.

The daemon's ``pre-xfer exec`` hook asks this module (over a Unix socket) what to do with each
request before the daemon sends anything. Each relayed connection comes from its own loopback
address (127.0.0.2, .3 ...), which the hook reports (RSYNC_HOST_ADDR), so the relay knows which
connection carries which file:

- transient_errors: the hook fails: ``@ERROR ... pre-xfer exec returned failure``;
- throttle: the same, with the daemon's own words "max connections (1) reached -- try again later";
- drop_after: the relay closes the connection after passing that many bytes of the daemon's
  answer (file body plus a few hundred bytes of protocol);
- stall: the relay passes 256 KiB, then nothing for that long;
- evil_names: impossible, rsync itself refuses such names (see GAPS).

Listings (``--list-only``) are not transfers: faults and `transfers` concern fetches only.
Linux: the relay binds 127.0.0.x source addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from biomaj.protocols.base import RemoteConfig
from tests.servers.faults import Faults, RunningServer

MODULE = "data"
STALL_AFTER = 256 * 1024  # bytes passed to the client before an injected stall

_HOOK = """\
import json, os, socket, sys
args, i = [], 0
while "RSYNC_ARG%d" % i in os.environ:
    args.append(os.environ["RSYNC_ARG%d" % i])
    i += 1
request = {{"address": os.environ.get("RSYNC_HOST_ADDR", ""), "args": args}}
with socket.socket(socket.AF_UNIX) as s:
    s.connect({socket!r})
    s.sendall(json.dumps(request).encode() + b"\\n")
    reply = json.loads(s.makefile().readline())
if reply.get("message"):
    print(reply["message"])
sys.exit(reply.get("exit", 0))
"""


@dataclass
class RsyncServer(RunningServer):
    """The running daemon, plus what rsync tests need."""

    state: Path | None = None
    daemon_port: int = 0  # the daemon itself, without the relay (no faults)


async def start(
    tree: Path, faults: Faults, *, protocol: str = "rsync", user: str | None = None, password: str | None = None
) -> RsyncServer:
    """Start the daemon and its relay; with `user`/`password` the module requires that login."""
    state = Path(tempfile.mkdtemp(prefix="biomaj-rsyncd-"))
    relay = _Relay(faults)
    hook_socket = str(state / "hook.sock")
    hook_server = await asyncio.start_unix_server(relay.hook, path=hook_socket)
    hook_script = state / "hook.py"
    hook_script.write_text(_HOOK.format(socket=hook_socket))
    auth = ""
    if user:
        secrets = state / "secrets"
        secrets.write_text(f"{user}:{password}\n")
        secrets.chmod(0o600)
        auth = f"auth users = {user}\nsecrets file = {secrets}\n"
    daemon = None
    for _ in range(5):  # a free port may be taken between finding it and the daemon's bind
        port = _free_port()
        conf = state / "rsyncd.conf"
        conf.write_text(
            f"address = 127.0.0.1\nuse chroot = false\npid file = {state}/rsyncd.pid\n"
            f"log file = {state}/rsyncd.log\nuid = {os.getuid()}\ngid = {os.getgid()}\n"
            f"[{MODULE}]\npath = {tree}\nread only = true\n{auth}"
            f"pre-xfer exec = {sys.executable} -I -S {hook_script}\n"
        )
        daemon = await asyncio.create_subprocess_exec(
            "rsync", "--daemon", "--no-detach", f"--port={port}", f"--config={conf}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        if await _listening(daemon, port):
            break
        await _kill_group(daemon)
        daemon = None
    if daemon is None:
        hook_server.close()
        log = (state / "rsyncd.log").read_text() if (state / "rsyncd.log").exists() else ""
        shutil.rmtree(state, ignore_errors=True)
        raise RuntimeError(f"rsync daemon did not start: {log[-2000:]}")
    relay.daemon_port = port
    relay_server = await asyncio.start_server(relay.connect, "127.0.0.1", 0)
    relay_port = relay_server.sockets[0].getsockname()[1]

    async def stop() -> None:
        relay_server.close()
        relay.close_all()
        await _kill_group(daemon)
        hook_server.close()
        shutil.rmtree(state, ignore_errors=True)

    config = RemoteConfig(
        protocol="rsync", host="127.0.0.1", port=relay_port, root=f"/{MODULE}/", user=user, password=password,
        connect_timeout=10, read_timeout=30,
    )
    return RsyncServer(config, faults, stop, state=state, daemon_port=port)


class _Link:
    """One relayed connection, and the fault it carries (set by the hook)."""

    def __init__(self, client: asyncio.StreamWriter):
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.path: str | None = None  # set when the hook saw a fetch on this link
        self.drop_after: int | None = None
        self.stall: float | None = None
        self.passed = 0  # bytes of the daemon's answer passed since the hook

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class _Relay:
    """The TCP relay in front of the daemon, and the answers to the daemon's pre-xfer hook."""

    def __init__(self, faults: Faults):
        self.faults = faults
        self.daemon_port = 0
        self.links: dict[str, _Link] = {}  # source address towards the daemon -> link
        self.stopping = asyncio.Event()
        self._addresses = itertools.cycle(f"127.0.0.{n}" for n in range(2, 255))

    async def connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        address = next(self._addresses)
        try:
            up_reader, link.upstream = await asyncio.open_connection(
                "127.0.0.1", self.daemon_port, local_addr=(address, 0)
            )
        except OSError:
            writer.transport.abort()
            return
        self.links[address] = link
        try:
            await asyncio.gather(self._pump(reader, link.upstream, link), self._pump_answer(up_reader, link))
        finally:
            link.close()
            if self.links.get(address) is link:
                del self.links[address]
            if link.path is not None:
                self.faults.transfer_ended()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except OSError:  # a reset on one side is passed on as a reset
            link.close()

    async def _pump_answer(self, reader: asyncio.StreamReader, link: _Link) -> None:
        try:
            while data := await reader.read(65536):
                if link.path is not None:
                    if link.drop_after is not None and link.passed + len(data) >= link.drop_after:
                        link.client.write(data[: max(0, link.drop_after - link.passed)])
                        await link.client.drain()
                        link.close()
                        return
                    link.passed += len(data)
                    if link.stall is not None and link.passed >= STALL_AFTER:
                        stall, link.stall = link.stall, None
                        link.client.write(data)
                        await link.client.drain()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.stopping.wait(), stall)
                        continue
                link.client.write(data)
                await link.client.drain()
            link.client.write_eof()
        except OSError:
            link.close()

    def close_all(self) -> None:
        self.stopping.set()
        for link in list(self.links.values()):
            link.close()

    async def hook(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            writer.write(json.dumps(self.decide(request)).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    def decide(self, request: dict) -> dict:
        faults = self.faults
        faults.logins += 1
        args = request["args"]
        if "--list-only" in args:
            return {}
        path = args[-1].strip("/") if args else ""
        if faults.take(faults.transient_errors, path):
            faults.transfers[path] += 1
            return {"exit": 1, "message": "temporary failure (injected)"}
        if faults.take(faults.throttle, path):
            faults.transfers[path] += 1
            return {"exit": 1, "message": "max connections (1) reached -- try again later"}
        faults.transfer_started(path)
        link = self.links.get(request["address"])
        if link is not None:  # None: a client that went to the daemon's own port
            link.path = path
            link.drop_after = faults.drop_after.pop(path, None)
            link.stall = faults.stall.pop(path, None)
        else:
            faults.transfer_ended()
        return {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _listening(daemon: asyncio.subprocess.Process, port: int) -> bool:
    for _ in range(100):
        if daemon.returncode is not None:
            return False
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return True
    return False


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait(), 5)
