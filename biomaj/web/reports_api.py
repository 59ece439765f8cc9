"""`/api/v1` reports: search, show, history, stats, whatsup, nodes, maintenance, session logs and
the event stream (being written)."""

from __future__ import annotations

from .registry import Api

api = Api()
