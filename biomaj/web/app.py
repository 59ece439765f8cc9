"""The aiohttp application of the web actor: one route table.

In this version: health (`/healthz`, `/readyz`) and the service status (`/api/v1/status`). The
REST API, BioMAJ 3's `/api/daemon` routes, the UI and `/metrics` plug into the same table in
later versions.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

from aiohttp import web

from biomaj import __version__


class StatusSource(Protocol):
    """What the web app asks of the node that hosts it."""

    async def status(self) -> dict[str, Any]: ...

    async def ready(self) -> dict[str, Any]: ...


NODE_KEY = web.AppKey("node", object)

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.json_response({"status": "ok", "version": __version__})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store, the bus and the state answer."""
    checks = await request.app[NODE_KEY].ready()
    ok = all(c.get("ok") for c in checks.values())
    return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    """Nodes of the service with their roles and actors, and the backends in use."""
    return web.json_response(await request.app[NODE_KEY].status())


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Errors as JSON documents with the HTTP status, never an HTML page or a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason, "status": exc.status}, status=exc.status)


def create_app(node: StatusSource) -> web.Application:
    """The web application serving `node`."""
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)
    app[NODE_KEY] = node
    app.add_routes(routes)
    return app
