"""Bandwidth limits, rclone-style: ``10M`` (bytes per second), or a timetable such as
``08:00,2M 20:00,off`` (from 08:00, 2 MiB/s; from 20:00, no limit; before 08:00, the last entry
of the day before applies).

A rate is a number with an optional binary suffix, ``B``, ``K`` (the default), ``M``, ``G``, as
rclone's ``--bwlimit``; ``off`` (or ``0``) is no limit. :class:`Limiter` is a token bucket that
every transfer of a node (``limits.bandwidth``) or of a bank (``download.bandwidth``) takes its
chunks from, plain and split transfers alike; it reads the timetable at each refill, so a limit
that changes at 20:00 changes for transfers already running.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable

from biomaj.config.rates import Schedule

__all__ = ["Limiter", "pacer"]

BURST = 0.25  # seconds of rate a bucket holds at most: short bursts, no long overshoot
MIN_BURST = 64 * 1024


class Limiter:
    """A token bucket over a :class:`Schedule`: :meth:`take` waits until ``n`` more bytes may go."""

    def __init__(self, schedule: Schedule, *, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime.datetime] = datetime.datetime.now):
        self.schedule = schedule
        self._clock = clock
        self._now = now
        self._tokens = 0.0
        self._stamp = clock()
        self._rate_checked = -1.0
        self._rate: int | None = None
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> int | None:
        """The rate in force now (bytes/s), None: no limit."""
        stamp = self._clock()
        if stamp - self._rate_checked >= 1.0:  # a timetable changes by the minute
            self._rate = self.schedule.rate_at(self._now())
            self._rate_checked = stamp
        return self._rate

    async def take(self, n: int) -> None:
        """Wait until ``n`` bytes fit in the rate; at once when there is no limit now."""
        rate = self.rate
        if rate is None:
            return
        async with self._lock:  # first come, first served
            stamp = self._clock()
            burst = max(MIN_BURST, rate * BURST)
            self._tokens = min(burst, self._tokens + (stamp - self._stamp) * rate)
            self._stamp = stamp
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / rate)


def pacer(*limiters: Limiter | None):
    """One ``pace(n)`` coroutine function over the limiters that exist, or None when none does."""
    present = [limiter for limiter in limiters if limiter is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0].take

    async def pace(n: int) -> None:
        for limiter in present:
            await limiter.take(n)

    return pace
