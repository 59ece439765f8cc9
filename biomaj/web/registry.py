"""The REST API's route registry: each handler is declared once, with what the OpenAPI document
says about it (summary, who may call it, parameters, body), and the access rule is enforced by the
registry itself, so that no route can forget it.

Access levels: ``public`` (anyone, anonymous included; visibility rules apply inside), ``user``
(an authenticated user), ``owner`` (the owner of the URL's ``{bank}`` or an admin, checked before the
handler reads its body: :func:`.bank_access.check_owner`), ``admin``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCESS = ("public", "user", "owner", "admin")


@dataclass
class Operation:
    """One documented route."""

    method: str
    path: str
    handler: Handler
    summary: str
    access: str
    tag: str
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)
    body: dict[str, Any] | None = None  # JSON schema of the request body
    responses: dict[int, str] = field(default_factory=dict)
    content_type: str = "application/json"  # of a successful answer
    pattern: str | None = None  # the router's path when it differs from the documented one ({path:.*})
    head: bool = False  # answer HEAD too

    @property
    def router_path(self) -> str:
        return self.pattern or self.path

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)", self.path)


class Api:
    """Collects operations; ``add_to(app)`` registers them, ``openapi()`` describes them."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(self, method: str, path: str, *, summary: str, access: str, tag: str,
              query: tuple[tuple[str, str, str], ...] = (), body: dict[str, Any] | None = None,
              responses: dict[int, str] | None = None, content_type: str = "application/json",
              pattern: str | None = None, head: bool = False) -> Callable[[Handler], Handler]:
        if access not in ACCESS:
            raise ValueError(f"access must be one of {ACCESS}")
        if access == "owner" and "{bank}" not in path:
            raise ValueError(f"{method} {path}: an owner route names its bank ({{bank}})")

        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(method, path, _guarded(handler, access), summary, access, tag,
                                             query, body, responses or {}, content_type, pattern, head))
            return handler

        return register


def _guarded(handler: Handler, access: str) -> Handler:
    from .auth import identity_of
    from .bank_access import check_owner

    async def guarded(request: web.Request) -> web.StreamResponse:
        if access != "public":
            who = identity_of(request)
            if who is None:
                raise web.HTTPUnauthorized(reason="authentication needed: Authorization: APIKEY <key> or X-API-KEY",
                                           headers={"WWW-Authenticate": 'APIKEY realm="biomaj"'})
            if access == "admin" and not who.admin:
                raise web.HTTPForbidden(reason="admin rights needed")
            if access == "owner" and "bank" in request.match_info:
                await check_owner(request, request.match_info["bank"])
        return await handler(request)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded
