"""Listening to job cancellations: every actor that holds work of a job (manager, downloaders,
processors) reacts to the CancelJob broadcasts on the control topic."""

from __future__ import annotations

import asyncio
from typing import Callable

from biomaj.bus import Bus, names
from biomaj.bus.messages import CancelJob
from biomaj.runtime.tasks import cancel_and_wait


class CancelListener:
    """Calls ``on_cancel(job_id)`` for each CancelJob broadcast between start() and stop()."""

    def __init__(self, bus: Bus, on_cancel: Callable[[str], None], name: str = "cancels"):
        self.bus = bus
        self.on_cancel = on_cancel
        self.name = name
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self._task is None:
            subscription = await self.bus.subscribe(names.CANCEL_TOPIC)  # active when this returns
            self._task = asyncio.create_task(self._listen(subscription), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _listen(self, subscription) -> None:
        async with subscription:
            async for message in subscription:
                if isinstance(message, CancelJob):
                    self.on_cancel(message.job_id)
