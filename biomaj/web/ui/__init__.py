"""The web UI, served by the web actor under ``/ui/``: server-rendered pages (``pages.py``,
``templates/``), one stylesheet and one script (``static/``), no build step.

``setup(app)`` adds the routes, the session cookies (``sessions.py``, read by the identity
middleware), an error middleware that answers ``/ui/`` errors as pages (the API keeps its JSON
errors), and the security headers of every ``/ui/`` answer: a CSP allowing only this server's
scripts, styles and connections, no framing, no MIME sniffing, no referrer to other sites, and no
caching of pages (they hold a CSRF token and private data).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from biomaj.errors import BiomajError

from ..auth import SESSIONS_KEY, USERS_KEY
from ..context import NODE_KEY
from . import pages
from .sessions import Sessions

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def is_ui(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def setup(app: web.Application) -> None:
    """Add the UI to ``app`` (called by ``create_app``, before it starts)."""
    from .. import errors

    node = app[NODE_KEY]
    config = getattr(node, "config", None)
    # a node without config (tests' stand-ins) has no users either: any key will do
    secret = config.settings.web.secret.get_secret_value() if config is not None else secrets.token_urlsafe(32)
    proxies = config.settings.web.trusted_proxies if config is not None else []
    app[SESSIONS_KEY] = Sessions(secret, app.get(USERS_KEY), proxies)
    app.middlewares.insert(app.middlewares.index(errors.json_errors) + 1, html_errors)
    app.on_response_prepare.append(_security_headers)
    get, post = app.router.add_get, app.router.add_post  # a GET route answers HEAD too
    get("/", pages.to_dashboard)
    get("/ui", pages.to_dashboard)
    get("/ui/", pages.dashboard)
    get("/ui/login", pages.login_page)
    post("/ui/login", pages.login)
    post("/ui/logout", pages.logout)
    get("/ui/banks/{bank}", pages.bank_page)
    get("/ui/banks/{bank}/sessions/{session}/log", pages.log_page)
    get("/ui/nodes", pages.nodes_page)
    get("/ui/schedules", pages.schedules_page)
    get("/ui/users", pages.users_page)
    app.router.add_static("/ui/static/", STATIC, name="ui-static")
    app.router.add_route("*", "/ui/{tail:.*}", pages.not_found)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not is_ui(request.path):
        return
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith("/ui/static/"):
        response.headers["Cache-Control"] = "no-store"
    else:
        response.headers.setdefault("Cache-Control", "no-cache")  # revalidated (ETag), never stale


@web.middleware
async def html_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """``/ui/`` errors as pages with the same words as the API's JSON errors."""
    if not is_ui(request.path):
        return await handler(request)
    from ..errors import status_of

    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return pages.error_page(request, exc.status, exc.reason or "error")
    except BiomajError as exc:
        return pages.error_page(request, status_of(exc), str(exc))
    except Exception:  # a bug: logged with its traceback, the page shows no internals
        log.exception("%s %s failed", request.method, request.path)
        return pages.error_page(request, 500, "internal error: see the server log")
