"""The actors an in-process ``biomaj ctl`` command needs: a manager, downloaders and processors on an
in-process bus, over the configured store. ``biomaj ctl update`` runs its job here when no
server is asked to (remote mode comes with the web API).
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any, Awaitable, Callable

from biomaj.actors.downloader import DownloaderActor, DownloaderSettings
from biomaj.actors.manager import ManagerActor, ManagerSettings, request_cancel, submit_job
from biomaj.actors.processor import ProcessorActor, ProcessorSettings
from biomaj.bus import names
from biomaj.bus.memory import MemoryBus
from biomaj.bus.messages import JobEvent
from biomaj.config.service import Config
from biomaj.runtime.identity import admins_of, current_user, secret_reader
from biomaj.state import MemoryState
from biomaj.storage import open_store
from biomaj.storage.base import FINAL_JOB_STATES, DuplicateJob

OnEvent = Callable[[JobEvent], Awaitable[None] | None]


def cli_worker(pid: int | None = None) -> str:
    """The worker name of the manager inside a ``biomaj ctl`` process (host and pid, so that a
    job left running by a killed command can be recognised)."""
    return f"cli@{socket.gethostname()}:{pid or os.getpid()}"


def _dead_cli_worker(worker: str | None) -> bool:
    prefix = f"cli@{socket.gethostname()}:"
    if not worker or not worker.startswith(prefix) or not worker[len(prefix):].isdigit():
        return False
    try:
        os.kill(int(worker[len(prefix):]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Embedded:
    """A manager and downloaders in this process; use as ``async with Embedded(config) as e``."""

    def __init__(self, config: Config, user: str | None = None):
        self.config = config
        self.user = user or current_user()
        self.store = open_store(config.storage_url, config.root)
        self.bus = MemoryBus()
        self.state = MemoryState()
        limits = config.settings.limits
        self.manager = ManagerActor(
            self.bus, ManagerSettings(concurrency=limits.jobs, node_id=cli_worker(), recover=False),
            store=self.store, state=self.state, global_properties=config.global_properties,
            admins=admins_of(config),
        )
        self.downloader = DownloaderActor(
            self.bus, DownloaderSettings(concurrency=limits.downloads, per_host=limits.downloads_per_host,
                                         node_id=config.node_id),
            state=self.state, read_secret=secret_reader(config),
        )
        self.processor = ProcessorActor(
            self.bus, ProcessorSettings(concurrency=limits.processes, node_id=config.node_id), state=self.state)

    async def __aenter__(self) -> Embedded:
        await self.store.open()
        try:
            await self.downloader.start()
            await self.processor.start()
            await self.manager.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for closing in (self.manager.stop, self.processor.stop, self.downloader.stop, self.bus.close, self.state.close,
                        self.store.close):
            with contextlib.suppress(Exception):
                await closing()

    async def run_job(self, kind: str, bank: str, options: dict[str, Any] | None = None,
                      on_event: OnEvent | None = None, on_submitted: Callable[[str], None] | None = None) -> dict:
        """Queue a job, run it here, and return its final record (events go to ``on_event``)."""
        subscription = await self.bus.subscribe(f"{names.JOB_TOPIC}.#", buffer=100_000)
        async with subscription:
            try:
                job_id = await submit_job(self.store, self.bus, kind, bank, options, self.user)
            except DuplicateJob as exc:
                if not await self._forget_dead_job(exc.job_id):
                    from biomaj.errors import BiomajError

                    raise BiomajError(f"a {kind} of {bank} is already queued or running (job {exc.job_id}); "
                                      f"`biomaj ctl cancel {bank}` stops it") from None
                job_id = await submit_job(self.store, self.bus, kind, bank, options, self.user)
            if on_submitted is not None:
                on_submitted(job_id)
            async for event in subscription:
                if not isinstance(event, JobEvent) or event.job_id != job_id:
                    continue
                if on_event is not None:
                    maybe = on_event(event)
                    if maybe is not None:
                        await maybe
                if event.bank == bank and event.kind == kind and event.state in FINAL_JOB_STATES:
                    break
        return await self.store.get_job(job_id)

    async def _forget_dead_job(self, job_id: str) -> bool:
        """A job still 'running' for a ``biomaj ctl`` process of this host that died (killed):
        record it as failed so that the bank can be worked on again. True if it was one."""
        job = await self.store.get_job(job_id)
        if job is None or job["state"] != "running" or not _dead_cli_worker(job.get("worker")):
            return False
        await self.store.finish_job(job_id, "failed", error=f"its process ({job['worker']}) died")
        return True

    async def cancel(self, job_id: str) -> dict:
        return await request_cancel(self.store, self.bus, self.state, job_id)
