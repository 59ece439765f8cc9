"""Schedules as the store keeps them, and the operations `biomaj ctl schedule` and
`/api/v1/schedules` share: add (create or replace), list with the next run, get, delete.

Two kinds of schedule document live in the store's ``schedules``:

* ``cron``: ``{name, kind, cron, banks[], user, created, created_by, last_run, last_fired,
  last_result, last_jobs{bank: job id or None}}``, made by an admin. ``last_run`` is the time of
  the latest run claimed by a scheduler (fired, or skipped as missed); it only moves through
  :meth:`~biomaj.storage.base.Store.claim_schedule_run`, so that two schedulers never fire the same
  run.
* ``release``: ``auto:<bank>``, one per bank whose ``schedule.auto`` is set, made and removed by
  the scheduler itself; ``{..., next_run, check_in, attempts, delay, check_job, last_check,
  last_release}`` hold the release-driven mode's back-off (:mod:`biomaj.scheduler.backoff`).
  Deleting one resets its back-off; it comes back while ``schedule.auto`` is set.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import Any

from biomaj.auth.users import check_name
from biomaj.config.properties import BankProperties
from biomaj.errors import BiomajError, ConfigError, UnknownBank
from biomaj.storage.base import NotFound, Store

from .cron import Cron, CronError

__all__ = ["AUTO_PREFIX", "ScheduleError", "add_schedule", "check_schedule_name", "delete_schedule",
           "get_schedule", "list_schedules", "view"]

#: Name prefix of the release-driven entries (the ':' cannot start a user's schedule name).
AUTO_PREFIX = "auto:"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_BANKS = 200


class ScheduleError(BiomajError):
    """A schedule that cannot be made as asked (bad name, cron expression, bank or user)."""

    exit_code = 2


def check_schedule_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = name[:80] if isinstance(name, str) else name
        raise ScheduleError(f"invalid schedule name {shown!r}: use letters, digits and _ . - (at most 64 "
                            "characters, starting with a letter or a digit)")
    return name


def _check_banks(global_properties: Path, banks: Any) -> list[str]:
    """The bank names, each with a bank file in conf.dir, without duplicates."""
    if isinstance(banks, str):
        banks = banks.split(",")
    if not isinstance(banks, (list, tuple)) or not all(isinstance(b, str) for b in banks):
        raise ScheduleError("banks: expected a list of bank names")
    names = list(dict.fromkeys(b.strip() for b in banks if b.strip()))
    if not names:
        raise ScheduleError("a schedule needs at least one bank (--bank B)")
    if len(names) > MAX_BANKS:
        raise ScheduleError(f"a schedule takes at most {MAX_BANKS} banks, got {len(names)}")
    for bank in names:
        try:
            BankProperties.load(global_properties, bank)
        except UnknownBank as exc:
            raise ScheduleError(f"{exc}: a schedule names banks of conf.dir") from None
        except ConfigError as exc:
            raise ScheduleError(f"bank {bank}: {exc}") from None
    return names


async def add_schedule(store: Store, global_properties: Path, *, name: Any, cron: Any, banks: Any,
                       user: Any, by: str, now: float | None = None) -> tuple[dict, bool]:
    """Create schedule ``name``, or replace the one of that name (its run history restarts);
    returns ``(document, replaced)``. ScheduleError (nothing changes) for a bad name, cron
    expression, bank or user."""
    check_schedule_name(name)
    try:
        expr = Cron.parse(cron).expr
    except CronError as exc:
        raise ScheduleError(str(exc)) from None
    bank_names = _check_banks(global_properties, banks)
    try:
        check_name(user)
    except BiomajError as exc:
        raise ScheduleError(f"user: {exc}") from None
    doc = {"kind": "cron", "cron": expr, "banks": bank_names, "user": user, "created": now or time.time(),
           "created_by": by, "last_run": None, "last_fired": None, "last_result": None, "last_jobs": {}}
    replaced = await store.get_schedule(name) is not None
    await store.put_schedule(name, doc)
    return {**doc, "name": name}, replaced


async def get_schedule(store: Store, name: str) -> dict:
    doc = await store.get_schedule(name)
    if doc is None:
        raise NotFound(f"no schedule {name!r} (`biomaj ctl schedule list` shows them)")
    return doc


async def delete_schedule(store: Store, name: str) -> None:
    if not await store.delete_schedule(name):
        raise NotFound(f"no schedule {name!r} (`biomaj ctl schedule list` shows them)")


async def list_schedules(store: Store) -> list[dict]:
    return await store.list_schedules()


def view(doc: dict, now: float, zone: tzinfo | None = None) -> dict:
    """What the API answers and ``ctl schedule list --json`` prints for a schedule: ``{name, kind,
    cron, banks, user, next_run, last_run, last_result}`` (times in epoch seconds or None), plus
    ``check_in`` (days) for a release-driven entry."""
    kind = doc.get("kind") or "cron"
    record: dict[str, Any] = {"name": doc.get("name"), "kind": kind, "cron": doc.get("cron"),
                              "banks": list(doc.get("banks") or []), "user": doc.get("user")}
    if kind == "release":
        record["next_run"] = None if doc.get("check_job") else doc.get("next_run")
        record["last_run"] = doc.get("last_check")
        record["check_in"] = doc.get("check_in")
    else:
        try:
            record["next_run"] = Cron.parse(doc.get("cron") or "").next_after(now, zone)
        except CronError:
            record["next_run"] = None
        record["last_run"] = doc.get("last_fired")
    record["last_result"] = doc.get("last_result")
    return record


def views(docs: Iterable[dict], now: float, zone: tzinfo | None = None) -> list[dict]:
    return [view(doc, now, zone) for doc in docs]


def describe_when(kind: str, cron: str | None, check_in: Any) -> str:
    """The table's "Cron" cell: the cron expression, or the release-driven interval."""
    if kind == "release":
        return f"release check every {check_in or 1} d"
    return cron or ""


def table_rows(records: Sequence[dict], when: Any) -> list[list[Any]]:
    """Rows of ``ctl schedule list``; ``when(epoch)`` formats a time."""
    return [[r["name"], describe_when(r.get("kind", "cron"), r.get("cron"), r.get("check_in")),
             ",".join(r.get("banks") or []), r.get("user") or "",
             when(r.get("next_run")) if r.get("next_run") else ("checking now" if r.get("kind") == "release" else "never"),
             when(r.get("last_run")) if r.get("last_run") else "never", r.get("last_result") or ""]
            for r in records]


TABLE_HEADERS = ["Name", "Cron", "Banks", "User", "Next run", "Last run", "Last result"]
