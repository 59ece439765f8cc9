"""A real node with the ftp role listening (port 0, a passive range of free ports) on a `biomaj init`
root with two banks updated by their owner: ``example`` (public) and ``secret`` (private); users
``owner``, ``user`` (plain) and ``admin``; and :class:`Client`, Python's ftplib run in a thread."""

from __future__ import annotations

import asyncio
import ftplib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from biomaj.auth.users import Users
from biomaj.config.scaffold import init_root
from biomaj.config.service import load_config
from biomaj.jobs import submit_job
from biomaj.node.serve import Node
from tests.servers.published_tree import release_dir as published_release_dir

T = TypeVar("T")
PASSIVE_PORTS = 4


def free_range(count: int) -> range:
    """``count`` consecutive TCP ports free on the loopback interface right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return range(first, first + count)
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def secret_bank(root: Path) -> None:
    """conf/secret.properties: the example bank under another name, private from its first update."""
    text = (root / "conf" / "example.properties").read_text()
    text = (text.replace("db.name=example", "db.name=secret").replace("dir.version=example", "dir.version=secret")
            .replace("offline/example_tmp", "offline/secret_tmp"))
    (root / "conf" / "secret.properties").write_text(text + "visibility.default=private\n")


async def update(node: Node, bank: str, user: str = "owner") -> None:
    job_id = await submit_job(node.store, node.bus, "update", bank, {}, user)
    async with asyncio.timeout(90):
        while (job := await node.store.get_job(job_id))["state"] not in ("done", "failed", "cancelled"):
            await asyncio.sleep(0.1)  # the manager runs the job; its record is what tells
    assert job["state"] == "done", job


async def release_dir(node: Node, bank: str) -> Path:
    return await published_release_dir(node.store, bank)


@dataclass
class Site:
    node: Node
    root: Path
    port: int
    passive: range
    keys: dict[str, str]  # user -> API key

    @property
    def actor(self) -> Any:
        return next(a for a in self.node.actors if a.name == "ftp")

    def connect(self, source: str | None = None) -> ftplib.FTP:
        ftp = ftplib.FTP(encoding="utf-8", source_address=(source, 0) if source else None)
        ftp.connect("127.0.0.1", self.port, timeout=10)
        return ftp

    def login(self, who: str, password: str | None = None) -> ftplib.FTP:
        """A session as ``who`` (anonymous, owner, user, admin) with its API key, or ``password``."""
        ftp = self.connect()
        if password is None:
            password = "me@example.org" if who == "anonymous" else self.keys[who]
        ftp.login(who, password)
        return ftp

    async def run(self, scenario: Callable[..., T], *args: Any) -> T:
        """A blocking ftplib scenario, in a thread: the server runs on this event loop."""
        return await asyncio.to_thread(scenario, *args)


@pytest.fixture
async def ftp_site(tmp_path) -> Site:
    root = tmp_path / "root"
    init_root(root, web_port=0)
    secret_bank(root)
    config = load_config(root / "config.yml", environ={})
    passive = free_range(PASSIVE_PORTS)
    ftp = config.settings.ftp
    ftp.enabled, ftp.port, ftp.passive_ports = True, 0, f"{passive.start}-{passive.stop - 1}"
    ftp.idle_timeout, ftp.data_timeout = 30, 10
    node = Node(config, ["manager", "download", "process", "ftp"])
    await node.start()
    try:
        users = Users(node.store)
        keys = {name: (await users.create(name, admin=admin))[1]
                for name, admin in (("owner", False), ("user", False), ("admin", True))}
        await update(node, "example")
        await update(node, "secret")
        actor = next(a for a in node.actors if a.name == "ftp")
        yield Site(node, root, actor.port, passive, keys)
    finally:
        await node.stop()
