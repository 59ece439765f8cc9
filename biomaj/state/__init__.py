"""Shared short-lived state: node registry, bank locks, cancel flags, progress counters,
counting semaphores and throttles.

``open_state(url)`` picks the implementation from ``state.url`` in config.yml: ``memory://``
(or empty) for the single-binary mode, Redis (``redis://``, ``rediss://``, ``unix://``) when the
roles are spread over processes. Actors only ever see a :class:`State`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from biomaj.errors import ConfigError
from biomaj.redaction import redact_url

from .base import Clock, LockInfo, LockOwner, NodeInfo, ProgressValue, SlotHolders, State, StateError, Throttle
from .memory import MemoryState

__all__ = [
    "Clock",
    "LockInfo",
    "LockOwner",
    "MemoryState",
    "NodeInfo",
    "ProgressValue",
    "SlotHolders",
    "State",
    "StateError",
    "Throttle",
    "open_state",
]

ACCEPTED = "memory:// (or empty) for the embedded state, or redis://[:password@]host:6379/0 (rediss:// for TLS) for Redis"


def open_state(url: str | None, *, clock: Clock | None = None, prefix: str = "") -> State:
    """Return the state store named by ``url`` (the ``state.url`` setting); :class:`ConfigError` if bad.

    ``prefix`` goes in front of every Redis key: a namespace for tests, or for several
    installations sharing one Redis database (the memory state, private to its process, needs none).
    A malformed Redis URL raises :class:`StateError`; a Redis that does not answer raises it at the
    first operation (after retries). Neither message shows the password.
    """
    url = (url or "").strip()
    scheme = urlsplit(url).scheme.lower() if "://" in url else url.lower().rstrip(":")
    if scheme in ("", "memory"):
        return MemoryState() if clock is None else MemoryState(clock=clock)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisState  # imports the redis client only when it is used

        return RedisState(url, prefix=prefix) if clock is None else RedisState(url, clock=clock, prefix=prefix)
    raise ConfigError(f"state.url: unsupported value {redact_url(url)!r}; expected {ACCEPTED}")
