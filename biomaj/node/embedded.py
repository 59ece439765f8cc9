"""The actors an in-process ``biomaj ctl`` command needs: a manager, downloaders and processors on an
in-process bus, over the configured store. ``biomaj ctl update`` runs its job here when
``bus.url`` is the in-process bus (with RabbitMQ, :mod:`biomaj.node.cluster` hands it to the
manager nodes instead).
"""

from __future__ import annotations

import contextlib
import os
import socket

from biomaj.auth.identity import current_user
from biomaj.bus.memory import MemoryBus
from biomaj.config.service import Config
from biomaj.node.build import Wiring, build_actor
from biomaj.node.job_client import JobClient
from biomaj.state import MemoryState
from biomaj.storage import open_store


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


class Embedded(JobClient):
    """A manager and downloaders in this process; use as ``async with Embedded(config) as e``."""

    def __init__(self, config: Config, user: str | None = None):
        self.config = config
        super().__init__(open_store(config.storage_url, config.root), MemoryBus(), MemoryState(),
                         user or current_user())
        wiring = Wiring(config, self.bus, self.state, self.store, config.node_id, manager_id=cli_worker(),
                        recover=False)
        self.manager = build_actor("manager", wiring)
        self.downloader = build_actor("downloader", wiring)
        self.processor = build_actor("processor", wiring)
        self.budget = wiring.budget
        self.webhooks = wiring.webhooks

    async def __aenter__(self) -> Embedded:
        await super().__aenter__()
        try:
            await self.downloader.start()
            await self.processor.start()
            await self.manager.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        for stopping in (self.manager.stop, self.processor.stop, self.downloader.stop, self.budget.close,
                         self.webhooks.close):  # the job's last events get notify.webhook_exit_wait
            with contextlib.suppress(Exception):
                await stopping()
        await super().close()

    async def forget_dead_job(self, job_id: str) -> bool:
        """A job still 'running' for a ``biomaj ctl`` process of this host that died (killed):
        record it as failed so that the bank can be worked on again. True if it was one."""
        job = await self.store.get_job(job_id)
        if job is None or job["state"] != "running" or not _dead_cli_worker(job.get("worker")):
            return False
        await self.store.finish_job(job_id, "failed", error=f"its process ({job['worker']}) died")
        return True
