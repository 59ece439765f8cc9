"""The downloader actor: batches of files from the `download` queue.

The files of a DownloadRequest are fetched with the shared engine (client pool, retries, resume,
verification), as many at a time as the node's host budget allows (download/limits.py); their
outcomes go to the requester's results queue every few tenths of a second and, last, in the final
DownloadResult, published before the request is acked. A downloader that dies mid-batch leaves the
request unacked and the next one finds the files already complete and resumes the part files. A
cancelled job's in-flight transfers are stopped at once (its CancelJob wake-up), and its files not
started yet are answered "cancelled" (its cancel flag in the state, or the wake-up); their part
files stay for a later resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from biomaj.bus import Delivery, names
from biomaj.bus.messages import DownloadRequest, DownloadResult, FileOutcome, FileSpec, JobEvent
from biomaj.download.engine import (
    INLINE_MAX, ClientPool, FetchFailed, Fetcher, FetchItem, FetchResult, FetchSettings,
)
from biomaj.config.rates import Schedule
from biomaj.download.bandwidth import Limiter, pacer
from biomaj.download.limits import HostBudget
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
    """`concurrency` download messages at once (the connections to each server are the node's
    host budget's); files up to `inline_max` bytes written on the event loop (see
    FetchSettings.inline_max)."""

    inline_max: int = INLINE_MAX
    node_id: str = ""
    bandwidth: str | None = None  # limits.bandwidth: every transfer of this node together


#: reads a secret bank property: (bank, property) -> value
SecretReader = Callable[[str, str], "str | None"]


class DownloaderActor(Actor):
    """Fetches files for bank workflows."""

    name = "downloader"
    queue = names.DOWNLOAD
    settings_class = DownloaderSettings

    def __init__(self, bus, settings: DownloaderSettings | None = None, *, state: State | None = None,
                 read_secret: SecretReader | None = None, budget: HostBudget | None = None, hooks=()):
        """``budget``: the node's host budget (node/build.py), shared with its manager; a local
        one of the default size when not given."""
        super().__init__(bus, settings, hooks=hooks)
        self.state = state
        self.read_secret = read_secret or (lambda bank, key: None)
        self.pool = ClientPool(budget if budget is not None else HostBudget())
        self._jobs: dict[str, set[asyncio.Task]] = {}
        self.bytes_received = 0  # over every fetch of this actor
        self.cancels = JobCancels(bus, state, self._cancel_job, "downloader-cancels")
        self._result_queues = {names.DOWNLOAD_RESULTS}
        self.progress = _Progress(state, self)
        bandwidth = self.settings.bandwidth
        self.node_limit = Limiter(Schedule.parse(bandwidth, what="limits.bandwidth")) if bandwidth else None
        self._bank_limits: dict[str, Limiter] = {}  # bank -> its download.bandwidth on this node

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

    def _bank_limit(self, request: DownloadRequest) -> Limiter | None:
        """The bank's bandwidth limiter on this node, shared by its transfers (ConfigError when
        download.bandwidth cannot be read)."""
        if not request.bandwidth:
            self._bank_limits.pop(request.bank, None)
            return None
        limit = self._bank_limits.get(request.bank)
        schedule = Schedule.parse(request.bandwidth, what="download.bandwidth")
        if limit is None or limit.schedule != schedule:
            limit = self._bank_limits[request.bank] = Limiter(schedule)
        return limit

    def _cancel_job(self, job_id: str) -> None:
        """A wake-up: the transfers in flight of the job (or of the round of requests that
        ``job_id`` names, :attr:`DownloadRequest.group`) stop at once."""
        for task in list(self._jobs.get(job_id, ())):
            task.cancel()

    async def _dropped(self, request: DownloadRequest) -> bool:
        """The request's job was cancelled, or its round stopped (a failure budget spent)."""
        return (await self.cancels.is_cancelled(request.job_id)
                or bool(request.group) and await self.cancels.is_cancelled(request.group))

    async def handle(self, delivery: Delivery) -> None:
        request = delivery.message
        if not isinstance(request, DownloadRequest):
            await delivery.nack(requeue=False, reason=f"downloader cannot handle {request.TYPE}")
            return
        batch = _BatchReport(self, request)
        if await self._dropped(request):
            await batch.finish(missing="cancelled")
            return
        task = asyncio.create_task(self._fetch_batch(request, batch), name=f"fetch-{request.id}")
        keys = [key for key in (request.job_id, request.group) if key]
        for key in keys:
            self._jobs.setdefault(key, set()).add(task)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():  # this actor is stopping: stop the transfers, keep the message
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            # the job was cancelled (or its round stopped): the files without an outcome are answered "cancelled"
        finally:
            for key in keys:
                self._jobs.get(key, set()).discard(task)
                if not self._jobs.get(key):
                    self._jobs.pop(key, None)
        await batch.finish(missing="cancelled")

    async def _fetch_batch(self, request: DownloadRequest, batch: _BatchReport) -> None:
        """Fetch every file of the batch, the host budget at a time, into ``batch``."""
        started = time.monotonic()
        try:
            config = from_message(request.remote, request.secrets, lambda key: self.read_secret(request.bank, key))
            retry = RetryPolicy.parse(request.stop_condition, request.wait_policy)
            pace = pacer(self.node_limit, self._bank_limit(request))
        except BiomajError as exc:  # the batch cannot start: every file gets the reason
            for spec in request.specs():
                await batch.add(FileOutcome(spec.save_as, ok=False, hash=spec.hash, error=str(exc),
                                            elapsed=time.monotonic() - started))
            return
        # one fetcher and one path cache per batch: each folder is created and checked once
        settings = FetchSettings(retry=retry, check_archives=request.check_archive,
                                 inline_max=self.settings.inline_max, pace=pace)
        if request.split_min_size is not None:
            settings.split_min_size = request.split_min_size
        if request.split_max is not None:
            settings.split_max = request.split_max
        fetcher = Fetcher(self.pool, settings)
        offline, folders = Path(request.offline_dir), {}  # folders: safe_join's cache
        specs, items = [], []
        for spec in request.specs():
            try:
                dest = safe_join(offline, spec.save_as, folders)
            except BiomajError as exc:  # an unsafe name: refused, the others go on
                await batch.add(_outcome(spec, exc, started, offline))
                continue
            specs.append(spec)
            items.append(FetchItem(RemoteEntry(spec.path, spec.size, spec.mtime, hash=spec.hash,
                                               size_hint=spec.size_hint), dest, spec.digest, spec.checksum))

        def received(n: int) -> None:
            self.progress.add(request.job_id, n)

        async def done(index: int, result: FetchResult | BaseException) -> None:
            await batch.add(_outcome(specs[index], result, started, offline))

        await fetcher.fetch_many(config, items, done, on_bytes=received)

    async def _publish(self, request: DownloadRequest, outcomes: list[FileOutcome], final: bool) -> None:
        """One result message for ``outcomes`` and one event (the metrics count files from it)."""
        result = DownloadResult(
            job_id=request.job_id, bank=request.bank, session_id=request.session_id, request_id=request.id,
            files=[o.to_dict() for o in outcomes], final=final, node_id=self.settings.node_id,
        )
        if request.results_queue not in self._result_queues:
            await self.bus.declare_queue(request.results_queue)
            self._result_queues.add(request.results_queue)
        await self.bus.publish(request.results_queue, result)
        if not outcomes:
            return
        counts = Counter("downloaded" if o.ok and not o.skipped else "skipped" if o.ok
                         else "cancelled" if o.error == "cancelled" else "failed" for o in outcomes)
        transferred = sum(o.transferred for o in outcomes)
        elapsed = max(o.elapsed for o in outcomes)
        event = JobEvent(
            job_id=request.job_id, bank=request.bank, kind="download",
            state="failed" if counts["failed"] else "done", step="download",
            message=f"{len(outcomes)} file(s): " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items())),
            progress={"batch": request.id, "files": dict(counts), "bytes": transferred,
                      "rate": transferred / elapsed if elapsed > 0 else 0.0},
        )
        await self.bus.broadcast(event.topic(), event)
        for outcome in outcomes:
            if not outcome.ok and outcome.error != "cancelled":
                log.warning("download failed", extra={"bank": request.bank, "file": outcome.save_as,
                                                      "error": outcome.error})


def _outcome(spec: FileSpec, result: FetchResult | BaseException, started: float, offline: Path) -> FileOutcome:
    """The outcome of one file of a batch: its FetchResult, or the exception that ended it."""
    if isinstance(result, FetchResult):
        return FileOutcome(
            spec.save_as, ok=True, size=result.size, mtime=result.mtime, hash=spec.hash, digest=result.digest,
            transferred=result.transferred, attempts=result.attempts, skipped=result.skipped,
            elapsed=result.elapsed,
        )
    got_checksum = None
    if isinstance(result, FetchFailed):
        error, retryable, got_checksum = str(result), result.retryable, result.got_checksum
    elif isinstance(result, BiomajError):
        error, retryable = str(result), False
    elif isinstance(result, OSError):  # the local side: disk full, file too large, permissions ...
        error, retryable = f"cannot write {result.filename or offline / spec.save_as}: {result.strerror or result}", False
    else:  # a bug: answer anyway, so that no workflow waits for ever
        log.error("download of %s crashed", spec.save_as, exc_info=result)
        error, retryable = f"{type(result).__name__}: {result}", False
    return FileOutcome(spec.save_as, ok=False, hash=spec.hash, error=error, retryable=retryable,
                       elapsed=time.monotonic() - started, got_checksum=got_checksum)


class _BatchReport:
    """The outcomes of one batch, sent to the manager PROGRESS_INTERVAL seconds after the
    previous send while the batch runs (so that the progress moves file by file to the eye, and
    a batch of quick files costs one message), a failure at once (a bank's failure budget stops
    its download as soon as it is spent), the rest in the final result."""

    def __init__(self, actor: DownloaderActor, request: DownloadRequest):
        self.actor = actor
        self.request = request
        self.unsent: list[FileOutcome] = []
        self.answered: set[str] = set()
        self.last = time.monotonic()
        self._later: asyncio.Task | None = None
        self._urgent = asyncio.Event()  # a failure: sent without waiting for the interval
        self._sending = asyncio.Lock()  # a partial send and the final one never cross

    async def add(self, outcome: FileOutcome) -> None:
        self.unsent.append(outcome)
        self.answered.add(outcome.save_as)
        if len(self.answered) >= len(self.request.files):
            return  # the final result is next
        if not outcome.ok and outcome.error != "cancelled":
            self._urgent.set()  # the manager counts failures against the bank's failure budget
        if self._later is None:
            self._later = asyncio.create_task(self._send_later(), name=f"report-{self.request.id}")

    async def _send_later(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._urgent.wait(), max(0.0, self.last + PROGRESS_INTERVAL - time.monotonic()))
        self._urgent.clear()
        self._later = None
        try:
            # shielded: finish() cancels a waiting send, never one under way (its outcomes would be lost)
            await asyncio.shield(self._send(final=False))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the outcomes stay unsent: the final result carries them
            log.warning("could not send the progress of %s: %s", self.request.describe(), exc)

    async def finish(self, missing: str) -> None:
        """The final result: what is not sent yet, and ``missing`` as the error of every file
        without an outcome."""
        later, self._later = self._later, None
        await cancel_and_wait(later)
        for spec in self.request.specs():
            if spec.save_as not in self.answered:
                self.unsent.append(FileOutcome(spec.save_as, ok=False, hash=spec.hash, error=missing))
                self.answered.add(spec.save_as)
        await self._send(final=True)

    async def _send(self, final: bool) -> None:
        async with self._sending:
            outcomes, self.unsent = self.unsent, []
            if not outcomes and not final:
                return
            self.last = time.monotonic()
            try:
                await self.actor._publish(self.request, outcomes, final)
            except BaseException:
                self.unsent[:0] = outcomes  # not sent: they go with the next one
                raise


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
