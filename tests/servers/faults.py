"""Failures a test server injects for real, and what it observed.

Every server module under tests/servers/ exposes::

    async def start(tree: Path, faults: Faults, *, protocol: str) -> RunningServer

serving `tree` read-only on 127.0.0.1 (a free port) and honouring `faults`; `RunningServer.config`
is a RemoteConfig whose root is the top of `tree`. Paths in `Faults` are relative to `tree`,
`/`-separated (e.g. "sub1/b.fasta.gz").
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from biomaj.protocols.base import RemoteConfig


@dataclass
class Faults:
    """What to break, and counters of what happened (updated by the server)."""

    # path -> cut the data connection after sending this many bytes of the file body; once per path.
    drop_after: dict[str, int] = field(default_factory=dict)
    # path -> answer this many first transfer requests with a transient error
    # (HTTP 503, FTP 451, SFTP SSH_FX_FAILURE, ...), then serve normally.
    transient_errors: dict[str, int] = field(default_factory=dict)
    # path -> answer this many first transfer requests with "not found" (HTTP 404, FTP 550), then
    # serve normally: a listed file missing from a mirror (a big count: for good).
    not_found: dict[str, int] = field(default_factory=dict)
    # path -> seconds to stay silent after the first body bytes (to exercise read timeouts); once per path.
    stall: dict[str, float] = field(default_factory=dict)
    # names added to the listing of the tree's root, to check that unsafe names are refused.
    evil_names: list[str] = field(default_factory=list)
    # path -> answer every transfer request with "slow down" (HTTP 429 with Retry-After: 0 / FTP 421) this many times.
    throttle: dict[str, int] = field(default_factory=dict)
    # bytes per second of each transfer (0: as fast as it goes), as public servers cap each connection
    rate: int = 0

    # Observations -----------------------------------------------------------------------------
    transfers: Counter = field(default_factory=Counter)  # path -> transfer requests received
    logins: int = 0  # sessions/connections opened (FTP/SFTP logins, HTTP TCP connections)
    active: int = 0  # transfers in progress now
    peak_active: int = 0  # most transfers in progress at once
    _started: dict[str, asyncio.Event] = field(default_factory=dict)  # path -> set at its first transfer

    def started(self, path: str) -> asyncio.Event:
        """An event set once a transfer of ``path`` has started."""
        return self._started.setdefault(path, asyncio.Event())

    def transfer_started(self, path: str) -> None:
        self.started(path).set()
        self.transfers[path] += 1
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)

    def transfer_ended(self) -> None:
        self.active -= 1

    def take(self, table: dict[str, int], path: str) -> bool:
        """Consume one injected failure of `table` for `path`; True if one was due."""
        left = table.get(path, 0)
        if left > 0:
            table[path] = left - 1
            return True
        return False


@dataclass
class RunningServer:
    """A started test server: how to reach it, and how to stop it."""

    config: RemoteConfig
    faults: Faults
    stop: Callable[[], Awaitable[None]]

    async def close(self) -> None:
        await self.stop()


async def wait_closed(*waitables: Awaitable[None]) -> None:
    await asyncio.gather(*waitables, return_exceptions=True)


class RateCap:
    """Keeps one transfer at or under ``rate`` bytes per second (0: no cap): call :meth:`pace`
    with each block's size before sending it."""

    def __init__(self, rate: int):
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0

    def block(self, default: int) -> int:
        """A block size that keeps the pace smooth (an eighth of a second's worth at most)."""
        return min(default, max(4096, self.rate // 8)) if self.rate else default

    async def pace(self, size: int) -> None:
        if not self.rate:
            return
        self.sent += size
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            await asyncio.sleep(ahead)
