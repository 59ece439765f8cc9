"""A BioMAJ 3 test installation in a temporary folder, run by real actors.

``Site`` lays out conf/ data/ log/ process/ lock/ cache/ like upstream's ``UtilsForTest``, with
a set of BioMAJ 3-format files (``BankFiles``: ours from tests/fixtures, or upstream's in the
compatibility suite) rewritten to point at the temporary tree: a copy of the set's ``bank/``
stands for the remote of ``protocol=local`` banks, and servers started by the tests for the others. Updates run through a real in-process bus, a real
downloader actor and a real SQLite store.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from biomaj.actors.downloader import DownloaderActor, DownloaderSettings
from biomaj.actors.processor import ProcessorActor, ProcessorSettings
from biomaj.bus.memory import MemoryBus
from biomaj.config.properties import BankProperties
from biomaj.state import MemoryState
from biomaj.storage.sqlite import SQLiteStore
from biomaj.workflow import runner
from biomaj.workflow.bank import RunContext
from biomaj.process.runner import ProcessRunner
from biomaj.runtime.dispatch import Downloads, Processes
from biomaj.workflow.update import UpdateOptions
from tests.conftest import BankFiles

USER = "tester"


def set_property(path: Path, key: str, value: str) -> None:
    """Set ``key=value`` in a properties file (replacing the line, or adding it)."""
    text = path.read_text()
    pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", re.MULTILINE | re.IGNORECASE)
    line = f"{key}={value}"
    text = pattern.sub(lambda _: line, text, count=1) if pattern.search(text) else text.rstrip("\n") + f"\n{line}\n"
    path.write_text(text)


class Site:
    """The temporary installation; ``await site.open()`` starts the actors."""

    def __init__(self, root: Path, files: BankFiles):
        self.root = root
        self.files = files
        self.flavour = files.name  # "ours" or "upstream"
        self.expect = files.expect
        self.conf = root / "conf"
        self.data = root / "data"
        self.remote = root / "remote"  # the set's bank/, writable
        for name in ("conf", "data", "log", "process", "lock", "cache"):
            (root / name).mkdir(parents=True, exist_ok=True)
        shutil.copytree(files.remote, self.remote)
        for path in self.remote.iterdir():
            path.chmod(0o644)
        self.global_properties = self.conf / "global.properties"
        shutil.copy(files.test_global, self.global_properties)
        self.global_properties.chmod(0o644)
        for key, folder in (("conf.dir", "conf"), ("log.dir", "log"), ("process.dir", "process"),
                            ("data.dir", "data"), ("lock.dir", "lock"), ("cache.dir", "cache")):
            set_property(self.global_properties, key, str(root / folder))
        self.store = SQLiteStore(root / "db" / "biomaj.sqlite")
        self.bus = MemoryBus()
        self.state = MemoryState()
        self.downloads = Downloads(self.bus)
        self.downloader = DownloaderActor(self.bus, DownloaderSettings(concurrency=4, node_id="test"),
                                          state=self.state, read_secret=self.read_secret)
        self.processor = ProcessorActor(self.bus, ProcessorSettings(concurrency=4, node_id="test"), state=self.state)
        self.process_requests = Processes(self.bus)
        self.processes = ProcessRunner(self.process_requests)
        self.user = USER
        self.admins: frozenset[str] = frozenset()

    def read_secret(self, bank: str, key: str) -> str | None:
        return BankProperties.load(self.global_properties, bank).get(key)

    async def open(self) -> Site:
        (self.root / "db").mkdir(exist_ok=True)
        await self.store.open()
        await self.downloader.start()
        await self.downloads.start()
        await self.processor.start()
        await self.process_requests.start()
        return self

    async def close(self) -> None:
        await self.process_requests.stop()
        await self.processor.stop()
        await self.downloads.stop()
        await self.downloader.stop()
        await self.bus.close()
        await self.store.close()

    # --- banks -------------------------------------------------------------------------------

    def add_bank(self, name: str, **overrides: str) -> Path:
        """Copy bank ``name`` of the set; local remotes point at the writable remote tree."""
        path = self.conf / f"{name}.properties"
        shutil.copy(self.files.bank(name), path)
        path.chmod(0o644)
        text = path.read_text()
        if re.search(r"^protocol\s*=\s*(local|none|multi)\s*$", text, re.MULTILINE):
            set_property(path, "remote.dir", str(self.remote) + "/")
        for key, value in overrides.items():
            set_property(path, key.replace("__", "."), value)
        return path

    def source_value(self, bank: str, key: str) -> str | None:
        """``key`` as the set's bank file writes it (before add_bank rewrites anything)."""
        return BankProperties.load(self.files.test_global, self.files.bank(bank), environ={}).get(key)

    def set(self, bank: str, **values: str) -> None:
        for key, value in values.items():
            set_property(self.conf / f"{bank}.properties", key.replace("__", "."), value)

    def bank_dir(self, bank: str) -> Path:
        props = BankProperties.load(self.global_properties, bank)
        return self.data / props.get("dir.version")

    # --- running -----------------------------------------------------------------------------

    def context(self, job_id: str = "job", user: str | None = None) -> RunContext:
        return RunContext(store=self.store, global_properties=self.global_properties, job_id=job_id,
                          user=user or self.user, admins=self.admins, downloads=self.downloads,
                          processes=self.processes)

    async def update(self, bank: str, *, user: str | None = None, **options: Any) -> runner.Outcome:
        return await runner.update_bank(self.context(user=user), bank, UpdateOptions(**options))

    async def doc(self, bank: str) -> dict:
        return await self.store.get_bank(bank)

    async def session(self, bank: str, session_id: float | None = None) -> dict:
        doc = await self.doc(bank)
        sid = session_id if session_id is not None else doc["last_update_session"]
        return next(s for s in doc["sessions"] if s["id"] == sid)


# --- a `biomaj init` root and the real CLI -------------------------------------------------------


async def run_cli(command: list[str], timeout: float = 90.0, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a biomaj command as a user would (``env``: added to this process's environment); the
    event loop (and the test servers) keep running."""
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE,
                                                   env={**os.environ, **env} if env else None)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(command)} did not finish in {timeout}s")
    return process.returncode, out.decode(), err.decode()


def write_bank(root: Path, name: str, **values: str) -> None:
    """A bank file in the conf/ of a `biomaj init` root (``a__b=v`` writes ``a.b=v``)."""
    lines = ["[GENERAL]", f"db.fullname={name} fault test", f"db.name={name}", "db.type=nucleic",
             f"dir.version={name}", f"offline.dir.name=offline/{name}_tmp", "keep.old.version=1"]
    lines += [f"{key.replace('__', '.')}={value}" for key, value in values.items()]
    (root / "conf" / f"{name}.properties").write_text("\n".join(lines) + "\n")
