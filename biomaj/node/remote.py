"""``biomaj ctl --proxy URL``: jobs submitted to a biomaj server through its REST API.

The third kind of job client, beside :class:`~biomaj.node.embedded.Embedded` (in this process)
and :class:`~biomaj.node.cluster.Cluster` (RabbitMQ): same ``run_job``/``cancel`` interface, so
the command prints the same progress and outcome. The bank's event stream (``/api/v1/events``) is
opened before the job is submitted, so that no event is missed; the job record
(``/api/v1/jobs/{id}``) is read too every few seconds, so that a cut stream never leaves the
command waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable
from urllib.parse import quote

from biomaj.bus.messages import JobEvent
from biomaj.client.api import ApiClient
from biomaj.errors import BiomajError
from biomaj.node.job_client import QUEUED_WARNING, STORE_POLL, OnEvent, deliver
from biomaj.storage.base import FINAL_JOB_STATES

log = logging.getLogger(__name__)

#: Seconds to wait, after the job's end, for the last lines of its session log (``on_log``).
LOG_DRAIN = 5.0


def job_route(kind: str, bank: str, options: dict[str, Any]) -> tuple[str, str, dict | None]:
    """The method, path and body that queue a job of ``kind`` on ``bank``."""
    path = f"/api/v1/banks/{quote(bank, safe='')}"
    body = {k: v for k, v in options.items() if v is not None}
    if kind == "remove":
        return "DELETE", f"{path}/releases/{quote(str(body['release']), safe='')}", None
    if kind in ("update", "remove-all", "remove-pending", "repair", "release-check", "verify"):
        return "POST", f"{path}/{kind}", body
    raise BiomajError(f"unknown job kind {kind!r}")


class Remote:
    """Jobs run by the server at ``api.url``, as the owner of the API key; use as
    ``async with Remote(api)``."""

    def __init__(self, api: ApiClient):
        self.api = api

    async def __aenter__(self) -> Remote:
        await self.api.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.api.close()

    async def run_job(self, kind: str, bank: str, options: dict[str, Any] | None = None,
                      on_event: OnEvent | None = None, on_submitted: Callable[[str], None] | None = None,
                      on_log: Callable[[str], None] | None = None) -> dict:
        """Queue a job on the server, follow its events to the end and return its final record;
        ``on_log`` receives the lines of the session log the job writes (an update's)."""
        events: asyncio.Queue[dict | None] = asyncio.Queue()
        opened, log_over = asyncio.Event(), asyncio.Event()
        reader = asyncio.create_task(self._read_events(bank, events, opened, on_log, log_over))
        opening = asyncio.ensure_future(opened.wait())
        try:
            # the stream is open (the server subscribed) or has failed: polling covers the rest
            await asyncio.wait({reader, opening}, return_when=asyncio.FIRST_COMPLETED)
            opening.cancel()
            method, path, body = job_route(kind, bank, options or {})
            job = await self.api.call(method, path, body)
            job_id = job["id"]
            if on_submitted is not None:
                on_submitted(job_id)
            await self._follow(job_id, kind, bank, events, on_event)
            if on_log is not None:  # the server sends the last lines within a second or so
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(log_over.wait(), LOG_DRAIN)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        return await self.api.get(f"/api/v1/jobs/{quote(job_id, safe='')}")

    async def _read_events(self, bank: str, events: asyncio.Queue, opened: asyncio.Event,
                           on_log: Callable[[str], None] | None, log_over: asyncio.Event) -> None:
        try:
            async for kind, data in self.api.events(bank=bank, log=True if on_log else None):
                if kind == "open":
                    opened.set()
                elif kind == "log" and on_log is not None:
                    on_log(data.get("line", ""))
                elif kind == "log_end":
                    log_over.set()
                elif kind == "job":
                    events.put_nowait(data)
        except BiomajError as exc:
            log.warning("the event stream of %s failed (%s): following the job by polling", self.api.url, exc)
        finally:
            log_over.set()
            events.put_nowait(None)

    async def _follow(self, job_id: str, kind: str, bank: str, events: asyncio.Queue, on_event: OnEvent | None) -> None:
        queued_since: float | None = time.monotonic()
        streaming = True
        while True:
            try:
                if not streaming:
                    raise asyncio.TimeoutError
                event = await asyncio.wait_for(events.get(), STORE_POLL)
            except asyncio.TimeoutError:
                if not streaming:
                    await asyncio.sleep(STORE_POLL)
                job = await self.api.get(f"/api/v1/jobs/{quote(job_id, safe='')}")
                if job["state"] in FINAL_JOB_STATES:
                    return
                if job["state"] != "queued":
                    queued_since = None
                elif queued_since is not None and time.monotonic() - queued_since > QUEUED_WARNING:
                    log.warning("the %s of %s (job %s) is still queued after %.0f s: the server's managers are busy "
                                "with other jobs, or none runs (`biomaj ctl --proxy %s nodes` lists them)",
                                kind, bank, job_id, QUEUED_WARNING, self.api.url)
                    queued_since = None
                continue
            if event is None:  # the stream ended: poll from now on
                streaming = False
                continue
            if event.get("job_id") != job_id:
                continue
            job_event = JobEvent(job_id=job_id, bank=event["bank"], kind=event["kind"], state=event["state"],
                                 step=event.get("step"), message=event.get("message") or "",
                                 progress=event.get("progress") or {})
            if await deliver(job_event, on_event, kind, bank):
                return

    async def cancel(self, job_id: str) -> dict:
        """Ask the server to stop the job: at once when queued, within seconds when running."""
        return await self.api.post(f"/api/v1/jobs/{quote(job_id, safe='')}/cancel")
