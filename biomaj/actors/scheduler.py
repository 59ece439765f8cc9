"""The scheduler actor: fires the cron schedules of the store, and runs the release-driven mode
of the banks whose ``schedule.auto`` is set. Everything it does is a job for the managers
(:func:`~biomaj.jobs.submit_job`), as the schedule's user.

One readable loop: every ``tick`` seconds, :meth:`SchedulerActor.run_pending` reads the schedules
and does what is due. Tests call ``run_pending`` themselves with an injected clock.

**Cron schedules** (BioMAJ 3's biomaj-cron, without its crontab): the run due is the latest time
of the expression at or before now, if it is after the schedule's ``last_run`` (or its creation).
A run fired within ``missed_after`` seconds of its time is on time; a later one was missed (every
scheduler was down): ``missed: skip`` records it without firing, as cron does, ``catch_up`` fires
it once, however many runs were missed. Each bank of the schedule gets an update job; a bank whose
update is already queued or running is skipped, with an info line.

**Release-driven mode** (BioMAJ 3's biomaj-release): each ``schedule.auto`` bank has an entry
``auto:<bank>`` in the store; when its ``next_run`` comes, a release-check job is queued (unless a
job already works on the bank); when it is over, an update is queued if the remote release is not
the one in production, and the next check is set by :mod:`biomaj.scheduler.backoff`.

**Several scheduler nodes** fire each run once: a run is fired by the scheduler whose
:meth:`~biomaj.storage.base.Store.claim_schedule_run` moves the schedule's ``last_run`` from the
value it read to the run's time, a compare-and-set in the store, which every scheduler must share
anyway since the schedules live there. A per-minute lock in the shared state (Redis) would do it
too, but then the claim and the record of the run would be two writes in two systems, with a lock
TTL to get right and a window after a Redis restart; the store's claim is one atomic write that
also records the run, and it holds with the in-memory state as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from biomaj.bus import Bus
from biomaj.errors import BiomajError
from biomaj.jobs import submit_job
from biomaj.scheduler.backoff import DAY, Backoff
from biomaj.scheduler.cron import Cron, CronError, time_zone
from biomaj.scheduler.schedules import AUTO_PREFIX
from biomaj.storage.base import ACTIVE_JOB_STATES, JOB_DONE, DuplicateJob, NotFound, Store

log = logging.getLogger(__name__)

#: Seconds a claimed release check keeps other schedulers off while its job is being queued.
CHECK_HOLD = 3600.0


@dataclass(frozen=True, kw_only=True)
class SchedulerSettings:
    """config.yml's ``scheduler`` section, plus the stop grace."""

    tick: float = 10.0
    missed: str = "skip"  # or "catch_up"
    missed_after: float = 300.0
    timezone: str = ""
    run_as: str = "biomaj"
    grace: float = 10.0

    def __post_init__(self) -> None:
        if self.missed not in ("skip", "catch_up"):
            raise ValueError(f"missed must be skip or catch_up, got {self.missed!r}")
        if not self.tick > 0:
            raise ValueError(f"tick must be > 0, got {self.tick!r}")


class SchedulerActor:
    """Turns schedules into jobs; no mailbox of its own, a timer instead."""

    name = "scheduler"

    def __init__(self, bus: Bus, settings: SchedulerSettings | None = None, *, store: Store,
                 global_properties: Path, admins: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.time):
        self.bus = bus
        self.settings = settings or SchedulerSettings()
        self.store = store
        self.global_properties = Path(global_properties)
        self.admins = admins
        self.clock = clock
        self.zone = time_zone(self.settings.timezone)
        self.in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._auto_cache: dict[str, tuple[tuple[int, int], tuple[bool, int]]] = {}
        self._bad_cron: set[tuple[str, str]] = set()
        self._conf_dir_warned = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        log.info("actor scheduler: started (every %gs; missed runs: %s)", self.settings.tick, self.settings.missed)

    async def stop(self, grace: float | None = None) -> None:
        """Stop after the pass under way (cancelled after ``grace`` seconds)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        grace = self.settings.grace if grace is None else grace
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("actor scheduler: stopped")

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_pending()
            except Exception:  # noqa: BLE001 - a bad pass is logged; the next tick tries again
                log.exception("scheduler: pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.tick)

    # --- one pass ------------------------------------------------------------------------------

    async def run_pending(self) -> list[str]:
        """Do what is due now: fire the cron schedules, start and follow release checks. Returns
        the ids of the jobs queued."""
        self.in_flight = 1
        try:
            now = self.clock()
            docs = await self.store.list_schedules()
            queued: list[str] = []
            for doc in docs:
                if (doc.get("kind") or "cron") == "cron":
                    queued += await self._each(doc, self._cron(doc, now))
            releases = {doc["name"]: doc for doc in docs if doc.get("kind") == "release"}
            queued += await self._releases(releases, now)
            return queued
        finally:
            self.in_flight = 0

    async def _each(self, doc: dict, step: Awaitable[list[str]]) -> list[str]:
        """One schedule's step: a schedule deleted meanwhile is skipped, a failure is logged and
        leaves the other schedules alone."""
        try:
            return await step
        except NotFound:
            return []
        except Exception:  # noqa: BLE001 - the next pass tries again
            log.exception("schedule %s: pass failed", doc.get("name"))
            return []

    # --- cron schedules ------------------------------------------------------------------------

    async def _cron(self, doc: dict, now: float) -> list[str]:
        name = doc["name"]
        try:
            cron = Cron.parse(doc.get("cron") or "")
        except CronError as exc:
            if (name, str(doc.get("cron"))) not in self._bad_cron:
                self._bad_cron.add((name, str(doc.get("cron"))))
                log.error("schedule %s: %s; it never fires (replace it with `biomaj ctl schedule add`)", name, exc)
            return []
        since = doc.get("last_run") or doc.get("created") or now
        due = cron.last_at_or_before(now, self.zone)
        if due is None or due <= since:
            return []
        on_time = now - due <= self.settings.missed_after
        fire = on_time or self.settings.missed == "catch_up"
        claimed = await self.store.claim_schedule_run(name, due, previous=doc.get("last_run"),
                                                      fields={"last_fired": now} if fire else {})
        if not claimed:  # another scheduler fired it, or the schedule changed meanwhile
            return []
        if not fire:
            result = f"run of {_when(due)} missed (no scheduler was running then): skipped"
            log.warning("schedule %s: %s (scheduler.missed: skip)", name, result)
            await self._record(name, {"last_result": result})
            return []
        if not on_time:
            missed = cron.runs_between(since, due, self.zone)
            log.warning("schedule %s: %d run(s) missed up to %s; firing once now (scheduler.missed: catch_up)",
                        name, missed, _when(due))
        user = doc.get("user") or self.settings.run_as
        jobs: dict[str, str | None] = {}
        said = []
        for bank in doc.get("banks") or []:
            jobs[bank], text = await self._submit(f"schedule {name}", "update", bank, user)
            said.append(f"{bank}: {text}")
        await self._record(name, {"last_jobs": jobs, "last_result": "; ".join(said)})
        return [job for job in jobs.values() if job]

    # --- release-driven mode -------------------------------------------------------------------

    async def _releases(self, docs: dict[str, dict], now: float) -> list[str]:
        auto = await asyncio.to_thread(self._auto_banks)
        if auto is None:  # conf.dir unreadable: keep every entry (and its back-off) as it is
            return []
        queued: list[str] = []
        for bank, delay in auto.items():
            name = AUTO_PREFIX + bank
            doc = docs.pop(name, None)
            if doc is None:
                doc = {"kind": "release", "cron": None, "banks": [bank], "user": self.settings.run_as,
                       "created": now, "next_run": now, "check_in": max(1, delay), "attempts": 0, "delay": delay,
                       "check_job": None, "last_run": None, "last_check": None, "last_release": None,
                       "last_result": None, "last_jobs": {}}
                if not await self.store.put_schedule(name, doc, replace=False):
                    continue  # another scheduler made it meanwhile: the next pass reads it
                doc["name"] = name
                log.info("bank %s: release-driven updates on (schedule.auto); first release check now", bank)
            queued += await self._each(doc, self._release(doc, delay, now))
        for name in docs:  # schedule.auto turned off, or the bank file is gone
            if await self.store.delete_schedule(name):
                log.info("bank %s: release-driven updates off (schedule.auto unset or no bank file)",
                         name[len(AUTO_PREFIX):])
        return queued

    async def _release(self, doc: dict, delay: int, now: float) -> list[str]:
        name, bank = doc["name"], doc["banks"][0]
        user = doc.get("user") or self.settings.run_as
        if doc.get("check_job"):
            job = await self.store.get_job(doc["check_job"])
            if job is not None and job["state"] in ACTIVE_JOB_STATES:
                return []
            return await self._checked(doc, job, delay, now)
        if (doc.get("next_run") or 0) > now:
            return []
        if await self.store.list_jobs(state=ACTIVE_JOB_STATES, bank=bank, limit=1):
            return []  # a job works on the bank: check once it is over (BioMAJ 3 skipped locked banks)
        if not await self.store.claim_schedule_run(name, now, previous=doc.get("last_run"),
                                                   fields={"next_run": now + CHECK_HOLD}):
            return []
        job_id, text = await self._submit(f"bank {bank}", "release-check", bank, user, follow=True)
        await self._record(name, {"check_job": job_id, "last_result": f"release check {text}"})
        return [job_id] if job_id and text.startswith("queued") else []

    async def _checked(self, doc: dict, job: dict | None, delay: int, now: float) -> list[str]:
        """The release check is over: pick the next check, and queue an update if the release is new."""
        name, bank = doc["name"], doc["banks"][0]
        details = ((job or {}).get("result") or {}).get("details") or {}
        if job is None or job["state"] != JOB_DONE:
            outcome = "failed"
            result = f"release check failed: {(job or {}).get('error') or 'its job is gone'}"
        else:
            outcome = "new" if details.get("new") else "same"
            news = ("changed under the same release" if details.get("changed_under_same_release")
                    else "new" if outcome == "new" else "already in production")
            result = f"remote release {details.get('remoterelease')}: {news}"
        state = Backoff(doc.get("check_in") or 1, doc.get("attempts") or 0).after(outcome, delay)
        fields = {"check_job": None, "check_in": state.check_in, "attempts": state.attempts, "delay": delay,
                  "next_run": now + state.check_in * DAY, "last_check": (job or {}).get("finished") or now,
                  "last_result": result}
        if details.get("remoterelease"):
            fields["last_release"] = details["remoterelease"]
        if not await self.store.claim_schedule_run(name, now, previous=doc.get("last_run"), fields=fields):
            return []  # another scheduler took this outcome
        (log.warning if outcome == "failed" else log.info)("bank %s: %s; next release check in %d day(s)",
                                                           bank, result, state.check_in)
        if outcome != "new":
            return []
        job_id, text = await self._submit(f"bank {bank}", "update", bank, doc.get("user") or self.settings.run_as)
        await self._record(name, {"last_jobs": {bank: job_id}, "last_result": f"{result}: update {text}"})
        return [job_id] if job_id else []

    def _auto_banks(self) -> dict[str, int] | None:
        """``{bank: schedule.delay}`` for the banks of conf.dir with ``schedule.auto`` set (bank
        files are read again only when they, or global.properties, change); None when conf.dir
        cannot be found."""
        from biomaj.config.properties import BankProperties, list_bank_names
        from biomaj.inventory import conf_dir_of

        try:
            conf_dir = conf_dir_of(self.global_properties)
            global_mtime = self.global_properties.stat().st_mtime_ns
        except (BiomajError, OSError) as exc:
            if not self._conf_dir_warned:
                self._conf_dir_warned = True
                log.warning("scheduler: release-driven mode paused, no conf.dir: %s", exc)
            return None
        self._conf_dir_warned = False
        found: dict[str, int] = {}
        names = list_bank_names(conf_dir)
        for bank in names:
            try:
                stamp = ((conf_dir / f"{bank}.properties").stat().st_mtime_ns, global_mtime)
            except OSError:
                continue
            cached = self._auto_cache.get(bank)
            if cached is None or cached[0] != stamp:
                try:
                    props = BankProperties.load(self.global_properties, bank, conf_dir=conf_dir)
                    value = (props.get_bool("schedule.auto"), max(0, props.get_int("schedule.delay", 0) or 0))
                except BiomajError as exc:
                    log.warning("bank %s: release-driven mode not read: %s", bank, exc)
                    value = (False, 0)
                self._auto_cache[bank] = cached = (stamp, value)
            auto, delay = cached[1]
            if auto:
                found[bank] = delay
        for gone in set(self._auto_cache) - set(names):
            del self._auto_cache[gone]
        return found

    # --- helpers -------------------------------------------------------------------------------

    async def _submit(self, who: str, kind: str, bank: str, user: str, follow: bool = False) -> tuple[str | None, str]:
        """Queue a job as ``user``: ``(job id, what happened)``, or ``(None, why not)``. With
        ``follow``, the same job already queued or running is taken as this one."""
        try:
            job_id = await submit_job(self.store, self.bus, kind, bank, {}, user, admin=await self._is_admin(user))
        except DuplicateJob as exc:
            if follow:
                return exc.job_id, f"already queued or running as job {exc.job_id}"
            log.info("%s: %s of %s not queued: job %s is already queued or running", who, kind, bank, exc.job_id)
            return None, f"skipped, job {exc.job_id} already queued or running"
        except BiomajError as exc:
            log.warning("%s: %s of %s not queued: %s", who, kind, bank, exc)
            return None, f"not queued: {exc}"
        log.info("%s: %s of %s queued as job %s (user %s)", who, kind, bank, job_id, user)
        return job_id, f"queued as job {job_id}"

    async def _is_admin(self, user: str) -> bool:
        if user in self.admins:
            return True
        doc = await self.store.get_user(user)
        return bool(doc and doc.get("is_admin"))

    async def _record(self, name: str, fields: dict[str, Any]) -> None:
        with contextlib.suppress(NotFound):  # deleted meanwhile: nothing to record
            await self.store.update_schedule(name, fields)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
