"""`/api/v1` reports and live views: search, show, stats, history, whatsup, nodes, maintenance,
session logs (whole, tail, or followed while the bank's job runs) and the server-sent-events
stream of job events. The same tables as ``biomaj ctl`` (``biomaj.reports``), with the requester's
visibility: what a viewer may not see is left out, never hinted at. Their records by default; the
tables themselves with ``?format=table`` (``biomaj ctl --proxy`` prints them as the command does)."""

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

from .banks import FORMAT_QUERY, visible_bank_of_url, tables_answer, wants_tables
from .context import identity_of, node_of, viewer_of
from .errors import ApiError, json_body
from .registry import Api
from .tail import tail as read_tail

api = Api()

FOLLOW_POLL = 0.5  # seconds between two looks at a followed log
SSE_KEEPALIVE = 15.0  # seconds between two comments on a quiet event stream
MAX_TAIL = 100_000


@api.route("GET", "/api/v1/search", summary="Production releases by format and type", access="public",
           tag="reports", query=(("formats", "string", "comma-separated formats (any of them)"),
                                 ("types", "string", "comma-separated types (any of them)"), FORMAT_QUERY))
async def search(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
    banks = await node_of(request).store.list_banks()
    table = reports.search(banks, viewer_of(request), reports.split_list(request.query.get("formats")),
                           reports.split_list(request.query.get("types")))
    return tables_answer([table]) if as_tables else web.json_response(table.records())


@api.route("GET", "/api/v1/banks/{bank}/show", summary="Formats, types and files of a bank's releases",
           access="public", tag="reports", query=(("release", "string", "only this release"), FORMAT_QUERY))
async def show(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
    doc = await visible_bank_of_url(request)
    table = reports.show(doc, viewer_of(request), request.query.get("release"))
    return tables_answer([table]) if as_tables else web.json_response(table.records())


@api.route("GET", "/api/v1/banks/{bank}/changes",
           summary="What each release added, removed and changed against the previous one (change reports)",
           access="public", tag="reports", query=(("release", "string", "only this release"), FORMAT_QUERY))
async def changes(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
    doc = await visible_bank_of_url(request)
    records = reports.change_records(doc, viewer_of(request), request.query.get("release"))
    return tables_answer([reports.changes(records)]) if as_tables else web.json_response(records)


@api.route("GET", "/api/v1/stats", summary="Disk usage per bank and release", access="public", tag="reports",
           query=(FORMAT_QUERY,))
async def stats(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
    banks, viewer = await node_of(request).store.list_banks(), viewer_of(request)
    if as_tables:
        return tables_answer([reports.stats(banks, viewer)])
    return web.json_response(reports.stats_records(banks, viewer))


@api.route("GET", "/api/v1/status-ko", summary="Banks whose last update failed (and is not finished)",
           access="public", tag="reports", query=(FORMAT_QUERY,))
async def status_ko(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
    store, viewer = node_of(request).store, viewer_of(request)
    visible = [b["name"] for b in await store.list_banks() if viewer.can_see(b)]
    full = [doc for doc in [await store.get_bank(name) for name in visible] if doc]  # with their sessions
    table = reports.status_ko(full, viewer)
    return tables_answer([table]) if as_tables else web.json_response(table.records())


@api.route("GET", "/api/v1/history", summary="Updates and removals, most recent first", access="public",
           tag="reports", query=(("bank", "string", "only this bank"),
                                 ("limit", "integer", "at most this many (1-1000)"), FORMAT_QUERY))
async def history(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
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
    table = reports.history(entries)
    return tables_answer([table]) if as_tables else web.json_response(table.records())


@api.route("GET", "/api/v1/whatsup", summary="Locked banks, maintenance, queued and running jobs",
           access="public", tag="reports", query=(FORMAT_QUERY,))
async def whatsup(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
    node, viewer = node_of(request), viewer_of(request)
    visible = {b["name"] for b in await node.store.list_banks() if viewer.can_see(b)} | {locks.MAINTENANCE}
    lock_dir = locks.installation_lock_dir(node.config.global_properties, node.config.root)
    held = [{"bank": bank, "owner": holder.describe()} for bank, holder in locks.list_locks(lock_dir)
            if bank in visible]
    jobs = [j for j in await node.store.list_jobs(state=ACTIVE_JOB_STATES, limit=None) if j.get("bank") in visible]
    table = reports.whatsup(held, [j for j in jobs if j["state"] == "queued"])
    return tables_answer([table]) if as_tables else web.json_response(table.records())


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
    doc = await visible_bank_of_url(request)
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
        if tail is not None:  # read from the end: memory bounded whatever the log's size
            await response.write(await asyncio.to_thread(read_tail, log, int(tail)))
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
                                               ("job", "string", "only this job"),
                                               ("log", "boolean", "with bank: also the lines of the session log "
                                                                  "of the bank's next update (`log` events)")),
           content_type="text/event-stream")
async def events(request: web.Request) -> web.StreamResponse:
    node, viewer = node_of(request), viewer_of(request)
    only_bank, only_job = request.query.get("bank"), request.query.get("job")
    with_log = request.query.get("log", "").lower() in ("1", "true", "yes")
    if with_log and not only_bank:
        raise ApiError(400, "log=true needs bank=NAME: the session log of one bank")
    seen: dict[str, tuple[float, bool]] = {}  # bank -> (checked at, visible)

    async def visible(bank: str) -> bool:
        cached = seen.get(bank)
        if cached is None or time.monotonic() - cached[0] > 10:
            doc = await node.store.get_bank(bank)
            if doc is None:  # never updated: users follow its first update (as /api/v1/bank-files); not
                return viewer.user is not None  # cached, the record its first update makes decides from then on
            cached = seen[bank] = (time.monotonic(), viewer.can_see(doc))
        return cached[1]

    out: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
    subscription = await node.bus.subscribe(f"{names.JOB_TOPIC}.*", buffer=10_000)
    sources = [asyncio.create_task(_job_events(subscription, visible, only_bank, only_job, out))]
    if with_log:
        sources.append(asyncio.create_task(_session_log_lines(node.store, only_bank, visible, out)))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(b": biomaj job events\n\n")
        while not sources[0].done():
            try:
                chunk = await asyncio.wait_for(out.get(), SSE_KEEPALIVE)
            except asyncio.TimeoutError:
                chunk = b": keep-alive\n\n"
            await response.write(chunk)
    except ConnectionError:  # the client went away
        pass
    finally:
        for source in sources:
            source.cancel()
        await asyncio.gather(*sources, return_exceptions=True)
    return response


def _sse(kind: str, data: dict) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def _job_events(subscription, visible, only_bank, only_job, out: asyncio.Queue) -> None:
    async with subscription:
        async for event in subscription:
            if not isinstance(event, JobEvent) or (only_bank and event.bank != only_bank) or \
                    (only_job and event.job_id != only_job) or not await visible(event.bank):
                continue
            await out.put(_sse("job", {"id": event.id, "job_id": event.job_id, "bank": event.bank, "kind": event.kind,
                                       "state": event.state, "step": event.step, "message": event.message,
                                       "progress": event.progress, "at": event.created}))


def _running_log(doc: dict | None) -> str | None:
    """The session log of the bank's current (or last) update run, as recorded in its status."""
    log_file = ((doc or {}).get("status") or {}).get("log_file") or {}
    return log_file.get("status") if isinstance(log_file, dict) else None


async def _session_log_lines(store, bank: str, visible, out: asyncio.Queue) -> None:
    """``log`` events: the lines of each session log the bank's updates start from now on (the
    path comes from the store, never from the request), then ``log_end`` once the log is read to
    its end and no job runs on the bank any more."""
    current = _running_log(await store.get_bank(bank))
    path: Path | None = None
    position, partial, ended = 0, b"", False
    while True:
        started = _running_log(await store.get_bank(bank))
        if started and started != current:
            current, path, position, partial, ended = started, Path(started), 0, b"", False
        if path is not None and not ended and path.is_file() and await visible(bank):
            with path.open("rb") as log:
                log.seek(position)
                chunk = log.read(1024 * 1024)
            position += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            if not chunk and not await store.list_jobs(state=ACTIVE_JOB_STATES, bank=bank, limit=1):
                lines, partial, ended = [*lines, partial] if partial else lines, b"", True
            for line in lines:
                await out.put(_sse("log", {"bank": bank, "line": line.decode("utf-8", "replace")}))
            if ended:
                await out.put(_sse("log_end", {"bank": bank}))
        await asyncio.sleep(FOLLOW_POLL)
