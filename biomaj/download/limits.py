"""One politeness budget per server: at most N connections open to it at once, fewer for a while
when it says so, and, in distributed mode, N for the whole cluster.

A :class:`HostBudget` is built once per node (``node/build.py``) and shared by everything the node
opens: the manager's listings and release detection, the downloads, split segments. A slot stands
for one open connection, from its opening to its closing (an idle connection kept for reuse keeps
its slot: a server counts the connections open, busy or not).

Single-process mode (no shared state): the budget is local, a few counters and a queue of waiters
per host; taking or giving back a slot costs no I/O.

Distributed mode (a Redis state): each slot is also a slot of the cluster-wide counting semaphore
``host:<address>`` (:meth:`State.acquire_slot`), held under this budget's lease, renewed in the
background every ``lease_ttl / 3`` seconds and given back on release, so that a node killed with
SIGKILL frees its slots ``lease_ttl`` seconds after its last renewal. A slot given back while
another task of the node waits for the host goes to it without a round trip. Waiting is a local
queue plus a poll of the semaphore, from :data:`POLL_MIN` to :data:`POLL_MAX` seconds apart, cut
short by the node's own releases. A node refused a slot is marked waiting in the semaphore; while
others wait, each node keeps at most its fair share of the limit (the limit divided by the nodes
holding or waiting, at least one) and gives back what it holds above it as its connections come
back, so that no node starves while another is busy.

Back-off: a server answering 421 (FTP), 429 or 503 (HTTP) lowers the host's limit by one, at
least to one, for :data:`RECOVERY` seconds (or its Retry-After, when longer), then the limit
grows back one step per :data:`RECOVERY` seconds without complaint. In distributed mode the
lowered limit is written in the state (:meth:`State.set_throttle`) and read by every node
(at most :data:`REFRESH` seconds late).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress

from biomaj.state import State, StateError

log = logging.getLogger(__name__)

DEFAULT_PER_HOST = 4
"""Connections open at once to one server (``limits.per_host``): what FTP servers commonly allow
one client, and enough to fill a link with pipelined HTTP requests."""

RECOVERY = 30.0
"""Seconds a lowered limit holds before it grows back by one."""

LEASE_TTL = 30.0
"""Seconds a node's slots outlive its last renewal in distributed mode (``limits.host_lease_ttl``)."""

LISTING_SHARE = 0.5
"""Part of a host's budget the manager's listings and release detection may hold at once (at
least one connection). Listing a tree is many small requests, each waiting on the server; two
connections (of four) keep a walk of several folders parallel, while the other half stays for the
downloads of the banks already past their listing: the manager runs several workflows at once
(``limits.jobs``), and a listing holding the whole budget would stall them."""

POLL_MIN, POLL_MAX = 0.05, 0.2
"""Seconds between two tries at a full cluster-wide semaphore: doubling from the first to the second."""

REFRESH = 1.0
"""Seconds between two reads of a host's cluster-wide state (its throttle, who waits)."""

WAIT_TTL = 1.0
"""Seconds a refused node stays marked waiting after its last try (several polls)."""

#: Closes the idle connection a parked slot stands for (given by its pool, see ``park``).
Evict = Callable[[], Awaitable[None]]


class Slot:
    """One connection's place in a host's budget: held until :meth:`release`."""

    __slots__ = ("host", "_budget", "_entry", "_released")

    def __init__(self, budget: HostBudget, entry: _Host):
        self.host = entry.key
        self._budget = budget
        self._entry = entry
        self._released = False

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        self._budget.release(self)

    def __repr__(self) -> str:
        return f"<Slot {self.host}{' released' if self._released else ''}>"


class _Host:
    """The budget of one host on this node."""

    __slots__ = ("key", "max", "active", "waiters", "parked", "reclaiming", "own", "cluster", "share",
                 "pump", "changed", "refreshed", "timer", "warned", "writer")

    def __init__(self, key: str, limit: int):
        self.key = key
        self.max = limit
        self.active = 0  # slots held by this node (busy and parked), taken or being taken
        self.waiters: deque[asyncio.Future] = deque()  # FIFO; a cancelled waiter is skipped
        self.parked: dict[Slot, Evict] = {}  # slots of idle connections, oldest first
        self.reclaiming = 0  # parked slots whose connection is being closed for a waiter
        self.own: tuple[int, float] | None = None  # (lowered limit, expiry): this node's back-off
        self.cluster: tuple[int, float] | None = None  # the same, as the shared state has it
        self.share: int | None = None  # this node's fair share while other nodes wait
        self.pump: asyncio.Task | None = None  # distributed: takes cluster slots for the waiters
        self.changed: asyncio.Event | None = None  # distributed: a slot came back here
        self.refreshed = -math.inf  # monotonic time of the last read of the cluster's view
        self.timer: asyncio.TimerHandle | None = None  # single process: a lowered limit grows back
        self.warned = False  # the state failed: said once until it answers again
        self.writer: asyncio.Task | None = None  # distributed: writes ``own`` to the state, in order


class HostBudget:
    """Connections to each server, at most ``per_host`` (or ``hosts[host]``) open at once.

    ``hosts`` overrides the limit of some servers, keyed by host name or ``host:port`` (the
    latter wins). With ``state`` (a state shared by several processes) the limits hold for every
    node of the cluster together; ``node_id`` names this node's lease holder. ``clock`` (only
    without ``state``, which has its own) times the lowered limits.
    """

    def __init__(self, per_host: int = DEFAULT_PER_HOST, hosts: Mapping[str, int] | None = None, *,
                 state: State | None = None, node_id: str = "", lease_ttl: float = LEASE_TTL,
                 recovery: float = RECOVERY, clock: Callable[[], float] | None = None):
        if per_host < 1:
            raise ValueError(f"per_host must be >= 1, got {per_host}")
        for host, limit in (hosts or {}).items():
            if limit < 1:
                raise ValueError(f"limit of {host} must be >= 1, got {limit}")
        self.per_host = per_host
        self.overrides = {host.lower(): limit for host, limit in (hosts or {}).items()}
        self.state = state
        self.lease_ttl = lease_ttl
        self.recovery = recovery
        self.holder = f"{node_id or socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._clock = state.clock if state is not None else (clock or time.monotonic)
        self._hosts: dict[str, _Host] = {}
        self._tasks: set[asyncio.Task] = set()
        self._keeper: asyncio.Task | None = None
        self._renewed = time.monotonic()
        self._closed = False

    @property
    def shared(self) -> bool:
        """True when the budget is the whole cluster's."""
        return self.state is not None

    def __repr__(self) -> str:
        return f"HostBudget(per_host={self.per_host}, hosts={self.overrides}, shared={self.shared})"

    # --- the API ---------------------------------------------------------------------------

    def limit(self, host: str) -> int:
        """The host's limit now (lowered after a complaint): what to size parallel work by."""
        return self._limit(self._host(host))

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[Slot]:
        """Hold a slot of ``host`` (waits for one) for the block."""
        slot = await self.acquire(host)
        try:
            yield slot
        finally:
            self.release(slot)

    @asynccontextmanager
    async def try_slot(self, host: str) -> AsyncIterator[bool]:
        """Hold a slot of ``host`` for the block if one is free now: yields True, else False at once."""
        slot = await self.try_acquire(host)
        try:
            yield slot is not None
        finally:
            if slot is not None:
                self.release(slot)

    async def acquire(self, host: str) -> Slot:
        """A slot of ``host``, after the waiters before (FIFO on this node)."""
        slot = await self.try_acquire(host)
        if slot is not None:
            return slot
        waiter = self.enqueue(host)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                waiter.result().release()  # granted as we were cancelled
            raise

    async def try_acquire(self, host: str) -> Slot | None:
        """A slot of ``host`` if one is free now (nobody waits for it), else None; may close an
        idle connection (another pool's, another remote config's) to take its slot."""
        entry = self._host(host)
        if self._head(entry) is not None:
            return None
        if entry.active < self._cap(entry):
            if self.state is None:
                entry.active += 1
                return Slot(self, entry)
            if await self._take(entry, wait=False):
                return Slot(self, entry)
        if entry.parked and self._head(entry) is None:  # an idle connection gives its place up
            parked = next(iter(entry.parked))
            evict = entry.parked.pop(parked)
            parked._released = True
            slot = Slot(self, entry)  # the same place, ours once its connection is closed
            entry.reclaiming += 1
            try:
                await evict()
            except BaseException:
                entry.reclaiming -= 1
                self.release(slot)
                raise
            entry.reclaiming -= 1
            return slot
        return None

    def release(self, slot: Slot) -> None:
        """Give a slot back: to the first waiter of this node when there is one, else to the host
        (to the cluster in distributed mode)."""
        if slot._released:
            return
        slot._released = True
        entry = slot._entry
        entry.parked.pop(slot, None)
        head = self._head(entry)
        if head is not None and entry.active <= self._cap(entry):
            entry.waiters.popleft()
            head.set_result(Slot(self, entry))  # passed on: the count stays
            return
        entry.active -= 1
        if self.state is not None:
            self._spawn(self._give_back(entry))

    def throttled(self, host: str, retry_after: float | None = None) -> None:
        """The server asked us to slow down (421, 429, 503): one connection fewer for a while,
        on every node of the cluster."""
        entry = self._host(host)
        now = self._clock()
        current = self._limit(entry)
        lowered = max(1, current - 1)
        hold = max(self.recovery, retry_after or 0.0)
        expires = now + hold + max(0, entry.max - lowered - 1) * self.recovery
        entry.own = (lowered, expires)
        if lowered < current:
            log.warning("%s asks to slow down: at most %d connection(s) for now", host, lowered)
        if self.state is not None and entry.writer is None:
            entry.writer = asyncio.ensure_future(self._share_throttle(entry))
            self._tasks.add(entry.writer)
            entry.writer.add_done_callback(self._tasks.discard)
        self._shed(entry)
        if self._head(entry) is not None:
            self._grant(entry)  # the waiters go again as the limit grows back

    async def close(self) -> None:
        """Stop the background work and give every cluster slot still held back."""
        self._closed = True
        for entry in self._hosts.values():
            if entry.timer is not None:
                entry.timer.cancel()
            for waiter in entry.waiters:
                waiter.cancel()
            if entry.pump is not None:
                entry.pump.cancel()
        if self._keeper is not None:
            self._keeper.cancel()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.state is not None:
            for entry in self._hosts.values():
                for _ in range(entry.active):
                    with suppress(StateError):
                        await self.state.release_slot(self._name(entry), self.holder)
                entry.active = 0

    # --- what a client pool needs ------------------------------------------------------------
    # ClientPool (download/engine.py) keeps connections open after use: their slots stay taken
    # ("parked") until the pool closes them, or the budget asks for them back for a waiter.

    def enqueue(self, host: str) -> asyncio.Future:
        """A new waiter for a slot of ``host``, last in line. Its result is a :class:`Slot`, or
        whatever a pool that hands its own connection over sets (see ``first_waiter``)."""
        entry = self._host(host)
        waiter = asyncio.get_running_loop().create_future()
        entry.waiters.append(waiter)
        self._grant(entry)
        return waiter

    def first_waiter(self, host: str) -> asyncio.Future | None:
        """The waiter first in line for ``host``, if any: a pool giving a connection back hands
        it (with its slot) to this one when it waits for the same remote, else closes it."""
        return self._head(self._host(host))

    def over(self, host: str) -> bool:
        """This node holds more slots of ``host`` than it may now (a lowered limit, its fair
        share while other nodes wait): a connection coming back is closed."""
        entry = self._host(host)
        return entry.active - entry.reclaiming > self._cap(entry)

    def park(self, slot: Slot, evict: Evict) -> None:
        """``slot``'s connection is idle in a pool; ``evict()`` closes it when the slot is wanted."""
        entry = slot._entry
        entry.parked[slot] = evict
        if self._head(entry) is not None or entry.active - entry.reclaiming > self._cap(entry):
            self._grant(entry)
            self._shed(entry)

    def unpark(self, slot: Slot) -> None:
        """``slot``'s connection is in use again."""
        slot._entry.parked.pop(slot, None)

    # --- one host ----------------------------------------------------------------------------

    def _host(self, host: str) -> _Host:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host(host, self._configured(host))
        return entry

    def _configured(self, host: str) -> int:
        name = host.lower()
        bare, _, port = name.rpartition(":")
        if name not in self.overrides and port.isdigit():
            name = bare  # host:port not named: the host name alone
        return self.overrides.get(name, self.per_host)

    @staticmethod
    def _name(entry: _Host) -> str:
        """The host's semaphore and throttle name in the shared state."""
        return f"host:{entry.key}"

    def _limit(self, entry: _Host) -> int:
        """The configured limit, lowered by the live back-offs: ``lowered`` at first, one more
        per ``recovery`` seconds, the configured limit again when it expires."""
        limit = entry.max
        if entry.own is None and entry.cluster is None:
            return limit
        now = self._clock()
        for which in ("own", "cluster"):
            throttle = getattr(entry, which)
            if throttle is None:
                continue
            lowered, expires = throttle
            if expires <= now:
                setattr(entry, which, None)
                continue
            steps = math.ceil((expires - now) / self.recovery)
            limit = min(limit, max(lowered, entry.max - steps))
        return max(1, limit)

    def _cap(self, entry: _Host) -> int:
        limit = self._limit(entry)
        return limit if entry.share is None else min(limit, entry.share)

    @staticmethod
    def _head(entry: _Host) -> asyncio.Future | None:
        waiters = entry.waiters
        while waiters and waiters[0].done():
            waiters.popleft()
        return waiters[0] if waiters else None

    def _grant(self, entry: _Host) -> None:
        """Serve the waiters: free places (single process; the pump does it in distributed mode),
        then the places of idle connections, closed for them."""
        while (head := self._head(entry)) is not None and self.state is None and entry.active < self._cap(entry):
            entry.waiters.popleft()
            entry.active += 1
            head.set_result(Slot(self, entry))
        if head is None:
            return
        waiting = sum(1 for waiter in entry.waiters if not waiter.done())
        while entry.parked and entry.reclaiming < waiting:
            self._reclaim(entry)
        if self.state is not None:
            if entry.pump is None and not self._closed:
                entry.pump = asyncio.create_task(self._pump(entry), name=f"budget-{entry.key}")
        elif entry.timer is None and (entry.own or entry.cluster):
            self._wake_when_grown(entry)

    def _shed(self, entry: _Host) -> None:
        """Close idle connections held above the limit."""
        while entry.parked and entry.active - entry.reclaiming > self._cap(entry):
            self._reclaim(entry)

    def _reclaim(self, entry: _Host) -> None:
        slot = next(iter(entry.parked))
        evict = entry.parked.pop(slot)
        entry.reclaiming += 1

        async def closed_then_released() -> None:
            try:
                await evict()
            finally:
                entry.reclaiming -= 1
                self.release(slot)

        self._spawn(closed_then_released())

    def _wake_when_grown(self, entry: _Host) -> None:
        """Single process: serve the waiters again when the lowered limit grows by a step."""
        now = self._clock()
        steps = [expires - now - (math.ceil((expires - now) / self.recovery) - 1) * self.recovery
                 for _, expires in filter(None, (entry.own, entry.cluster)) if expires > now]
        if not steps:
            return

        def wake() -> None:
            entry.timer = None
            self._grant(entry)

        entry.timer = asyncio.get_running_loop().call_later(max(0.01, min(steps)), wake)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the cluster (distributed mode) ------------------------------------------------------

    async def _take(self, entry: _Host, *, wait: bool) -> bool:
        """One more cluster slot of the host if one is free (``wait``: marked waiting if not).
        Counted in ``entry.active`` from the start, so that no other task of the node takes
        the same place meanwhile."""
        assert self.state is not None
        await self._refresh(entry)
        if entry.active >= self._cap(entry):
            return False
        entry.active += 1
        call = asyncio.ensure_future(self.state.acquire_slot(
            self._name(entry), self.holder, self._limit(entry), self.lease_ttl,
            wait_ttl=WAIT_TTL if wait else None))
        try:
            taken = await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(lambda done: self._settle(entry, done))
            raise
        except StateError as exc:
            entry.active -= 1
            self._state_failed(entry, exc)
            return False
        self._state_answered(entry)
        if not taken:
            entry.active -= 1
            return False
        self._keep()
        return True

    def _settle(self, entry: _Host, call: asyncio.Future) -> None:
        """A take whose caller was cancelled: give its slot back if it got one."""
        entry.active -= 1
        if not call.cancelled() and call.exception() is None and call.result():
            self._spawn(self._give_back(entry))

    async def _give_back(self, entry: _Host) -> None:
        assert self.state is not None
        try:
            await self.state.release_slot(self._name(entry), self.holder)
        except StateError as exc:  # its lease expires on its own
            self._state_failed(entry, exc)
        if entry.changed is not None:
            entry.changed.set()

    async def _share_throttle(self, entry: _Host) -> None:
        """Write this node's lowered limit to the state, the latest last (one writer per host)."""
        assert self.state is not None
        written = None
        try:
            while entry.own is not None and entry.own != written:
                written = entry.own
                lowered, expires = written
                ttl = expires - self._clock()
                if ttl > 0:
                    await self.state.set_throttle(self._name(entry), lowered, ttl)
        except StateError as exc:
            self._state_failed(entry, exc)
        finally:
            entry.writer = None

    async def _refresh(self, entry: _Host, force: bool = False) -> None:
        """Read the host's throttle and who waits for it, at most every REFRESH seconds."""
        assert self.state is not None
        now = time.monotonic()
        if not force and now - entry.refreshed < REFRESH:
            return
        entry.refreshed = now
        name = self._name(entry)
        try:
            throttle = await self.state.get_throttle(name)
            holders = await self.state.slot_holders(name)
        except StateError as exc:
            self._state_failed(entry, exc)
            return
        self._state_answered(entry)
        entry.cluster = (throttle.limit, throttle.expires) if throttle is not None else None
        if holders.waiting - {self.holder}:
            parties = set(holders.held) | holders.waiting | {self.holder}
            entry.share = max(1, self._limit(entry) // len(parties))
        else:
            entry.share = None
        self._shed(entry)

    async def _pump(self, entry: _Host) -> None:
        """Distributed mode: take cluster slots for this node's waiters, polling while the
        semaphore is full (woken early by this node's own releases)."""
        if entry.changed is None:
            entry.changed = asyncio.Event()
        delay = POLL_MIN
        try:
            while (head := self._head(entry)) is not None:
                entry.changed.clear()
                if await self._take(entry, wait=True):
                    delay = POLL_MIN
                    head = self._head(entry)
                    if head is None:  # nobody wants it any more
                        entry.active -= 1
                        await self._give_back(entry)
                    else:
                        entry.waiters.popleft()
                        head.set_result(Slot(self, entry))
                    continue
                self._grant(entry)  # idle connections of this node give their places up
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(entry.changed.wait(), delay)
                delay = min(delay * 2, POLL_MAX)
        finally:
            entry.pump = None

    def _keep(self) -> None:
        if self._keeper is None and not self._closed:
            self._keeper = asyncio.create_task(self._keep_leases(), name="budget-leases")

    async def _keep_leases(self) -> None:
        """Renew the lease of this node's slots every lease_ttl / 3 seconds, and read the
        cluster's view of the hosts it holds slots of every REFRESH seconds, while it holds any."""
        assert self.state is not None
        try:
            while any(entry.active for entry in self._hosts.values()):
                await asyncio.sleep(min(REFRESH, self.lease_ttl / 3))
                renew = time.monotonic() - self._renewed >= self.lease_ttl / 3
                if renew:
                    self._renewed = time.monotonic()
                for entry in list(self._hosts.values()):
                    if not entry.active:
                        continue
                    await self._refresh(entry, force=True)
                    if renew:
                        await self._renew(entry)
        finally:
            self._keeper = None

    async def _renew(self, entry: _Host) -> None:
        assert self.state is not None
        name = self._name(entry)
        try:
            held = await self.state.renew_slots(name, self.holder, self.lease_ttl)
        except StateError as exc:
            self._state_failed(entry, exc)
            return
        if held or not entry.active:
            return
        # the lease expired (the state did not hear from this node for lease_ttl seconds): the
        # slots may be someone else's now; take back what is free, the rest is over the budget
        # until it comes back
        lost = entry.active
        for _ in range(entry.active):
            with suppress(StateError):
                if await self.state.acquire_slot(name, self.holder, self._limit(entry), self.lease_ttl):
                    lost -= 1
        if lost:
            log.warning("%s: this node's lease on its connections expired; %d of them over the cluster's "
                        "budget until they close", entry.key, lost)

    def _state_failed(self, entry: _Host, exc: StateError) -> None:
        if not entry.warned:
            entry.warned = True
            log.warning("%s: the cluster's connection budget is out of reach (%s); waiting for it", entry.key, exc)

    def _state_answered(self, entry: _Host) -> None:
        if entry.warned:
            entry.warned = False
            log.info("%s: the cluster's connection budget answers again", entry.key)
