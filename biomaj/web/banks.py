"""`/api/v1/banks...`: banks as their viewer may see them, and the actions on them.

Reads follow BioMAJ 3's visibility rules (public banks for everyone, private ones for their owner
and admins; a bank one may not see is a 404, as an unknown one); every write needs the bank's owner
or an admin, checked by the registry before the handler reads anything (:mod:`.bank_access`). Long actions (update, removals,
repair, verify) are jobs: the answer is ``202`` with the job record, to follow at ``/api/v1/jobs/{id}``.
Quick ones (publish, freeze, unlock...) answer the operation's outcome. ``check`` and ``bank-files``
read the bank files of conf.dir, as ``biomaj ctl check`` and ``biomaj ctl banks`` do.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from biomaj import inventory, jobs, reports
from biomaj.config.check import check_bank, check_support, verdict
from biomaj.errors import UnknownBank
from biomaj.jobs import request_cancel, submit_job
from biomaj.runtime.lease import lease_free
from biomaj.storage.base import ACTIVE_JOB_STATES
from biomaj.workflow import crate, integrity, runner
from biomaj.workflow.bank import Bank, find_production

from .bank_access import client_paths, load_bank_file, unknown_bank, visible_bank
from .context import USERS_KEY, identity_of, node_of, run_context, viewer_of
from .errors import ApiError, json_body, json_type_name
from .registry import Api

api = Api()

BANK_FIELDS = ("name", "properties", "current", "last_update_session", "pending")
PRODUCTION_FIELDS = ("release", "remoterelease", "session", "data_dir", "dir_version", "prod_dir", "freeze",
                     "formats", "types", "size", "files", "buckets")
SESSION_FIELDS = ("id", "action", "release", "remoterelease", "status", "workflow_status", "update",
                  "last_update_time", "error", "log_file", "dir_version", "changes")


async def visible_bank_of_url(request: web.Request) -> dict:
    """The bank document of the URL, if the requester may see it (:func:`.bank_access.visible_bank`)."""
    return await visible_bank(request, request.match_info["bank"])


def _pick(doc: dict, names: tuple[str, ...]) -> dict[str, Any]:
    return {k: doc.get(k) for k in names if k in doc}


# --- format=table: the tables `biomaj ctl` prints, for a client that prints them too --------------

FORMAT_QUERY = ("format", "string",
                'table: answer {"tables": [{title, headers, rows}]}, the tables `biomaj ctl` prints')


def wants_tables(request: web.Request) -> bool:
    """True for ``?format=table``, False without ``format``; any other format is a 400."""
    wanted = request.query.get("format")
    if wanted is None:
        return False
    if wanted != "table":
        raise ApiError(400, f"format must be 'table' (the tables of biomaj ctl), or absent for records; "
                            f"not {wanted[:40]!r}")
    return True


def tables_answer(tables: list[reports.Table]) -> web.Response:
    return web.json_response({"tables": [table.to_dict() for table in tables]})


@api.route("GET", "/api/v1/banks", summary="The banks the requester may see", access="public", tag="banks",
           query=(FORMAT_QUERY,))
async def list_banks(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
    banks = await node_of(request).store.list_banks()
    table = reports.status_all(banks, viewer_of(request))
    if as_tables:
        return tables_answer([table])
    owners = {b.get("name"): (b.get("properties") or {}).get("owner") for b in banks}
    return web.json_response([{"name": r["Name"], "types": r["Type(s)"], "release": r["Release"],
                               "visibility": r["Visibility"], "last_update": r["Last update"],
                               "owner": owners.get(r["Name"])} for r in table.records()])


@api.route("GET", "/api/v1/banks/{bank}", summary="A bank: properties, published release, productions, pending",
           access="public", tag="banks", responses={404: "unknown bank", 403: "private bank"}, query=(FORMAT_QUERY,))
async def get_bank(request: web.Request) -> web.Response:
    as_tables = wants_tables(request)
    doc = await visible_bank_of_url(request)
    if as_tables:
        return tables_answer(reports.status_tables(doc, viewer_of(request)))
    body = _pick(doc, BANK_FIELDS)
    sessions = {s.get("id"): s for s in doc.get("sessions") or []}
    body["production"] = [{**_pick(p, PRODUCTION_FIELDS), "changes": sessions.get(p.get("session"), {}).get("changes")}
                          for p in doc.get("production") or []]
    body["published"] = reports._published_release(doc)  # noqa: SLF001 - the reports' own rule
    return web.json_response(body)


@api.route("GET", "/api/v1/banks/{bank}/sessions", summary="The sessions of a bank, newest first", access="public",
           tag="banks")
async def bank_sessions(request: web.Request) -> web.Response:
    doc = await visible_bank_of_url(request)
    sessions = sorted(doc.get("sessions") or [], key=lambda s: s.get("id") or 0, reverse=True)
    return web.json_response([_pick(s, SESSION_FIELDS) for s in sessions])


@api.route("GET", "/api/v1/banks/{bank}/status", summary="Jobs queued or running on a bank, with live progress",
           access="public", tag="banks")
async def bank_status(request: web.Request) -> web.Response:
    doc = await visible_bank_of_url(request)
    node = node_of(request)
    jobs = await node.store.list_jobs(state=ACTIVE_JOB_STATES, bank=doc["name"], limit=None)
    for job in jobs:
        job["progress"] = await node.state.get_progress(job["id"]) if node.state is not None else {}
    return web.json_response({"bank": doc["name"], "status": doc.get("status") or {}, "jobs": [_job_view(j) for j in jobs]})


@api.route("GET", "/api/v1/banks/{bank}/check", summary="Check the bank's properties file, as `biomaj ctl check`",
           access="public", tag="banks",
           responses={200: "{bank, file, valid, problems: [{level, key, message}]}, also when not valid",
                      404: "no such bank file", 403: "private bank"})
async def check_bank_file(request: web.Request) -> web.Response:
    node = node_of(request)
    name = request.match_info["bank"]
    doc = await node.store.get_bank(name)
    if doc is not None and not viewer_of(request).can_see(doc):  # a bank never updated: its file is public
        raise unknown_bank(request, name)
    props = await asyncio.to_thread(load_bank_file, request, name)
    problems = check_bank(props) + check_support(props)  # BioMAJ 3's rules, then what biomaj lacks
    return web.json_response({  # paths relative to the installation but for admins: conf/NAME.properties
        "bank": props.name, "file": client_paths(request, str(props.path)), "valid": verdict(problems),
        "problems": [{"level": p.level, "key": p.key, "message": client_paths(request, p.message)} for p in problems]})


@api.route("GET", "/api/v1/bank-files", summary="The bank files of conf.dir beside their store records, as "
           "`biomaj ctl banks`", access="user", tag="banks")
async def bank_files(request: web.Request) -> web.Response:
    node, viewer = node_of(request), viewer_of(request)
    docs = await node.store.list_banks()
    hidden = {doc["name"] for doc in docs if not viewer.can_see(doc)}
    gpath = node.config.global_properties
    rows = await asyncio.to_thread(lambda: inventory.bank_rows(gpath, inventory.conf_dir_of(gpath), docs))
    return web.json_response([row for row in rows if row["name"] not in hidden])


# --- actions -------------------------------------------------------------------------------------

def _job_view(job: dict) -> dict:
    return {k: job.get(k) for k in ("id", "kind", "bank", "state", "user", "options", "created", "started",
                                    "finished", "attempts", "error", "result", "progress") if k in job}


async def _submit(request: web.Request, kind: str, options: dict[str, Any]) -> web.Response:
    """Queue a job on the URL's bank (the registry has checked the owner): 404 with no bank file,
    400 when the kind checks the bank file and it fails BioMAJ 3's check."""
    name = request.match_info["bank"]
    load_bank_file(request, name, jobs.KINDS[kind].checks_bank_file)
    node = node_of(request)
    who = identity_of(request)
    job_id = await submit_job(node.store, node.bus, kind, name, options, who.name, admin=who.admin)
    return web.json_response(_job_view(await node.store.get_job(job_id)), status=202)


async def _job_options(request: web.Request, kind: str) -> dict[str, Any]:
    """The request body as the options of a job of ``kind`` (:data:`biomaj.jobs.KINDS`): only its
    declared options, each of its declared type, a task option naming a task of the flow."""
    options = _typed(await json_body(request), jobs.KINDS[kind].types())
    for option in jobs.KINDS[kind].options:
        value = options.get(option.name)
        if option.tasks and value is not None and value not in option.tasks:
            raise ApiError(400, f"{option.name} must be one of {', '.join(option.tasks)}")
    return options


def _typed(body: dict, spec: dict[str, type]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise ApiError(400, f"unknown option(s): {', '.join(unknown)}; expected {', '.join(spec)}")
    for key, kind in spec.items():
        if key in body and body[key] is not None and not isinstance(body[key], kind):
            raise ApiError(400, f"option {key} must be {json_type_name(kind)}")
    return body


@api.route("POST", "/api/v1/banks/{bank}/update", summary="Update a bank (a job)", access="owner", tag="actions",
           body=jobs.UPDATE.body_schema(), responses={202: "the queued job", 409: "already queued or running"})
async def update_bank(request: web.Request) -> web.Response:
    return await _submit(request, "update", await _job_options(request, "update"))


@api.route("DELETE", "/api/v1/banks/{bank}/releases/{release}", summary="Remove one release (a job)",
           access="owner", tag="actions", responses={202: "the queued job"})
async def remove_release(request: web.Request) -> web.Response:
    return await _submit(request, "remove", {"release": request.match_info["release"]})


@api.route("POST", "/api/v1/banks/{bank}/remove-all", summary="Remove every release and the bank's record (a job)",
           access="owner", tag="actions", responses={202: "the queued job"}, body=jobs.REMOVE_ALL.body_schema())
async def remove_all(request: web.Request) -> web.Response:
    return await _submit(request, "remove-all", await _job_options(request, "remove-all"))


@api.route("POST", "/api/v1/banks/{bank}/remove-pending", summary="Remove unfinished releases (a job)",
           access="owner", tag="actions", responses={202: "the queued job"}, body=jobs.REMOVE_PENDING.body_schema())
async def remove_pending(request: web.Request) -> web.Response:
    return await _submit(request, "remove-pending", await _job_options(request, "remove-pending"))


@api.route("POST", "/api/v1/banks/{bank}/repair",
           summary="Fetch again the files of a release that differ from its provenance file, or record an "
                   "unfinished session as done (a job)",
           access="owner", tag="actions", responses={202: "the queued job"}, body=jobs.REPAIR.body_schema())
async def repair(request: web.Request) -> web.Response:
    return await _submit(request, "repair", await _job_options(request, "repair"))


@api.route("POST", "/api/v1/banks/{bank}/release-check",
           summary="Find the remote release, as an update would, without downloading (a job)", access="owner",
           tag="actions", responses={202: "the queued job; its result holds the remote release and whether it is new"})
async def release_check(request: web.Request) -> web.Response:
    return await _submit(request, "release-check", {})


@api.route("POST", "/api/v1/banks/{bank}/verify",
           summary="Read a release's files and compare them with its provenance file (a job)", access="owner",
           tag="actions", body=jobs.VERIFY.body_schema(),
           responses={202: "the queued job; its result lists each release's missing, changed and extra files",
                      404: "no such release"})
async def verify(request: web.Request) -> web.Response:
    options = await _job_options(request, "verify")
    if options.get("release") is not None:
        await _production_entry(request, options["release"])
    return await _submit(request, "verify", options)


@api.route("GET", "/api/v1/banks/{bank}/releases/{release}/provenance",
           summary="The provenance file of a release (ro-crate-metadata.json, RO-Crate 1.1)", access="public",
           tag="banks", content_type="application/ld+json",
           responses={404: "unknown or private bank, no such release, or a release without a provenance file"})
async def release_provenance(request: web.Request) -> web.StreamResponse:
    doc = await visible_bank_of_url(request)
    entry = await _production_entry(request, request.match_info["release"], doc)
    path = Bank.production_dir(entry) / crate.FILE_NAME
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, integrity.no_provenance(doc["name"], entry["release"]))
    return web.FileResponse(path, headers={"Content-Type": "application/ld+json"})


async def _production_entry(request: web.Request, release: str, doc: dict | None = None) -> dict:
    """The URL's bank's production entry named ``release`` (its release or directory name), or
    404: a release is looked up among the stored ones, never turned into a path."""
    doc = doc if doc is not None else await node_of(request).store.get_bank(request.match_info["bank"]) or {}
    entry = find_production(doc, release)
    if entry is None:
        raise ApiError(404, f"bank {request.match_info['bank'][:200]}: no production release named {release[:200]!r}")
    return entry


@api.route("POST", "/api/v1/banks/{bank}/cancel", summary="Cancel the queued or running jobs of a bank",
           access="owner", tag="actions")
async def cancel(request: web.Request) -> web.Response:
    name = request.match_info["bank"]
    node = node_of(request)
    jobs = await node.store.list_jobs(state=ACTIVE_JOB_STATES, bank=name, limit=None)
    if not jobs:
        raise ApiError(404, f"no job queued or running on bank {name}")
    return web.json_response([_job_view(await request_cancel(node.store, node.bus, node.state, j["id"])) for j in jobs])


async def _quick(request: web.Request, operation, *args: Any) -> web.Response:
    outcome = await operation(run_context(request), request.match_info["bank"], *args)
    return web.json_response(outcome.to_dict())


@api.route("POST", "/api/v1/banks/{bank}/unlock",
           summary="Clear the bank's lock left by a process that died (a live holder needs force)",
           access="owner", tag="actions", body={"type": "object", "properties": {"force": {"type": "boolean"}}},
           responses={409: "the lock's holder is running"})
async def unlock(request: web.Request) -> web.Response:
    body = _typed(await json_body(request), {"force": bool})
    node = node_of(request)
    free = await lease_free(node.state, node.config.state_url, request.match_info["bank"])
    return await _quick(request, runner.unlock, bool(body.get("force")), free)


@api.route("POST", "/api/v1/banks/{bank}/publish", summary="Publish a release (default: the latest)",
           access="owner", tag="actions", body={"type": "object", "properties": {"release": {"type": "string"}}})
async def publish(request: web.Request) -> web.Response:
    body = _typed(await json_body(request), {"release": str})
    return await _quick(request, runner.publish_bank, body.get("release"))


@api.route("POST", "/api/v1/banks/{bank}/unpublish", summary="Unpublish the bank", access="owner", tag="actions")
async def unpublish(request: web.Request) -> web.Response:
    return await _quick(request, runner.unpublish_bank)


@api.route("POST", "/api/v1/banks/{bank}/releases/{release}/freeze", summary="Freeze a release", access="owner",
           tag="actions")
async def freeze(request: web.Request) -> web.Response:
    return await _quick(request, runner.freeze_release, request.match_info["release"], True)


@api.route("POST", "/api/v1/banks/{bank}/releases/{release}/unfreeze", summary="Unfreeze a release",
           access="owner", tag="actions")
async def unfreeze(request: web.Request) -> web.Response:
    return await _quick(request, runner.freeze_release, request.match_info["release"], False)


@api.route("PUT", "/api/v1/banks/{bank}/owner", summary="Give the bank to another user", access="owner",
           tag="actions", body={"type": "object", "required": ["owner"], "properties": {"owner": {"type": "string"}}})
async def set_owner(request: web.Request) -> web.Response:
    body = _typed(await json_body(request, required=True), {"owner": str})
    if not body.get("owner"):
        raise ApiError(400, "owner is required")
    await request.app[USERS_KEY].get(body["owner"])  # 404 for an unknown user
    return await _quick(request, runner.set_owner, body["owner"])


@api.route("PUT", "/api/v1/banks/{bank}/visibility", summary="Make the bank public or private", access="owner",
           tag="actions", body={"type": "object", "required": ["visibility"],
                                "properties": {"visibility": {"type": "string", "enum": ["public", "private"]}}})
async def set_visibility(request: web.Request) -> web.Response:
    body = _typed(await json_body(request, required=True), {"visibility": str})
    return await _quick(request, runner.set_visibility, body.get("visibility"))


# --- jobs ----------------------------------------------------------------------------------------


@api.route("GET", "/api/v1/jobs/{job}", summary="A job: state, result, live progress", access="user", tag="jobs",
           responses={404: "unknown job (or not yours)"})
async def get_job(request: web.Request) -> web.Response:
    node = node_of(request)
    job = await _own_job(request)
    if node.state is not None:
        job["progress"] = await node.state.get_progress(job["id"])
    return web.json_response(_job_view(job))


@api.route("POST", "/api/v1/jobs/{job}/cancel",
           summary="Cancel a job: a queued one at once, a running one stops within seconds", access="user",
           tag="jobs", responses={404: "unknown job (or not yours)"})
async def cancel_job(request: web.Request) -> web.Response:
    node = node_of(request)
    job = await _own_job(request)
    return web.json_response(_job_view(await request_cancel(node.store, node.bus, node.state, job["id"])))


async def _own_job(request: web.Request) -> dict:
    """The job, for its user, the bank's owner or an admin; 404 for anyone else, as if it did not
    exist."""
    node = node_of(request)
    job = await node.store.get_job(request.match_info["job"])
    who = identity_of(request)
    if job is None:
        raise ApiError(404, "no such job")
    if not who.admin and job.get("user") != who.name:
        doc = await node.store.get_bank(job.get("bank") or "")
        if doc is None or not viewer_of(request).is_owner(doc):
            raise ApiError(404, "no such job")
    return job
