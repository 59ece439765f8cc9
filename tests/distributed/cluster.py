"""A distributed biomaj installation for the tests: real ``biomaj serve`` processes (a manager,
download nodes ...) on real RabbitMQ and Redis, driven with the real ``biomaj ctl``.

Each test gets its own RabbitMQ virtual host and Redis key prefix, so that nothing another test
(or a user's biomaj on this machine) left in the broker can interfere.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from biomaj.state import NodeInfo, open_state

BIN = Path(sys.executable).with_name("biomaj")


@dataclass
class Node:
    """One ``biomaj serve`` process."""

    node_id: str
    roles: str
    process: asyncio.subprocess.Process
    log: Path
    killed: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye (a crashed or lost host)."""
        self.killed = True
        if self.running:
            self.process.send_signal(signal.SIGKILL)


class Cluster:
    """The installation under ``root``: config.yml pointing at ``bus_url`` and ``state_url``."""

    def __init__(self, root: Path, bus_url: str, state_url: str, prefix: str):
        self.root = root
        self.bus_url = bus_url
        self.state_url = state_url
        self.prefix = prefix
        self.nodes: list[Node] = []
        self.web_port = free_port()
        subprocess.run([str(BIN), "init", str(root)], check=True, capture_output=True)
        self.config = root / "config.yml"
        self.configure()

    def configure(self, bus_url: str | None = None, limits: dict | None = None, **node: float) -> None:
        """(Re)write config.yml: the transports, fast heartbeats and leases (a killed node's
        connection slots back after 3 s), small per-node limits (so that work spreads over nodes),
        4 connections to a server for the whole cluster; ``limits`` changes some of them."""
        settings = yaml.safe_load(self.config.read_text())
        settings["bus"] = {"url": bus_url or self.bus_url}
        settings["state"] = {"url": self.state_url}
        settings["redis"] = {"prefix": self.prefix}
        settings["node"] = {"heartbeat_interval": 0.5, "heartbeat_ttl": 2.0, "lease_ttl": 3.0, "stop_grace": 2.0,
                            **node}
        settings["limits"] = {"jobs": 2, "downloads": 2, "per_host": 4, "host_lease_ttl": 3.0, "processes": 1,
                              **(limits or {})}
        settings["logging"] = {"level": "INFO"}
        settings.setdefault("web", {})["port"] = self.web_port
        self.config.write_text(yaml.safe_dump(settings))

    def write_bank(self, name: str, port: int, **values: str) -> None:
        """A bank served over HTTP by the test remote on ``port`` (its folder ``/<name>/``)."""
        lines = ["[GENERAL]", f"db.fullname={name} cluster test", f"db.name={name}", "db.type=nucleic",
                 f"dir.version={name}", f"offline.dir.name=offline/{name}_tmp", "keep.old.version=1",
                 "protocol=http", f"server=127.0.0.1:{port}", f"remote.dir=/{name}/",
                 r"remote.files=^.*\.dat$", r"local.files=^.*\.dat$"]
        lines += [f"{key.replace('__', '.')}={value}" for key, value in values.items()]
        (self.root / "conf" / f"{name}.properties").write_text("\n".join(lines) + "\n")

    # --- processes -------------------------------------------------------------------------------

    async def start_node(self, roles: str, node_id: str | None, wrapper: tuple[str, ...] = ()) -> Node:
        """Start ``biomaj serve --role ROLES`` (``--node-id`` unless None: the default id), run
        through ``wrapper`` (e.g. ``unshare ...``) when given."""
        log = self.root / f"{node_id or 'default'}.{len(self.nodes)}.log"
        naming = ("--node-id", node_id) if node_id is not None else ()
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *wrapper, str(BIN), "-c", str(self.config), "serve", "--role", roles, *naming,
                stdout=out, stderr=subprocess.STDOUT, env=self._env())
        node = Node(node_id or "", roles, process, log)
        self.nodes.append(node)
        return node

    async def start_nodes(self, *specs: tuple[str, str]) -> list[Node]:
        """Start ``(roles, node_id)`` nodes and wait until every one is registered."""
        started = [await self.start_node(roles, node_id) for roles, node_id in specs]
        await self.wait_registered([n.node_id for n in started])
        return started

    async def registered(self) -> list[NodeInfo]:
        state = open_state(self.state_url, prefix=f"{self.prefix}:")
        try:
            return await state.nodes()
        finally:
            await state.close()

    async def wait_registered(self, node_ids: list[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            live = {n.node_id for n in await self.registered()}
            if set(node_ids) <= live:
                return
            for node in self.nodes:
                if node.node_id in node_ids and not node.running:
                    raise AssertionError(f"node {node.node_id} exited ({node.process.returncode}):\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes {set(node_ids) - live} not registered after {timeout}s:\n{self.logs()}")
            await asyncio.sleep(0.1)

    async def ctl(self, *args: str, timeout: float = 120.0) -> tuple[int, str, str]:
        """Run ``biomaj ctl ARGS`` to its end: (exit code, stdout, stderr)."""
        process = await self.start_ctl(*args)
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"ctl {' '.join(args)} did not finish in {timeout}s:\n{self.logs()}") from None
        return process.returncode, out.decode(), err.decode()

    async def start_ctl(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(BIN), "-c", str(self.config), "ctl", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self._env())

    async def stop(self) -> None:
        """SIGTERM every node still running, SIGKILL what is left after 15 s."""
        for node in self.nodes:
            if node.running:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                await asyncio.wait_for(node.process.wait(), 15)
            except TimeoutError:
                node.kill()
                await node.process.wait()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "REDIS_", "MONGO_"))}
        env.pop("BIOMAJ_CONFIG", None)
        return env

    def logs(self, lines: int = 40) -> str:
        """The last lines of every node's log, for failure messages."""
        parts = []
        for node in self.nodes:
            text = node.log.read_text(errors="replace").splitlines()[-lines:] if node.log.exists() else []
            parts.append(f"--- {node.node_id} ({node.roles}, pid {node.pid}, exit {node.process.returncode})\n"
                         + "\n".join(text))
        return "\n".join(parts)

    # --- results ---------------------------------------------------------------------------------

    def release_dir(self, bank: str) -> Path:
        return (self.root / "data" / bank / "current").resolve()

    def session_logs(self, bank: str) -> str:
        return "\n".join(p.read_text() for p in sorted((self.root / "log" / bank).glob("*/*.log")))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def digests(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file directly in ``folder``."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def make_remote_files(folder: Path, count: int, size: int, prefix: str = "f") -> dict[str, str]:
    """``count`` files of random bytes in ``folder``; returns their digests."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{prefix}{i:03d}.dat").write_bytes(os.urandom(size))
    return digests(folder)


def downloads_by_node(session_log: str) -> dict[str, int]:
    """The ``downloaded by node`` counts of the last download step in a session log."""
    found: dict[str, int] = {}
    for line in session_log.splitlines():
        if "Workflow:wf_download:downloaded by node:" in line:
            found = {}
            for part in line.split("downloaded by node:", 1)[1].split(","):
                node, count = part.strip().rsplit(" ", 1)
                found[node] = int(count)
    return found
