"""The update workflow (BioMAJ 3's UpdateWorkflow), task by task.

init -> check -> depends -> preprocess -> release -> download (checksum, uncompress, copy,
copydepends) -> postprocess (metadata, stats) -> publish (old_biomaj_api, clean_offline,
delete_old, clean_old_sessions) -> over. Reference: ``biomaj3-core-behaviour.md`` section 2.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from biomaj import change_report
from biomaj.download.engine import ClientPool, FetchFailed, Fetcher, FetchSettings
from biomaj.download.limits import LISTING_SHARE
from biomaj.download.paths import safe_join
from biomaj.download.remote import to_message
from biomaj.download.verify import VerificationFailed, check_sidecars
from biomaj.errors import BiomajError
from biomaj.reports import human_size

from . import bucket_publish, checksums
from . import files as fs
from . import changes, crate, locks, provenance, publishing, release as rel
from .bank import Bank, RunContext
from .engine import CANCELLED, Cancelled, TaskFailed, Workflow
from .extract import ExtractionError, archive_kind, extract_archive
from .fetching import PROGRESS_EVERY, Digests, Fetching, reuse_source
from .hashing import HashProgress, progress_fields, progress_message
from .options import UpdateOptions  # declared apart, for the front ends: re-exported here
from .remote_files import Wanted, incomplete, release_files, retry_policy, stat_incomplete, wanted_files
from .session import UPDATE_FLOW, Session


class DependencyOutcome(Protocol):
    """What updating a dependency bank returns (a :class:`~biomaj.workflow.runner.Outcome`)."""

    ok: bool
    updated: bool
    release: str | None
    release_dir: Path | None
    error: str | None


#: Updates the named dependency bank (without its own dependencies): runner.py passes it in, as a
#: dependency's update is a whole update_bank, one level up from this module.
UpdateDependency = Callable[[str], Awaitable[DependencyOutcome]]


@dataclass
class DependencyRun:
    """What the update of a dependency bank left for the bank that depends on it."""

    name: str
    ok: bool
    updated: bool
    release: str | None
    release_dir: Path | None


class UpdateWorkflow(Workflow):
    """One update run of one bank over its session."""

    flow = UPDATE_FLOW

    def __init__(self, bank: Bank, session: Session, options: UpdateOptions, run: RunContext,
                 log: logging.Logger, *, update_dependency: UpdateDependency | None = None,
                 resume_job: bool = False):
        """``update_dependency``: how to update a bank of ``depends``; None updates none (a
        dependency's own update, a release check)."""
        super().__init__(session, log, stop_before=options.stop_before, stop_after=options.stop_after,
                         is_cancelled=run.cancelled.is_set, persist=self._persist)
        self.bank = bank
        self.props = bank.props
        self.options = options
        self.run_ctx = run
        self.update_dependency = update_dependency
        self.resume_job = resume_job
        self.holder = locks.LockHolder.here(run.job_id, run.user or "")
        self.locked = False
        self.dependencies: dict[str, DependencyRun] = {}
        # listing and release files: the manager's pool (the node's host budget), else one of its own
        self._own_pool = run.listing is None
        self.pool = run.listing if run.listing is not None else ClientPool(share=LISTING_SHARE)
        self.downloaded: list[str] = []  # save_as of files fetched (or found complete) this run
        self.reused: list[str] = []  # save_as of files linked from the previous release
        self.manifests: checksums.Manifests | None = None  # remote.checksums, read in the download task
        self.verified: set[str] = set()  # save_as of files checked against their provider checksum
        self.record = True  # False for a release check and a dry run
        self._doc: dict | None = None  # the bank document, read by init (given by a release check)
        self._digests: Digests = {}  # the last release's copies hashed this run (fetching.same_as_old)
        self._phase_progress: dict[str, dict] = {}
        self.bucket_failure: str | None = None  # why the upload to publish.s3 failed (the update fails at its end)

    # --- plumbing ----------------------------------------------------------------------------

    async def _persist(self, task: str) -> None:
        await self.bank.save_session(self.run_ctx.store, self.session, self.run_ctx.user)
        await self._status(task, {"status": self.session["status"].get(task)})

    async def _status(self, task: str, fields: dict) -> None:
        """Live progress in the bank's ``status`` (not for a release check, which records nothing)."""
        if self.record:
            await self.run_ctx.store.update_status_task(self.bank.name, task, fields)

    async def on_task(self, task: str, state: str, message: str = "") -> None:
        # the job is running until the manager finishes it: a task's own state goes in the progress
        await self.run_ctx.event(self.bank.name, "running", step=task, message=message or f"{task}: {state}",
                                 task_state=state)

    async def unlock(self) -> None:
        if self.locked:
            locks.release(self.bank.lock_dir, self.bank.name, self.holder)
            self.locked = False

    def check_cancel(self) -> None:
        if self.run_ctx.cancelled.is_set():
            raise Cancelled(CANCELLED)

    @property
    def release_dir(self) -> Path:
        return self.bank.release_dir(self.session["release"], self.session)

    def no_need_to_update(self) -> None:
        """The remote release is the one already in production: skip the remaining tasks."""
        s = self.session
        self.log.info("Workflow:wf_release:no need to update (remote release %s)", s.get("remoterelease"))
        self.skip_all = True
        s["update"] = False
        s["download_files"] = []
        s["files"] = []
        s.pop("changes", None)  # of an earlier run of this session: no release, no change
        for entry in reversed(self._production()):
            if entry.get("remoterelease") == s.get("remoterelease"):
                s["release"] = entry["release"]
                break

    def _production(self) -> list[dict]:
        return list((self._doc or {}).get("production") or [])

    async def close(self) -> None:
        if self._own_pool:
            await self.pool.close()

    # --- tasks -------------------------------------------------------------------------------

    async def wf_init(self) -> bool:
        self._doc = await self.run_ctx.store.get_bank(self.bank.name)
        locks.acquire(self.bank.lock_dir, self.bank.name, self.holder, resume_job=self.resume_job,
                      lease_held=self.run_ctx.lease_held)
        self.locked = True
        status: dict[str, Any] = {
            "log_file": {"status": self.session.get("log_file"), "progress": 0},
            "session": self.session["id"],
        }
        for task, _ in self.flow:
            status[task] = {"status": None, "progress": 0}
        status["download"]["total"] = 0
        status["release"]["progress"] = ""
        for task in ("preprocess", "postprocess"):
            status[task]["progress"] = {}
        await self.run_ctx.store.set_status(self.bank.name, status)
        if self.options.fromscratch:
            await asyncio.to_thread(fs.remove_tree, self.bank.offline_dir)
        self.bank.offline_dir.mkdir(parents=True, exist_ok=True)
        return True

    async def wf_check(self) -> bool:
        return True  # the configuration is checked before the workflow starts

    async def wf_depends(self) -> bool:
        self.session["depends"] = {}
        if self.update_dependency is None:
            return True
        for name in dependency_order(self.bank):
            self.check_cancel()
            self.log.info("Workflow:wf_depends:updating %s", name)
            outcome = await self.update_dependency(name)
            dep = DependencyRun(name, outcome.ok, outcome.updated, outcome.release, outcome.release_dir)
            self.dependencies[name] = dep
            self.session["depends"][name] = outcome.ok
            if not outcome.ok:
                raise TaskFailed(f"dependency {name} failed: {outcome.error or 'see its log'}")
        return True

    async def wf_preprocess(self) -> bool:
        return await self._processes("preprocess", self.props.get_list("db.pre.process"))

    async def _processes(self, phase: str, declared: list) -> bool:
        if not declared:
            return True
        if self.run_ctx.processes is None:
            raise TaskFailed(
                f"{phase}: the bank declares processes ({', '.join(declared)}) but no processor runs them here"
            )
        return await self.run_ctx.processes.run_phase(self.phase_run(phase))

    def phase_run(self, phase: str):
        """What the process runner needs to run ``phase`` for this session."""
        from biomaj.process.runner import PhaseRun

        s = self.session
        release = s.get("release")

        async def persist() -> None:
            await self.bank.save_session(self.run_ctx.store, s, self.run_ctx.user)

        async def progress(update: dict) -> None:
            state = self._phase_progress.setdefault(phase, {})
            state.update(update)
            await self._status(phase, {"progress": dict(state)})

        return PhaseRun(
            phase=phase, bank=self.bank.name, props=self.props, session=s, job_id=self.run_ctx.job_id,
            cancelled=self.run_ctx.cancelled, data_dir=s["data_dir"], dir_version=s["dir_version"],
            offline_dir=str(self.bank.offline_dir), release=release, remote_release=s.get("remoterelease"),
            release_dir_name=self.bank.prod_dir(release) if release else None, log_file=s.get("log_file") or "",
            log=self.log, persist=persist, progress=progress,
            dependencies={name: str(dep.release_dir) for name, dep in self.dependencies.items() if dep.release_dir},
        )

    async def wf_release(self) -> bool:
        s = self.session
        ref = self.props.get("ref.release")
        if ref and self.dependencies:
            dep = self.dependencies.get(ref)
            if dep is None or not dep.release:
                raise TaskFailed(f"ref.release={ref}: no such dependency in this run (depends={self.props.get('depends')})")
            s["remoterelease"] = dep.release
            release = dep.release
            if any(d.updated for d in self.dependencies.values()):
                release = rel.next_free_release(self.bank.bank_dir, self.bank.name, self.bank.separator, release)
            s["release"] = release
            return self._same_as_previous_check()
        if s.get("release"):
            return self._same_as_previous_check()
        pattern = self.props.get("release.file")
        if not pattern:
            return True  # decided from the file dates in the download task
        config, entries, secrets = await release_files(self.props, self.pool)
        if not entries:
            raise TaskFailed(f"no remote file matches release.file={pattern}")
        regexp = self.props.get("release.regexp")
        if not regexp:
            release = rel.release_from_name(pattern, rel.most_recent(entries).name)
        else:
            if len(entries) > 1:
                raise TaskFailed(f"release.file={pattern} matches multiple files: {', '.join(e.path for e in entries[:5])}")
            text = await self._read_release_file(config, entries[0], secrets)
            release = rel.release_from_content(regexp, text, entries[0].name)
        release = rel.checked_release(release, "release.file")
        s["release"] = s["remoterelease"] = release
        await self._status("release", {"progress": release})
        if self.options.fromscratch:
            s["release"] = rel.next_free_release(self.bank.bank_dir, self.bank.name, self.bank.separator, release)
        return self._same_as_previous_check()

    def _same_as_previous_check(self) -> bool:
        s = self.session
        if (self.options.from_task != "download" and s.get("previous_release")
                and s["previous_release"] == s.get("remoterelease")
                and not self._compares_content()):
            self.no_need_to_update()
        return True

    def _compares_content(self) -> bool:
        """An unchanged release string is not enough: the download task compares the file list
        (release.control) or the providers' checksums (remote.checksums) with the last release."""
        return self.props.get_bool("release.control") or checksums.enabled(self.props)

    async def _read_release_file(self, config, entry, secrets) -> str:
        fetcher = Fetcher(self.pool, FetchSettings(check_archives=False))
        with tempfile.TemporaryDirectory(prefix="biomaj-release-") as tmp:
            if secrets:
                from biomaj.download.remote import from_message

                config = from_message(to_message(config), dict(secrets), self.props.get)
            try:
                result = await fetcher.fetch(config, entry, Path(tmp) / "release")
            except FetchFailed as exc:
                raise TaskFailed(f"release file {entry.path}: {exc}") from None
            return result.path.read_text(encoding="utf-8", errors="ignore")

    async def wf_download(self) -> bool:
        s = self.session
        protocol = (self.props.get("protocol") or "").lower()
        if protocol == "none":
            if not s.get("release"):
                raise TaskFailed("protocol=none needs a release from ref.release (or a plugin)")
            self.release_dir.mkdir(parents=True, exist_ok=True)
            return True
        wanted = await self.list_and_compare()
        if wanted is None:
            return True
        s["update"] = True
        s["stats"]["nb_downloaded_files"] = len(wanted)
        self.bank.write_file_list(s["id"], s["download_files"])
        await self._fetch(wanted)
        return True

    async def list_and_compare(self) -> list[Wanted] | None:
        """The new release's files, listed (with the providers' checksums) and compared: the
        release decided (from the file dates when nothing earlier did), ``download_files`` and the
        change report (``changes``, against the previous production release) in the session; None
        when there is no need to update. Nothing is written or downloaded: the dry run stops here."""
        s = self.session
        if checksums.enabled(self.props):
            self.manifests = checksums.Manifests(self.props, self.pool, self.log)
        seen = self.manifests.seen if self.manifests is not None else None
        wanted = await self._stat_incomplete(await wanted_files(self.props, self.pool, seen=seen))
        if self.manifests is not None:
            wanted = await self._attach_checksums(wanted)
        if not wanted and self.props.get("remote.list"):
            s["remoterelease"] = s.get("previous_release")
            self.no_need_to_update()
            return None
        s["download_files"] = [w.record() for w in wanted]
        if not s.get("release"):
            release = rel.checked_release(
                rel.release_from_dates((w.entry.mtime for w in wanted), self.props.get("release.format")), "file dates")
            s["release"] = s["remoterelease"] = release
            if (self.options.from_task != "download" and s.get("previous_release") == release
                    and self._content_identical()):
                self.no_need_to_update()
                return None
            if self.options.fromscratch or self.options.release is None:
                s["release"] = rel.next_free_release(self.bank.bank_dir, self.bank.name, self.bank.separator, release)
        elif self._compares_content() and s.get("previous_release") == s.get("remoterelease"):
            if self._content_identical():
                self.no_need_to_update()
                return None
            s["release"] = rel.next_free_release(self.bank.bank_dir, self.bank.name, self.bank.separator, s["release"])
        previous = changes.previous_release(self._production(), s["id"])
        s["changes"] = await asyncio.to_thread(changes.compare, self.bank, wanted, previous,
                                               dry_run=self.options.dry_run, digests=self._digests)
        self.log.info("Workflow:wf_download:release %s: %s", s["release"], change_report.summary(s["changes"]))
        return wanted

    async def transfer_plan(self, wanted: list[Wanted]) -> dict[str, dict[str, int]]:
        """What the download task would move for ``wanted`` (:func:`changes.transfer`), found as it
        finds it but without linking anything; --fromscratch would empty the offline directory."""
        plan = await asyncio.to_thread(self._fetching().plan, wanted, self._production(), self._fresh(), link=False)
        if self.options.fromscratch:
            present = set(plan.present)
            refetched = [w for w in wanted if w.save_as in present]
            return changes.transfer(plan.to_fetch + refetched, plan.reused, [], wanted)
        return changes.transfer(plan.to_fetch, plan.reused, plan.present, wanted)

    def _fetching(self) -> Fetching:
        return Fetching(self.bank, self.session, self.run_ctx, self.log, self._status, hardlink=self._hardlinks(),
                        digests=self._digests)

    async def _stat_incomplete(self, wanted: list[Wanted]) -> list[Wanted]:
        """Size and date of the files the listing gives none for, asked of the server before
        anything is compared (remote_files.stat_incomplete), with a progress event every
        PROGRESS_EVERY seconds of a long run."""
        if not any(incomplete(w) for w in wanted):
            return wanted
        previous = await asyncio.to_thread(reuse_source, self.bank, self._production(), fresh=self._fresh())
        progress = self._progress("download: size and date of {done}/{total} files", "stat")
        retry = retry_policy(self.props, wanted[0].config)  # the files of a bank share their options
        known = previous[1] if previous else {}
        offline, folders = self.bank.offline_dir, {}  # folders: safe_join's cache, each folder resolved once

        def worth(item: Wanted) -> bool:
            # A missing date is asked for (the release may come from the file dates); a missing exact
            # size only when there is a copy to compare with: a new file's download tells its size
            # (an Apache index's "64K" on a first update would cost a request per file for nothing).
            if item.entry.mtime is None or item.save_as in known:
                return True
            try:
                return safe_join(offline, item.save_as, folders).is_file()
            except BiomajError:
                return False

        wanted, report = await stat_incomplete(wanted, self.pool, known, retry=retry, progress=progress,
                                               cancelled=self.run_ctx.cancelled, worth=worth)
        self.check_cancel()
        self.log.info("Workflow:wf_download:the listing gives no exact size or no date for %d files: asked the "
                      "server (%d unchanged since the last release by their ETag, %d errors) in %.1fs",
                      report.asked, report.unchanged, report.failed, report.elapsed)
        if report.completed < report.asked:
            self.log.warning("Workflow:wf_download:%d of these files keep what the listing says (%s)",
                             report.asked - report.completed, report.error or "cancelled")
        return wanted

    def _progress(self, message: str, key: str) -> Callable[[int, int], Awaitable[None]]:
        """A ``(done, total)`` callback of a long step of the download task: a progress event
        (``message`` formatted with done and total; ``<key>_done``, ``<key>_total``) every
        PROGRESS_EVERY seconds, and at the end."""
        loop = asyncio.get_running_loop()
        last = loop.time()

        async def progress(done: int, total: int) -> None:
            nonlocal last
            if done < total and loop.time() - last < PROGRESS_EVERY:
                return
            last = loop.time()
            await self.run_ctx.event(self.bank.name, "running", step="download",
                                     message=message.format(done=done, total=total),
                                     **{f"{key}_done": done, f"{key}_total": total})

        return progress

    def _fresh(self) -> bool:
        """Nothing is reused from the last release (--fromscratch, --from-task download)."""
        return self.options.fromscratch or self.options.from_task == "download"

    async def _attach_checksums(self, wanted: list[Wanted]) -> list[Wanted]:
        """The providers' checksums given to the wanted files (checksums.Manifests), the
        manifests fetched first, with a progress event every PROGRESS_EVERY seconds."""
        progress = self._progress("download: checksum manifests {done}/{total}", "manifests")
        retry = retry_policy(self.props, wanted[0].config) if wanted else None
        offline = None if self.options.dry_run else self.bank.offline_dir  # a dry run writes nothing there
        wanted = await self.manifests.attach(wanted, retry=retry, offline=offline, progress=progress)
        self.check_cancel()
        return wanted

    def _content_identical(self) -> bool:
        """The remote files are those of the last production release: the same list
        (release.control) and the same providers' checksums (remote.checksums)."""
        if not self._compares_content():
            return True
        last = self._production()[-1] if self._production() else None
        previous = self.bank.read_file_list(last["session"]) if last else None
        current = self.session["download_files"]
        if self.props.get_bool("release.control") and not rel.file_list_identical(current, previous):
            return False
        changed = checksums.changed_under_same_release(current, previous) if self.manifests is not None else []
        if changed:
            self.session["changed_under_same_release"] = len(changed)
            self.log.warning("Workflow:wf_download:changed under the same release %s: %d file(s) have another checksum "
                             "in the provider's manifests than in the last release (%s%s): updating",
                             self.session.get("remoterelease"), len(changed), ", ".join(changed[:10]),
                             " ..." if len(changed) > 10 else "")
            return False
        return True

    async def _fetch(self, wanted: list[Wanted]) -> None:
        fetching = self._fetching()
        try:
            await fetching.fetch(wanted, self._production(), fresh=self._fresh())
        except TaskFailed as exc:
            report = self.manifests.report if self.manifests is not None else None
            message = report and checksums.mismatch_error(wanted, fetching.outcomes, report, str(exc))
            if message:
                raise TaskFailed(message) from None
            raise
        finally:
            self.downloaded, self.reused = fetching.downloaded, fetching.reused
        if self.manifests is not None:
            checked = checksums.verified(wanted, fetching.outcomes, fetching.reused)
            self.verified = checked.checked
            self.session["checksums"] = checked.session_doc(self.manifests.report)
            self.log.info("Workflow:wf_download:checked against the provider's checksums: %d of %d files (%d verified "
                          "as they streamed in, %d reused from the last release with the same checksum), %d already "
                          "in the offline directory", len(checked.checked), len(wanted), len(checked.streamed),
                          len(checked.reused), len(checked.present))

    def _hardlinks(self) -> bool:
        # biomaj hard-links by default (releases are immutable); use_hardlinks=0 copies, as BioMAJ 3 does
        return self.props.get_bool("use_hardlinks", default=True)

    async def wf_checksum(self) -> bool:
        files = self.downloaded + self.reused
        if not files:
            return True
        try:
            # files checked against a provider's checksum already are not read again
            checked = await asyncio.to_thread(check_sidecars, self.bank.offline_dir, files, self.verified)
        except VerificationFailed as exc:
            raise TaskFailed(str(exc)) from None
        if checked:
            self.log.info("Workflow:wf_checksum:%d files match their .md5/.sha256", len(checked))
        return True

    async def wf_uncompress(self) -> bool:
        no_extract = self.props.get("no.extract")
        if no_extract is not None and no_extract != "false":
            return True
        archives = [name for name in self.downloaded if archive_kind(name)]
        for name in archives:
            self.check_cancel()
            path = self.bank.offline_dir / name
            if not path.exists():
                self.log.warning("Workflow:wf_uncompress:%s is missing, skipped", name)
                continue
            try:
                extracted = await asyncio.to_thread(extract_archive, path)
            except ExtractionError as exc:
                raise TaskFailed(str(exc)) from None
            self.log.info("Workflow:wf_uncompress:%s: %d files", name, len(extracted))
        return True

    async def wf_copy(self) -> bool:
        if not self.downloaded and not self.reused:
            return True
        patterns = self.props.get_list("local.files")
        if not patterns:
            raise TaskFailed("local.files is not set: no file would be published")
        flat = self.release_dir / "flat"
        moved = await asyncio.to_thread(fs.move_matching, self.bank.offline_dir, flat, patterns)
        if not moved:
            raise TaskFailed(f"No file match in offline dir {self.bank.offline_dir} for local.files={' '.join(patterns)}")
        self.session["files"] = [record.to_dict() for record in moved]
        self.log.info("Workflow:wf_copy:%d files in %s", len(moved), flat)
        return True

    async def wf_copydepends(self) -> bool:
        for name, dep in self.dependencies.items():
            patterns = (self.props.get(f"{name}.files.move") or "").split()
            if not patterns or dep.release_dir is None:
                continue
            copied = await asyncio.to_thread(
                fs.copy_matching, dep.release_dir, self.release_dir / name, patterns,
                hardlink=self._hardlinks(), key=f"{name}.files.move")
            if not copied:
                raise TaskFailed(f"{name}.files.move={' '.join(patterns)}: no file of {dep.release_dir} matches")
        return True

    async def wf_postprocess(self) -> bool:
        blocks = self.props.get_list("BLOCKS")
        if not blocks:
            return True
        future = self.bank.bank_dir / "future_release"
        future.unlink(missing_ok=True)
        os.symlink(self.release_dir.name, future)
        try:
            return await self._processes("postprocess", blocks)
        finally:
            future.unlink(missing_ok=True)

    async def wf_metadata(self) -> bool:
        from biomaj.process.runner import merge_formats

        self.session["formats"] = merge_formats(self.session, self.props.get_list("db.formats"))
        return True

    async def wf_stats(self) -> bool:
        stats = self.props.get("data.stats")
        if not stats or stats == "0":
            self.session["fullsize"] = 0
        else:
            self.session["fullsize"] = await asyncio.to_thread(fs.tree_size, self.release_dir)
        return True

    async def wf_publish(self) -> bool:
        # The release is complete: BioMAJ 1's listings (old_biomaj_api's, written here so that
        # the provenance file lists them), then the provenance file; published only with it.
        await asyncio.to_thread(publishing.write_listings, self.release_dir, self.session.get("formats") or {})
        await self._write_provenance()
        if self.props.get_bool("auto_publish") or self.options.publish:
            await publishing.publish(self.run_ctx.store, self.bank, self.session)
            self.log.info("Workflow:wf_publish:%s published", self.session["release"])
        return True

    async def wf_old_biomaj_api(self) -> bool:
        return True  # the listings were written before the provenance file (wf_publish), which lists them

    async def wf_publish_s3(self) -> bool:
        """publish.s3: the release uploaded to the bucket, and the bucket's marker switched when the
        release is the one published here; before delete_old, so that the release the marker
        named until now is never removed while it still names it. An upload that fails does not
        stop the workflow: the release goes to production here (and stays published), the bucket's
        record says incomplete, and the update fails at its end (:meth:`run`); the next update
        finishes the upload (:meth:`_catch_up_bucket`)."""
        target = bucket_publish.target_of(self.bank)
        if target is None:
            return True
        doc = await self.run_ctx.store.get_bank(self.bank.name) or {}
        published = doc.get("current") == self.session["id"]
        entry = self.bank.production_entry(self.session)
        try:
            done = await bucket_publish.publish_release(self.run_ctx, self.bank, entry, target, switch=published,
                                                        log=self.log)
        except bucket_publish.PublishFailed as exc:
            release = self.session.get("release")
            self.bucket_failure = f"{exc}; release {release} {'stays published' if published else 'is complete'} here"
            self.log.error("Workflow:wf_publish_s3:%s", self.bucket_failure)
            self.session["buckets"] = [bucket_publish.incomplete(target, entry)]
            return True
        self.session["buckets"] = [done]
        if published:  # the releases the marker named before are current there no more
            await bucket_publish.record(self.run_ctx.store, self.bank.name, self.session["release"], done)
        return True

    async def run(self) -> bool:
        ok = await super().run()
        if ok and self.bucket_failure:
            return self._bucket_failed(self.bucket_failure)
        if ok and self.skip_all and not self.stopped:
            ok = await self._catch_up_bucket()
        return ok

    async def _catch_up_bucket(self) -> bool:
        """Nothing new upstream: a bucket lagging behind the published release is brought up to
        date (publish.s3 just set, an upload that failed or was killed), under the bank lock."""
        try:
            target = bucket_publish.target_of(self.bank)
            if target is not None:
                await bucket_publish.catch_up(self.run_ctx, self.bank, target, self.log)
        except Cancelled:
            self.cancelled, self.error = True, CANCELLED
            return False
        except BiomajError as exc:
            return self._bucket_failed(f"{exc}; the published release stays published here")
        return True

    def _bucket_failed(self, cause: str) -> bool:
        """The update fails for its bucket, the release here being done: the error says so."""
        self.failed_task = "publish:publish_s3"
        self.error = f"{cause}; rerun `biomaj ctl update {self.bank.name}` to finish it"
        self.session["error"] = {"task": self.failed_task, "message": self.error}
        self.log.error("Error during task %s: %s", self.failed_task, self.error)
        return False

    async def _write_provenance(self) -> None:
        """``ro-crate-metadata.json`` at the release's root; TaskFailed when a file cannot be read."""
        release_dir = self.release_dir
        if not release_dir.is_dir():
            raise TaskFailed(f"release directory {release_dir} does not exist: nothing to publish")
        dependencies = {name: dep.release_dir for name, dep in self.dependencies.items() if dep.release_dir}
        known = await asyncio.to_thread(provenance.known_for_update, self.bank, release_dir, self._production(),
                                        dependencies)
        try:
            recorded = await provenance.record_release(self.bank, self.session, release_dir, known,
                                                       progress=self._hash_progress, cancelled=self.run_ctx.cancelled)
        except OSError as exc:
            raise TaskFailed(f"provenance file of {release_dir.name} not written: {exc}") from None
        self.log.info("Workflow:wf_publish:%s lists %d files (%s)", crate.FILE_NAME, len(recorded.files),
                      human_size(sum(f.size for f in recorded.files.values())))

    async def _hash_progress(self, what: str, where: HashProgress) -> None:
        await self.run_ctx.event(self.bank.name, "running", step="publish", message=progress_message(what, where),
                                 **progress_fields(where))

    async def wf_clean_offline(self) -> bool:
        await asyncio.to_thread(fs.remove_tree, self.bank.offline_dir)
        return True

    async def wf_delete_old(self) -> bool:
        if self.options.from_task == "download":
            return True
        await publishing.delete_old(self.run_ctx, self.bank, self.session, self.log)
        return True

    async def wf_clean_old_sessions(self) -> bool:
        if self.props.get_bool("keep.old.sessions"):
            return True
        await publishing.clean_old_sessions(self.run_ctx.store, self.bank, self.session, self.log)
        return True

    async def wf_over(self) -> bool:
        await self.unlock()
        return True


def dependency_order(bank: Bank) -> list[str]:
    """Every bank ``bank`` depends on, a dependency's own dependencies first, each once."""
    from biomaj.config.properties import BankProperties

    order: list[str] = []

    def visit(props: BankProperties, trail: tuple[str, ...]) -> None:
        for name in props.get_list("depends"):
            if name in trail:
                raise BiomajError(f"bank {bank.name}: dependency cycle {' -> '.join(trail + (name,))}")
            visit(BankProperties.load(props.global_path, name), trail + (name,))
            if name not in order:
                order.append(name)

    visit(bank.props, (bank.name,))
    return order
