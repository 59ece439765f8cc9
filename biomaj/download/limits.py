"""Connections per remote host: at most N at once, fewer for a while when the server says so."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

#: Connections the manager itself opens to one server while it lists remote directories and reads
#: release.file, before any download. They come on top of the downloaders' own
#: (limits.downloads_per_host, 4 by default, in another pool), so they stay fewer: two keep a listing
#: of several directories parallel while the total stays within what FTP servers commonly allow
#: one client at once.
LISTING_PER_HOST = 2


class HostLimit:
    """A semaphore whose size shrinks when a server throttles us (HTTP 429/503, FTP 421) and
    grows back one step per `recovery` seconds without complaint."""

    def __init__(self, host: str, limit: int, *, recovery: float = 30.0, clock=time.monotonic):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.host = host
        self.max_limit = limit
        self.limit = limit
        self.active = 0
        self.recovery = recovery
        self._clock = clock
        self._last_throttle = 0.0
        self._changed = asyncio.Condition()

    def _recover(self) -> None:
        if self.limit < self.max_limit and self._clock() - self._last_throttle >= self.recovery:
            self.limit += 1
            self._last_throttle = self._clock()
            self._changed.notify(1)  # one more slot: one more waiter may go

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._changed:
            self._recover()
            await self._changed.wait_for(lambda: self.active < self.limit)
            self.active += 1
        try:
            yield
        finally:
            async with self._changed:
                self.active -= 1
                # one slot freed: wake one waiter, not all (a batch keeps dozens waiting)
                self._changed.notify(1)

    def throttled(self) -> None:
        """The server asked us to slow down: one connection fewer, for a while."""
        self._last_throttle = self._clock()
        if self.limit > 1:
            self.limit -= 1
            log.warning("%s asks to slow down: at most %d connection(s) for now", self.host, self.limit)
