"""The HTTP routes of BioMAJ 3's daemon-web: ``POST /api/daemon`` (biomaj-cli's entry point) and
the REST routes under ``/api/daemon/...``, each mapped onto an operation of :mod:`.options`."""

from __future__ import annotations

import asyncio
import posixpath
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from biomaj import jobs
from biomaj.published import exposed

from ..bank_access import load_bank_file, visible_bank
from ..context import identity_of, node_of, viewer_of
from ..db import BadCredentials, db_viewer
from ..errors import json_body, json_type_name
from ..registry import Api
from ..status_page import biomaj3_status
from .options import (
    DEFAULTS,
    DIGITS,
    END_OF_LOG,
    FLAGS,
    MAX_TAIL,
    TAG,
    TEXTS,
    UNSUPPORTED,
    Answer,
    Operation,
    Options,
    _bank_name,
    _err,
    _log_file,
    _number,
    _perform,
    _split,
    _tail,
    _visible,
    op_aboutme,
    op_cancel,
    op_check,
    op_freeze,
    op_history,
    op_maintenance,
    op_owner,
    op_publish,
    op_remove,
    op_remove_pending,
    op_repair,
    op_search,
    op_show,
    op_stats,
    op_status,
    op_status_ko,
    op_unfreeze,
    op_unpublish,
    op_update,
    op_update_status,
    op_version,
    op_visibility,
    op_whatsup,
)

api = Api()



def _rest(answer: Answer) -> web.Response:
    """A REST route's answer: BioMAJ 3's JSON form, a dict as is, anything else as ``{"msg"}``."""
    body = dict(answer.data) if isinstance(answer.data, dict) else {"msg": answer.data}
    if answer.jobs:
        body["jobs"] = answer.jobs
    return web.json_response(body)


async def _call(request: web.Request, operation: Operation, **values: Any) -> web.Response:
    options = Options(DEFAULTS)
    options.update(values)
    options["json"] = True
    return _rest(await operation(request, options))


def _bank(request: web.Request) -> str:
    return _bank_name(request.match_info["bank"])


async def _body_fields(request: web.Request, allowed: dict[str, type]) -> dict[str, Any]:
    body = await json_body(request)
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _err(web.HTTPBadRequest,
                   f"unknown field(s): {', '.join(unknown)}; expected {', '.join(allowed) or 'none'}")
    for key, kind in allowed.items():
        value = body.get(key)
        if value is not None and not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise _err(web.HTTPBadRequest, f"{key} must be {json_type_name(kind)}")
    return body


# --- routes ----------------------------------------------------------------------------------------

OPTIONS_SCHEMA = {
    "type": "object", "required": ["options"], "additionalProperties": False,
    "properties": {"options": {
        "type": "object", "additionalProperties": False,
        "description": "biomaj-cli's options (argparse dests); the first action set wins, in BioMAJ 3's order",
        "properties": {**{k: {"type": ["boolean", "null"]} for k in sorted(FLAGS)},
                       **{k: {"type": ["string", "null"]} for k in sorted(TEXTS)},
                       "tail": {"type": ["integer", "string", "null"]},
                       "historyLimit": {"type": ["integer", "string", "null"]},
                       "timestamp": {"type": ["number", "null"]}, "options": {}}}},
}
#: BioMAJ 3's fields of ``POST /api/daemon/bank/{bank}``, in its order, then biomaj's own update options
#: (``dry_run``), onto the declared update options (:data:`biomaj.jobs.UPDATE`): same names, the
#: declared types and schemas.
BIOMAJ3_UPDATE_FIELDS = ("publish", "fromscratch", "stop_before", "stop_after", "from_task", "process", "release")
UPDATE_FIELDS = BIOMAJ3_UPDATE_FIELDS + tuple(
    option.name for option in jobs.UPDATE.options if option.name not in BIOMAJ3_UPDATE_FIELDS)
UPDATE_BODY = {name: jobs.UPDATE.option(name).type for name in UPDATE_FIELDS}


@api.route("GET", "/api/daemon", summary="Ping (BioMAJ 3's Consul check): {\"msg\": \"pong\"}", access="public",
           tag=TAG)
async def daemon_ping(request: web.Request) -> web.Response:
    return web.json_response({"msg": "pong"})


@api.route("POST", "/api/daemon", summary="biomaj-cli's entry point: {\"options\": {...}} -> {\"status\", \"msg\"}",
           access="public", tag=TAG, body=OPTIONS_SCHEMA,
           responses={200: "{\"status\": true, \"msg\": text or BioMAJ 3's JSON form (option json)}"})
async def daemon_options(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    extra = sorted(set(body) - {"options"})
    if extra:
        raise _err(web.HTTPBadRequest, f"unknown field(s) {', '.join(extra)}: the body is {{\"options\": {{...}}}}")
    options = Options.parse(body.get("options"))
    answer = await _perform(request, options)
    result = {"status": True, "msg": answer.data if options["json"] else answer.text}
    if answer.jobs:
        result["jobs"] = answer.jobs
    return web.json_response(result)


@api.route("GET", "/api/daemon/status", summary="Service health in BioMAJ 3's shape (hosts for admins only)",
           access="public", tag=TAG)
async def daemon_service_status(request: web.Request) -> web.Response:
    node = node_of(request)
    who = identity_of(request)
    nodes = (await node.status()).get("nodes") or []
    return web.json_response(biomaj3_status(await node.ready(), nodes, who is not None and who.admin))


@api.route("GET", "/api/daemon/status/ko", summary="Banks whose last update failed (visible ones)", access="public",
           tag=TAG)
async def daemon_status_ko(request: web.Request) -> web.Response:
    return await _call(request, op_status_ko, statusko=True)


@api.route("GET", "/api/daemon/bank", summary="Banks the requester may see, as --status", access="public", tag=TAG)
async def daemon_banks(request: web.Request) -> web.Response:
    return await _call(request, op_status, status=True)


@api.route("GET", "/api/daemon/bank/{bank}", summary="A bank's releases and pending runs, as --status --bank",
           access="public", tag=TAG)
async def daemon_bank(request: web.Request) -> web.Response:
    return await _call(request, op_status, status=True, bank=_bank(request))


@api.route("POST", "/api/daemon/bank/{bank}", summary="Update the bank (a job)", access="owner", tag=TAG,
           body={"type": "object", "additionalProperties": False, "properties": {
               name: jobs.UPDATE.option(name).schema() for name in UPDATE_FIELDS}})
async def daemon_bank_update(request: web.Request) -> web.Response:
    body = await _body_fields(request, UPDATE_BODY)
    return await _call(request, op_update, update=True, bank=_bank(request), **body)


@api.route("DELETE", "/api/daemon/bank/{bank}",
           summary="{\"release\"}: remove a release; {\"all\": true, \"force\"}: remove-all; "
                   "{\"pending\": true} (jobs)",
           access="owner", tag=TAG, body={"type": "object", "additionalProperties": False, "properties": {
               "release": {"type": "string"}, "all": {"type": "boolean"}, "force": {"type": "boolean"},
               "pending": {"type": "boolean"}}})
async def daemon_bank_remove(request: web.Request) -> web.Response:
    body = await _body_fields(request, {"release": str, "all": bool, "force": bool, "pending": bool})
    name = _bank(request)
    if body.get("all"):
        return await _call(request, op_remove, removeall=True, bank=name, force=bool(body.get("force")))
    if body.get("pending"):
        return await _call(request, op_remove_pending, removepending=True, bank=name, release=body.get("release"))
    if not body.get("release"):
        raise _err(web.HTTPBadRequest, 'missing release: {"release": R}, {"all": true} or {"pending": true}')
    return await _call(request, op_remove, remove=True, bank=name, release=body["release"])


@api.route("GET", "/api/daemon/bank/{bank}/owns", summary="{\"is_admin_or_owner\"}: may the requester change the bank",
           access="public", tag=TAG)
async def daemon_bank_owns(request: web.Request) -> web.Response:
    name = _bank(request)
    doc = await node_of(request).store.get_bank(name)
    if doc is None:
        load_bank_file(request, name)  # 404 for no bank at all
    else:
        await visible_bank(request, name)  # 404 for a bank one may not see, as for an unknown one
    viewer = viewer_of(request)
    owns = viewer.is_owner(doc) if doc is not None else viewer.user in viewer.admins  # no owner: the admins'
    return web.json_response({"is_admin_or_owner": owns})


@api.route("GET", "/api/daemon/bank/{bank}/check", summary="Check the bank's properties file", access="public",
           tag=TAG)
async def daemon_bank_check(request: web.Request) -> web.Response:
    return await _call(request, op_check, check=True, bank=_bank(request))


@api.route("GET", "/api/daemon/bank/{bank}/status",
           summary="Queued jobs and workflow steps of the bank, as --update-status", access="public", tag=TAG)
async def daemon_bank_update_status(request: web.Request) -> web.Response:
    return await _call(request, op_update_status, updatestatus=True, bank=_bank(request))


@api.route("GET", "/api/daemon/bank/{bank}/show", summary="Formats, types and files per release, as --show",
           access="public", tag=TAG, query=(("release", "string", "only this release"),))
async def daemon_bank_show(request: web.Request) -> web.Response:
    release = request.query.get("release")
    if release is None and request.can_read_body:  # BioMAJ 3 read it from a JSON body
        release = (await _body_fields(request, {"release": str})).get("release")
    return await _call(request, op_show, show=True, bank=_bank(request), release=release)


async def _send_log(request: web.Request, tail: int) -> web.StreamResponse:
    doc = await _visible(request, _bank(request))
    path = _log_file(request, doc)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await response.prepare(request)
    last = b"\n"
    try:
        if tail:
            data = await asyncio.to_thread(_tail, path, tail)
            await response.write(data)
            last = data[-1:] or last
        else:
            with path.open("rb") as handle:
                while chunk := await asyncio.to_thread(handle.read, 65536):
                    await response.write(chunk)
                    last = chunk[-1:]
        await response.write((b"" if last == b"\n" else b"\n") + END_OF_LOG)
        await response.write_eof()
    except ConnectionError:  # the client went away
        pass
    return response


@api.route("GET", "/api/daemon/bank/{bank}/log",
           summary="The bank's last session log as text, ending with ##END_OF_LOG (what --last-log prints)",
           access="public", tag=TAG, content_type="text/plain")
async def daemon_bank_log(request: web.Request) -> web.StreamResponse:
    return await _send_log(request, 0)


@api.route("GET", "/api/daemon/bank/{bank}/log/{tail}", summary="The last {tail} lines of the bank's last session log "
           "(0: all), as --last-log --tail N", access="public", tag=TAG, content_type="text/plain")
async def daemon_bank_log_tail(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["tail"]
    if not DIGITS.fullmatch(tail) or int(tail) > MAX_TAIL:
        raise _err(web.HTTPBadRequest, f"tail must be a number of lines between 0 and {MAX_TAIL}")
    return await _send_log(request, int(tail))


@api.route("PUT", "/api/daemon/bank/{bank}/cancel", summary="Cancel the bank's queued or running jobs",
           access="owner", tag=TAG)
async def daemon_bank_cancel(request: web.Request) -> web.Response:
    return await _call(request, op_cancel, updatecancel=True, bank=_bank(request))


@api.route("PUT", "/api/daemon/bank/{bank}/owner/{owner}", summary="Give the bank to another user", access="owner",
           tag=TAG)
async def daemon_bank_owner(request: web.Request) -> web.Response:
    return await _call(request, op_owner, owner=request.match_info["owner"], bank=_bank(request))


@api.route("PUT", "/api/daemon/bank/{bank}/visibility/{visibility}", summary="Make the bank public or private",
           access="owner", tag=TAG)
async def daemon_bank_visibility(request: web.Request) -> web.Response:
    return await _call(request, op_visibility, visibility=request.match_info["visibility"], bank=_bank(request))


@api.route("PUT", "/api/daemon/bank/{bank}/name/{name}", summary="Not supported: rename a bank (answers 400)",
           access="user", tag=TAG)
async def daemon_bank_rename(request: web.Request) -> web.Response:
    raise _err(web.HTTPBadRequest, UNSUPPORTED["newbank"])


@api.route("PUT", "/api/daemon/bank/{bank}/move", summary="Not supported: move the production directories "
           "(answers 400)", access="user", tag=TAG)
async def daemon_bank_move(request: web.Request) -> web.Response:
    raise _err(web.HTTPBadRequest, UNSUPPORTED["newdir"])


@api.route("PUT", "/api/daemon/bank/{bank}/repair", summary="Repair the bank (a job)", access="owner", tag=TAG,
           body=jobs.REPAIR.body_schema())
async def daemon_bank_repair(request: web.Request) -> web.Response:
    body = await _body_fields(request, jobs.REPAIR.types())
    return await _call(request, op_repair, repair=True, bank=_bank(request), release=body.get("release"))


@api.route("PUT", "/api/daemon/bank/{bank}/publish", summary="Publish a release (default: the latest)",
           access="owner", tag=TAG, body={"type": "object", "properties": {"release": {"type": "string"}}})
async def daemon_bank_publish(request: web.Request) -> web.Response:
    body = await _body_fields(request, {"release": str})
    return await _call(request, op_publish, publish=True, bank=_bank(request), release=body.get("release"))


@api.route("DELETE", "/api/daemon/bank/{bank}/publish", summary="Unpublish the bank", access="owner", tag=TAG)
async def daemon_bank_unpublish(request: web.Request) -> web.Response:
    return await _call(request, op_unpublish, unpublish=True, bank=_bank(request))


@api.route("PUT", "/api/daemon/bank/{bank}/freeze/{release}", summary="Freeze a release", access="owner", tag=TAG)
async def daemon_bank_freeze(request: web.Request) -> web.Response:
    return await _call(request, op_freeze, freeze=True, bank=_bank(request), release=request.match_info["release"])


@api.route("DELETE", "/api/daemon/bank/{bank}/freeze/{release}", summary="Unfreeze a release", access="owner",
           tag=TAG)
async def daemon_bank_unfreeze(request: web.Request) -> web.Response:
    return await _call(request, op_unfreeze, unfreeze=True, bank=_bank(request),
                       release=request.match_info["release"])


@api.route("GET", "/api/daemon/search", summary="Production releases by format and type, as --search",
           access="public", tag=TAG, query=(("formats", "string", "comma-separated formats (any of them)"),
                                            ("types", "string", "comma-separated types (any of them)")))
async def daemon_search(request: web.Request) -> web.Response:
    values = {"formats": ",".join(request.query.getall("formats", [])) or None,
              "types": ",".join(request.query.getall("types", [])) or None, "query": request.query.get("query")}
    if request.can_read_body:  # BioMAJ 3 read lists from a JSON body
        body = await _body_fields(request, {"formats": list, "types": list, "query": list})
        values.update({k: ",".join(_split(body[k])) for k in ("formats", "types") if body.get(k)})
        values["query"] = values["query"] or ",".join(_split(body.get("query"))) or None
    return await _call(request, op_search, search=True, formats=values["formats"], types=values["types"],
                       query=values["query"])


@api.route("POST", "/api/daemon/aboutme", summary="Who the API key belongs to (never an API key, never a password)",
           access="user", tag=TAG)
async def daemon_aboutme(request: web.Request) -> web.Response:
    return await _call(request, op_aboutme, aboutme=True)


@api.route("GET", "/api/daemon/maintenance", summary="Whether maintenance mode is on: {\"msg\": \"Maintenance: On\"}",
           access="public", tag=TAG)
async def daemon_maintenance(request: web.Request) -> web.Response:
    return await _call(request, op_maintenance, maintenance="status")


@api.route("POST", "/api/daemon/maintenance", summary="Turn maintenance mode on", access="admin", tag=TAG)
async def daemon_maintenance_on(request: web.Request) -> web.Response:
    return await _call(request, op_maintenance, maintenance="on")


@api.route("DELETE", "/api/daemon/maintenance", summary="Turn maintenance mode off", access="admin", tag=TAG)
async def daemon_maintenance_off(request: web.Request) -> web.Response:
    return await _call(request, op_maintenance, maintenance="off")


@api.route("GET", "/api/daemon/whatsup", summary="Locked banks, maintenance and queued jobs (visible banks)",
           access="public", tag=TAG)
async def daemon_whatsup(request: web.Request) -> web.Response:
    return await _call(request, op_whatsup, whatsup=True)


@api.route("GET", "/api/daemon/stats", summary="Disk usage per bank and release (visible banks)", access="public",
           tag=TAG)
async def daemon_stats(request: web.Request) -> web.Response:
    return await _call(request, op_stats, stats=True)


@api.route("GET", "/api/daemon/version", summary="Version of this server (no call to PyPI)", access="public", tag=TAG)
async def daemon_version(request: web.Request) -> web.Response:
    return await _call(request, op_version, version=True)


@api.route("GET", "/api/daemon/history", summary="Updates and removals of the visible banks, most recent first",
           access="public", tag=TAG, query=(("limit", "integer", "at most this many (1-1000, default 100)"),))
async def daemon_history(request: web.Request) -> web.Response:
    return await _call(request, op_history, history=True,
                       historyLimit=_number("historyLimit", request.query.get("limit"), 100))


@api.route("GET", "/api/daemon/expose", summary="Forward-auth of /db/<bank>/... (X-Forwarded-Uri; Basic login:apikey "
           "for private banks)", access="public", tag=TAG, responses={200: "access allowed", 403: "access refused"})
async def daemon_expose(request: web.Request) -> web.Response:
    uri = request.headers.get("X-Forwarded-Uri")
    if not uri:
        raise _err(web.HTTPBadRequest, "X-Forwarded-Uri is missing")
    path = unquote(urlsplit(uri).path)
    if "\x00" in path or "\\" in path:
        raise _err(web.HTTPForbidden, "access refused")
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]  # what nginx serves (W37)
    if not parts or parts[0] != "db":
        raise _err(web.HTTPForbidden, "access refused: not under /db")
    if not exposed(node_of(request).config):
        raise _err(web.HTTPForbidden, "access refused: expose is disabled")
    if len(parts) == 1:
        return web.json_response({"msg": "access allowed"})
    # an unknown bank is refused as a private one (nobody tells them apart); admins pass: /db says 404
    doc = await node_of(request).store.get_bank(parts[1]) or {"name": parts[1], "properties": {}}
    try:
        viewer, authenticated = await db_viewer(request)  # the rule of /db itself (API key or Basic login:apikey)
    except BadCredentials as exc:
        raise _err(web.HTTPForbidden, f"access refused: {exc}") from None
    if viewer.can_see(doc):
        return web.json_response({"msg": "access allowed"})
    if not authenticated:
        raise _err(web.HTTPForbidden, "access refused: private bank (Basic login:apikey needed)")
    raise _err(web.HTTPForbidden, "access refused")
