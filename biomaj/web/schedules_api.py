"""`/api/v1/schedules` (admins): the scheduler's cron schedules, as `biomaj ctl schedule` manages
them, and the release-driven entries (``auto:<bank>``) it keeps for ``schedule.auto`` banks."""

from __future__ import annotations

import time

from aiohttp import web

from biomaj.scheduler import schedules
from biomaj.scheduler.cron import time_zone

from .context import identity_of, node_of
from .errors import ApiError, json_body
from .registry import Api

api = Api()

SCHEDULE_SCHEMA = {"type": "object", "required": ["name", "cron", "banks"], "additionalProperties": False,
                   "properties": {
                       "name": {"type": "string", "description": "letters, digits and _ . -"},
                       "cron": {"type": "string", "description": "5-field crontab expression, e.g. '0 3 * * *'"},
                       "banks": {"type": "array", "items": {"type": "string"}, "description": "banks of conf.dir"},
                       "user": {"type": "string", "description": "whom the updates run as (default: the caller)"}}}


def schedule_views(request: web.Request, docs: list[dict]) -> list[dict]:
    """The schedules as the API shows them: with their next run in the scheduler's time zone."""
    zone = time_zone(node_of(request).config.settings.scheduler.timezone)
    return schedules.views(docs, time.time(), zone)


@api.route("GET", "/api/v1/schedules", summary="The schedules, with their next and last run", access="admin",
           tag="schedules")
async def list_schedules(request: web.Request) -> web.Response:
    return web.json_response(schedule_views(request, await schedules.list_schedules(node_of(request).store)))


@api.route("POST", "/api/v1/schedules", summary="Create or replace a schedule: banks to update, when, as whom",
           access="admin", tag="schedules", body=SCHEDULE_SCHEMA,
           responses={200: "{schedule, replaced: true}", 201: "{schedule, replaced: false}"})
async def add_schedule(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    unknown = sorted(set(body) - set(SCHEDULE_SCHEMA["properties"]))
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(u[:40] for u in unknown[:5])}; expected name, cron, "
                            "banks, user")
    node, who = node_of(request), identity_of(request)
    user = body["user"] if body.get("user") is not None else who.name
    doc, replaced = await schedules.add_schedule(node.store, node.config.global_properties, name=body.get("name"),
                                                 cron=body.get("cron"), banks=body.get("banks"), user=user,
                                                 by=who.name)
    return web.json_response({"schedule": schedule_views(request, [doc])[0], "replaced": replaced},
                             status=200 if replaced else 201)


@api.route("GET", "/api/v1/schedules/{name}", summary="One schedule, with its next and last run", access="admin",
           tag="schedules", responses={404: "no such schedule"})
async def get_schedule(request: web.Request) -> web.Response:
    doc = await schedules.get_schedule(node_of(request).store, request.match_info["name"])
    return web.json_response(schedule_views(request, [doc])[0])


@api.route("DELETE", "/api/v1/schedules/{name}", summary="Delete a schedule", access="admin", tag="schedules",
           responses={404: "no such schedule"})
async def delete_schedule(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await schedules.delete_schedule(node_of(request).store, name)
    return web.json_response({"deleted": name})
