"""``Note``: a message type for tests only (no biomaj code sends it), a work message with a text
payload, for bus and actor tests that need any message at all."""

from __future__ import annotations

from biomaj.bus.messages import Message, message


@message
class Note(Message):
    """A test message carrying ``payload``."""

    TYPE = "test.note"

    payload: str = ""
