"""What the pages show, built from the store's documents: pure functions (no store, no request),
so that they are tested on plain dicts. The pages (``pages.py``) fetch the documents with the
requester's visibility rules and hand them here."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from biomaj import change_report, reports
from biomaj.redaction import is_secret
from biomaj.workflow.session import UPDATE_TASKS

from .charts import Bar

ACTIVE = ("queued", "running")
HIDDEN = "(hidden)"
#: property names whose values are never shown (on top of biomaj.redaction.is_secret)
_SECRET_NAME = re.compile(r"(passw|credential|secret|key|token|auth)", re.IGNORECASE)


def duration_text(seconds: float | None) -> str:
    """``0.2 s``, ``42 s``, ``3 min 5 s``, ``2 h 7 min``; empty when unknown."""
    if seconds is None or seconds < 0:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def rate_text(bytes_per_second: float | None) -> str:
    return f"{reports.human_size(int(bytes_per_second or 0))}/s"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- the last update of a bank ----------------------------------------------------------------


@dataclass
class LastRun:
    """The last update of a bank, as the dashboard shows it."""

    result: str  # ok, failed, running, queued, cancelled, never
    at: float | None = None  # when it ended (or started, while it runs)
    duration: float | None = None
    step: str | None = None  # the failing (or running) step
    message: str | None = None
    release: str | None = None
    job_id: str | None = None


def session_of(doc: dict, session_id: Any) -> dict | None:
    if session_id is None:
        return None
    return next((s for s in doc.get("sessions") or [] if s.get("id") == session_id), None)


def _session_run(session: dict) -> LastRun:
    started, ended = _number(session.get("id")), _number(session.get("last_update_time"))
    duration = ended - started if started is not None and ended is not None else None
    error = session.get("error") or {}
    status = session.get("status") or {}
    if session.get("workflow_status") or status.get("over") is True:
        return LastRun("ok", ended or started, duration, release=session.get("release"))
    if isinstance(error, dict) and error:
        return LastRun("failed", ended or started, duration, error.get("task"), error.get("message"),
                       session.get("release"))
    failed = next((task for task, done in status.items() if done is False), None)
    return LastRun("failed", ended or started, duration, failed, str(error) if error else "did not finish",
                   session.get("release"))


def last_run(doc: dict | None, jobs: list[dict], progress: dict | None = None) -> LastRun:
    """The bank's last update: its running or queued job, else the later of its last update
    session and its last finished update job (a job can fail before any session exists: a bad
    bank file, a lock)."""
    updates = [j for j in jobs if j.get("kind") == "update"]
    active = next((j for j in updates if j.get("state") in ACTIVE), None)
    if active is not None:
        step = (progress or {}).get("step")
        return LastRun(active["state"], _number(active.get("started") or active.get("created")), None, step,
                       job_id=active.get("id"))
    session = session_of(doc or {}, (doc or {}).get("last_update_session"))
    run = _session_run(session) if session is not None else LastRun("never")
    job = next((j for j in updates if j.get("state") in ("failed", "cancelled")), None)
    finished = _number(job.get("finished")) if job else None
    if job is not None and finished is not None and (run.at is None or finished > run.at + 1):
        result = job.get("result") if isinstance(job.get("result"), dict) else {}
        started = _number(job.get("started"))
        return LastRun(job["state"], finished, finished - started if started else None, result.get("failed_task"),
                       job.get("error") or ("cancelled" if job["state"] == "cancelled" else None), job_id=job.get("id"))
    return run


def next_runs(schedules: list[dict]) -> dict[str, float]:
    """bank -> the next run of the enabled schedules that update it."""
    runs: dict[str, float] = {}
    for schedule in schedules:
        when = _number(schedule.get("next_run"))
        if when is None or schedule.get("enabled") is False:
            continue
        banks = schedule.get("banks") or []
        if isinstance(banks, str):
            banks = [b for b in re.split(r"[,\s]+", banks) if b]
        for bank in banks:
            runs[bank] = min(when, runs.get(bank, when))
    return runs


# --- dashboard --------------------------------------------------------------------------------


@dataclass
class BankRow:
    name: str
    description: str = ""
    visibility: str = ""
    owner: str = ""
    types: str = ""
    published: str | None = None
    size: int | None = None  # of the published release
    total_size: int = 0  # of every release kept
    releases: int = 0
    run: LastRun = field(default_factory=lambda: LastRun("never"))
    next_run: float | None = None
    in_store: bool = True
    config: str = "ok"  # for a bank never updated: its bank file's state


def bank_row(doc: dict, jobs: list[dict], next_run: float | None, progress: dict | None = None) -> BankRow:
    props = doc.get("properties") or {}
    published = reports._published(doc)
    types = props.get("type") or []
    productions = doc.get("production") or []
    return BankRow(
        name=doc["name"], description=str(props.get("desc") or ""), visibility=str(props.get("visibility") or ""),
        owner=str(props.get("owner") or ""), types=types if isinstance(types, str) else ",".join(map(str, types)),
        published=published.get("release") if published else None,
        size=int(published.get("size") or 0) if published else None,
        total_size=sum(int(p.get("size") or 0) for p in productions), releases=len(productions),
        run=last_run(doc, jobs, progress), next_run=next_run)


def unrecorded_row(row: dict, jobs: list[dict], next_run: float | None) -> BankRow:
    """A bank file whose bank was never updated (``inventory.bank_rows``' row)."""
    return BankRow(name=row["name"], run=last_run(None, jobs), next_run=next_run, in_store=False,
                   config=row["config"])


def summary(rows: list[BankRow]) -> dict[str, int]:
    tally = {"banks": len(rows), "ok": 0, "failed": 0, "running": 0, "never": 0}
    for row in rows:
        result = row.run.result
        key = "running" if result in ACTIVE else "failed" if result in ("failed", "cancelled") else result
        tally[key] = tally.get(key, 0) + 1
    return tally


# --- a bank's releases and sessions -----------------------------------------------------------


@dataclass
class ReleaseRow:
    release: str
    state: str  # published, frozen, kept, pending
    session: float | None
    remote: str = ""
    size: int | None = None
    formats: str = ""
    types: str = ""
    frozen: bool = False
    published: bool = False
    directory: str = ""
    buckets: list[dict] = field(default_factory=list)  # where it is published besides (publish.s3)


def release_rows(doc: dict) -> list[ReleaseRow]:
    """Production releases (newest first), then pending ones."""
    rows = []
    productions = sorted(doc.get("production") or [], key=lambda p: _number(p.get("session")) or 0, reverse=True)
    for prod in productions:
        published = reports._is_current(doc, prod)
        frozen = bool(prod.get("freeze"))
        rows.append(ReleaseRow(
            release=str(prod.get("release")), state="published" if published else "frozen" if frozen else "kept",
            session=_number(prod.get("session")), remote=str(prod.get("remoterelease") or ""),
            size=int(prod.get("size") or 0), formats=reports._joined(prod.get("formats")),
            types=reports._joined(prod.get("types")), frozen=frozen, published=published,
            directory=reports._production_dir(prod),
            buckets=[{"url": b.get("url"), "complete": bool(b.get("complete")), "current": bool(b.get("current"))}
                     for b in prod.get("buckets") or []]))
    for pending in doc.get("pending") or []:
        rows.append(ReleaseRow(release=str(pending.get("release")), state="pending", session=_number(pending.get("id"))))
    return rows


@dataclass
class StepRow:
    name: str
    state: str  # done, failed, running, not run, pending
    seconds: float | None = None


@dataclass
class SessionRow:
    id: Any
    action: str
    release: str
    run: LastRun
    started: float | None
    steps: list[StepRow]
    has_log: bool


def session_rows(doc: dict, running_session: Any = None, limit: int = 20) -> list[SessionRow]:
    """The bank's sessions, newest first; ``running_session``: the id of the session an active job
    works on (its first unfinished step is running)."""
    sessions = sorted(doc.get("sessions") or [], key=lambda s: _number(s.get("id")) or 0, reverse=True)[:limit]
    return [_session_row(s, running_session is not None and s.get("id") == running_session) for s in sessions]


def last_update_row(doc: dict) -> SessionRow | None:
    """The bank's last update session (each step with the state it ended in), or None when the
    bank has none on record (never updated)."""
    session = session_of(doc, doc.get("last_update_session"))
    return _session_row(session, False) if session is not None else None


def _session_row(session: dict, running: bool) -> SessionRow:
    run = LastRun("running", _number(session.get("id"))) if running else _session_run(session)
    return SessionRow(session.get("id"), str(session.get("action") or "update"),
                      str(session.get("release") or session.get("remoterelease") or ""), run,
                      _number(session.get("id")), _steps(session, run, running), bool(session.get("log_file")))


def _steps(session: dict, run: LastRun, running: bool) -> list[StepRow]:
    status = session.get("status") or {}
    timings = ((session.get("stats") or {}).get("workflow")) or {}
    steps, stopped = [], False
    for task in status or UPDATE_TASKS:
        done = status.get(task)
        if done is True:
            state = "done"
        elif stopped:
            state = "not run"
        elif running:
            state, stopped = "running", True
        elif run.result == "failed" and (run.step in (None, task)):
            state, stopped = "failed", True
        else:
            state = "not run"
        steps.append(StepRow(task, state, _number(timings.get(task))))
    return steps


# --- change reports -----------------------------------------------------------------------------

#: File names a session's change block shows per kind (the API gives up to 1000).
CHANGE_NAMES_SHOWN = 50


@dataclass
class ChangeKind:
    kind: str  # added, removed, changed or unchanged
    count: int
    bytes: int
    names: list[str] = field(default_factory=list)  # the first CHANGE_NAMES_SHOWN
    more: int = 0  # files of this kind not named


@dataclass
class ChangeRow:
    """The change report of one update session, as its block on the bank page shows it."""

    session: Any
    release: str
    against: str | None
    kinds: list[ChangeKind]


def change_rows(doc: dict, limit: int = 20) -> list[ChangeRow]:
    """The change reports of the bank's recent update sessions, newest first."""
    sessions = [s for s in doc.get("sessions") or [] if isinstance(s.get("changes"), dict)]
    rows = []
    for session in sorted(sessions, key=lambda s: _number(s.get("id")) or 0, reverse=True)[:limit]:
        changes = session["changes"]
        files = changes.get("files") if isinstance(changes.get("files"), dict) else {}
        kinds = []
        for kind in change_report.KINDS:
            count, size = change_report.tally_of(changes, kind)
            names = [str(n) for n in (files.get(kind) or [])[:CHANGE_NAMES_SHOWN]]
            kinds.append(ChangeKind(kind, count, size, names, max(count - len(names), 0) if names else 0))
        rows.append(ChangeRow(session.get("id"), str(session.get("release") or ""), changes.get("against"), kinds))
    return rows


# --- charts -----------------------------------------------------------------------------------


def size_bars(doc: dict) -> list[Bar]:
    """The size of each release over time: from the update sessions that made them, the kept
    productions' own sizes winning."""
    by_release: dict[str, tuple[float, int]] = {}
    for session in doc.get("sessions") or []:
        if session.get("action", "update") == "update" and session.get("workflow_status") and session.get("release"):
            when = _number(session.get("id")) or 0
            by_release[str(session["release"])] = (when, int(session.get("fullsize") or 0))
    for prod in doc.get("production") or []:
        when = _number(prod.get("session")) or by_release.get(str(prod.get("release")), (0, 0))[0]
        by_release[str(prod.get("release"))] = (when, int(prod.get("size") or 0))
    ordered = sorted(by_release.items(), key=lambda item: item[1][0])
    return [Bar(release, size, note=_date(when)) for release, (when, size) in ordered]


def duration_bars(doc: dict, limit: int = 20) -> list[Bar]:
    """The duration of the recent update runs, oldest first, failed ones marked."""
    bars = []
    sessions = [s for s in doc.get("sessions") or [] if s.get("action", "update") == "update"]
    for session in sorted(sessions, key=lambda s: _number(s.get("id")) or 0)[-limit:]:
        run = _session_run(session)
        if run.duration is None:
            continue
        label = str(session.get("release") or _date(_number(session.get("id")), "%m-%d %H:%M"))
        bars.append(Bar(label, run.duration, "ok" if run.result == "ok" else "failed",
                        note=f"{run.result}, {_date(_number(session.get('id')))}"))
    return bars


def _date(epoch: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return time.strftime(fmt, time.localtime(epoch)) if epoch else ""


# --- configuration ----------------------------------------------------------------------------


@dataclass
class PropertyRow:
    key: str
    value: str
    hidden: bool
    source: str


def is_hidden(key: str, value: str = "") -> bool:
    """A property whose value the UI never shows: a password, credentials, a key, a secret, a
    token, or a URL carrying a password."""
    return bool(_SECRET_NAME.search(key)) or is_secret(key, value)


def property_rows(props: Any) -> list[PropertyRow]:
    """The merged properties of a bank (``BankProperties``), in file order, secrets hidden."""
    rows = []
    for key in props.keys():  # noqa: SIM118 - BankProperties, not a dict
        try:
            value = props.get(key) or ""
        except Exception as exc:  # noqa: BLE001 - a bad interpolation: shown, not fatal
            value = f"(cannot read: {exc})"
        source = props.source_of(key)
        hidden = is_hidden(key, value)
        rows.append(PropertyRow(key, HIDDEN if hidden else value, hidden, source.name if source else ""))
    return rows
