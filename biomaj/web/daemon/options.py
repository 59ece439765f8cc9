"""biomaj-cli's options (``POST /api/daemon`` sends them all) and the operations they ask for:
one ``op_*`` function per action, answering BioMAJ 3's JSON form or the text biomaj-cli prints."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from biomaj import __version__, reports
from biomaj.config.check import check_bank, check_support, verdict
from biomaj.config.properties import GlobalProperties
from biomaj.errors import BiomajError, with_article
from biomaj.jobs import KINDS, UPDATE, check_options, request_cancel, submit_job
from biomaj.storage.base import ACTIVE_JOB_STATES, DuplicateJob
from biomaj.workflow import locks, runner
from biomaj.workflow.bank import Bank, find_production
from biomaj.workflow.session import PROCESS_TASKS, UPDATE_TASKS

from ..bank_access import check_owner, client_paths, load_bank_file, visible_bank
from ..banks import _job_view
from ..context import USERS_KEY, identity_of, node_of, run_context, viewer_of
from ..tail import tail

log = logging.getLogger(__name__)

TAG = "biomaj3"
MAX_TAIL = 100_000  # lines
END_OF_LOG = b"##END_OF_LOG"  # BioMAJ 3 ends every log answer with it (the watcher waits for it)
AUTH = {"WWW-Authenticate": 'APIKEY realm="biomaj"'}

# --- the options of biomaj-cli (3.1.11) and of BioMAJ 3's OPTIONS_PARAMS -----------------------------

FLAGS = frozenset({
    "check", "update", "fromscratch", "publish", "unpublish", "remove", "removeall", "removepending", "status",
    "freeze", "unfreeze", "force", "help", "search", "show", "version", "statusko", "trace", "whatsup", "lastlog",
    "stats", "json", "updatestatus", "updatecancel", "aboutme", "schedule", "history", "datalist", "dataimport",
    "repair", "no_log",
}) | {option.name for option in UPDATE.options if option.type is bool}  # and biomaj's own update options
TEXTS = frozenset({
    "config", "release", "from_task", "process", "log", "bank", "owner", "stop_before", "stop_after", "formats",
    "types", "query", "newbank", "newdir", "visibility", "maintenance", "userlogin", "userpassword", "proxy",
    "apikey", "user", "token",
}) | {option.name for option in UPDATE.options if option.type is str}
NUMBERS = {"tail": (0, MAX_TAIL), "historyLimit": (1, 1000), "timestamp": (0, 1 << 62)}
# biomaj-cli's own attribute `options` (always null), and what it sends but the server has no use for.
IGNORED = frozenset({"options"})
DEFAULTS: dict[str, Any] = {**{k: False for k in FLAGS}, **{k: None for k in TEXTS}, "tail": 100, "historyLimit": 20,
                            "timestamp": None}

UNSUPPORTED = {
    "newbank": "--change-dbname (renaming a bank) is not supported by this server: create a new bank file and "
               "update it, then remove-all the old bank",
    "newdir": "--move-production-directories is not supported by this server: change data.dir in the bank file "
              "and update the bank with --fromscratch",
    "query": "--query (search in an Elasticsearch index) is not supported by this server: use --search with "
             "--formats and --types",
    "schedule": "--schedule is served by the scheduler, not by /api/daemon",
    "datalist": "--data-list (biomaj-data bank templates) is not supported by this server",
    "dataimport": "--data-import (biomaj-data bank templates) is not supported by this server",
}

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,199}")
DIGITS = re.compile(r"[0-9]{1,12}")  # str.isdigit() takes "²", which int() refuses


def _err(kind: type[web.HTTPException], message: str, **kwargs: Any) -> web.HTTPException:
    """An HTTP error whose message (the JSON ``error``) holds no control character: a newline in
    an option's name or value must give a 400, not break the status line (a 500)."""
    return kind(reason=re.sub(r"[\x00-\x1f\x7f]", "?", message)[:1000], **kwargs)


class Options(dict):
    """The options of one call, every key present (BioMAJ 3's defaults), checked and typed."""

    @classmethod
    def parse(cls, raw: Any) -> "Options":
        if not isinstance(raw, dict):
            raise _err(web.HTTPBadRequest, 'the body must be {"options": {...}}, as biomaj-cli sends it')
        unknown = sorted(k for k in raw if k not in DEFAULTS and k not in IGNORED)
        if unknown:
            raise _err(web.HTTPBadRequest, f"unknown option(s): {', '.join(map(str, unknown))}")
        options = cls(DEFAULTS)
        for key, value in raw.items():
            if key in IGNORED:
                continue
            if key in FLAGS:
                if value is not None and not isinstance(value, bool):
                    raise _err(web.HTTPBadRequest, f"option {key} must be true or false")
                options[key] = bool(value)
            elif key in TEXTS:
                if value is not None and not isinstance(value, str):
                    raise _err(web.HTTPBadRequest, f"option {key} must be a string")
                options[key] = value or None
            else:
                options[key] = _number(key, value, DEFAULTS[key])
        return options


def _number(key: str, value: Any, default: Any) -> Any:
    if value is None or value == "":
        return default
    low, high = NUMBERS[key]
    if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _err(web.HTTPBadRequest, f"option {key} must be a number between {low} and {high}")
    return value


@dataclass
class Answer:
    """An operation's result: ``data`` in BioMAJ 3's JSON form, ``text`` as biomaj-cli prints it
    (None: biomaj-cli prints "Done."), and the jobs it queued."""

    data: Any
    text: Any = None
    jobs: list[dict] | None = None

    @classmethod
    def same(cls, value: Any, jobs: list[dict] | None = None) -> "Answer":
        return cls(value, value, jobs)


Operation = Callable[[web.Request, Options], Awaitable[Answer]]

# --- helpers ---------------------------------------------------------------------------------------


def _bank_name(value: str | None, what: str = "Bank name is missing (--bank)") -> str:
    if not value:
        raise _err(web.HTTPBadRequest, what)
    if not NAME.fullmatch(value):
        raise _err(web.HTTPBadRequest, f"{value[:100]!r} is not a bank name")
    return value


def _one_bank(options: Options) -> str:
    name = options["bank"] or ""
    if "," in name:
        raise _err(web.HTTPBadRequest, "this action takes one bank, not a list")
    return _bank_name(name)


def _banks(options: Options) -> list[str]:
    names = [n.strip() for n in (options["bank"] or "").split(",") if n.strip()]
    if not names:
        raise _err(web.HTTPBadRequest, "Bank name is missing (--bank)")
    return list(dict.fromkeys(_bank_name(n) for n in names))


def _authenticated(request: web.Request, what: str):
    who = identity_of(request)
    if who is None:
        raise _err(web.HTTPUnauthorized, f"{what} needs authentication: --api-key KEY "
                   "(Authorization: APIKEY <key>)", headers=AUTH)
    return who


async def _owned(request: web.Request, name: str, what: str) -> None:
    """The requester must own the bank or be an admin (:func:`..bank_access.check_owner`), checked
    before any option of the call: anonymous 401, a bank one may not see 404, another's 403."""
    _authenticated(request, what)
    await check_owner(request, name)


async def _visible(request: web.Request, name: str) -> dict:
    """The bank document if the requester may see it; a bank one may not see is a 404, as an
    unknown one (:func:`..bank_access.visible_bank`)."""
    return await visible_bank(request, name)


async def _visible_names(request: web.Request) -> set[str]:
    viewer = viewer_of(request)
    return {b["name"] for b in await node_of(request).store.list_banks() if viewer.can_see(b)}


def _split(value: Any) -> list[str]:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise _err(web.HTTPBadRequest, "formats and types are strings or lists of strings")
        value = ",".join(value)
    if value is not None and not isinstance(value, str):
        raise _err(web.HTTPBadRequest, "formats and types are strings or lists of strings")
    return reports.split_list(value)


def _dict(value: Any) -> dict:
    """A stored sub-document, or {} when missing or not a mapping (an old or hand-edited record)."""
    return value if isinstance(value, dict) else {}


def _lists(table: reports.Table) -> list[list[Any]]:
    return [list(row) for row in table.rows]


def _lock_dir(request: web.Request) -> Path:
    config = node_of(request).config
    return locks.installation_lock_dir(config.global_properties, config.root)


async def _submit(request: web.Request, kind: str, name: str, options: dict[str, Any]) -> dict:
    node, who = node_of(request), identity_of(request)
    job_id = await submit_job(node.store, node.bus, kind, name, options, who.name, admin=who.admin)
    return _job_view(await node.store.get_job(job_id))


# --- reads -----------------------------------------------------------------------------------------


async def op_version(request: web.Request, options: Options) -> Answer:
    """Versions of the modules; no call to PyPI (BioMAJ 3 asked pypi.python.org on every call)."""
    rows = [["biomaj", __version__, "N/A"]]
    table = reports.Table(("Module", "Release", "Latest"), rows)
    return Answer({"version": rows}, "Version: BioMAJ modules version\n" + reports.render(table, "grid"))


async def op_history(request: web.Request, options: Options) -> Answer:
    """Updates and removals, most recent first, of the banks the requester may see (W33)."""
    visible = await _visible_names(request)
    entries = [e for e in await node_of(request).store.list_history(None, None) if e.get("bank") in visible]
    table = reports.history(entries[: int(options["historyLimit"])])
    return Answer({"headers": list(table.headers), "history": _lists(table)},
                  "BioMAJ history\n" + reports.render(table, "grid"))


async def op_stats(request: web.Request, options: Options) -> Answer:
    banks = await node_of(request).store.list_banks()
    viewer = viewer_of(request)
    rows = [[r["bank"], r["release"], r["size"]] for r in reports.stats_records(banks, viewer)]
    table = reports.stats(banks, viewer)
    return Answer({"headers": list(table.headers), "stats": rows},
                  "BioMAJ statistics\n" + reports.render(table, "grid"))


async def op_whatsup(request: web.Request, options: Options) -> Answer:
    """Locked banks (and maintenance) and queued jobs, of the banks the requester may see."""
    visible = await _visible_names(request) | {locks.MAINTENANCE}
    held = [{"bank": bank, "owner": holder.describe()} for bank, holder in locks.list_locks(_lock_dir(request))
            if bank in visible]
    jobs = [j for j in await node_of(request).store.list_jobs(state=ACTIVE_JOB_STATES, limit=None)
            if j.get("bank") in visible and j["state"] == "queued"]
    table = reports.whatsup(held, jobs)
    return Answer({"services": _lists(table), "headers": list(table.headers)}, reports.render(table))


async def op_search(request: web.Request, options: Options) -> Answer:
    if options["query"]:
        raise _err(web.HTTPBadRequest, UNSUPPORTED["query"])
    formats, types = _split(options["formats"]), _split(options["types"])
    table = reports.search(await node_of(request).store.list_banks(), viewer_of(request), formats, types)
    return Answer({"matches": _lists(table), "headers": list(table.headers)},
                  f"Search by formats={formats}, types={types}\n" + reports.render(table, "grid"))


async def op_show(request: web.Request, options: Options) -> Answer:
    name = _one_bank(options)
    table = reports.show(await _visible(request, name), viewer_of(request), options["release"])
    if not table.rows:
        raise _err(web.HTTPNotFound, f"No production release found for bank {name}")
    return Answer({"details": _lists(table), "headers": list(table.headers)}, reports.render(table, "grid"))


async def op_check(request: web.Request, options: Options) -> Answer:
    """The bank file's verdict; a private bank's only for its owner and the admins (a bank never
    updated: anyone's to check)."""
    name = _one_bank(options)
    doc = await node_of(request).store.get_bank(name)
    if doc is not None:
        await _visible(request, name)
    props = await asyncio.to_thread(load_bank_file, request, name)
    problems = check_bank(props) + check_support(props)
    text = f"{name} check: {verdict(problems)}\n" + "".join(f"  {p}\n" for p in problems)
    return Answer.same(client_paths(request, text))


async def op_status(request: web.Request, options: Options) -> Answer:
    viewer = viewer_of(request)
    if options["bank"]:
        tables = reports.status_bank(await _visible(request, _one_bank(options)), viewer)
        info, prod = tables[0], tables[1]
        pending = [list(tables[2].headers), *_lists(tables[2])] if len(tables) > 2 else []
        data = {"bank": {"info": {"headers": list(info.headers), "details": _lists(info)},
                         "production": {"headers": list(prod.headers), "details": _lists(prod)},
                         "pending": pending}}
        return Answer(data, "".join(reports.render(t) + "\n" for t in tables))
    table = reports.status_all(await node_of(request).store.list_banks(), viewer)
    return Answer({"headers": list(table.headers), "banks": _lists(table)}, reports.render(table) + "\n")


async def op_status_ko(request: web.Request, options: Options) -> Answer:
    store = node_of(request).store
    full = [doc for doc in [await store.get_bank(b["name"]) for b in await store.list_banks()] if doc]
    table = reports.status_ko(full, viewer_of(request))
    return Answer({"headers": list(table.headers), "banks": _lists(table)}, reports.render(table))


PENDING_HEADERS = ["Pending actions", "Date"]
STEP_HEADERS = ["Workflow step", "Status"]


def _action_label(job: dict) -> str:
    options = job.get("options") or {}
    label = {"update": "Update", "remove": f"Removal - release {options.get('release')}",
             "remove-all": "Removal - all releases", "remove-pending": "Removal - pending releases",
             "repair": "Repair", "release-check": "Release check"}.get(job["kind"], job["kind"])
    return label + (" (running)" if job["state"] == "running" else "")


def _step_rows(status: dict) -> list[list[str]]:
    """BioMAJ 3's update-status rows from the bank's live ``status``."""
    rows = []
    if "log_file" in status:
        rows.append(["log_file", str(_dict(status.get("log_file")).get("status"))])
    if "session" in status:
        rows.append(["session", str(status["session"])])
    over = _dict(status.get("over")).get("status") is True
    for step in UPDATE_TASKS:
        if isinstance(status.get(step), dict):
            state = status[step].get("status")
            rows.append([step, "over" if state is True else "error" if state is False
                         else "skipped" if over else "waiting"])
            progress = status[step].get("progress")
            if step in PROCESS_TASKS and isinstance(progress, dict):
                rows.extend([str(proc), str(value)] for proc, value in progress.items())
    return rows


async def op_update_status(request: web.Request, options: Options) -> Answer:
    """Queued and running jobs of the bank, and the steps of its last workflow (visible banks only;
    BioMAJ 3 answered anyone, W33)."""
    name = _one_bank(options)
    if await node_of(request).store.get_bank(name) is None:  # a first update may be queued
        load_bank_file(request, name)  # 404 for no bank at all
        doc = {}
    else:
        doc = await _visible(request, name)
    jobs = await node_of(request).store.list_jobs(state=ACTIVE_JOB_STATES, bank=name, limit=None)
    actions = [[_action_label(j), reports.format_time(j.get("created"))] for j in jobs]
    steps = _step_rows(_dict(doc.get("status")))
    if not steps and not actions:
        return Answer.same("No update information available")
    data = {"pending": {"headers": PENDING_HEADERS, "actions": actions},
            "status": {"headers": STEP_HEADERS, "process": steps}}
    text = (reports.render(reports.Table(PENDING_HEADERS, actions), "grid") + "\n"
            + reports.render(reports.Table(STEP_HEADERS, steps), "grid"))
    return Answer(data, text)


def _log_root(request: web.Request, name: str) -> Path:
    config = node_of(request).config
    try:
        root = Bank.load(config.global_properties, name).log_root
    except BiomajError:  # the bank file is gone: the installation's log.dir
        props = GlobalProperties.load(config.global_properties)
        root = Path(props.get("log.dir") or Path(props.get("data.dir") or config.root) / "log")
    return (root / name).resolve()


def _log_file(request: web.Request, doc: dict) -> Path:
    """The log of the bank's last session, as the store records it (BioMAJ 3's
    ``status.log_file.status``, else the newest session's); never a path from the request, and
    only inside the bank's log directory."""
    recorded = _dict(_dict(doc.get("status")).get("log_file")).get("status")
    if not recorded:
        sessions = sorted((s for s in doc.get("sessions") or [] if isinstance(s, dict)),
                          key=lambda s: s.get("id") or 0, reverse=True)
        recorded = next((s["log_file"] for s in sessions if isinstance(s, dict) and s.get("log_file")), None)
    if not recorded or not isinstance(recorded, str):
        raise _err(web.HTTPNotFound, f"No log file available for bank {doc['name']}")
    path = Path(recorded).resolve()
    if not path.is_relative_to(_log_root(request, doc["name"])):
        log.warning("bank %s: recorded log file %s is outside its log directory: not served", doc["name"], recorded)
        raise _err(web.HTTPNotFound, f"No log file available for bank {doc['name']} (outside its log directory)")
    if not path.is_file():
        raise _err(web.HTTPNotFound, f"the log file of bank {doc['name']} no longer exists")
    return path


def _tail(path: Path, lines: int) -> bytes:
    """The last ``lines`` lines of the log, read from its end (:func:`..tail.tail`)."""
    with path.open("rb") as handle:
        return tail(handle, lines)


async def op_lastlog(request: web.Request, options: Options) -> Answer:
    """The last lines (``tail``, default 100, 0 for all) of the bank's last session log."""
    path = _log_file(request, await _visible(request, _one_bank(options)))
    tail = int(options["tail"]) or MAX_TAIL
    return Answer.same((await asyncio.to_thread(_tail, path, tail)).decode("utf-8", "replace"))


async def op_aboutme(request: web.Request, options: Options) -> Answer:
    """Who the API key belongs to. BioMAJ 3 took a login and a password and answered the user's
    API key (W36): here the key is the credential, a password is never asked for nor checked,
    and no key is ever in the answer."""
    who = identity_of(request)
    if who is None:
        raise _err(web.HTTPUnauthorized, "about-me needs your API key (--api-key KEY); this server never "
                   "gives an API key in exchange for a password: ask an admin for a new "
                   "key (biomaj users apikey NAME)", headers=AUTH)
    user = await request.app[USERS_KEY].get(who.name)
    data = {"user": who.name, "email": user.get("email"), "is_admin": who.admin}
    text = f"User: {who.name}\nEmail: {user.get('email') or ''}\nAdmin: {'yes' if who.admin else 'no'}\n"
    return Answer(data, text)


# --- writes ----------------------------------------------------------------------------------------


async def op_maintenance(request: web.Request, options: Options) -> Answer:
    value = options["maintenance"]
    if value not in ("on", "off", "status"):
        raise _err(web.HTTPBadRequest, "Wrong maintenance value [on,off,status]")
    lock_dir = _lock_dir(request)
    if value == "status":
        return Answer.same(f"Maintenance: {'On' if locks.is_maintenance(lock_dir) else 'Off'}")
    who = _authenticated(request, "maintenance on/off")
    if not who.admin:
        raise _err(web.HTTPForbidden, "maintenance on/off needs an admin")
    locks.set_maintenance(lock_dir, value == "on", who.name)
    return Answer.same(f"Maintenance set to {'On' if value == 'on' else 'Off'}")


async def op_owner(request: web.Request, options: Options) -> Answer:
    name = _one_bank(options)
    await _owned(request, name, "changing the owner")
    owner = options["owner"]
    await request.app[USERS_KEY].get(owner)  # 404 for an unknown user
    await runner.set_owner(run_context(request), name, owner)
    return Answer(None)


async def op_visibility(request: web.Request, options: Options) -> Answer:
    name = _one_bank(options)
    await _owned(request, name, "changing the visibility")
    if options["visibility"] not in runner.VISIBILITIES:
        raise _err(web.HTTPBadRequest, "Valid values are public|private")
    await runner.set_visibility(run_context(request), name, options["visibility"])
    # BioMAJ 3 reverted it at the next update (W23) and said so; here it is kept.
    return Answer.same(f"Bank {name} is now {options['visibility']} (kept across updates)")


def _task_options(options: Options) -> dict[str, Any]:
    """The update options among biomaj-cli's (its option names are the declared ones,
    :data:`biomaj.jobs.UPDATE`), checked."""
    check_options("update", options)
    if options["process"] and not options["from_task"]:
        raise _err(web.HTTPBadRequest, "--process needs --from-task")
    return {option.name: options[option.name] for option in UPDATE.options}


async def _jobs(request: web.Request, kind: str, names: list[str], job_options: dict[str, Any],
                sent: str) -> Answer:
    """Check every bank (its file, and the requester owns it) before queueing any job."""
    for name in names:
        await _owned(request, name, f"{kind} of a bank")
    for name in names:
        load_bank_file(request, name, KINDS[kind].checks_bank_file)
    lines, jobs, busy = [], [], []
    for name in names:
        try:
            job = await _submit(request, kind, name, job_options)
        except DuplicateJob as exc:
            busy.append(f"Bank {name}: {with_article(kind)} is already queued or running (job {exc.job_id})")
            continue
        jobs.append(job)
        lines.append(f"{sent} {name} (job {job['id']})")
    if not jobs:
        raise _err(web.HTTPConflict, "; ".join(busy))
    text = "".join(line + "\n" for line in lines + busy)
    return Answer.same(text, jobs)


async def op_update(request: web.Request, options: Options) -> Answer:
    return await _jobs(request, "update", _banks(options), _task_options(options), "Bank update request sent for")


async def op_repair(request: web.Request, options: Options) -> Answer:
    return await _jobs(request, "repair", _banks(options), {"release": options["release"]},
                       "Bank repair request sent for")


async def _production_entry(request: web.Request, name: str, release: str) -> dict:
    doc = await node_of(request).store.get_bank(name)
    if doc is None:
        raise _err(web.HTTPNotFound, f"no bank {name} in the store (it has never been updated)")
    entry = find_production(doc, release)
    if entry is None:
        known = ", ".join(str(e.get("release")) for e in doc.get("production") or []) or "none"
        raise _err(web.HTTPNotFound, f"bank {name} has no release {release} (releases: {known})")
    return {"doc": doc, "entry": entry}


async def op_remove(request: web.Request, options: Options) -> Answer:
    name = _one_bank(options)
    await _owned(request, name, "removal")
    if options["removeall"]:
        if await node_of(request).store.get_bank(name) is None:
            raise _err(web.HTTPNotFound, f"no bank {name} in the store: nothing to remove")
        return await _jobs(request, "remove-all", [name], {"force": options["force"]}, "Bank removal request sent for")
    if not options["release"]:
        raise _err(web.HTTPBadRequest, "Bank release is missing (--release)")
    found = await _production_entry(request, name, options["release"])
    doc, entry = found["doc"], found["entry"]
    if entry.get("freeze"):
        raise _err(web.HTTPConflict, f"release {entry['release']} of {name} is frozen: unfreeze it first")
    if entry.get("session") == doc.get("current"):
        raise _err(web.HTTPConflict, f"release {entry['release']} of {name} is the published one: "
                   "publish another release first")
    return await _jobs(request, "remove", [name], {"release": options["release"]}, "Bank removal request sent for")


async def op_remove_pending(request: web.Request, options: Options) -> Answer:
    return await _jobs(request, "remove-pending", [_one_bank(options)], {"release": options["release"]},
                       "Pending releases removal request sent for")


async def op_publish(request: web.Request, options: Options) -> Answer:
    name = _one_bank(options)
    await _owned(request, name, "publish")
    await runner.publish_bank(run_context(request), name, options["release"])
    return Answer(None)


async def op_unpublish(request: web.Request, options: Options) -> Answer:
    name = _one_bank(options)
    await _owned(request, name, "unpublish")
    await runner.unpublish_bank(run_context(request), name)
    return Answer(None)


async def _freeze(request: web.Request, options: Options, frozen: bool) -> Answer:
    name = _one_bank(options)
    await _owned(request, name, "freeze" if frozen else "unfreeze")
    if not options["release"]:
        raise _err(web.HTTPBadRequest, "Bank release is missing (--release)")
    await runner.freeze_release(run_context(request), name, options["release"], frozen)
    return Answer(None)


async def op_freeze(request: web.Request, options: Options) -> Answer:
    return await _freeze(request, options, True)


async def op_unfreeze(request: web.Request, options: Options) -> Answer:
    return await _freeze(request, options, False)


async def op_cancel(request: web.Request, options: Options) -> Answer:
    """Cancel the bank's queued or running jobs: its owner or an admin only (BioMAJ 3: anyone, W32);
    nothing to cancel is a 404 (BioMAJ 3 left a flag that cancelled the next run, W11)."""
    name = _one_bank(options)
    await _owned(request, name, "cancel")
    node = node_of(request)
    jobs = await node.store.list_jobs(state=ACTIVE_JOB_STATES, bank=name, limit=None)
    if not jobs:
        raise _err(web.HTTPNotFound, f"no job queued or running on bank {name}")
    done = [_job_view(await request_cancel(node.store, node.bus, node.state, j["id"])) for j in jobs]
    return Answer.same(f"Requested to cancel update of bank {name}, update will stop once current actions are over",
                       done)


def _unsupported(option: str) -> Operation:
    async def refuse(request: web.Request, options: Options) -> Answer:
        raise _err(web.HTTPBadRequest, UNSUPPORTED[option])

    return refuse


# BioMAJ 3's precedence (utils.py:biomaj_client_action): the first option set wins.
ACTIONS: tuple[tuple[tuple[str, ...], Operation], ...] = (
    (("version",), op_version),
    (("history",), op_history),
    (("stats",), op_stats),
    (("whatsup",), op_whatsup),
    (("maintenance",), op_maintenance),
    (("owner",), op_owner),
    (("visibility",), op_visibility),
    (("newdir",), _unsupported("newdir")),
    (("newbank",), _unsupported("newbank")),
    (("query",), _unsupported("query")),
    (("search",), op_search),
    (("show",), op_show),
    (("check",), op_check),
    (("status",), op_status),
    (("statusko",), op_status_ko),
    (("update",), op_update),
    (("freeze",), op_freeze),
    (("unfreeze",), op_unfreeze),
    (("remove", "removeall"), op_remove),
    (("removepending",), op_remove_pending),
    (("unpublish",), op_unpublish),
    (("publish",), op_publish),
    (("updatestatus",), op_update_status),
    (("updatecancel",), op_cancel),
    (("aboutme",), op_aboutme),
    (("lastlog",), op_lastlog),
    (("schedule",), _unsupported("schedule")),
    (("datalist",), _unsupported("datalist")),
    (("dataimport",), _unsupported("dataimport")),
    (("repair",), op_repair),
)
ACTION_NAMES = [names[0] for names, _ in ACTIONS if names[0] not in UNSUPPORTED]


async def _perform(request: web.Request, options: Options) -> Answer:
    for names, operation in ACTIONS:
        if any(options[n] for n in names):
            return await operation(request, options)
    raise _err(web.HTTPBadRequest, "no option match: give one of " + ", ".join(f"--{n}" for n in ACTION_NAMES))


