"""The download task's work: have every wanted file in the offline directory.

What the offline directory already holds complete is kept, what the last production release has
unchanged is linked from it, and the remaining files go to the downloaders in download messages
(through ``RunContext.downloads``); then the results are counted. The update workflow
(``update.py``) decides the release and which files are wanted, and calls :class:`Fetching`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from biomaj.bus.messages import DownloadRequest, DownloadResult, FileOutcome, FileSpec
from biomaj.config.rates import Allowance, Schedule, format_rate, parse_size
from biomaj.download.paths import safe_join
from biomaj.download.remote import to_message
from biomaj.download.same_file import FileFacts, facts_of_entry, facts_of_record, local_facts, same_file
from biomaj.download.verify import file_digest
from biomaj.errors import ConfigError

from . import files as fs
from .bank import Bank, RunContext
from .engine import CANCELLED, Cancelled, TaskFailed
from .remote_files import Wanted
from .session import Session

PROGRESS_EVERY = 0.5  # seconds between two download progress events

#: Live progress of a task in the bank's ``status`` (the workflow's, which a release check silences).
StatusSink = Callable[[str, dict], Awaitable[None]]


class Fetching:
    """The download task of one update run. ``downloaded`` and ``reused`` (save_as lists) are
    what the later tasks (checksum, uncompress, copy) work on."""

    def __init__(self, bank: Bank, session: Session, run: RunContext, log: logging.Logger, status: StatusSink,
                 *, hardlink: bool, digests: Digests | None = None):
        """``digests``: the run's digests of the last release's copies (see :func:`same_as_old`)."""
        self.bank = bank
        self.session = session
        self.run_ctx = run
        self.log = log
        self.status = status
        self.hardlink = hardlink
        self.digests: Digests = digests if digests is not None else {}
        self.downloaded: list[str] = []  # save_as of files fetched (or found complete) this run
        self.reused: list[str] = []  # save_as of files linked from the previous release
        self.outcomes: dict[str, FileOutcome] = {}  # save_as -> the downloaders' last outcome

    async def fetch(self, wanted: list[Wanted], production: list[dict], *, fresh: bool) -> None:
        """Reuse what the offline directory and the last ``production`` release already have
        (unless ``fresh``, see :func:`reuse_source`), then send the remaining files to the
        downloaders (see :func:`batches`) and wait for every outcome; the files that failed are
        tried once more after all the others. TaskFailed when a file is missing at the end, or
        at once when more files failed than ``download.max_failures`` allows."""
        plan = await asyncio.to_thread(self.plan, wanted, production, fresh)
        to_fetch, present, reused = plan.to_fetch, plan.present, plan.reused
        self.reused = reused
        self.log.info("Workflow:wf_download:%d files: %d to download, %d already in the offline directory, "
                      "%d reused from the previous release", len(wanted), len(to_fetch), len(present), len(reused))
        if plan.blind:
            notice = blind_notice(plan.blind)
            self.log.warning("Workflow:wf_download:%s", notice)
            await self.run_ctx.event(self.bank.name, "running", step="download", message=notice, notice=True)
        budget = FailureBudget.of_bank(self.bank.props, len(to_fetch))
        if budget is not None:
            self.log.info("Workflow:wf_download:%s", budget.describe())
        await self.status("download", {"total": len(wanted)})
        progress = _DownloadProgress(self, len(wanted), len(present) + len(reused), _limits(self), budget)
        await progress.emit(force=True)
        await self._round(to_fetch, progress)
        outcomes = self.outcomes = progress.outcomes
        for item in to_fetch:  # never silently short: a file nobody reported on has failed
            if item.save_as not in outcomes:
                outcomes[item.save_as] = FileOutcome(item.save_as, ok=False, error="no downloader reported on it")
        again = [w for w in to_fetch if _try_again(outcomes[w.save_as])]
        if again and not progress.stop.is_set():
            self.log.info("Workflow:wf_download:%d files failed: trying them once more, after all the others",
                          len(again))
            await self._round(again, progress, last_try=True)
        by_node = Counter(progress.node_of.get(name) or "?" for name, o in outcomes.items() if o.ok and not o.skipped)
        if by_node:
            self.log.info("Workflow:wf_download:downloaded by node: %s",
                          ", ".join(f"{node} {count}" for node, count in sorted(by_node.items())))
        missing = [w.save_as for w in to_fetch if not outcomes[w.save_as].ok]
        self.downloaded = present + [w.save_as for w in to_fetch if outcomes[w.save_as].ok]
        await asyncio.to_thread(self._keep_digests, outcomes)
        # what publish checks: a release with a missing file is never published (publishing.publish)
        self.session["missing"] = {"count": len(missing), "files": missing[:MISSING_KEPT]} if missing else None
        if budget is not None and progress.stop.is_set():
            raise TaskFailed(budget.exceeded(progress.failures(), len(missing)))
        if missing:
            failed = [outcomes[name] for name in missing]
            raise TaskFailed(f"{len(failed)} of {len(wanted)} files failed to download"
                             f"{' (each tried once more at the end)' if again else ''}: {first_errors(failed)}")

    async def _round(self, items: list[Wanted], progress: _DownloadProgress, *, last_try: bool = False) -> None:
        """Send ``items`` to the downloaders and wait for every outcome (``progress`` counts them
        and stops the round when the failure budget is spent). ``last_try``: one attempt per
        file, the downloaders' own retries were spent in the first round."""
        requests = self._requests(items)
        if last_try:
            requests = [dataclasses.replace(r, stop_condition=ONE_ATTEMPT) for r in requests]
        await self.run_ctx.downloads.run_all(requests, progress.add, self.run_ctx.cancelled,
                                             progress.stop if progress.budget is not None else None)
        await progress.emit(force=True)
        if self.run_ctx.cancelled.is_set():
            raise Cancelled(CANCELLED)

    def plan(self, wanted: list[Wanted], production: list[dict], fresh: bool, *, link: bool = True) -> _Plan:
        """What to do with each wanted file; ``link``: link the reused ones into the offline
        directory now (False for a dry run, which only counts them)."""
        offline = self.bank.offline_dir
        previous = reuse_source(self.bank, production, fresh=fresh)
        cache: dict = {}
        plan = _Plan()
        for item in wanted:
            dest = safe_join(offline, item.save_as, cache)
            if same_file(local_facts(dest), facts_of_entry(item.entry)):
                plan.present.append(item.save_as)
                continue
            old = None
            if previous is not None:
                flat, known = previous
                old = known.get(item.save_as)
                source = flat / item.save_as
                if old is not None and source.is_file() and same_as_old(old, source, item, self.digests):
                    if link:
                        fs.link_or_copy(source, dest, hardlink=self.hardlink)
                    plan.reused.append(item.save_as)
                    continue
            if item.entry.size is None and (old is not None or (item.entry.mtime is None and dest.is_file())):
                plan.blind.append(item)  # a local copy exists, but nothing to compare it with
            plan.to_fetch.append(item)
        return plan

    def _requests(self, to_fetch: list[Wanted]) -> list[DownloadRequest]:
        return download_requests(self.bank, self.run_ctx.job_id, str(self.session["id"]), self.bank.offline_dir,
                                 to_fetch)

    def _keep_digests(self, outcomes: dict[str, FileOutcome]) -> None:
        """The sha256 the downloaders computed while each file streamed in, kept in the session's
        file list with the size and date the file had then: the provenance file takes it from
        there instead of reading the file again, while the file still has them."""
        records = self.session.get("download_files") or []
        kept = 0
        for record in records:
            outcome = outcomes.get(record.get("save_as") or record["name"])
            if outcome is not None and outcome.ok and outcome.digest and outcome.size is not None:
                record["digest"] = {DIGEST: outcome.digest, "size": outcome.size, "mtime": outcome.mtime}
                kept += 1
        if kept:
            self.bank.write_file_list(self.session["id"], records)


#: The digest every downloaded file gets while it streams in (its provenance, verify, repair),
#: small files included: on their event loop it costs 43 us per 64 KiB (SHA extensions), less than
#: the provenance step's second read of each file (A/B, 2,000 files: 0.1-0.27 s less wall time).
DIGEST = "sha256"


def download_requests(bank: Bank, job_id: str, session_id: str, offline_dir: Path,
                      items: list[Wanted]) -> list[DownloadRequest]:
    """The download messages of ``items`` into ``offline_dir``: small files many to a message
    (see :func:`batches`), each message for files of one remote configuration, each file's
    provider checksum checked and its sha256 computed as it streams in, in the same pass."""
    groups: dict[int, list[Wanted]] = {}
    for item in items:
        groups.setdefault(id(item.config), []).append(item)
    props = bank.props
    transfer = transfer_settings(props)
    requests = []
    for group in groups.values():
        config = group[0].config
        options = config.options
        remote = to_message(config)  # the files of a bank share a few remote configurations
        secrets = dict(group[0].secrets)
        for batch in batches(group, len(items)):
            requests.append(DownloadRequest(
                job_id=job_id,
                bank=bank.name,
                session_id=session_id,
                remote=remote,
                offline_dir=str(offline_dir),
                files=[FileSpec(w.entry.path, w.save_as, w.entry.size, w.entry.mtime, w.entry.hash,
                                size_hint=w.entry.size_hint, checksum=w.checksum,
                                digest=DIGEST).to_dict() for w in batch],
                secrets=secrets,
                check_archive=not _true(options.get("skip_check_uncompress")),
                stop_condition=options.get("stop_condition") or props.get("stop_condition"),
                wait_policy=options.get("wait_policy") or props.get("wait_policy"),
                **transfer,
            ))
    return requests


#: (copy, algorithm) -> hex digest of a last release's copy, computed once per run (the change
#: report and the download task's plan both compare it).
Digests = dict[tuple[str, str], str]


def same_as_old(record: dict, copy: Path, item: Wanted, digests: Digests | None = None) -> bool:
    """The wanted ``item`` is the last release's file (its ``record``, its ``copy`` in that
    release's flat directory), by the one rule of download/same_file.py: the download task reuses
    it, the change report counts it unchanged (workflow/changes.py)."""
    return same_file(_facts_of_old(record, copy, item, digests), facts_of_entry(item.entry, item.checksum))


def _facts_of_old(record: dict, copy: Path, item: Wanted, digests: Digests | None):
    """The last release's file: its record, or, when the listing gave no exact size then (an
    index's "64K"), its copy in that release, which the download gave the remote size and date.
    When ``item`` has a provider checksum that the record lacks (of that algorithm), the copy (if
    any: an archive's is extracted) is hashed, once per run with ``digests``, so that the checksum
    decides (same_file) before anything is reused unchecked."""
    facts = facts_of_record(record)
    if facts.size is None:
        facts = replace(local_facts(copy) or FileFacts(), checksum=facts.checksum)
    if item.checksum and (item.entry.size is None or facts.size in (None, item.entry.size)):
        algorithm = item.checksum.partition(":")[0]
        if (facts.checksum or "").partition(":")[0] != algorithm and copy.is_file():
            key = (str(copy), algorithm)
            digest = digests.get(key) if digests is not None else None
            if digest is None:
                digest = file_digest(copy, algorithm)
                if digests is not None:
                    digests[key] = digest
            facts = replace(facts, checksum=f"{algorithm}:{digest}")
    return facts


def _limits(fetching: Fetching) -> dict[str, str]:
    """The bandwidth limits in force now, as the progress shows them."""
    found = {}
    for name, key, text in (("node", "limits.bandwidth", fetching.run_ctx.bandwidth),
                            ("bank", "download.bandwidth", fetching.bank.props.get("download.bandwidth"))):
        if text:
            rate = Schedule.parse(text, what=key).rate_at(datetime.datetime.now())
            if rate is not None:
                found[name] = format_rate(rate)
    return found


def transfer_settings(props) -> dict[str, Any]:
    """The bank's split and bandwidth settings for its download messages, checked here so that a
    bad value fails the update with its name before anything is sent (ConfigError)."""
    settings: dict[str, Any] = {}
    if (text := props.get("download.split.min_size")) is not None:
        settings["split_min_size"] = parse_size(text, what="download.split.min_size")
    if props.get("download.split.max") is not None:
        count = props.get_int("download.split.max")
        if count is None or count < 1:
            raise ConfigError(f"download.split.max={props.get('download.split.max')!r}: a whole number >= 1")
        settings["split_max"] = count
    if (text := props.get("download.bandwidth")) is not None:
        Schedule.parse(text, what="download.bandwidth")
        settings["bandwidth"] = text.strip()
    return settings


#: A file at most this big may share a download message with others; a bigger one (or one of
#: unknown size) travels alone, so that its progress and its redelivery concern it only.
BATCH_FILE_SIZE = 8 * 1024 * 1024
BATCH_MAX_FILES = 64
BATCH_MAX_BYTES = 64 * 1024 * 1024
#: Small files are spread over at least this many messages (when there are enough of them), so
#: that several download nodes share a job and a redelivered batch is a small part of it.
BATCH_MIN_COUNT = 16


def batches(items: list[Wanted], total: int) -> list[list[Wanted]]:
    """``items`` cut into download messages: files of known (or roughly known) size up to
    BATCH_FILE_SIZE grouped (at most BATCH_MAX_FILES files and BATCH_MAX_BYTES bytes, fewer when
    a job has few files, so that there are BATCH_MIN_COUNT messages), every other file alone.
    ``total``: the job's file count."""
    per_batch = max(1, min(BATCH_MAX_FILES, -(-total // BATCH_MIN_COUNT)))
    out: list[list[Wanted]] = []
    current: list[Wanted] = []
    size = 0
    for item in items:
        known = item.entry.size if item.entry.size is not None else item.entry.size_hint
        if known is None or known > BATCH_FILE_SIZE:
            out.append([item])
            continue
        if current and (len(current) >= per_batch or size + known > BATCH_MAX_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += known
    if current:
        out.append(current)
    return out


def reuse_source(bank: Bank, production: list[dict], *, fresh: bool) -> tuple[Path, dict[str, dict]] | None:
    """(flat directory, files by save_as) of the last production release, when reuse applies:
    not for a ``fresh`` download (--fromscratch, --from-task download) nor with copy.skip."""
    if fresh or bank.props.get_bool("copy.skip"):
        return None
    if not production:
        return None
    last = production[-1]
    files = bank.read_file_list(last["session"])
    if not files:
        return None
    return Bank.production_dir(last) / "flat", {f.get("save_as") or f["name"]: f for f in files}


#: The error of a file its downloader did not start, the job being cancelled or its round stopped.
NOT_TRIED = "cancelled"
#: The retry policy of the last try of a failed file, at the end of the download step.
ONE_ATTEMPT = "stop_after_attempt(1)"
#: Names of missing files kept in the session (``session["missing"]``), besides their count.
MISSING_KEPT = 1000


@dataclass(frozen=True)
class FailureBudget:
    """``download.max_failures`` for one download step: ``allowed`` failed files out of ``to_fetch``."""

    text: str
    allowed: int
    to_fetch: int

    @classmethod
    def of_bank(cls, props, to_fetch: int) -> FailureBudget | None:
        """The bank's budget, None when it has none (ConfigError for an unreadable value)."""
        text = (props.get("download.max_failures") or "").strip()
        if not text:
            return None
        return cls(text, Allowance.parse(text, what="download.max_failures").of(to_fetch), to_fetch)

    def describe(self) -> str:
        return f"download.max_failures={self.text}: at most {self.allowed} of the {self.to_fetch} files to fetch may fail"

    def exceeded(self, failed: list[FileOutcome], missing: int) -> str:
        """Why the download stopped: the count, the budget, the first errors."""
        not_tried = missing - len(failed)
        return (f"download stopped: {len(failed)} files failed, more than download.max_failures={self.text} allows "
                f"({self.allowed} of the {self.to_fetch} files to fetch)"
                f"{f'; {not_tried} files were not tried' if not_tried > 0 else ''}. First errors: "
                f"{first_errors(failed)}")


def _try_again(outcome: FileOutcome) -> bool:
    """A failed file is tried once more at the end of the download step, unless its message
    crashed the workers that took it (dead-lettered) or it did not match its provider checksum
    (the engine fetched it twice already)."""
    return not outcome.ok and not outcome.dead_letter and not outcome.got_checksum


def first_errors(failed: list[FileOutcome], shown: int = 5) -> str:
    """``a.gz: 404 ...; b.gz: ...`` for the first ``shown`` failures, and how many more."""
    text = "; ".join(o.error if o.error.startswith(o.save_as) or o.save_as in o.error.split(":")[0]
                     else f"{o.save_as}: {o.error}" for o in failed[:shown])
    return text + (f" (and {len(failed) - shown} more)" if len(failed) > shown else "")


class _DownloadProgress:
    """Files and bytes done, sent as job events at most every PROGRESS_EVERY seconds; the last
    outcome of each file (a redelivered batch reports again files a dead downloader reported);
    the failures against the ``budget``, ``stop`` set once it is spent."""

    def __init__(self, fetching: Fetching, total: int, done: int, limits: dict[str, str] | None = None,
                 budget: FailureBudget | None = None):
        self.fetching = fetching
        self.limits = limits or {}  # bandwidth limits in force: {"node": "10 MiB/s", "bank": ...}
        self.budget = budget
        self.stop = asyncio.Event()
        self.total = total
        self.done = done
        self.bytes = 0
        self.outcomes: dict[str, FileOutcome] = {}  # save_as -> its last outcome
        self.node_of: dict[str, str] = {}  # save_as -> the node that reported it
        self.started = asyncio.get_running_loop().time()
        self.last = 0.0

    def failures(self) -> list[FileOutcome]:
        """The files that failed (not those left untried by a cancel or a stop)."""
        return [o for o in self.outcomes.values() if not o.ok and o.error != NOT_TRIED]

    @property
    def failed(self) -> int:
        return len(self.failures())

    async def add(self, result: DownloadResult) -> None:
        log = self.fetching.log
        for outcome in result.outcomes():
            if outcome.save_as not in self.outcomes:
                self.done += 1
            self.outcomes[outcome.save_as] = outcome
            self.node_of[outcome.save_as] = result.node_id
            self.bytes += outcome.transferred
            if not outcome.ok:
                if outcome.error != NOT_TRIED or not self.stop.is_set():
                    log.error("Workflow:wf_download:%s: %s (%s)", outcome.save_as, outcome.error, self._so_far())
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("Workflow:wf_download:%s: %d bytes in %.2fs", outcome.save_as,
                          outcome.transferred, outcome.elapsed)
        if self.budget is not None and not self.stop.is_set() and self.failed > self.budget.allowed:
            log.error("Workflow:wf_download:%d files failed, more than download.max_failures=%s allows (%d): "
                      "stopping the download", self.failed, self.budget.text, self.budget.allowed)
            self.stop.set()
            await self.emit(force=True)
            return
        await self.emit()

    def _so_far(self) -> str:
        failed = self.failed
        if self.budget is None:
            return f"{failed} failed so far"
        return f"{failed} failed so far, {self.budget.allowed} allowed by download.max_failures={self.budget.text}"

    async def emit(self, force: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        if not force and now - self.last < PROGRESS_EVERY and self.done < self.total:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        await self.fetching.status("download", {"progress": self.done})
        failed = self.failed
        extra: dict[str, Any] = {"limit": self.limits} if self.limits else {}
        if self.budget is not None:
            extra["failures_allowed"] = self.budget.allowed
        await self.fetching.run_ctx.event(
            self.fetching.bank.name, "running", step="download",
            message=f"download: {self.done}/{self.total} files" + (f", {self._so_far()}" if failed else ""),
            files_done=self.done, files_total=self.total, files_failed=failed,
            bytes=self.bytes, rate=self.bytes / elapsed, **extra,
        )


@dataclass
class _Plan:
    """What the download task does with each wanted file."""

    to_fetch: list[Wanted] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # complete in the offline directory
    reused: list[str] = field(default_factory=list)  # linked from the previous release
    blind: list[Wanted] = field(default_factory=list)  # fetched again: no exact size, from listing nor server


def blind_notice(blind: list[Wanted]) -> str:
    """Why these files are downloaded again although a local copy exists: the listing (an index
    page without sizes, Python's http.server) gives nothing to compare that copy with, and the
    server was not asked either (``options.stat_incomplete=false``) or did not say (an error,
    a HEAD without Content-Length): see remote_files.stat_incomplete."""
    what = "no size nor date" if all(w.entry.mtime is None for w in blind) else "no exact size"
    return (f"the server gives {what} for {len(blind)} files: they cannot be compared with the last release, "
            f"so they are downloaded again")


def _true(value: Any) -> bool:
    return str(value).lower() in ("1", "true")
