"""Sending one download message per file to the downloaders and collecting their results.

The manager publishes a DownloadRequest per file on the ``download`` queue and waits for the
matching DownloadResults on the results queue: one consumer routes each result to the future
of its request (by request id), so a workflow awaits its files without any polling loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import contextlib
import logging
import uuid
from typing import Awaitable, Callable, Sequence

from biomaj.bus import Bus, names
from biomaj.bus.messages import CancelJob, DownloadRequest, DownloadResult

log = logging.getLogger(__name__)

OnResult = Callable[[DownloadResult], Awaitable[None]]


class Downloads:
    """Routes download results to the workflows waiting for them."""

    def __init__(self, bus: Bus, owner: str | None = None):
        self.bus = bus
        self.queue = names.download_results(owner or uuid.uuid4().hex[:12])
        self._waiting: dict[str, asyncio.Future[DownloadResult]] = {}
        self._consumer: asyncio.Task | None = None

    async def start(self) -> None:
        if self._consumer is not None:
            return
        await self.bus.declare_queue(names.DOWNLOAD)
        await self.bus.declare_queue(self.queue)
        self._consumer = asyncio.create_task(self._route(), name="download-results")

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()

    async def _route(self) -> None:
        async with contextlib.aclosing(self.bus.consume(self.queue, prefetch=64)) as deliveries:
            async for delivery in deliveries:
                result = delivery.message
                future = self._waiting.pop(getattr(result, "request_id", ""), None)
                if future is None:
                    log.info("download result for a request nobody waits for (an earlier run): %s",
                             result.describe())
                elif not future.done():
                    future.set_result(result)
                await delivery.ack()

    async def fetch_all(
        self,
        requests: Sequence[DownloadRequest],
        on_result: OnResult,
        cancelled: asyncio.Event,
    ) -> list[DownloadResult]:
        """Publish every request and return every result (in completion order).

        When ``cancelled`` is set the downloaders are told to stop the job's transfers; each
        request then still gets a result (failed: cancelled), so nothing is left waiting.
        """
        if not requests:
            return []
        requests = [dataclasses.replace(r, results_queue=self.queue) for r in requests]
        loop = asyncio.get_running_loop()
        futures = []
        for request in requests:
            future: asyncio.Future[DownloadResult] = loop.create_future()
            self._waiting[request.id] = future
            futures.append(future)
        job_id, bank = requests[0].job_id, requests[0].bank
        watcher = asyncio.create_task(self._cancel_when(cancelled, job_id, bank))
        try:
            for request in requests:
                await self.bus.publish(names.DOWNLOAD, request)
            results = []
            for next_done in asyncio.as_completed(futures):
                result = await next_done
                results.append(result)
                await on_result(result)
            return results
        finally:
            watcher.cancel()
            for request, future in zip(requests, futures):
                self._waiting.pop(request.id, None)
                future.cancel()

    async def _cancel_when(self, cancelled: asyncio.Event, job_id: str, bank: str) -> None:
        await cancelled.wait()
        await self.bus.broadcast(names.CANCEL_TOPIC, CancelJob(job_id=job_id, bank=bank))
