"""Actors whose work arrives with later versions: they start, register, consume their mailbox
and answer every message with a clear refusal, so nothing waits forever and nothing is lost
silently (refused work goes to the queue's dead-letter queue with the reason).
"""

from __future__ import annotations

import logging

from biomaj.bus import Delivery, names
from biomaj.runtime.actor import Actor

log = logging.getLogger(__name__)

NOT_YET = "not available in this version of biomaj"


class _RefusingActor(Actor):
    """Dead-letters every message with a reason naming what is missing."""

    what = "this work"

    async def handle(self, delivery: Delivery) -> None:
        reason = f"{self.what}: {NOT_YET}"
        log.warning("actor %s refused %s: %s", self.name, delivery.message.describe(), reason)
        await delivery.nack(requeue=False, reason=reason)


class ProcessorActor(_RefusingActor):
    """Runs one pre/post/remove process per message: arrives with the process version."""

    name = "processor"
    queue = names.PROCESS
    what = "processes"


class IdleActor:
    """An actor with nothing to consume yet (scheduler, auth, ftp): it only starts and stops."""

    def __init__(self, name: str, description: str):
        self.name = name
        self.description = description
        self.in_flight = 0

    async def start(self) -> None:
        log.info("actor %s: started (%s)", self.name, self.description)

    async def stop(self) -> None:
        log.info("actor %s: stopped", self.name)
