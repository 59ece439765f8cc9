"""`/api/v1` reports and live views: search, show, stats, history, whatsup, nodes, maintenance,
session logs (whole, tail, or followed while the bank's job runs) and the server-sent-events
stream of job events. The same tables as ``biomaj ctl`` (``biomaj.reports``), with the requester's
visibility: what a viewer may not see is left out, never hinted at."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiohttp import web

from biomaj import reports
from biomaj.bus import names
from biomaj.bus.messages import JobEvent
from biomaj.storage.base import ACTIVE_JOB_STATES
from biomaj.workflow import locks

from .banks import _visible_bank
from .context import identity_of, node_of, viewer_of
from .errors import ApiError, json_body
from .registry import Api

api = Api()

FOLLOW_POLL = 0.5  # seconds between two looks at a followed log
SSE_KEEPALIVE = 15.0  # seconds between two comments on a quiet event stream
MAX_TAIL = 100_000


@api.route("GET", "/api/v1/search", summary="Production releases by format and type", access="public",
           tag="reports", query=(("formats", "string", "comma-separated formats (any of them)"),
                                 ("types", "string", "comma-separated types (any of them)")))
async def search(request: web.Request) -> web.Response:
    banks = await node_of(request).store.list_banks()
    table = reports.search(banks, viewer_of(request), reports.split_list(request.query.get("formats")),
                           reports.split_list(request.query.get("types")))
    return web.json_response(table.records())


@api.route("GET", "/api/v1/banks/{bank}/show", summary="Formats, types and files of a bank's releases",
           access="public", tag="reports", query=(("release", "string", "only this release"),))
async def show(request: web.Request) -> web.Response:
    doc = await _visible_bank(request)
    return web.json_response(reports.show(doc, viewer_of(request), request.query.get("release")).records())


@api.route("GET", "/api/v1/stats", summary="Disk usage per bank and release", access="public", tag="reports")
async def stats(request: web.Request) -> web.Response:
    return web.json_response(reports.stats_records(await node_of(request).store.list_banks(), viewer_of(request)))


@api.route("GET", "/api/v1/history", summary="Updates and removals, most recent first", access="public",
           tag="reports", query=(("bank", "string", "only this bank"), ("limit", "integer", "at most this many (1-1000)")))
async def history(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        raise ApiError(400, "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "limit must be between 1 and 1000")
    store, viewer = node_of(request).store, viewer_of(request)
    visible = {b["name"] for b in await store.list_banks() if viewer.can_see(b)}
    entries = [e for e in await store.list_history(request.query.get("bank") or None, None)
               if e.get("bank") in visible][:limit]
    return web.json_response(reports.history(entries).records())


@api.route("GET", "/api/v1/whatsup", summary="Locked banks, maintenance, queued and running jobs",
           access="public", tag="reports")
async def whatsup(request: web.Request) -> web.Response:
    node, viewer = node_of(request), viewer_of(request)
    visible = {b["name"] for b in await node.store.list_banks() if viewer.can_see(b)} | {locks.MAINTENANCE}
    lock_dir = locks.installation_lock_dir(node.config.global_properties, node.config.root)
    held = [{"bank": bank, "owner": holder.describe()} for bank, holder in locks.list_locks(lock_dir)
            if bank in visible]
    jobs = [j for j in await node.store.list_jobs(state=ACTIVE_JOB_STATES, limit=None) if j.get("bank") in visible]
    return web.json_response(reports.whatsup(held, [j for j in jobs if j["state"] == "queued"]).records())


@api.route("GET", "/api/v1/nodes", summary="Nodes of the service: roles, host, version, work in flight",
           access="user", tag="service")
async def nodes(request: web.Request) -> web.Response:
    state = node_of(request).state
    return web.json_response([n.to_dict() for n in await state.nodes()] if state is not None else [])


@api.route("GET", "/api/v1/maintenance", summary="Whether maintenance mode is on", access="public", tag="service")
async def maintenance(request: web.Request) -> web.Response:
    node = node_of(request)
    lock_dir = locks.installation_lock_dir(node.config.global_properties, node.config.root)
    return web.json_response({"maintenance": locks.is_maintenance(lock_dir)})


@api.route("PUT", "/api/v1/maintenance", summary="Turn maintenance mode on or off (no workflow starts while on)",
           access="admin", tag="service",
           body={"type": "object", "required": ["maintenance"], "properties": {"maintenance": {"type": "boolean"}}})
async def set_maintenance(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    if not isinstance(body.get("maintenance"), bool):
        raise ApiError(400, "maintenance must be true or false")
    node = node_of(request)
    lock_dir = locks.installation_lock_dir(node.config.global_properties, node.config.root)
    locks.set_maintenance(lock_dir, body["maintenance"], identity_of(request).name)
    return web.json_response({"maintenance": locks.is_maintenance(lock_dir)})


# --- session logs ----------------------------------------------------------------------------------


@api.route("GET", "/api/v1/banks/{bank}/sessions/{session}/log",
           summary="The log of a session (text): whole, its last lines (tail=N), or followed (follow=1)",
           access="public", tag="reports",
           query=(("tail", "integer", "only the last N lines"),
                  ("follow", "boolean", "keep sending new lines while a job runs on the bank")),
           content_type="text/plain")
async def session_log(request: web.Request) -> web.StreamResponse:
    doc = await _visible_bank(request)
    wanted = request.match_info["session"]
    session = next((s for s in doc.get("sessions") or [] if str(s.get("id")) == wanted
                    or (wanted == "last" and s is (doc.get("sessions") or [None])[-1])), None)
    if session is None:
        raise ApiError(404, f"bank {doc['name']} has no session {wanted}")
    path = Path(session.get("log_file") or "")  # from the store, never from the URL
    if not session.get("log_file") or not path.is_file():
        raise ApiError(404, f"session {wanted} of {doc['name']} has no log file (any more)")
    tail = request.query.get("tail")
    if tail is not None and (not tail.isdigit() or not 0 < int(tail) <= MAX_TAIL):
        raise ApiError(400, f"tail must be a number of lines between 1 and {MAX_TAIL}")
    follow = request.query.get("follow", "").lower() in ("1", "true", "yes")
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        await _send_log(response, path, tail, follow, node_of(request).store, doc["name"])
    except ConnectionError:  # the client went away
        return response
    await response.write_eof()
    return response


async def _send_log(response: web.StreamResponse, path: Path, tail: str | None, follow: bool, store,
                    bank: str) -> None:
    with path.open("rb") as log:
        if tail is not None:
            lines = log.read().splitlines(keepends=True)[-int(tail):]
            await response.write(b"".join(lines))
        else:
            while chunk := log.read(65536):
                await response.write(chunk)
        if follow:
            while True:
                chunk = log.read(65536)
                if chunk:
                    await response.write(chunk)
                    continue
                if not await store.list_jobs(state=ACTIVE_JOB_STATES, bank=bank, limit=1):
                    await response.write(log.read())
                    break
                await asyncio.sleep(FOLLOW_POLL)


# --- events ----------------------------------------------------------------------------------------


@api.route("GET", "/api/v1/events", summary="Server-sent events: job events of the banks the requester may see",
           access="public", tag="jobs", query=(("bank", "string", "only this bank"),
                                               ("job", "string", "only this job")),
           content_type="text/event-stream")
async def events(request: web.Request) -> web.StreamResponse:
    node, viewer = node_of(request), viewer_of(request)
    only_bank, only_job = request.query.get("bank"), request.query.get("job")
    seen: dict[str, tuple[float, bool]] = {}  # bank -> (checked at, visible)

    async def visible(bank: str) -> bool:
        cached = seen.get(bank)
        if cached is None or time.monotonic() - cached[0] > 10:
            doc = await node.store.get_bank(bank)
            allowed = viewer.can_see(doc) if doc is not None else viewer.user in viewer.admins
            cached = seen[bank] = (time.monotonic(), allowed)
        return cached[1]

    subscription = await node.bus.subscribe(f"{names.JOB_TOPIC}.*", buffer=10_000)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        await response.write(b": biomaj job events\n\n")
        await _stream_events(response, subscription, visible, only_bank, only_job)
    except ConnectionError:  # the client went away
        pass
    return response


async def _stream_events(response: web.StreamResponse, subscription, visible, only_bank, only_job) -> None:
    async with subscription:
        while True:
            try:
                event = await asyncio.wait_for(anext(subscription), SSE_KEEPALIVE)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            except StopAsyncIteration:
                break
            if not isinstance(event, JobEvent) or (only_bank and event.bank != only_bank) or \
                    (only_job and event.job_id != only_job) or not await visible(event.bank):
                continue
            data = json.dumps({"id": event.id, "job_id": event.job_id, "bank": event.bank, "kind": event.kind,
                               "state": event.state, "step": event.step, "message": event.message,
                               "progress": event.progress, "at": event.created})
            await response.write(f"event: job\ndata: {data}\n\n".encode())
