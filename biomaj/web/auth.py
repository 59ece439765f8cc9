"""Who sends a request: an API key (``Authorization: APIKEY <key>``, BioMAJ 3's header, or
``X-API-KEY``) names a user; no key means anonymous. A key that matches nobody is refused (401),
never downgraded to anonymous, so that a typo does not silently hide private banks.

Without a key, the web UI's session cookie names the user (:mod:`biomaj.web.ui.sessions`): on
every route, so that the UI's pages and its JavaScript (``EventSource`` cannot send headers) call
the same API as everyone. A state-changing request (not GET, HEAD or OPTIONS) authenticated by
the cookie must carry the page's CSRF token (``X-CSRF-Token``, or a ``csrf_token`` form field),
else 403. A cookie that does not verify means anonymous (a browser is not a script with a typo)."""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from biomaj.auth.users import Identity, Users
from biomaj.reports import Viewer

USERS_KEY = web.AppKey("users", Users)
#: the UI's session cookies (a :class:`biomaj.web.ui.sessions.Sessions`); absent: no cookie login
SESSIONS_KEY = web.AppKey("sessions", object)
IDENTITY = web.RequestKey("identity", object)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _key_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("apikey", "bearer") and value.strip():
        return value.strip()
    return request.headers.get("X-API-KEY") or None


@web.middleware
async def identify(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    key = _key_of(request)
    identity = None
    if key is not None:
        users = request.app[USERS_KEY]
        if users is None:
            raise web.HTTPServiceUnavailable(reason="this node has no store to check API keys against")
        identity = await users.by_api_key(key)
        if identity is None:
            raise web.HTTPUnauthorized(reason="unknown or revoked API key",
                                       headers={"WWW-Authenticate": 'APIKEY realm="biomaj"'})
    elif (sessions := request.app.get(SESSIONS_KEY)) is not None:
        identity = await sessions.identity(request)
        if identity is not None and request.method not in SAFE_METHODS:
            await sessions.check_csrf(request)
    request[IDENTITY] = identity
    return await handler(request)


def identity_of(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)


def viewer_of(request: web.Request) -> Viewer:
    """The reports' view of the requester: visibility and ownership rules of BioMAJ 3."""
    users = request.app[USERS_KEY]
    who = identity_of(request)
    admins = (users.admins if users is not None else frozenset()) | ({who.name} if who is not None and who.admin else set())
    return Viewer(user=who.name if who else None, admins=frozenset(admins))
