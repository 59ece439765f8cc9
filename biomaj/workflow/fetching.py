"""The download task's work: have every wanted file in the offline directory.

What the offline directory already holds complete is kept, what the last production release has
unchanged is linked from it, and one download message per remaining file goes to the downloaders
(through ``RunContext.downloads``); then the results are counted. The update workflow
(``update.py``) decides the release and which files are wanted, and calls :class:`Fetching`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomaj.bus.messages import DownloadRequest, DownloadResult
from biomaj.download.paths import safe_join
from biomaj.download.remote import to_message

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
                 *, hardlink: bool):
        self.bank = bank
        self.session = session
        self.run_ctx = run
        self.log = log
        self.status = status
        self.hardlink = hardlink
        self._remote_docs: dict[int, tuple[Any, dict]] = {}  # id(RemoteConfig) -> (it, its message form)
        self.downloaded: list[str] = []  # save_as of files fetched (or found complete) this run
        self.reused: list[str] = []  # save_as of files linked from the previous release

    async def fetch(self, wanted: list[Wanted], production: list[dict], *, fresh: bool) -> None:
        """Reuse what the offline directory and the last ``production`` release already have
        (unless ``fresh``, see :func:`reuse_source`), then send one download message per
        remaining file and wait for every result."""
        plan = await asyncio.to_thread(self.plan, wanted, production, fresh)
        to_fetch, present, reused = plan.to_fetch, plan.present, plan.reused
        self.reused = reused
        self.log.info("Workflow:wf_download:%d files: %d to download, %d already in the offline directory, "
                      "%d reused from the previous release", len(wanted), len(to_fetch), len(present), len(reused))
        if plan.blind:
            notice = blind_notice(plan.blind)
            self.log.warning("Workflow:wf_download:%s", notice)
            await self.run_ctx.event(self.bank.name, "running", step="download", message=notice, notice=True)
        await self.status("download", {"total": len(wanted)})
        progress = _DownloadProgress(self, len(wanted), len(present) + len(reused))
        await progress.emit(force=True)
        requests = [self._request(w) for w in to_fetch]
        results = await self.run_ctx.downloads.run_all(requests, progress.add, self.run_ctx.cancelled)
        await progress.emit(force=True)
        if self.run_ctx.cancelled.is_set():
            raise Cancelled(CANCELLED)
        by_node = Counter(r.node_id or "?" for r in results if r.ok and not r.skipped)
        if by_node:
            self.log.info("Workflow:wf_download:downloaded by node: %s",
                          ", ".join(f"{node} {count}" for node, count in sorted(by_node.items())))
        failed = [r for r in results if not r.ok]
        self.downloaded = present + [r.save_as for r in results if r.ok]
        if failed:
            shown = "; ".join(r.error if r.error.startswith(r.save_as) or r.save_as in r.error.split(":")[0]
                              else f"{r.save_as}: {r.error}" for r in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise TaskFailed(f"{len(failed)} of {len(wanted)} files failed to download: {shown}{more}")

    def plan(self, wanted: list[Wanted], production: list[dict], fresh: bool) -> _Plan:
        offline = self.bank.offline_dir
        previous = reuse_source(self.bank, production, fresh=fresh)
        cache: dict = {}
        plan = _Plan()
        for item in wanted:
            dest = safe_join(offline, item.save_as, cache)
            if _same_file(dest, item):
                plan.present.append(item.save_as)
                continue
            old = None
            if previous is not None:
                flat, known = previous
                old = known.get(item.save_as)
                source = flat / item.save_as
                if old is not None and _same_record(old, item.record()) and source.is_file():
                    fs.link_or_copy(source, dest, hardlink=self.hardlink)
                    plan.reused.append(item.save_as)
                    continue
            if item.entry.size is None and (old is not None or (item.entry.mtime is None and dest.is_file())):
                plan.blind.append(item)  # a local copy exists, but nothing to compare it with
            plan.to_fetch.append(item)
        return plan

    def _request(self, item: Wanted) -> DownloadRequest:
        options = item.config.options
        # the files of a bank share a few remote configurations: convert each once
        remote = self._remote_docs.get(id(item.config))
        if remote is None or remote[0] is not item.config:
            remote = self._remote_docs[id(item.config)] = (item.config, to_message(item.config))
        props = self.bank.props
        return DownloadRequest(
            job_id=self.run_ctx.job_id,
            bank=self.bank.name,
            session_id=str(self.session["id"]),
            remote=remote[1],
            path=item.entry.path,
            offline_dir=str(self.bank.offline_dir),
            save_as=item.save_as,
            secrets=dict(item.secrets),
            size=item.entry.size,
            mtime=item.entry.mtime,
            hash=item.entry.hash,
            check_archive=not _true(options.get("skip_check_uncompress")),
            stop_condition=options.get("stop_condition") or props.get("stop_condition"),
            wait_policy=options.get("wait_policy") or props.get("wait_policy"),
        )


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


class _DownloadProgress:
    """Files and bytes done, sent as job events at most every PROGRESS_EVERY seconds."""

    def __init__(self, fetching: Fetching, total: int, done: int):
        self.fetching = fetching
        self.total = total
        self.done = done
        self.failed = 0
        self.bytes = 0
        self.started = asyncio.get_running_loop().time()
        self.last = 0.0

    async def add(self, result: DownloadResult) -> None:
        self.done += 1
        self.failed += 0 if result.ok else 1
        self.bytes += result.transferred
        if not result.ok:
            self.fetching.log.error("Workflow:wf_download:%s: %s", result.save_as, result.error)
        else:
            self.fetching.log.debug("Workflow:wf_download:%s: %d bytes in %.2fs", result.save_as,
                                    result.transferred, result.elapsed)
        await self.emit()

    async def emit(self, force: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        if not force and now - self.last < PROGRESS_EVERY and self.done < self.total:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        await self.fetching.status("download", {"progress": self.done})
        await self.fetching.run_ctx.event(
            self.fetching.bank.name, "running", step="download",
            message=f"download: {self.done}/{self.total} files",
            files_done=self.done, files_total=self.total, files_failed=self.failed,
            bytes=self.bytes, rate=self.bytes / elapsed,
        )


@dataclass
class _Plan:
    """What the download task does with each wanted file."""

    to_fetch: list[Wanted] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # complete in the offline directory
    reused: list[str] = field(default_factory=list)  # linked from the previous release
    blind: list[Wanted] = field(default_factory=list)  # fetched again: the listing gives no exact size


def blind_notice(blind: list[Wanted]) -> str:
    """Why these files are downloaded again although a local copy exists: the listing (an index
    page without sizes, Python's http.server) gives nothing to compare that copy with."""
    what = "no size nor date" if all(w.entry.mtime is None for w in blind) else "no exact size"
    return (f"the server gives {what} for {len(blind)} files: they cannot be compared with the last release, "
            f"so they are downloaded again")


def _true(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


def _same_file(dest: Path, item: Wanted) -> bool:
    """The offline copy is complete: same size and same date as the remote file (resume)."""
    try:
        st = dest.stat()
    except OSError:
        return False
    if item.entry.size is None:
        # an index that prints "2.7K": only a finished download sets the remote date on the file
        return item.entry.mtime is not None and int(st.st_mtime) == int(item.entry.mtime)
    if st.st_size != item.entry.size:
        return False
    return item.entry.mtime is None or int(st.st_mtime) == int(item.entry.mtime)


def _same_record(old: dict, new: dict) -> bool:
    """A remote file unchanged since the previous release: same name, size and date (and the
    same listing hash when both have one)."""
    if (old.get("name"), old.get("size")) != (new.get("name"), new.get("size")) or new.get("size") is None:
        return False
    if old.get("mtime") is not None and new.get("mtime") is not None:
        if int(old["mtime"]) != int(new["mtime"]):
            return False
    elif (old.get("year"), old.get("month"), old.get("day")) != (new.get("year"), new.get("month"), new.get("day")):
        return False
    if old.get("hash") and new.get("hash") and old["hash"] != new["hash"]:
        return False
    return True
