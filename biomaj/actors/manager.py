"""The manager actor: runs bank jobs (update, remove, remove-all, remove-pending, repair,
release-check) from the durable job queue.

A job is recorded in the store before its JobRequest is published (:func:`biomaj.jobs.submit_job`), claimed
by exactly one manager, and finished in the store with its outcome; a manager that starts again
after a crash puts the jobs it left running back in the queue and republishes what is queued,
so a restart neither loses nor repeats a job (a requeued update resumes its session). One
workflow runs per bank at a time (an in-process lock here, the bank lock file across
processes); different banks run in parallel, up to the actor's concurrency.

Across managers, a job holds its bank's lease in the shared state (:mod:`biomaj.runtime.lease`)
while it runs. When a manager dies, RabbitMQ gives its unacknowledged job messages to another
manager, which takes the job over once the dead one's lease has expired (or at once when the
dead manager's restarted self recovers it): the workflow resumes from its last saved step.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomaj import change_report
from biomaj.bus import Bus, Delivery, names
from biomaj.bus.messages import JobEvent, JobRequest
from biomaj.download.engine import ClientPool
from biomaj.download.limits import LISTING_SHARE, HostBudget
from biomaj.errors import BiomajError
from biomaj.jobs import KINDS
from biomaj.notify.webhooks import Webhooks
from biomaj.runtime.actor import Actor, ActorSettings
from biomaj.runtime.cancels import JobCancels
from biomaj.runtime.lease import LEASE_TTL, BankLease, holder_of
from biomaj.state import LockOwner
from biomaj.state import State
from biomaj.storage.base import (
    JOB_CANCELLED, JOB_DONE, JOB_FAILED, JOB_QUEUED, JOB_RUNNING, Store,
)
from biomaj.workflow import runner
from biomaj.workflow.engine import CANCELLED
from biomaj.workflow.bank import RunContext
from biomaj.process.runner import ProcessRunner
from biomaj.runtime.dispatch import Downloads, Processes

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ManagerSettings(ActorSettings):
    """``recover``: at start, requeue this node's jobs left running and republish queued ones
    (off for the one-shot manager of an in-process ``biomaj ctl`` command)."""

    node_id: str = ""
    recover: bool = True
    cancel_check: float = 1.0  # seconds between two looks at a running job's cancel flag and store record
    lease_ttl: float = LEASE_TTL  # seconds a bank lease outlives its holder
    bandwidth: str | None = None  # limits.bandwidth of the download nodes, shown with the progress


class ManagerActor(Actor):
    """Runs bank workflows."""

    name = "manager"
    queue = names.JOBS
    settings_class = ManagerSettings

    def __init__(self, bus: Bus, settings: ManagerSettings | None = None, *, store: Store, state: State | None,
                 global_properties: Path, admins: frozenset[str] = frozenset(), processes: Any = None,
                 budget: HostBudget | None = None, hooks=(), webhooks: Webhooks | None = None):
        """``budget``: the node's host budget (node/build.py), shared with its downloaders; the
        workflows list remote folders and read release files with ``LISTING_SHARE`` of it.
        ``webhooks``: the node's (config.yml notify.webhooks), which the workflows send events to."""
        super().__init__(bus, settings, hooks=hooks)
        self.store = store
        self.state = state
        self.global_properties = Path(global_properties)
        self.admins = admins
        # results queues named after the node: a restarted manager finds its own (durable on AMQP)
        owner = _queue_word(self.settings.node_id) if self.settings.node_id else None
        self.cancels = JobCancels(bus, state, self._cancel_job, "manager-cancels")
        self.downloads = Downloads(bus, owner, self.cancels)
        self.process_requests = Processes(bus, owner, self.cancels)
        self.processes = processes if processes is not None else ProcessRunner(self.process_requests)
        self._bank_locks: dict[str, asyncio.Lock] = {}
        self._running: dict[str, RunContext] = {}
        self.listing = ClientPool(budget if budget is not None else HostBudget(), share=LISTING_SHARE)
        self.webhooks = webhooks

    async def start(self) -> None:
        await self.downloads.start()
        await self.process_requests.start()
        await self.cancels.start()
        if self.settings.recover:  # before consuming: never requeue a job this very process has claimed
            requeued = await self.store.requeue_running(self.settings.node_id or None)
            if requeued:
                log.warning("requeued %d job(s) left running by an earlier run of this node", len(requeued))
        await super().start()
        if self.settings.recover:
            await self.republish_queued()
        await self.close_dead_jobs()

    async def stop(self, grace: float | None = None) -> None:
        await super().stop(grace)
        await self.cancels.stop()
        await self.downloads.stop()
        await self.process_requests.stop()
        await self.listing.close()

    async def republish_queued(self) -> None:
        """Publish every queued job again (a duplicate message finds its job claimed, and is dropped)."""
        for job in reversed(await self.store.list_jobs(state=JOB_QUEUED, limit=None)):
            await self.bus.publish(names.JOBS, JobRequest(job_id=job["id"], kind=job["kind"], bank=job["bank"],
                                                          options=job.get("options") or {}, user=job.get("user")))

    async def close_dead_jobs(self) -> None:
        """Fail the jobs the store says are running whose process died on this host (the bank
        lock they left names them): their bank can be updated again once it is unlocked."""
        from biomaj.workflow import locks
        from biomaj.workflow.bank import Bank

        for job in await self.store.list_jobs(state=JOB_RUNNING, limit=None):
            try:
                lock_dir = Bank.load(self.global_properties, job["bank"]).lock_dir
            except BiomajError:
                continue
            holder = locks.read_holder(lock_dir, job["bank"])
            if holder is not None and holder.job == job["id"] and await runner.close_dead_job(self.store, holder):
                log.warning("job %s (%s of %s) failed: its process died; the bank stays locked until "
                            "`biomaj ctl unlock %s`", job["id"], job["kind"], job["bank"], job["bank"])

    def _cancel_job(self, job_id: str) -> None:
        """A wake-up: the job's run, if it is here, stops at once."""
        if job_id in self._running:
            self._running[job_id].cancelled.set()

    async def handle(self, delivery: Delivery) -> None:
        request = delivery.message
        if not isinstance(request, JobRequest):
            await delivery.nack(requeue=False, reason=f"manager cannot handle {request.TYPE}")
            return
        lock = self._bank_locks.setdefault(request.bank, asyncio.Lock())
        async with lock:  # one workflow per bank in this manager; the lock file guards across managers
            job = await self.store.claim_job(self.settings.node_id or "manager", request.job_id)
            if job is None and delivery.redelivered and await self._orphaned(request):
                job = await self.store.claim_job(self.settings.node_id or "manager", request.job_id)
            if job is None:
                current = await self.store.get_job(request.job_id)
                if current is None:
                    # Never drop it silently: its own manager (another store) may still want it.
                    reason = (f"job {request.job_id} ({request.kind} of {request.bank}) is not in this manager's "
                              f"store ({self.store.describe()}): do two installations share this RabbitMQ "
                              "virtual host? Give each its own (rabbitmq.virtual_host or the vhost of bus.url)")
                    log.error("%s", reason)
                    await delivery.nack(requeue=False, reason=reason)
                    return
                log.info("job %s not run: it is %s", request.job_id, current["state"])
                return
            await self._run(job)

    async def _orphaned(self, request: JobRequest) -> bool:
        """A redelivered job the store says is running: its manager died (RabbitMQ gave the
        message back). Wait until that manager's lease on the bank expires, then put the job
        back in the queue so that this manager claims and resumes it. False if the job is not
        running, or is still held by a live manager (a duplicate message)."""
        job = await self.store.get_job(request.job_id)
        if job is None or job["state"] != JOB_RUNNING or self.state is None:
            return False
        deadline = asyncio.get_running_loop().time() + self.settings.lease_ttl * 2
        while True:
            holder = await holder_of(self.state, job["bank"])
            if holder is None or holder.owner.job_id != job["id"]:
                break
            if asyncio.get_running_loop().time() > deadline:
                return False  # renewed all along: its manager lives
            await asyncio.sleep(min(1.0, self.settings.lease_ttl / 10))
        if job["id"] in self._running:
            return False  # this process runs it: the broker redelivered its message after a reconnection
        log.warning("job %s (%s of %s): its manager %s is gone; taking it over", job["id"], job["kind"],
                    job["bank"], job.get("worker"))
        return job["id"] in await self.store.requeue_running(job.get("worker"), job_id=job["id"])

    async def _run(self, job: dict) -> None:
        run = RunContext(
            store=self.store, global_properties=self.global_properties, job_id=job["id"], user=job.get("user"),
            admins=self.admins | ({job["user"]} if job.get("admin") and job.get("user") else set()),
            downloads=self.downloads, processes=self.processes, emit=self._emit, kind=job["kind"],
            lease_held=self.state is not None, bandwidth=self.settings.bandwidth, listing=self.listing,
            webhooks=self.webhooks,
        )
        self._running[job["id"]] = run
        watcher = asyncio.create_task(self._watch_cancel(run))
        await run.event(job["bank"], "running", message=f"{job['kind']} of {job['bank']} started")
        state, result, error = JOB_FAILED, None, None
        lease = None
        try:
            if self.state is not None:
                owner = LockOwner.here(job["id"], self.settings.node_id or "manager")
                lease = BankLease(self.state, job["bank"], owner, ttl=self.settings.lease_ttl,
                                  on_lost=lambda _reason: run.cancelled.set())
                async with lease:
                    outcome = await self._dispatch(run, job)
            else:
                outcome = await self._dispatch(run, job)
            result = outcome.to_dict()
            if lease is not None and lease.lost:
                error = f"stopped: {lease.lost} (another manager may take the bank over)"
            elif outcome.cancelled:
                state, error = JOB_CANCELLED, CANCELLED
            elif outcome.ok:
                state = JOB_DONE
            else:
                error = f"{outcome.failed_task}: {outcome.error}" if outcome.failed_task else outcome.error
        except BiomajError as exc:
            error = str(exc)
            result = {"exit_code": exc.exit_code}  # a command reports it as it would have
        except Exception as exc:  # a bug: the job fails with the reason, the manager goes on
            log.exception("job %s (%s of %s) crashed", job["id"], job["kind"], job["bank"])
            error = f"{type(exc).__name__}: {exc}"
        finally:
            watcher.cancel()
            self._running.pop(job["id"], None)
        await self.store.finish_job(job["id"], state, result=result, error=error)
        await self.cancels.clear(job["id"])
        message = error or _done_message(job, result)
        await run.event(job["bank"], state, message=message, result=result or {})
        (log.info if state == JOB_DONE else log.warning)("job %s: %s of %s %s: %s", job["id"], job["kind"],
                                                         job["bank"], state, message)

    async def _dispatch(self, run: RunContext, job: dict) -> runner.Outcome:
        """Run the job's kind (:data:`biomaj.jobs.KINDS`); a requeued job resumes its work."""
        kind = KINDS.get(job["kind"])
        if kind is None:
            raise BiomajError(f"unknown job kind {job['kind']!r}")
        return await kind.run(run, job["bank"], job.get("options") or {}, job.get("attempts", 1) > 1)

    async def _watch_cancel(self, run: RunContext) -> None:
        """The fallback of the wake-ups (:meth:`_cancel_job`), should one be missed: the job's
        cancel flag, then its record in the store, where a cancel asked by a process that shares
        no state with this one is found (``biomaj ctl cancel`` beside a ``biomaj ctl update``).
        The dispatchers tell the workers, unless a user's cancel told them already."""
        while not run.cancelled.is_set():
            await asyncio.sleep(self.settings.cancel_check)
            if await self.cancels.is_cancelled(run.job_id):
                run.cancelled.set()
            elif ((await self.store.get_job(run.job_id)) or {}).get("cancel_requested"):
                run.cancelled.set()

    async def _emit(self, event: JobEvent) -> None:
        await self.bus.broadcast(event.topic(), event)
        if self.state is not None and event.progress:
            values = {k: v for k, v in event.progress.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
            if event.step:
                values["step"] = event.step
            if values:
                await self.state.set_progress(event.job_id, values)


def _queue_word(text: str) -> str:
    """``text`` as one AMQP-safe word (letters, digits, '-' and '_')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _done_message(job: dict, result: dict | None) -> str:
    result = result or {}
    if job["kind"] == "update":
        details = result.get("details") or {}
        if details.get("dry_run"):
            if not details.get("update"):
                return f"dry run: no need to update, release {result.get('release')} is current"
            return (f"dry run: release {result.get('release')}: {change_report.summary(details.get('changes') or {})}; "
                    f"{change_report.transfer_summary(details.get('transfer') or {})}")
        if result.get("stopped"):
            return f"stopped as asked at release {result.get('release')}; the next update resumes it"
        if result.get("updated"):
            return f"release {result.get('release')} updated"
        return f"no need to update: release {result.get('release')} is current"
    if job["kind"] == "release-check":
        changed = (result.get("details") or {}).get("changed_under_same_release")
        if changed:
            return f"remote release {result.get('release')}, changed under the same release ({changed['count']} file(s))"
        return f"remote release {result.get('release')}"
    if (result.get("details") or {}).get("summary"):  # verify, repair: what they found
        return result["details"]["summary"]
    return f"{job['kind']} done"
