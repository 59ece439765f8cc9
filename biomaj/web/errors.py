"""Every error as a JSON document ``{"error": message, "status": code, "exit_code": n}`` with the
right HTTP code, never an HTML page or a traceback: what a client sends cannot crash the server.
``exit_code`` is the exit status of the same error in an in-process ``biomaj ctl``, so that
``ctl --proxy`` exits as it would on the server."""

from __future__ import annotations

import json
import logging
from typing import Awaitable, Callable

from aiohttp import web

from biomaj.errors import BiomajError, ConfigError, UnknownBank

log = logging.getLogger(__name__)


class ApiError(BiomajError):
    """An error answer with its HTTP status; the message may quote anything the client sent (it
    goes into the JSON body, never into the HTTP status line, where CR/LF would be refused)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def status_of(exc: BiomajError) -> int:
    """The HTTP status of a biomaj error, by its kind."""
    from biomaj.auth.users import UnknownUser, UserError
    from biomaj.reports import AccessForbidden, UnknownRelease
    from biomaj.runtime.lease import BankBusy
    from biomaj.storage.base import Conflict, DuplicateJob, NotFound
    from biomaj.workflow.bank import NotAuthorized
    from biomaj.workflow.locks import BankLocked, InMaintenance

    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, (UnknownBank, UnknownUser, UnknownRelease, NotFound)):
        return 404
    if isinstance(exc, (AccessForbidden, NotAuthorized)):
        return 403
    if isinstance(exc, (BankLocked, BankBusy, DuplicateJob, Conflict, InMaintenance)):
        return 409
    if isinstance(exc, (ConfigError, UserError)):
        return 400
    return 400


def error(status: int, message: str, exit_code: int = 1) -> web.Response:
    return web.json_response({"error": message, "status": status, "exit_code": exit_code}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error(exc.status, exc.reason or exc.text or "error")
        for name in ("WWW-Authenticate", "Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except BiomajError as exc:
        response = error(status_of(exc), str(exc), exc.exit_code)
        response.headers.update(getattr(exc, "headers", {}))
        return response
    except json.JSONDecodeError as exc:
        return error(400, f"the body is not valid JSON: {exc.msg} at character {exc.pos}")
    except UnicodeDecodeError:
        return error(400, "the body is not UTF-8 text")
    except Exception:  # a bug: logged with its traceback, the client gets no internals
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error: see the server log")


async def json_body(request: web.Request, required: bool = False) -> dict:
    """The request's JSON object (``{}`` when empty and not required); 400 otherwise."""
    if not request.can_read_body:
        if required:
            raise ApiError(400, "a JSON object body is required")
        return {}
    try:
        data = json.loads(await request.read())
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data
