"""The aiohttp application of the web actor.

Health (`/healthz`, `/readyz`) and the service status (`/api/v1/status`) are here (the page of the
services and nodes, `/status`, in `status_page.py`, reads the same `StatusSource`); the REST API
lives in one module per resource (`banks.py`, `users_api.py`), each an :class:`~.registry.Api`
whose routes carry their access rule and their OpenAPI description (`openapi.py`); the web UI
under `/ui/` is the `ui` package. Middlewares: JSON errors outermost, then the UI's error pages
(`/ui/` only), then the requester's identity (`auth.py`), then no server path in an answer to an
anonymous request (`server_paths.py`).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from biomaj import __version__

from .context import NODE_KEY


class StatusSource(Protocol):
    """What the web app asks of the node that hosts it."""

    async def status(self) -> dict[str, Any]: ...

    async def ready(self) -> dict[str, Any]: ...


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


def api_operations() -> list:
    """Every documented REST operation, in the order of the OpenAPI document."""
    from . import banks, daemon, db, reports_api, status_page, users_api
    from .schedules_api import api as schedules

    return [*banks.api.operations, *reports_api.api.operations, *users_api.api.operations, *daemon.api.operations,
            *db.api.operations, *schedules.operations, *status_page.api.operations]


def create_app(node: StatusSource) -> web.Application:
    """The web application serving `node` (its store, bus, state and config)."""
    from biomaj.auth.identity import users_of

    from . import metrics, openapi, ui
    from .auth import USERS_KEY, identify
    from .errors import CLIENT_TEXT, json_errors
    from .server_paths import anonymous_answers_without_paths, client_text

    app = web.Application(middlewares=[json_errors, identify, anonymous_answers_without_paths], client_max_size=1024 * 1024)
    app[NODE_KEY] = node
    store, config = getattr(node, "store", None), getattr(node, "config", None)
    app[USERS_KEY] = users_of(config, store) if store is not None and config is not None else None
    app[CLIENT_TEXT] = client_text(config)  # no server path in an error nor in an anonymous answer
    app.add_routes(routes)
    operations = api_operations()
    for operation in operations:
        app.router.add_route(operation.method, operation.router_path, operation.handler)
        if operation.head:
            app.router.add_route("HEAD", operation.router_path, operation.handler)
    openapi.add_routes(app, operations)
    ui.setup(app)  # the web UI under /ui/ (its session cookie, pages and static files)
    metrics.setup(app)
    return app
