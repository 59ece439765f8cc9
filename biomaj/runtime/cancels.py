"""Job cancels on one carrier: the state's cancel flag is the truth; the CancelJob broadcast on the
control topic is only a wake-up, so that whoever holds work of the job (manager, downloaders,
processors) reacts at once instead of at its next look at the flag.

What a cancel is (the flag for a while, then one wake-up) is :func:`biomaj.jobs.signal_cancel`,
below this layer: a user's cancel (:func:`biomaj.jobs.request_cancel`) is recorded in the store's
job record (a queued job ends there), then signalled. Here is how a holder sees the cancels
(:class:`JobCancels`): the wake-ups it listens to, the flag read through a short cache, and
:meth:`JobCancels.spread` for a manager whose run stops for its own reasons (a lost lease, a
cancel read from the store): it signals the cancel unless the holders were told already, so that
a user's cancel is broadcast once, not once more by the manager.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from biomaj.bus import Bus, names
from biomaj.bus.messages import CancelJob
from biomaj.jobs import CANCEL_TTL, signal_cancel
from biomaj.runtime.tasks import cancel_and_wait
from biomaj.state import State

__all__ = ["CANCEL_RECHECK", "JobCancels", "RUN_CANCEL_TTL"]

log = logging.getLogger(__name__)

RUN_CANCEL_TTL = 3600.0  # seconds the flag of a run its manager stopped lives
CANCEL_RECHECK = 1.0  # seconds a flag read from the state is trusted: a bank's files arrive by the thousand
FORGET_AFTER = 3600.0  # seconds after which what was seen of a job may be forgotten
REMEMBERED = 1000  # jobs remembered before the old ones are forgotten


class JobCancels:
    """The cancels of jobs as one holder of their work sees them.

    ``on_cancel(job_id)`` is called for each wake-up received between :meth:`start` and
    :meth:`stop`; a holder stops the job's work there. Without a state (``state=None``) only the
    wake-ups carry a cancel.
    """

    def __init__(self, bus: Bus, state: State | None, on_cancel: Callable[[str], None] | None = None,
                 name: str = "cancels") -> None:
        self.bus = bus
        self.state = state
        self.on_cancel = on_cancel
        self.name = name
        self._woken: dict[str, float] = {}  # job id -> when a wake-up for it was seen or sent here
        self._flags: dict[str, tuple[float, bool]] = {}  # job id -> (read at, its flag in the state)
        self._task: asyncio.Task | None = None

    # --- the wake-ups ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen to the wake-ups (the subscription is active when this returns)."""
        if self._task is None:
            subscription = await self.bus.subscribe(names.CANCEL_TOPIC)
            self._task = asyncio.create_task(self._listen(subscription), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _listen(self, subscription) -> None:
        async with subscription:
            async for message in subscription:
                if not isinstance(message, CancelJob):
                    continue
                self._woken[message.job_id] = time.monotonic()
                if self.on_cancel is not None:
                    try:
                        self.on_cancel(message.job_id)
                    except Exception:  # one holder's bug must not deafen it to the next cancels
                        log.exception("%s: stopping the work of job %s failed", self.name, message.job_id)

    # --- cancelling ------------------------------------------------------------------------------

    async def cancel(self, job_id: str, bank: str, *, ttl: float = CANCEL_TTL) -> None:
        """Set the job's flag (for ``ttl`` seconds), then wake its holders up, once."""
        self._woken[job_id] = time.monotonic()
        if self.state is not None:
            self._flags[job_id] = (time.monotonic(), True)
        await signal_cancel(self.bus, self.state, job_id, bank, ttl=ttl)

    async def spread(self, job_id: str, bank: str, *, ttl: float = RUN_CANCEL_TTL) -> bool:
        """The run of ``job_id`` stopped here: make sure the holders of its work know, once
        whatever the number of callers. Nothing to do when a wake-up for it was seen or sent
        here, or its flag is set (whoever set it woke the holders up); else :meth:`cancel`.
        True if this call broadcast."""
        if job_id in self._woken:
            return False
        self._woken[job_id] = time.monotonic()  # from now on, any other caller finds it done
        if self.state is not None and await self._flag(job_id):
            return False
        await self.cancel(job_id, bank, ttl=ttl)
        return True

    async def clear(self, job_id: str) -> None:
        """The job is over: its flag goes, and what was seen of it here."""
        if self.state is not None:
            await self.state.clear_cancel(job_id)
        self._woken.pop(job_id, None)
        self._flags.pop(job_id, None)

    # --- asking ----------------------------------------------------------------------------------

    async def is_cancelled(self, job_id: str) -> bool:
        """A wake-up for the job was seen or sent here, or its flag is set (read from the state
        at most once every CANCEL_RECHECK seconds per job)."""
        if job_id in self._woken:
            return True
        if self.state is None:
            return False
        return await self._flag(job_id)

    async def _flag(self, job_id: str) -> bool:
        assert self.state is not None
        now = time.monotonic()
        seen = self._flags.get(job_id)
        if seen is not None and now - seen[0] < CANCEL_RECHECK:
            return seen[1]
        flag = await self.state.is_cancelled(job_id)
        if len(self._flags) > REMEMBERED or len(self._woken) > REMEMBERED:  # forget old jobs
            self._flags = {k: v for k, v in self._flags.items() if now - v[0] < FORGET_AFTER}
            self._woken = {k: t for k, t in self._woken.items() if now - t < FORGET_AFTER}
        self._flags[job_id] = (now, flag)
        return flag
