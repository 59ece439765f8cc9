"""Scheduler fixtures: a `biomaj init` root with its SQLite store, a fake clock, and helpers to
read and settle the jobs the scheduler queues."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from biomaj.actors.scheduler import SchedulerActor, SchedulerSettings
from biomaj.bus.memory import MemoryBus
from biomaj.config.scaffold import init_root
from biomaj.config.service import load_config
from biomaj.scheduler import schedules
from biomaj.storage import Store, open_store
from biomaj.storage.base import ACTIVE_JOB_STATES, JOB_DONE
from tests.web.conftest import api, bare_api  # noqa: F401 - the web tests' node and users (test_schedules_api.py)


def utc(*args: int) -> float:
    """Epoch seconds of a UTC date (the tests' schedulers read cron expressions in UTC)."""
    return datetime(*args, tzinfo=timezone.utc).timestamp()


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = now


@dataclass
class Site:
    root: Path
    store: Store
    clock: FakeClock

    @property
    def global_properties(self) -> Path:
        return self.root / "conf" / "global.properties"

    def scheduler(self, store: Store | None = None, **settings) -> SchedulerActor:
        """A scheduler on this site's store (or ``store``), its own bus, the fake clock, UTC."""
        settings = {"timezone": "UTC", **settings}
        return SchedulerActor(MemoryBus(), SchedulerSettings(**settings), store=store or self.store,
                              global_properties=self.global_properties, clock=self.clock)

    async def add(self, name: str, cron: str, banks=("example",), user: str = "alice") -> dict:
        doc, _ = await schedules.add_schedule(self.store, self.global_properties, name=name, cron=cron,
                                              banks=list(banks), user=user, by="admin", now=self.clock())
        return doc

    async def jobs(self, kind: str | None = None) -> list[dict]:
        jobs = await self.store.list_jobs(limit=None)
        return sorted((j for j in jobs if kind is None or j["kind"] == kind), key=lambda j: j["created"])

    async def settle(self, result: dict | None = None, state: str = JOB_DONE) -> list[dict]:
        """Finish every active job as a manager would (``result`` for each): returns them."""
        done = []
        for job in await self.store.list_jobs(state=ACTIVE_JOB_STATES, limit=None):
            await self.store.claim_job("test-manager", job["id"])
            done.append(await self.store.finish_job(job["id"], state, result=result,
                                                    error=None if state == JOB_DONE else "it failed"))
        return done


@pytest.fixture
async def site(tmp_path: Path):
    root = tmp_path / "root"
    init_root(root, web_port=0)
    config = load_config(root / "config.yml")
    store = open_store(config.storage_url, config.root)
    async with store:
        yield Site(root, store, FakeClock(utc(2030, 1, 7, 2, 0)))


async def wait_for(predicate, timeout: float = 60.0, every: float = 0.1):
    """Poll ``predicate()`` (async) until it answers something true; its answer."""
    async with asyncio.timeout(timeout):
        while True:
            answer = await predicate()
            if answer:
                return answer
            await asyncio.sleep(every)  # another task (the manager) does the work: polling its record

