"""Operations: `/metrics` (Prometheus), request logging, CORS (being written)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the operations routes and middlewares to ``app``."""
