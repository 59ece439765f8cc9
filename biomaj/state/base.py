"""The shared, short-lived state contract: node registry, bank locks, cancel flags, progress,
counting semaphores (leases of slots) and throttles.

Everything here may vanish on restart without harm (sessions and releases live in the store).
The memory implementation serves the single-binary mode, the Redis one (``redis.py``) the
distributed mode; both pass the same conformance suite (``tests/state``).

Time-to-live semantics: an entry written at ``clock()`` with ``ttl`` seconds is alive while
``clock() < written + ttl``. The clock is injectable (``time.time`` by default, so that lock
expiry and ``last_seen`` are wall-clock timestamps a person can read); tests pass a fake one
and never sleep. The Redis implementation keeps the same rule by comparing expiry timestamps
against the caller's clock (atomically, in a script) and uses Redis TTLs only to collect garbage.
"""

from __future__ import annotations

import abc
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Union

from biomaj.errors import BiomajError

__all__ = ["Clock", "LockInfo", "LockOwner", "NodeInfo", "ProgressValue", "SlotHolders", "State", "StateError",
           "Throttle"]

Clock = Callable[[], float]
ProgressValue = Union[int, float, str, bool, None]


class StateError(BiomajError):
    """The state store refused an operation (incrementing a text progress field) or cannot be
    reached; the message says which, without secrets."""


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself in each heartbeat."""

    node_id: str
    host: str
    pid: int
    roles: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    version: str = ""
    in_flight: int = 0  # messages being handled right now
    started: float = 0.0  # wall-clock start time of the node
    last_seen: float = 0.0  # wall-clock time of this heartbeat

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (for Redis and the API)."""
        data = asdict(self)
        data["roles"], data["actors"] = list(self.roles), list(self.actors)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeInfo:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["roles"] = tuple(values.get("roles", ()))
        values["actors"] = tuple(values.get("actors", ()))
        return cls(**values)


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock: enough to find the process, and the job it runs for."""

    host: str
    pid: int
    job_id: str
    node_id: str

    @classmethod
    def here(cls, job_id: str, node_id: str) -> LockOwner:
        """An owner for this process (its host name and pid)."""
        return cls(socket.gethostname(), os.getpid(), job_id, node_id)


@dataclass(frozen=True)
class LockInfo:
    """A lock that is currently held."""

    name: str
    owner: LockOwner
    acquired: float  # clock() when first acquired
    expires: float  # clock() after which it is free again unless renewed


@dataclass(frozen=True)
class SlotHolders:
    """Who holds slots of a counting semaphore now, and who was refused one lately."""

    held: Mapping[str, int]  # holder -> its live slots (holders with none are left out)
    waiting: frozenset[str]  # holders whose waiting mark (``acquire_slot(wait_ttl=...)``) is alive

    @property
    def total(self) -> int:
        """Live slots of every holder."""
        return sum(self.held.values())


@dataclass(frozen=True)
class Throttle:
    """A limit lowered for a while (``set_throttle``)."""

    limit: int
    expires: float  # clock() after which it no longer applies


class State(abc.ABC):
    """Node registry, bank locks, cancel flags, progress counters, semaphores and throttles
    shared by all actors."""

    #: True when other processes see the same state (Redis); False for the in-process one.
    shared: ClassVar[bool] = False
    #: The clock of every TTL (wall-clock seconds by default; tests inject a fake one).
    clock: Clock

    # --- node registry -----------------------------------------------------------------------

    @abc.abstractmethod
    async def heartbeat(self, node: NodeInfo, ttl: float) -> None:
        """Register or refresh ``node``; it disappears ``ttl`` seconds after its last heartbeat."""

    @abc.abstractmethod
    async def nodes(self) -> list[NodeInfo]:
        """Live nodes (TTL not expired), sorted by node id."""

    @abc.abstractmethod
    async def forget_node(self, node_id: str) -> bool:
        """Remove a node now (clean shutdown). True if it was registered."""

    # --- locks -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def acquire_lock(self, name: str, owner: LockOwner, ttl: float) -> bool:
        """Take lock ``name`` for ``ttl`` seconds. True if taken, or already held by ``owner``
        (then it is renewed); False if someone else holds it."""

    @abc.abstractmethod
    async def renew_lock(self, name: str, owner: LockOwner, ttl: float) -> bool:
        """Push the expiry to ``clock() + ttl``. False unless ``owner`` holds the lock now."""

    @abc.abstractmethod
    async def release_lock(self, name: str, owner: LockOwner) -> bool:
        """Free the lock. False (and nothing changes) unless ``owner`` holds it."""

    @abc.abstractmethod
    async def get_lock(self, name: str) -> LockInfo | None:
        """The live lock ``name``, or None."""

    @abc.abstractmethod
    async def locks(self) -> list[LockInfo]:
        """Every live lock, sorted by name."""

    @abc.abstractmethod
    async def break_lock(self, name: str) -> bool:
        """Free a lock whoever holds it (admin action). True if one was held."""

    # --- cancel flags ------------------------------------------------------------------------

    @abc.abstractmethod
    async def set_cancel(self, job_id: str, *, ttl: float | None = None) -> None:
        """Ask the job to stop; the flag expires after ``ttl`` seconds when given."""

    @abc.abstractmethod
    async def is_cancelled(self, job_id: str) -> bool:
        """True while the job's cancel flag is set."""

    @abc.abstractmethod
    async def clear_cancel(self, job_id: str) -> bool:
        """Remove the flag. True if it was set."""

    # --- progress counters -------------------------------------------------------------------

    @abc.abstractmethod
    async def incr_progress(self, job_id: str, field: str, n: int = 1) -> int:
        """Add ``n`` to an integer field (missing counts as 0); return the new value."""

    @abc.abstractmethod
    async def set_progress(self, job_id: str, mapping: Mapping[str, ProgressValue]) -> None:
        """Set several fields at once (others are kept). Values are JSON scalars."""

    @abc.abstractmethod
    async def get_progress(self, job_id: str) -> dict[str, ProgressValue]:
        """All fields of a job's progress; ``{}`` when there are none."""

    @abc.abstractmethod
    async def clear_progress(self, job_id: str) -> None:
        """Forget a job's progress."""

    # --- counting semaphores ------------------------------------------------------------------
    # ``limit`` slots of ``name`` shared by holders (one per node and purpose). A holder's slots of
    # one semaphore share one lease: taking a slot or renewing pushes it to ``clock() + ttl``, and
    # when it expires every slot of that holder is free again (a killed node's slots come back
    # after its TTL). Taking a slot never waits: the caller polls, or waits for its own releases.

    @abc.abstractmethod
    async def acquire_slot(self, name: str, holder: str, limit: int, ttl: float, *,
                           wait_ttl: float | None = None) -> bool:
        """Take one more slot of ``name`` for ``holder`` if the live slots of every holder are
        fewer than ``limit`` (its lease, all its slots, then lasts ``ttl`` seconds). Refused:
        False, and with ``wait_ttl`` the holder is marked waiting for that long (``slot_holders``
        shows it to the others) unless it takes a slot before."""

    @abc.abstractmethod
    async def renew_slots(self, name: str, holder: str, ttl: float) -> int:
        """Push the lease of ``holder``'s slots of ``name`` to ``clock() + ttl``; how many slots
        it holds. 0 when it holds none, or its lease expired already (its slots are gone: it
        must acquire them again)."""

    @abc.abstractmethod
    async def release_slot(self, name: str, holder: str) -> bool:
        """Give one slot back. False (and nothing changes) when ``holder`` holds none."""

    @abc.abstractmethod
    async def slot_holders(self, name: str) -> SlotHolders:
        """The live holders of ``name`` and their slot counts, and the holders waiting for one."""

    # --- throttles ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def set_throttle(self, name: str, limit: int, ttl: float) -> None:
        """Lower ``name``'s limit to ``limit`` for ``ttl`` seconds (the last one set wins)."""

    @abc.abstractmethod
    async def get_throttle(self, name: str) -> Throttle | None:
        """The live throttle of ``name``, or None."""

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> State:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def check_ttl(ttl: Any) -> float:
    """Validate a TTL in seconds."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


def check_limit(limit: Any) -> int:
    """Validate a semaphore or throttle limit: an int of at least 1."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer of at least 1, got {limit!r}")
    return limit


def check_progress_value(field: str, value: Any) -> ProgressValue:
    """Validate one progress value (a JSON scalar, so Redis can store it faithfully)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"progress field {field!r}: {type(value).__name__} is not a JSON scalar")
