"""A bank lease: the shared state's lock on a bank, kept alive while a job works on it.

The bank lock file (``biomaj.workflow.locks``) is what BioMAJ 3 sites know, but a file cannot
say whether its holder on *another host* still runs. The lease can: its holder renews it every
``ttl / 3`` seconds, so it expires within ``ttl`` of its holder's death (SIGKILL, a lost host).
Every manager takes the lease of a bank before running a job on it, so with the Redis state
several managers never run two workflows on one bank, and a lease that is free while the lock
file names a job means that job's process is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable

from biomaj.errors import BiomajError
from biomaj.state import LockInfo, LockOwner, State
from biomaj.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: Seconds a lease lives without renewal.
LEASE_TTL = 30.0


def lease_name(bank: str) -> str:
    """The state lock name of a bank's lease."""
    return f"bank:{bank}"


class BankBusy(BiomajError):
    """Another live job holds the bank's lease."""

    def __init__(self, bank: str, holder: LockInfo):
        owner = holder.owner
        super().__init__(f"bank {bank} is being worked on by job {owner.job_id} on node {owner.node_id} "
                         f"(process {owner.pid} on {owner.host}); wait for it, or `biomaj ctl cancel {bank}`")


class BankLease:
    """``async with BankLease(state, bank, owner, on_lost=...)``: hold the lease or raise
    :class:`BankBusy`. ``on_lost`` is called if the lease cannot be renewed before it expires
    (the state unreachable for a whole TTL, or broken by an admin): the job must then stop, as
    another manager may take the bank."""

    def __init__(self, state: State, bank: str, owner: LockOwner, *, ttl: float = LEASE_TTL,
                 on_lost: Callable[[str], None] | None = None):
        self.state = state
        self.bank = bank
        self.name = lease_name(bank)
        self.owner = owner
        self.ttl = ttl
        self.on_lost = on_lost
        self.lost: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BankLease:
        if not await self.state.acquire_lock(self.name, self.owner, self.ttl):
            holder = await self.state.get_lock(self.name)
            if holder is not None and holder.owner.job_id != self.owner.job_id:
                raise BankBusy(self.bank, holder)
            if holder is not None:
                # The same job's earlier run, dead: the store let this run claim the job, which it
                # never does while a live manager runs it.
                log.warning("bank %s: taking over the lease of job %s left by %s (pid %d on %s)", self.bank,
                            holder.owner.job_id, holder.owner.node_id, holder.owner.pid, holder.owner.host)
                await self.state.break_lock(self.name)
            if not await self.state.acquire_lock(self.name, self.owner, self.ttl):
                raise BiomajError(f"bank {self.bank}: could not take its lease (taken meanwhile)")
        self._task = asyncio.create_task(self._renew(), name=f"lease-{self.bank}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        with contextlib.suppress(Exception):  # it expires by itself anyway
            await self.state.release_lock(self.name, self.owner)

    async def _renew(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if await self.state.renew_lock(self.name, self.owner, self.ttl):
                    renewed = time.monotonic()
                    continue
                reason = "its lease was taken or broken"
            except Exception as exc:  # noqa: BLE001 - retried until the lease would expire
                if time.monotonic() - renewed < self.ttl * 2 / 3:
                    log.warning("bank %s: lease not renewed (%s); retrying", self.bank, exc)
                    continue
                reason = f"its lease could not be renewed for {self.ttl:.0f} s ({exc})"
            self.lost = reason
            log.error("bank %s: %s; stopping the job", self.bank, reason)
            if self.on_lost is not None:
                self.on_lost(reason)
            return


async def holder_of(state: State, bank: str) -> LockInfo | None:
    """The live lease of ``bank``, or None."""
    return await state.get_lock(lease_name(bank))


async def lease_free(state: State | None, state_url: str, bank: str) -> bool:
    """True when the shared state (Redis) says no job holds ``bank``'s lease: a lock file naming a
    job is then stale, whatever host wrote it. False with an in-memory state, which only knows the
    jobs of its own process (``biomaj ctl unlock`` and ``POST .../unlock``)."""
    if state is None or state_url.startswith("memory"):
        return False
    return await holder_of(state, bank) is None
