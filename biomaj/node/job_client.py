"""What a ``biomaj ctl`` command uses to run a bank job and follow it to its end.

Two kinds of client share this base: :class:`~biomaj.node.embedded.Embedded` runs the job in
the command's own process (single-node mode, in-process bus), :class:`~biomaj.node.cluster.Cluster`
hands it to the manager nodes of a distributed deployment through RabbitMQ. Either way the job
is recorded in the store first, then followed through its events; the store is read too every few
seconds, so that a lost event (a broker connection cut) never leaves the command waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable

from biomaj.bus import Bus, names
from biomaj.bus.messages import JobEvent
from biomaj.errors import BiomajError, with_article
from biomaj.jobs import request_cancel, submit_job
from biomaj.state import State
from biomaj.storage.base import FINAL_JOB_STATES, DuplicateJob, Store

OnEvent = Callable[[JobEvent], Awaitable[None] | None]

#: Seconds without an event after which the job record is read from the store.
STORE_POLL = 3.0
#: Seconds a job may wait in the queue before the command says so.
QUEUED_WARNING = 30.0

log = logging.getLogger(__name__)


async def deliver(event: JobEvent, on_event: OnEvent | None, kind: str, bank: str) -> bool:
    """Hand a job's event to ``on_event``; True when it is the job's final one."""
    if on_event is not None:
        maybe = on_event(event)
        if maybe is not None:
            await maybe
    return event.bank == bank and event.kind == kind and event.state in FINAL_JOB_STATES


class JobClient:
    """Submits jobs to the managers listening on ``bus`` and follows them; use as
    ``async with client``. Subclasses add actors or checks."""

    def __init__(self, store: Store, bus: Bus, state: State | None, user: str):
        self.store = store
        self.bus = bus
        self.state = state
        self.user = user

    async def __aenter__(self) -> JobClient:
        try:
            await self.store.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for closing in (self.bus.close, self.state.close if self.state else None, self.store.close):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing()

    async def before_submit(self, kind: str, bank: str) -> None:
        """Refuse a job that nobody would run (a hook for subclasses)."""

    def why_queued(self) -> str:
        """What to check when a job stays queued (a hook for subclasses)."""
        return "the managers are busy with other jobs (limits.jobs)"

    async def forget_dead_job(self, job_id: str) -> bool:
        """The active job ``job_id`` blocks a new one; True if it was recorded as failed because
        its runner is known to be dead (a hook for subclasses)."""
        return False

    async def run_job(self, kind: str, bank: str, options: dict[str, Any] | None = None,
                      on_event: OnEvent | None = None, on_submitted: Callable[[str], None] | None = None) -> dict:
        """Queue a job, follow its events to the end and return its final record."""
        await self.before_submit(kind, bank)
        # job.*: the job's own events, not one per file (names.file_topic)
        subscription = await self.bus.subscribe(f"{names.JOB_TOPIC}.*", buffer=100_000)
        async with subscription:
            try:
                job_id = await submit_job(self.store, self.bus, kind, bank, options, self.user)
            except DuplicateJob as exc:
                if not await self.forget_dead_job(exc.job_id):
                    raise BiomajError(f"{with_article(kind)} of {bank} is already queued or running (job {exc.job_id}); "
                                      f"`biomaj ctl cancel {bank}` stops it") from None
                job_id = await submit_job(self.store, self.bus, kind, bank, options, self.user)
            if on_submitted is not None:
                on_submitted(job_id)
            queued_since = time.monotonic()
            while True:
                try:
                    event = await asyncio.wait_for(anext(subscription), STORE_POLL)
                except asyncio.TimeoutError:
                    job = await self.store.get_job(job_id)
                    if job is None or job["state"] in FINAL_JOB_STATES:
                        break
                    if job["state"] != "queued":
                        queued_since = None
                    elif queued_since is not None and time.monotonic() - queued_since > QUEUED_WARNING:
                        log.warning("the %s of %s (job %s) is still queued after %.0f s: %s", kind, bank, job_id,
                                    QUEUED_WARNING, self.why_queued())
                        queued_since = None
                    continue
                except StopAsyncIteration:
                    break
                if not isinstance(event, JobEvent) or event.job_id != job_id:
                    continue
                if await deliver(event, on_event, kind, bank):
                    break
        job = await self.store.get_job(job_id)
        if job is None:
            raise BiomajError(f"job {job_id} vanished from the store")
        return job

    async def cancel(self, job_id: str) -> dict:
        """Ask the job to stop: at once when queued, within seconds when running."""
        return await request_cancel(self.store, self.bus, self.state, job_id)
