"""The processor actor: one message per bank process from the `process` queue.

Each ProcessRequest runs as a subprocess (:func:`biomaj.process.execute.run_process`); its
ProcessResult (exit code, ``##BIOMAJ#`` metadata) is published to the request's results queue
before the request is acked, so a processor that dies mid-process leaves the request unacked
and another one runs it again (BioMAJ 3 re-runs a failed process too). A cancelled job's running
processes are killed with their whole process group (its CancelJob wake-up), its processes not
started yet are not run (its cancel flag in the state, or the wake-up); both are answered with a
"cancelled" result. Every request gets an answer: a bug while
running one gives a failed result, never a workflow waiting for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from biomaj.bus import Delivery, names
from biomaj.bus.messages import JobEvent, ProcessRequest, ProcessResult
from biomaj.process.execute import ExecOutcome, run_process
from biomaj.runtime.actor import Actor, ActorSettings
from biomaj.runtime.cancels import JobCancels
from biomaj.state import State

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ProcessorSettings(ActorSettings):
    """`concurrency` processes at once."""

    node_id: str = ""


class ProcessorActor(Actor):
    """Runs pre-, post- and remove-processes for bank workflows."""

    name = "processor"
    queue = names.PROCESS
    settings_class = ProcessorSettings
    settings: ProcessorSettings

    def __init__(self, bus, settings: ProcessorSettings | None = None, *, state: State | None = None, hooks=()):
        super().__init__(bus, settings, hooks=hooks)
        self.state = state
        self._jobs: dict[str, set[asyncio.Event]] = {}  # job id -> cancel events of its running processes
        self.cancels = JobCancels(bus, state, self._cancel_job, "processor-cancels")
        self._result_queues = {names.PROCESS_RESULTS}

    async def start(self) -> None:
        await self.bus.declare_queue(names.PROCESS_RESULTS)
        await self.cancels.start()
        await super().start()

    async def stop(self, grace: float | None = None) -> None:
        await super().stop(grace)
        await self.cancels.stop()

    def _cancel_job(self, job_id: str) -> None:
        """A wake-up: the job's running processes are killed at once."""
        for event in list(self._jobs.get(job_id, ())):
            event.set()

    async def handle(self, delivery: Delivery) -> None:
        request = delivery.message
        if not isinstance(request, ProcessRequest):
            await delivery.nack(requeue=False, reason=f"processor cannot handle {request.TYPE}")
            return
        cancel = asyncio.Event()
        self._jobs.setdefault(request.job_id, set()).add(cancel)  # before the check: no cancel slips by
        try:
            if await self.cancels.is_cancelled(request.job_id):
                outcome = ExecOutcome(None, False, "cancelled", cancelled=True)
            else:
                outcome = await self._run(request, cancel)
        finally:
            events = self._jobs.get(request.job_id, set())
            events.discard(cancel)
            if not events:
                self._jobs.pop(request.job_id, None)
        await self._publish(request, outcome)

    async def _run(self, request: ProcessRequest, cancel: asyncio.Event) -> ExecOutcome:
        task = asyncio.create_task(self._execute(request, cancel), name=f"process-{request.name}")
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():  # this actor is stopping: kill the process, keep the message
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            return ExecOutcome(None, False, "cancelled", cancelled=True)

    @staticmethod
    async def _execute(request: ProcessRequest, cancel: asyncio.Event) -> ExecOutcome:
        started = time.monotonic()
        try:
            return await run_process(request, cancelled=cancel)
        except Exception as exc:  # a bug: answer anyway, so that no workflow waits for ever
            log.exception("process %s crashed", request.name)
            return ExecOutcome(None, False, f"{type(exc).__name__}: {exc}", elapsed=time.monotonic() - started)

    async def _publish(self, request: ProcessRequest, outcome: ExecOutcome) -> None:
        result = ProcessResult(
            job_id=request.job_id, bank=request.bank, session_id=request.session_id, request_id=request.id,
            name=request.name, exit_code=outcome.exit_code, ok=outcome.ok, metadata=outcome.metadata,
            error=outcome.error, elapsed=outcome.elapsed, node_id=self.settings.node_id,
        )
        if request.results_queue not in self._result_queues:
            await self.bus.declare_queue(request.results_queue)
            self._result_queues.add(request.results_queue)
        await self.bus.publish(request.results_queue, result)
        state = "done" if outcome.ok else "cancelled" if outcome.cancelled else "failed"
        event = JobEvent(
            job_id=request.job_id, bank=request.bank, kind="process", state=state, step=request.phase,
            message=f"{request.name}: {'ok' if outcome.ok else outcome.error}",
            progress={"process": request.name, "ok": outcome.ok, "exit_code": outcome.exit_code},
        )
        await self.bus.broadcast(event.topic(), event)
        if not outcome.ok and not outcome.cancelled:
            log.warning("process failed", extra={"bank": request.bank, "proc": request.name, "error": outcome.error})
