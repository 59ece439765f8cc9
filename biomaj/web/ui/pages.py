"""The web UI's pages, rendered on the server (Jinja2, autoescaped).

Reads use the store with the REST API's own visibility rules (``viewer_of``, ``..bank_access``,
the same ``inventory`` rows as ``/api/v1/bank-files``). Pages hold no action code: their forms
are sent by ``static/biomaj.js`` to the REST API itself (``/api/v1/...``, the session cookie and
the page's CSRF token), so that every action goes through the API's one authorization path and
its errors are shown as the API words them. Login and logout are the only forms handled here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import string
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jinja2
from aiohttp import web
from markupsafe import Markup

from biomaj import __version__, inventory, reports
from biomaj.config.check import check_bank, check_support
from biomaj.config.properties import BankProperties
from biomaj.errors import BiomajError
from biomaj.storage.base import ACTIVE_JOB_STATES
from biomaj.workflow.session import UPDATE_TASKS

from ..auth import SESSIONS_KEY, USERS_KEY, identity_of, viewer_of
from ..bank_access import unknown_bank, visible_bank
from ..context import NODE_KEY, node_of
from ..errors import ApiError
from ..schedules_api import schedule_views
from ..tail import tail
from . import views
from .charts import bar_chart
from .sessions import CSRF_COOKIE

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
LOG_TAIL_BYTES = 256 * 1024  # of a session log shown in its page (the whole log is one click away)
LOG_TAIL_LINES = 2000
NEXT_MAX = 2048  # characters of the page to go to after logging in

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                          trim_blocks=True, lstrip_blocks=True)


def _when(epoch: Any) -> Markup:
    """A ``<time>`` the script shows in the reader's locale; server time without script."""
    try:
        value = float(epoch)
    except (TypeError, ValueError):
        return Markup('<span class="muted">–</span>')
    utc = dt.datetime.fromtimestamp(value, dt.UTC)
    return Markup('<time datetime="{}" data-epoch="{}">{}</time>').format(
        utc.strftime("%Y-%m-%dT%H:%M:%SZ"), f"{value:.3f}", reports.format_time(value))


def _size(value: Any) -> str:
    return "–" if value is None else reports.human_size(int(value))


_env.filters.update(when=_when, size=_size, duration=views.duration_text, rate=views.rate_text,
                    seg=lambda value: quote(str(value), safe=""))
_env.globals.update(version=__version__, tasks=UPDATE_TASKS)


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """The page, with the requester, its CSRF token (and the cookie behind it, when new)."""
    sessions = request.app[SESSIONS_KEY]
    context.setdefault("page", "")
    new_cookies: dict[str, str] = {}
    csrf = sessions.csrf_token(request, new_cookies)
    page = _env.get_template(template).render(who=identity_of(request), csrf=csrf, path=request.path_qs,
                                              **context)
    response = web.Response(text=page, content_type="text/html", status=status)
    if CSRF_COOKIE in new_cookies:
        sessions.set_csrf_seed(request, response, new_cookies[CSRF_COOKIE])
    return response


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    titles = {401: "Log in needed", 403: "Not allowed", 404: "Not found", 409: "Busy", 429: "Too many attempts"}
    return render(request, "error.html", status=status, title=titles.get(status, "Error"), status_code=status,
                  message=message)


def _need_user(request: web.Request) -> None:
    if identity_of(request) is None:
        raise web.HTTPSeeOther(f"/ui/login?next={quote(request.path_qs, safe='')}")


def _need_admin(request: web.Request) -> None:
    _need_user(request)
    if not identity_of(request).admin:
        raise web.HTTPForbidden(reason="this page is for admins")


# --- dashboard -------------------------------------------------------------------------------


async def _schedules(request: web.Request) -> list[dict]:
    """The schedules with their next run, as ``/api/v1/schedules`` answers them (cron schedules
    keep no next run in the store: the scheduler's API computes it)."""
    try:
        docs = await node_of(request).store.list_schedules()
    except Exception as exc:  # noqa: BLE001 - a dashboard without next runs beats no dashboard
        log.warning("ui: cannot read the schedules: %s", exc)
        return []
    try:
        return schedule_views(request, docs)
    except Exception as exc:  # noqa: BLE001 - as above
        log.warning("ui: cannot compute the next runs of the schedules: %s", exc)
        return docs


async def _progress(node: Any, jobs: list[dict]) -> dict[str, dict]:
    """job id -> live progress, for the active jobs."""
    if node.state is None:
        return {}
    active = [j for j in jobs if j.get("state") in ACTIVE_JOB_STATES]
    values = await asyncio.gather(*(node.state.get_progress(j["id"]) for j in active))
    return {j["id"]: v for j, v in zip(active, values)}


async def dashboard(request: web.Request) -> web.Response:
    node, viewer, who = node_of(request), viewer_of(request), identity_of(request)
    store = node.store
    summaries = await store.list_banks()
    visible = [b["name"] for b in summaries if viewer.can_see(b)]
    docs = [doc for doc in await asyncio.gather(*(store.get_bank(name) for name in visible)) if doc]
    jobs = await store.list_jobs(limit=1000)
    by_bank: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        by_bank[job.get("bank") or ""].append(job)
    progress = await _progress(node, jobs)
    runs = views.next_runs(await _schedules(request))
    rows = []
    for doc in docs:
        bank_jobs = by_bank.get(doc["name"], [])
        active = next((j for j in bank_jobs if j.get("state") in ACTIVE_JOB_STATES), None)
        rows.append(views.bank_row(doc, bank_jobs, runs.get(doc["name"]), progress.get(active["id"]) if active else None))
    if who is not None:  # bank files never updated: shown to users; the admins' until one gives them an owner
        recorded = {b["name"] for b in summaries}
        gpath = node.config.global_properties
        try:
            files = await asyncio.to_thread(lambda: inventory.bank_rows(gpath, inventory.conf_dir_of(gpath), []))
        except BiomajError as exc:
            log.warning("ui: cannot list the bank files: %s", exc)
            files = []
        rows += [views.unrecorded_row(row, by_bank.get(row["name"], []), runs.get(row["name"]))
                 for row in files if row["name"] not in recorded]
    rows.sort(key=lambda row: row.name)
    return render(request, "dashboard.html", title="Banks", page="dashboard", rows=rows, summary=views.summary(rows))


# --- a bank ----------------------------------------------------------------------------------


def _configuration(node: Any, name: str) -> dict[str, Any]:
    """The bank file's merged properties (secrets hidden) and its check, or why it cannot be read."""
    try:
        props = BankProperties.load(node.config.global_properties, name)
    except BiomajError as exc:
        return {"error": str(exc), "rows": [], "problems": [], "file": None}
    try:
        problems = check_bank(props) + check_support(props)
    except Exception as exc:  # noqa: BLE001 - the properties are worth showing without the check
        problems = []
        log.warning("ui: check of %s failed: %s", name, exc)
    return {"error": None, "rows": views.property_rows(props), "problems": problems, "file": str(props.path)}


async def bank_page(request: web.Request) -> web.Response:
    node, viewer, who = node_of(request), viewer_of(request), identity_of(request)
    name = request.match_info["bank"]
    doc = await node.store.get_bank(name)
    if doc is None and who is None or doc is not None and not viewer.can_see(doc):
        raise unknown_bank(request, name)  # a bank one may not see is an unknown one (docs/api.md)
    config = await asyncio.to_thread(_configuration, node, name)
    if doc is None and config["file"] is None:
        raise unknown_bank(request, name)
    jobs = await node.store.list_jobs(bank=name, limit=20)
    progress = await _progress(node, jobs)
    active = next((j for j in jobs if j.get("state") in ACTIVE_JOB_STATES), None)
    in_store = doc is not None
    doc = doc or {"name": name}
    running_session = (doc.get("status") or {}).get("session") if active and active.get("kind") == "update" else None
    live = _live_state(active, progress.get(active["id"]) if active else None, views.last_update_row(doc))
    return render(
        request, "bank.html", title=name, page="bank", bank=name, doc=doc, in_store=in_store,
        props=doc.get("properties") or {}, can_act=viewer.is_owner(doc),  # a bank with no owner yet: the admins' only
        run=views.last_run(doc, jobs, progress.get(active["id"]) if active else None),
        releases=views.release_rows(doc), sessions=views.session_rows(doc, running_session), jobs=jobs[:10],
        changes=views.change_rows(doc),
        live=live, config=config,
        size_chart=bar_chart(views.size_bars(doc), title=f"Size of each release of {name}", describe=_size,
                             empty="No release yet."),
        duration_chart=bar_chart(views.duration_bars(doc), title=f"Duration of the recent updates of {name}",
                                 describe=views.duration_text, empty="No update yet."),
        size_table=views.size_bars(doc), duration_table=views.duration_bars(doc))


def _live_state(job: dict | None, progress: dict | None, last: views.SessionRow | None) -> dict[str, Any]:
    """The live panel as the page starts it: the active job's step states and counters (the
    server-sent events take it from there); with no active job, the steps of the bank's ``last``
    update session as they ended."""
    progress = progress or {}
    if job is None:
        text = ("No job is running on this bank; its last update:" if last is not None else
                "No job is running on this bank; it has never been updated.")
        ended = last.steps if last is not None else []
        return {"state": "idle", "job": None, "steps": {step.name: step.state for step in ended},
                "seconds": {step.name: step.seconds for step in ended}, "progress": {}, "text": text, "last": last}
    current = progress.get("step")
    steps = {}
    if job.get("kind") == "update" and current in UPDATE_TASKS:
        at = UPDATE_TASKS.index(current)
        for i, task in enumerate(UPDATE_TASKS[: at + 1]):
            steps[task] = "done" if i < at else str(progress.get("task_state") or "running")
    text = f"{job.get('kind')} {job.get('state')}" + (f": {current}" if current else "")
    return {"state": job.get("state"), "job": job, "steps": steps, "seconds": {}, "progress": progress, "text": text,
            "last": None}


# --- a session log ---------------------------------------------------------------------------


def _tail(path: Path) -> tuple[str, bool]:
    """The end of a log (at most LOG_TAIL_LINES whole lines within its last LOG_TAIL_BYTES), and
    whether anything before it is left out."""
    with path.open("rb") as log_file:
        data = tail(log_file, LOG_TAIL_LINES, max_bytes=LOG_TAIL_BYTES)
        size = log_file.tell()
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:]), len(data) < size or len(lines) > LOG_TAIL_LINES


async def log_page(request: web.Request) -> web.Response:
    doc = await visible_bank(request, request.match_info["bank"])
    node = node_of(request)
    wanted = request.match_info["session"]
    sessions = doc.get("sessions") or []
    session = next((s for s in sessions if str(s.get("id")) == wanted), None)
    if session is None and wanted == "last" and sessions:
        session = sessions[-1]
    if session is None:
        raise ApiError(404, f"bank {doc['name']} has no session {wanted}")
    path = Path(session.get("log_file") or "")  # from the store, never from the URL
    if not session.get("log_file") or not path.is_file():
        raise ApiError(404, f"session {wanted} of {doc['name']} has no log file (any more)")
    text, cut = await asyncio.to_thread(_tail, path)
    running = bool(await node.store.list_jobs(state=ACTIVE_JOB_STATES, bank=doc["name"], limit=1))
    return render(request, "log.html", title=f"{doc['name']}: log", page="log", bank=doc["name"],
                  session=session, session_key=str(session.get("id")), text=text, cut=cut, running=running)


# --- nodes, schedules, users -----------------------------------------------------------------


async def nodes_page(request: web.Request) -> web.Response:
    _need_user(request)
    status = await request.app[NODE_KEY].status()
    return render(request, "nodes.html", title="Nodes", page="nodes", service=status)


async def schedules_page(request: web.Request) -> web.Response:
    _need_admin(request)
    banks = sorted(b["name"] for b in await node_of(request).store.list_banks())
    return render(request, "schedules.html", title="Schedules", page="schedules", banks=banks)


async def users_page(request: web.Request) -> web.Response:
    _need_admin(request)
    users = request.app[USERS_KEY]
    return render(request, "users.html", title="Users", page="users", users=await users.list(),
                  config_admins=sorted(users.admins))


# --- login, logout ---------------------------------------------------------------------------


def _next_target(value: Any) -> str:
    """Where to go after logging in: a page of this UI (``/ui/...``), else the dashboard. Only a
    plain local path is taken (a single leading ``/``, no ``//``, no backslash, no scheme, no
    control or blank character, no ``..``, at most NEXT_MAX characters); its non-ASCII letters are
    percent-encoded, so that the ``Location`` header is always one a browser reads as this server's."""
    target = value if isinstance(value, str) else ""
    if (len(target) > NEXT_MAX or not target.startswith("/ui/") or "//" in target or "\\" in target
            or any(unicodedata.category(char)[0] in "CZ" for char in target)):
        return "/ui/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        return "/ui/"
    return quote(target, safe=string.punctuation)


async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html", title="Log in", page="login", next=_next_target(request.query.get("next")),
                  message=None, user_name="")


async def login(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS_KEY]
    if identity_of(request) is None:  # a logged-in browser's token was checked by the identify middleware
        await sessions.check_csrf(request)
    form = await request.post()
    name, password = str(form.get("user") or "").strip(), str(form.get("password") or "")
    target = _next_target(form.get("next"))

    def again(status: int, message: str) -> web.Response:
        return render(request, "login.html", status=status, title="Log in", page="login", next=target,
                      message=message, user_name=name)

    throttle = sessions.throttle
    client = throttle.client(request)
    who_key = throttle.key(client, name)
    wait = throttle.wait(who_key)
    if wait:
        seconds = math.ceil(wait)
        response = again(429, f"Too many failed logins: try again in {seconds} second{'s' if seconds > 1 else ''}.")
        response.headers["Retry-After"] = str(seconds)
        return response
    users = request.app[USERS_KEY]
    if users is None:
        return again(503, "This node has no user store: log in on the manager's web address.")
    try:
        identity = await users.by_password(name, password)
    except BiomajError as exc:  # LDAP down, store error: said, never taken for a wrong password
        log.warning("ui: login of %s could not be checked: %s", name, exc)
        return again(503, "The login service is unavailable, try again later.")
    if identity is None:
        throttle.failed(who_key)
        log.info("ui: failed login for %r from %s", name[:64], client)
        return again(401, "Wrong user name or password.")
    throttle.succeeded(who_key)
    response = web.Response(status=303, headers={"Location": target})
    sessions.set_session(request, response, await sessions.cookie_for(identity))
    log.info("ui: %s logged in from %s", identity.name, client)
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.Response(status=303, headers={"Location": "/ui/"})
    request.app[SESSIONS_KEY].clear_session(response)
    return response


async def not_found(request: web.Request) -> web.Response:
    return error_page(request, 404, f"no page {request.path}")


async def to_dashboard(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")
