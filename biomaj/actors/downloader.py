"""The downloader actor: one message per file from the `download` queue.

Each DownloadRequest is fetched with the shared engine (client pool per host, retries, resume,
verification); its DownloadResult is published to the results queue before the request is acked,
so a downloader that dies mid-file leaves the request unacked and another one resumes the part
file. A cancelled job's in-flight transfers are stopped at once (its CancelJob wake-up), and its
files not started yet are answered "cancelled" (its cancel flag in the state, or the wake-up);
their part files stay for a later resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from biomaj.bus import Delivery, names
from biomaj.bus.messages import DownloadRequest, DownloadResult, JobEvent
from biomaj.download.engine import ClientPool, FetchFailed, Fetcher, FetchSettings
from biomaj.download.paths import safe_join
from biomaj.download.remote import from_message
from biomaj.download.retry import RetryPolicy
from biomaj.errors import BiomajError
from biomaj.protocols.base import RemoteEntry
from biomaj.runtime.actor import Actor, ActorSettings
from biomaj.runtime.cancels import JobCancels
from biomaj.state import State
from biomaj.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between two pushes of the byte counters to the state


@dataclass(frozen=True, kw_only=True)
class DownloaderSettings(ActorSettings):
    """`concurrency` files at once; at most `per_host` connections to one server."""

    per_host: int = 4
    node_id: str = ""


#: reads a secret bank property: (bank, property) -> value
SecretReader = Callable[[str, str], "str | None"]


class DownloaderActor(Actor):
    """Fetches files for bank workflows."""

    name = "downloader"
    queue = names.DOWNLOAD
    settings_class = DownloaderSettings

    def __init__(self, bus, settings: DownloaderSettings | None = None, *, state: State | None = None,
                 read_secret: SecretReader | None = None, hooks=()):
        super().__init__(bus, settings, hooks=hooks)
        self.state = state
        self.read_secret = read_secret or (lambda bank, key: None)
        self.pool = ClientPool(per_host=self.settings.per_host)
        self._jobs: dict[str, set[asyncio.Task]] = {}
        self.bytes_received = 0  # over every fetch of this actor
        self.cancels = JobCancels(bus, state, self._cancel_job, "downloader-cancels")
        self._result_queues = {names.DOWNLOAD_RESULTS}
        self.progress = _Progress(state, self)

    async def start(self) -> None:
        await self.bus.declare_queue(names.DOWNLOAD_RESULTS)
        await self.cancels.start()
        await super().start()
        self.progress.start()

    async def stop(self, grace: float | None = None) -> None:
        await super().stop(grace)
        await self.progress.stop()
        await self.cancels.stop()
        await self.pool.close()

    def _cancel_job(self, job_id: str) -> None:
        """A wake-up: the job's transfers in flight stop at once."""
        for task in list(self._jobs.get(job_id, ())):
            task.cancel()

    async def handle(self, delivery: Delivery) -> None:
        request = delivery.message
        if not isinstance(request, DownloadRequest):
            await delivery.nack(requeue=False, reason=f"downloader cannot handle {request.TYPE}")
            return
        if await self.cancels.is_cancelled(request.job_id):
            await self._publish(request, ok=False, error="cancelled", retryable=False)
            return
        task = asyncio.create_task(self._fetch(request), name=f"fetch-{request.save_as}")
        self._jobs.setdefault(request.job_id, set()).add(task)
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():  # this actor is stopping: stop the transfer, keep the message
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            result = dict(ok=False, error="cancelled", retryable=False)
        finally:
            self._jobs.get(request.job_id, set()).discard(task)
            if not self._jobs.get(request.job_id):
                self._jobs.pop(request.job_id, None)
        await self._publish(request, **result)

    async def _fetch(self, request: DownloadRequest) -> dict:
        """Fetch one file; returns DownloadResult fields."""
        started = time.monotonic()
        try:
            config = from_message(request.remote, request.secrets, lambda key: self.read_secret(request.bank, key))
            dest = safe_join(Path(request.offline_dir), request.save_as)
            retry = RetryPolicy.parse(request.stop_condition, request.wait_policy)
            fetcher = Fetcher(self.pool, FetchSettings(retry=retry, check_archives=request.check_archive))
            entry = RemoteEntry(request.path, request.size, request.mtime, hash=request.hash)
            def received(n: int) -> None:
                self.progress.add(request.job_id, n)

            result = await fetcher.fetch(config, entry, dest, digest=request.digest, on_bytes=received)
        except FetchFailed as exc:
            return dict(ok=False, error=str(exc), retryable=exc.retryable, elapsed=time.monotonic() - started)
        except BiomajError as exc:
            return dict(ok=False, error=str(exc), retryable=False, elapsed=time.monotonic() - started)
        except OSError as exc:  # the local side: disk full, file too large, permissions ...
            where = exc.filename or Path(request.offline_dir) / request.save_as
            return dict(ok=False, error=f"cannot write {where}: {exc.strerror or exc}",
                        retryable=False, elapsed=time.monotonic() - started)
        except Exception as exc:  # a bug: answer anyway, so that no workflow waits for ever
            log.exception("download of %s crashed", request.save_as)
            return dict(ok=False, error=f"{type(exc).__name__}: {exc}", retryable=False,
                        elapsed=time.monotonic() - started)
        return dict(
            ok=True, size=result.size, mtime=result.mtime, digest=result.digest, transferred=result.transferred,
            attempts=result.attempts, skipped=result.skipped, elapsed=result.elapsed,
        )

    async def _publish(self, request: DownloadRequest, **fields) -> None:
        result = DownloadResult(
            job_id=request.job_id, bank=request.bank, session_id=request.session_id, request_id=request.id,
            save_as=request.save_as, hash=request.hash, node_id=self.settings.node_id, **fields,
        )
        if request.results_queue not in self._result_queues:
            await self.bus.declare_queue(request.results_queue)
            self._result_queues.add(request.results_queue)
        await self.bus.publish(request.results_queue, result)
        elapsed = fields.get("elapsed") or 0.0
        transferred = fields.get("transferred") or 0
        event = JobEvent(
            job_id=request.job_id, bank=request.bank, kind="download",
            state="done" if result.ok else "failed", step="download",
            message=f"{request.save_as}: {'ok' if result.ok else result.error}",
            progress={"file": request.save_as, "bytes": transferred,
                      "rate": transferred / elapsed if elapsed > 0 else 0.0, "skipped": result.skipped},
        )
        await self.bus.broadcast(event.topic(), event)
        if not result.ok and result.error != "cancelled":
            log.warning("download failed", extra={"bank": request.bank, "file": request.save_as, "error": result.error})


class _Progress:
    """Bytes received per job, added to the job's progress in the state every PROGRESS_INTERVAL
    seconds (one Redis call per job and interval, whatever the number of files)."""

    def __init__(self, state: State | None, actor: DownloaderActor):
        self.state = state
        self.actor = actor
        self.pending: dict[str, int] = {}
        self._task: asyncio.Task | None = None

    def add(self, job_id: str, n: int) -> None:
        self.actor.bytes_received += n
        if self.state is not None:
            self.pending[job_id] = self.pending.get(job_id, 0) + n

    def start(self) -> None:
        if self.state is not None and self._task is None:
            self._task = asyncio.create_task(self._push_every_interval(), name="download-progress")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.push()

    async def _push_every_interval(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            await self.push()

    async def push(self) -> None:
        pending, self.pending = self.pending, {}
        for job_id, count in pending.items():
            try:
                await self.state.incr_progress(job_id, "bytes", count)
            except Exception as exc:  # noqa: BLE001 - progress is informative; the download goes on
                log.warning("could not record the progress of job %s: %s", job_id, exc)
