"""Actors whose work arrives with later versions: they only start, register and stop, so that a
node's roles and heartbeat already list them.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class IdleActor:
    """An actor with nothing to consume yet (auth): it only starts and stops."""

    def __init__(self, name: str, description: str):
        self.name = name
        self.description = description
        self.in_flight = 0

    async def start(self) -> None:
        log.info("actor %s: started (%s)", self.name, self.description)

    async def stop(self) -> None:
        log.info("actor %s: stopped", self.name)
