"""Sending work messages (a batch of files, one process) to worker actors and collecting their
results: the manager's side of a work queue, as :class:`~biomaj.runtime.actor.Actor` is the
worker's.

The manager publishes requests on a work queue (``download``, ``process``); each request names
the manager's own results queue, where the worker publishes its result before acking the
request. One consumer per manager routes each result to the future of its request (by request
id), so a workflow awaits its work without any polling loop, whatever the number of managers.
A request that its workers give up on (a message that kills every worker that takes it ends in
the dead-letter queue) gets a failed result from the bus's dead-letter notice, so the workflow
fails with the reason instead of waiting for ever.

The workflows do not import this module: they declare what they need from it
(:class:`biomaj.workflow.bank.WorkDispatcher`, :class:`biomaj.process.runner.ProcessDispatcher`)
and the manager actor, which builds the dispatchers, passes them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from biomaj.bus import Bus, names
from biomaj.bus.messages import (
    DeadLettered, DownloadRequest, DownloadResult, FileOutcome, Message, ProcessRequest, ProcessResult,
)
from biomaj.runtime.cancels import RUN_CANCEL_TTL, JobCancels
from biomaj.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)
OnResult = Callable[[R], Awaitable[None]]


class Dispatcher(Generic[R]):
    """Publishes requests on ``work_queue`` and routes their results back. ``cancels``: the
    manager's view of the job cancels (without one, a cancelled run is told by a wake-up alone)."""

    def __init__(self, bus: Bus, work_queue: str, results_base: str, owner: str | None = None,
                 cancels: JobCancels | None = None):
        self.bus = bus
        self.cancels = cancels if cancels is not None else JobCancels(bus, None)
        self.work_queue = work_queue
        self.queue = f"{results_base}.{owner or uuid.uuid4().hex[:12]}"
        # request id -> the inbox of the run_all that sent it (its results, partial then final)
        self._waiting: dict[str, asyncio.Queue[R]] = {}
        self._requests: dict[str, Message] = {}
        self._consumer: asyncio.Task | None = None
        self._dead_letters: asyncio.Task | None = None
        self.quiet_warning = 300.0  # seconds without any result before a warning is logged

    async def start(self) -> None:
        if self._consumer is not None:
            return
        await self.bus.declare_queue(self.work_queue)
        await self.bus.declare_queue(self.queue)
        notices = await self.bus.subscribe(names.DEAD_LETTER_TOPIC)
        self._consumer = asyncio.create_task(self._route(), name=f"results:{self.queue}")
        self._dead_letters = asyncio.create_task(self._give_up(notices), name=f"dead-letters:{self.queue}")

    async def stop(self) -> None:
        for task in (self._consumer, self._dead_letters):
            await cancel_and_wait(task)
        self._consumer = self._dead_letters = None
        self._waiting.clear()

    async def _route(self) -> None:
        async with contextlib.aclosing(self.bus.consume(self.queue, prefetch=64)) as deliveries:
            async for delivery in deliveries:
                result = delivery.message
                request_id = getattr(result, "request_id", "")
                run = self._waiting.get(request_id)
                if run is None:
                    log.info("result for a request nobody waits for (an earlier run): %s", result.describe())
                else:
                    final = getattr(result, "final", True)
                    if final:
                        del self._waiting[request_id]
                    self.seen(request_id, result, final)
                    run.put_nowait(result)
                await delivery.ack()

    async def _give_up(self, notices) -> None:
        async with notices:
            async for notice in notices:
                if not isinstance(notice, DeadLettered) or notice.queue != self.work_queue:
                    continue
                run = self._waiting.pop(notice.message_id, None)
                request = self._requests.get(notice.message_id)
                if run is None or request is None:
                    continue
                error = (f"given up after {notice.attempts} deliveries ({notice.reason}); "
                         f"the message is kept in {names.dead_letter_queue(self.work_queue)}")
                log.error("%s: %s", request.describe(), error)
                run.put_nowait(self.failed_result(request, error))

    def failed_result(self, request: Message, error: str) -> R:
        """The result a request gets when its message was dead-lettered."""
        raise NotImplementedError

    def seen(self, request_id: str, result: R, final: bool) -> None:
        """A result routed to its run (partial ones included)."""

    async def run_all(self, requests: Sequence[Message], on_result: OnResult, cancelled: asyncio.Event) -> list[R]:
        """Publish every request and return the final result of each (in completion order);
        ``on_result`` sees every result as it comes, partial ones (``final`` false) included.

        When ``cancelled`` is set the workers are told to stop the job's work (unless a user's
        cancel told them already); each request then still gets a result (failed: cancelled), so
        nothing is left waiting.
        """
        if not requests:
            return []
        requests = [dataclasses.replace(r, results_queue=self.queue) for r in requests]
        inbox: asyncio.Queue[R] = asyncio.Queue()
        for request in requests:
            self._waiting[request.id] = inbox
            self._requests[request.id] = request
        job_id, bank = requests[0].job_id, requests[0].bank
        watcher = asyncio.create_task(self._cancel_when(cancelled, job_id, bank))
        try:
            for request in requests:
                await self.bus.publish(self.work_queue, request)
            results = []
            while len(results) < len(requests):
                try:
                    result = await asyncio.wait_for(inbox.get(), self.quiet_warning)
                except asyncio.TimeoutError:  # a watchdog, not a poll: say why the workflow seems stuck
                    log.warning("%s: no result for %.0f s, %d request(s) waiting on %s: is a worker running?",
                                bank, self.quiet_warning, len(requests) - len(results), self.work_queue)
                    continue
                if getattr(result, "final", True):
                    results.append(result)
                await on_result(result)
            return results
        finally:
            watcher.cancel()
            for request in requests:
                self._waiting.pop(request.id, None)
                self._requests.pop(request.id, None)

    async def run_one(self, request: Message, cancelled: asyncio.Event) -> R:
        async def ignore(_result: R) -> None:
            return None

        return (await self.run_all([request], ignore, cancelled))[0]

    async def _cancel_when(self, cancelled: asyncio.Event, job_id: str, bank: str) -> None:
        await cancelled.wait()
        await self.cancels.spread(job_id, bank)


class Downloads(Dispatcher):
    """Download requests to the downloaders, results back to this manager."""

    def __init__(self, bus: Bus, owner: str | None = None, cancels: JobCancels | None = None):
        super().__init__(bus, names.DOWNLOAD, names.DOWNLOAD_RESULTS, owner, cancels)
        self._complete: dict[str, set[str]] = {}  # request id -> files a partial result said are complete

    async def run_all(self, requests: Sequence[Message], on_result: OnResult, cancelled: asyncio.Event,
                      stop: asyncio.Event | None = None) -> list[DownloadResult]:
        """:meth:`Dispatcher.run_all`, and ``stop``: once set, the downloaders drop these requests
        (what is in flight stops, what is queued is answered "cancelled") as a cancel would, but
        the job goes on (a failure budget spent: the workflow fails the update itself)."""
        if stop is None or not requests:
            return await super().run_all(requests, on_result, cancelled)
        group = f"{requests[0].job_id}/round-{uuid.uuid4().hex[:12]}"
        requests = [dataclasses.replace(r, group=group) for r in requests]
        watcher = asyncio.create_task(self._stop_when(stop, group, requests[0].bank))
        try:
            return await super().run_all(requests, on_result, cancelled)
        finally:
            # a stopped round's flag is left to expire: a request redelivered late (its downloader
            # died between its result and its ack) must still find it
            await cancel_and_wait(watcher)

    async def _stop_when(self, stop: asyncio.Event, group: str, bank: str) -> None:
        await stop.wait()
        await self.cancels.cancel(group, bank, ttl=RUN_CANCEL_TTL)

    def seen(self, request_id: str, result: DownloadResult, final: bool) -> None:
        if final:
            self._complete.pop(request_id, None)
        else:
            self._complete.setdefault(request_id, set()).update(o.save_as for o in result.outcomes() if o.ok)

    def failed_result(self, request: DownloadRequest, error: str) -> DownloadResult:
        # a file a downloader reported complete stays complete: it is in the offline directory
        complete = self._complete.pop(request.id, set())
        files = [FileOutcome(spec.save_as, ok=False, hash=spec.hash, error=f"{spec.save_as}: {error}",
                             dead_letter=True).to_dict()
                 for spec in request.specs() if spec.save_as not in complete]
        return DownloadResult(job_id=request.job_id, bank=request.bank, session_id=request.session_id,
                              request_id=request.id, files=files)


class Processes(Dispatcher):
    """Process requests to the processors, results back to this manager."""

    def __init__(self, bus: Bus, owner: str | None = None, cancels: JobCancels | None = None):
        super().__init__(bus, names.PROCESS, names.PROCESS_RESULTS, owner, cancels)

    def failed_result(self, request: ProcessRequest, error: str) -> ProcessResult:
        return ProcessResult(job_id=request.job_id, bank=request.bank, session_id=request.session_id,
                             request_id=request.id, name=request.name, exit_code=None, ok=False, error=error)
