"""Every error as a JSON document ``{"error": message, "status": code, "exit_code": n}`` with the
right HTTP code, never an HTML page or a traceback: what a client sends cannot crash the server.
``exit_code`` is the exit status of the same error in an in-process ``biomaj ctl``, so that
``ctl --proxy`` exits as it would on the server. No message names an absolute path of the server
(the app's :data:`CLIENT_TEXT` rewrites them, :mod:`.server_paths`).

Every JSON body is read by :func:`json_body`: too large is a 413 (``web.max_request_bytes``), not
JSON, not UTF-8 or nested deeper than :data:`MAX_JSON_DEPTH` is a 400."""

from __future__ import annotations

import json
import logging
from typing import Awaitable, Callable

from aiohttp import web

from biomaj.errors import BiomajError, ConfigError, UnknownBank

log = logging.getLogger(__name__)

#: how deep a request's JSON may nest (arrays and objects); every body of the API is far shallower
MAX_JSON_DEPTH = 32
#: the app's ``str -> str`` that rewrites server paths in an error message as a client sees them
CLIENT_TEXT = web.AppKey("client_text", object)


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


def _client_error(request: web.Request, status: int, message: str, exit_code: int = 1) -> web.Response:
    client_text = request.app.get(CLIENT_TEXT)
    return error(status, client_text(message) if client_text is not None else message, exit_code)


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _client_error(request, exc.status, exc.reason or exc.text or "error")
        for name in ("WWW-Authenticate", "Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except BiomajError as exc:
        response = _client_error(request, status_of(exc), str(exc), exc.exit_code)
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
    """The request's JSON object (``{}`` when empty and not required); 400 when it is not one, is
    not UTF-8 or nests deeper than MAX_JSON_DEPTH; 413 over ``web.max_request_bytes``. Every JSON
    route reads its body here."""
    if not request.can_read_body:
        if required:
            raise ApiError(400, "a JSON object body is required")
        return {}
    data = parse_json(await request.read())
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def parse_json(raw: bytes) -> object:
    """``raw`` parsed as JSON; ApiError 400 when it is not UTF-8 JSON or nests too deep."""
    too_deep = ApiError(400, f"the body is nested too deeply: JSON arrays and objects nest at most {MAX_JSON_DEPTH} "
                             "levels here")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text") from None
    except RecursionError:  # the parser's own limit, far above ours
        raise too_deep from None
    if _depth_over(data, MAX_JSON_DEPTH):
        raise too_deep
    return data


def _depth_over(data: object, limit: int) -> bool:
    """True when arrays and objects nest deeper than ``limit`` in ``data`` (no recursion)."""
    level = [data]
    for _ in range(limit):
        level = [child for item in level if isinstance(item, (list, dict))
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not any(isinstance(item, (list, dict)) for item in level):
            return False
    return True


JSON_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
                   dict: "an object"}


def json_type_name(kind: type) -> str:
    """``an integer``, ``a boolean``...: a JSON value's expected type, as error messages say it."""
    return JSON_TYPE_NAMES.get(kind, f"a {kind.__name__}")
