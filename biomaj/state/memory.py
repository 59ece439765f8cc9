"""In-process :class:`State` for the single-binary mode.

Every method runs without awaiting anything, so each is atomic on the event loop (what the
Redis implementation gets from single commands and scripts). Expired entries are purged lazily
when read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

from .base import (
    Clock,
    LockInfo,
    LockOwner,
    NodeInfo,
    ProgressValue,
    SlotHolders,
    State,
    StateError,
    Throttle,
    check_limit,
    check_progress_value,
    check_ttl,
)

__all__ = ["MemoryState"]


class MemoryState(State):
    """Node registry, locks, cancel flags and progress in dictionaries, with an injectable clock."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.clock = clock
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}  # node id -> (info, expires)
        self._locks: dict[str, LockInfo] = {}
        self._cancels: dict[str, float | None] = {}  # job id -> expires (None: never)
        self._progress: dict[str, dict[str, ProgressValue]] = {}
        # semaphore -> holder -> [slots, lease expires, waiting mark expires]
        self._semaphores: dict[str, dict[str, list]] = {}
        self._throttles: dict[str, Throttle] = {}

    # --- node registry -----------------------------------------------------------------------

    async def heartbeat(self, node: NodeInfo, ttl: float) -> None:
        self._nodes[node.node_id] = (node, self.clock() + check_ttl(ttl))

    async def nodes(self) -> list[NodeInfo]:
        now = self.clock()
        for node_id in [n for n, (_, expires) in self._nodes.items() if expires <= now]:
            del self._nodes[node_id]
        return [info for _, (info, _) in sorted(self._nodes.items())]

    async def forget_node(self, node_id: str) -> bool:
        return self._nodes.pop(node_id, None) is not None

    # --- locks -------------------------------------------------------------------------------

    def _live_lock(self, name: str) -> LockInfo | None:
        lock = self._locks.get(name)
        if lock is not None and lock.expires <= self.clock():
            del self._locks[name]
            return None
        return lock

    async def acquire_lock(self, name: str, owner: LockOwner, ttl: float) -> bool:
        ttl = check_ttl(ttl)
        lock = self._live_lock(name)
        now = self.clock()
        if lock is None:
            self._locks[name] = LockInfo(name, owner, now, now + ttl)
            return True
        if lock.owner == owner:
            self._locks[name] = replace(lock, expires=now + ttl)
            return True
        return False

    async def renew_lock(self, name: str, owner: LockOwner, ttl: float) -> bool:
        ttl = check_ttl(ttl)
        lock = self._live_lock(name)
        if lock is None or lock.owner != owner:
            return False
        self._locks[name] = replace(lock, expires=self.clock() + ttl)
        return True

    async def release_lock(self, name: str, owner: LockOwner) -> bool:
        lock = self._live_lock(name)
        if lock is None or lock.owner != owner:
            return False
        del self._locks[name]
        return True

    async def get_lock(self, name: str) -> LockInfo | None:
        return self._live_lock(name)

    async def locks(self) -> list[LockInfo]:
        return [lock for name in sorted(self._locks) if (lock := self._live_lock(name)) is not None]

    async def break_lock(self, name: str) -> bool:
        held = self._live_lock(name) is not None
        self._locks.pop(name, None)
        return held

    # --- cancel flags ------------------------------------------------------------------------

    async def set_cancel(self, job_id: str, *, ttl: float | None = None) -> None:
        self._cancels[job_id] = None if ttl is None else self.clock() + check_ttl(ttl)

    async def is_cancelled(self, job_id: str) -> bool:
        if job_id not in self._cancels:
            return False
        expires = self._cancels[job_id]
        if expires is not None and expires <= self.clock():
            del self._cancels[job_id]
            return False
        return True

    async def clear_cancel(self, job_id: str) -> bool:
        was_set = await self.is_cancelled(job_id)
        self._cancels.pop(job_id, None)
        return was_set

    # --- progress counters -------------------------------------------------------------------

    async def incr_progress(self, job_id: str, field: str, n: int = 1) -> int:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"progress increment must be an int, got {n!r}")
        fields = self._progress.setdefault(job_id, {})
        current = fields.get(field, 0)
        if isinstance(current, bool) or not isinstance(current, int):
            raise StateError(f"progress field {field!r} of job {job_id} is not an integer: {current!r}")
        fields[field] = current + n
        return current + n

    async def set_progress(self, job_id: str, mapping: Mapping[str, ProgressValue]) -> None:
        values = {str(k): check_progress_value(str(k), v) for k, v in mapping.items()}
        self._progress.setdefault(job_id, {}).update(values)

    async def get_progress(self, job_id: str) -> dict[str, ProgressValue]:
        return dict(self._progress.get(job_id, {}))

    async def clear_progress(self, job_id: str) -> None:
        self._progress.pop(job_id, None)

    # --- counting semaphores ------------------------------------------------------------------

    def _holders(self, name: str) -> dict[str, list]:
        """The holders of ``name``, without the dead ones (lease and waiting mark expired)."""
        now = self.clock()
        holders = self._semaphores.setdefault(name, {})
        for holder in [h for h, (_, expires, waits) in holders.items() if expires <= now and waits <= now]:
            del holders[holder]
        return holders

    def _live(self, entry: list) -> int:
        return entry[0] if entry[1] > self.clock() else 0

    async def acquire_slot(self, name: str, holder: str, limit: int, ttl: float, *,
                           wait_ttl: float | None = None) -> bool:
        limit, ttl = check_limit(limit), check_ttl(ttl)
        if wait_ttl is not None:
            wait_ttl = check_ttl(wait_ttl)
        holders = self._holders(name)
        now = self.clock()
        mine = self._live(holders.get(holder, [0, 0.0, 0.0]))
        if sum(self._live(entry) for entry in holders.values()) < limit:
            holders[holder] = [mine + 1, now + ttl, 0.0]
            return True
        if wait_ttl is not None:
            entry = holders.setdefault(holder, [0, 0.0, 0.0])
            entry[0], entry[2] = mine, now + wait_ttl
        return False

    async def renew_slots(self, name: str, holder: str, ttl: float) -> int:
        ttl = check_ttl(ttl)
        entry = self._holders(name).get(holder)
        if entry is None or not self._live(entry):
            return 0
        entry[1] = self.clock() + ttl
        return entry[0]

    async def release_slot(self, name: str, holder: str) -> bool:
        holders = self._holders(name)
        entry = holders.get(holder)
        if entry is None or not self._live(entry):
            return False
        entry[0] -= 1
        if not entry[0] and entry[2] <= self.clock():
            del holders[holder]
        return True

    async def slot_holders(self, name: str) -> SlotHolders:
        holders = self._holders(name)
        now = self.clock()
        return SlotHolders(
            held={h: entry[0] for h, entry in sorted(holders.items()) if self._live(entry)},
            waiting=frozenset(h for h, entry in holders.items() if entry[2] > now),
        )

    # --- throttles ---------------------------------------------------------------------------

    async def set_throttle(self, name: str, limit: int, ttl: float) -> None:
        self._throttles[name] = Throttle(check_limit(limit), self.clock() + check_ttl(ttl))

    async def get_throttle(self, name: str) -> Throttle | None:
        throttle = self._throttles.get(name)
        if throttle is not None and throttle.expires <= self.clock():
            del self._throttles[name]
            return None
        return throttle
