"""The message bus: work queues and events between actors.

``open_bus(url)`` picks the transport from ``bus.url`` in config.yml: ``memory://`` (or empty)
for the single-binary mode, RabbitMQ (``amqp://``/``amqps://``, :mod:`biomaj.bus.amqp`) for the
distributed mode.
Actors only ever see a :class:`Bus`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from biomaj.errors import ConfigError
from biomaj.redaction import redact_url

from . import names
from .base import Bus, BusClosed, BusError, BusTimeout, DeadLetter, Delivery, Subscription, topic_matches
from .memory import MemoryBus
from .messages import Message, MessageError, decode, message

__all__ = [
    "Bus",
    "BusClosed",
    "BusError",
    "BusTimeout",
    "DeadLetter",
    "Delivery",
    "MemoryBus",
    "Message",
    "MessageError",
    "Subscription",
    "decode",
    "message",
    "names",
    "open_bus",
    "topic_matches",
]

ACCEPTED = "memory:// (or empty) for the embedded bus, or amqp://user:password@host:5672/vhost (amqps:// for TLS) for RabbitMQ"


def open_bus(url: str | None) -> Bus:
    """Return the bus named by ``url`` (the ``bus.url`` setting); :class:`ConfigError` if bad."""
    url = (url or "").strip()
    scheme = urlsplit(url).scheme.lower() if "://" in url else url.lower().rstrip(":")
    if scheme in ("", "memory"):
        return MemoryBus()
    if scheme in ("amqp", "amqps"):
        if not urlsplit(url).hostname:
            raise ConfigError(f"bus.url: no host in {redact_url(url)!r}; expected {ACCEPTED}")
        from .amqp import AmqpBus  # aio-pika is imported only when RabbitMQ is used

        return AmqpBus(url)
    raise ConfigError(f"bus.url: unsupported value {redact_url(url)!r}; expected {ACCEPTED}")

