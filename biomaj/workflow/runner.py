"""Bank operations as the manager runs them: update (with session selection and resume),
remove, remove-all, remove-pending, repair, release check, verify, publish, freeze, unlock.

Each function takes a :class:`~biomaj.workflow.bank.RunContext` (store, downloads, identity,
cancel flag) and a bank name, checks rights, and returns a JSON-able outcome or raises a
BiomajError whose message tells the user what went wrong.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from biomaj.config.check import refuse_invalid
from biomaj.errors import BiomajError
from biomaj.notify import BankAction, notify_bank_action
from biomaj.notify.webhooks import payload

from . import bucket_publish, checksums
from . import files as fs
from . import changes, integrity, locks, publishing
from .bank import Bank, RunContext, find_production, find_session
from .engine import CANCELLED, Cancelled, TaskFailed
from .hashing import HashProgress, progress_fields, progress_message
from .options import VISIBILITIES, UpdateOptions
from .remote_files import wanted_files
from .session import (
    PROCESS_TASKS, REMOVE_FLOW, UPDATE_TASKS, Session, check_task_name, is_over, new_session, reset_from_task,
)
from .session_log import session_logger
from .update import UpdateDependency, UpdateWorkflow

log = logging.getLogger(__name__)


class UnknownRelease(BiomajError):
    """No production release (or session) has that name."""

    exit_code = 2


@dataclass
class Outcome:
    """What an operation did, for the job record, the CLI and the API."""

    ok: bool
    bank: str
    action: str
    updated: bool = False
    release: str | None = None
    session_id: float | None = None
    release_dir: Path | None = None
    error: str | None = None
    failed_task: str | None = None
    stopped: bool = False
    cancelled: bool = False
    log_file: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["release_dir"] = str(self.release_dir) if self.release_dir else None
        return doc


def load_bank(run: RunContext, name: str) -> Bank:
    return Bank.load(run.global_properties, name)


def refuse_bad_config(bank: Bank) -> None:
    """An update of a bank whose file has errors is refused, with every reason."""
    refuse_invalid(bank.props)


async def _owned_document(run: RunContext, bank: Bank) -> dict:
    doc = await bank.document(run.store, run.user)
    bank.check_owner(doc, run.user, run.admins)
    return doc


# --- update --------------------------------------------------------------------------------------


def select_session(bank: Bank, doc: dict, options: UpdateOptions) -> Session:
    """BioMAJ 3's load_session: resume the last unfinished update, or start a new one."""
    sessions = {s["id"]: s for s in doc.get("sessions") or [] if s.get("action") == "update"}
    if options.release:
        entry = find_production(doc, options.release)
        session = sessions.get(entry["session"]) if entry else None
        if session is None:
            session = next((s for s in sessions.values() if s.get("release") and options.release.endswith(s["release"])), None)
        if session is None:
            raise UnknownRelease(f"bank {bank.name}: release {options.release} does not exist")
        return session
    fresh = dict(data_dir=str(bank.data_dir), dir_version=bank.dir_version,
                 formats=bank.props.get_list("db.formats"), last_modified=bank.props.last_modified)
    last = sessions.get(doc.get("last_update_session"))
    if last is None or options.fromscratch:
        return new_session("update", **fresh)
    if is_over(last) and not options.from_task:
        return new_session("update", previous_release=last.get("remoterelease"), **fresh)
    return last


def _reset_processes(bank: Bank, session: Session, from_task: str, process: str | None) -> None:
    """--from-task T: the processes of every process task from T on run again; with --process P,
    those of T only from block, meta or process P on (in declaration order)."""
    from biomaj.process.runner import reset_phase

    if process is not None and from_task not in PROCESS_TASKS:
        raise BiomajError(f"--process needs --from-task preprocess or postprocess, not {from_task}")
    position = UPDATE_TASKS.index(from_task)
    for task in UPDATE_TASKS[position:]:
        if task in PROCESS_TASKS:
            reset_phase(bank.props, session, task, process if task == from_task else None)


def _refuse_if_busy(bank: Bank, run: RunContext, resume_job: bool) -> None:
    """Maintenance or a lock refuses the update before a session is created (the lock is
    taken for real in init; this only keeps refused attempts out of the bank's history)."""
    if locks.is_maintenance(bank.lock_dir):
        raise locks.InMaintenance("biomaj is in maintenance (`biomaj ctl maintenance off` ends it)")
    holder = locks.read_holder(bank.lock_dir, bank.name)
    if holder is None:
        return
    ours = locks.may_take_over(holder, run.job_id, run.lease_held)
    if not (resume_job and ours):
        raise locks.BankLocked(bank.name, holder, stale=ours or holder.is_dead())


def _dependency_updater(run: RunContext) -> UpdateDependency:
    """A dependency is a whole update of another bank, without its own dependencies (the
    workflow updates all of them, in order) and without mail, as in BioMAJ 3."""

    async def update_dependency(name: str) -> Outcome:
        return await update_bank(run, name, UpdateOptions(), depends=False, notify=False)

    return update_dependency


async def update_bank(run: RunContext, name: str, options: UpdateOptions, *, depends: bool = True,
                      resume_job: bool = False, notify: bool = True) -> Outcome:
    """Update bank ``name``: the whole workflow, resumable. Dependencies are updated first.
    ``notify``: mail the admins (mail.*) once recorded; not for a dependency, as in BioMAJ 3.
    With ``options.dry_run``, only what the update would do (:func:`dry_run`)."""
    if options.dry_run:
        return await dry_run(run, name, options)
    for option in ("from_task", "stop_before", "stop_after"):
        check_task_name("--" + option.replace("_", "-"), getattr(options, option), UPDATE_TASKS)
    bank = load_bank(run, name)
    refuse_bad_config(bank)
    doc = await _owned_document(run, bank)
    session = select_session(bank, doc, options)
    _refuse_if_busy(bank, run, resume_job)
    if options.from_task:
        reset_from_task(session, options.from_task)
        _reset_processes(bank, session, options.from_task, options.process)
    elif options.process:
        raise BiomajError("--process needs --from-task preprocess or postprocess")
    for directory in (bank.bank_dir, bank.offline_dir):
        directory.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with session_logger(bank, start) as (bank_log, log_file):
        session["log_file"] = str(log_file)
        bank_log.info("Workflow:update of %s (session %s%s)", name, session["id"],
                      ", resumed" if session["status"].get("init") else "")
        if notify:
            announce(run, bank, "update.started", bank_log, action="update", status="running", session=session,
                     started=start)
        workflow = UpdateWorkflow(bank, session, options, run, bank_log, resume_job=resume_job,
                                  update_dependency=_dependency_updater(run) if depends else None)
        try:
            ok = await workflow.run()
        finally:
            await workflow.unlock()
            await workflow.close()
        session["workflow_status"] = ok
        session["last_update_time"] = time.time()
        if ok:
            session["error"] = None
        await bank.save_session(run.store, session, run.user)
        await bank.record_outcome(run.store, session)
        await run.store.add_history({"bank": name, "error": not ok, "start": start, "end": time.time(),
                                     "action": "update", "updated": session.get("update")})
        release = session.get("release")
        outcome = Outcome(
            ok=ok, bank=name, action="update", updated=bool(session.get("update")) and is_over(session),
            release=release, session_id=session["id"],
            release_dir=bank.release_dir(release, session) if release else None,
            error=workflow.error if not ok else None, failed_task=workflow.failed_task,
            stopped=workflow.stopped, cancelled=workflow.cancelled, log_file=str(log_file),
        )
        bank_log.info("Workflow:%s", _summary(outcome))
        if notify:
            await notify_bank_action(bank.props, BankAction.from_session(name, "update", session, ok=ok), log=bank_log)
            await _announce_update(run, bank, outcome, session, start, bank_log)
    return outcome


#: The update options a dry run refuses: it tells what a new update would do.
_NOT_WITH_DRY_RUN = ("from_task", "process", "release", "stop_before", "stop_after")


async def dry_run(run: RunContext, name: str, options: UpdateOptions) -> Outcome:
    """``update --dry-run``: what an update of ``name`` would do now, found as the update finds it
    (the session it would run, release detection, the listing, the change report against the
    previous production release, the files it would fetch or reuse), without downloading,
    locking, publishing or recording anything. Dependencies and pre-processes are not run. The
    answer is in the outcome's ``details``: ``update`` (would it make a release), ``changes``
    and ``transfer`` (docs/changes.md)."""
    refused = ["--" + option.replace("_", "-") for option in _NOT_WITH_DRY_RUN if getattr(options, option)]
    if refused:
        raise BiomajError("--dry-run tells what a new update would do: it takes --fromscratch, "
                          f"not {', '.join(refused)}")
    bank = load_bank(run, name)
    refuse_bad_config(bank)
    if (bank.props.get("protocol") or "").lower() == "none":
        raise BiomajError(f"bank {name} downloads nothing (protocol=none): a dry run has no file to compare")
    if bank.props.get("ref.release"):
        raise BiomajError(f"bank {name} takes its release from its dependency {bank.props.get('ref.release')} "
                          "(ref.release), which a dry run does not update: update it without --dry-run")
    doc = await run.store.get_bank(name) or {}
    bank.check_owner(doc, run.user, run.admins)
    session = copy.deepcopy(select_session(bank, doc, options))  # what the update would run; never saved
    if session["status"].get("download") is True and not options.fromscratch:
        # an update resumes this session past its download: its report stands, nothing would move
        return _dry_run_outcome(name, session, True, session.get("changes"), changes.transfer([], [], [], []))
    workflow = UpdateWorkflow(bank, session, options, run, logging.getLogger(f"biomaj.bank.{name}"))
    workflow._doc = doc
    workflow.record = False
    try:
        if session["status"].get("release") is not True:
            await workflow.wf_release()
        wanted = None if workflow.skip_all else await workflow.list_and_compare()
        transfer = await workflow.transfer_plan(wanted) if wanted is not None else None
    except Cancelled:
        return Outcome(False, name, "update", error=CANCELLED, cancelled=True, details={"dry_run": True})
    except TaskFailed as exc:
        raise BiomajError(f"dry run of {name} failed: {exc}") from None
    finally:
        await workflow.close()
    return _dry_run_outcome(name, session, wanted is not None, session.get("changes"), transfer)


def _dry_run_outcome(name: str, session: Session, update: bool, report: dict | None,
                     transfer: dict | None) -> Outcome:
    return Outcome(True, name, "update", release=session.get("release"), details={
        "dry_run": True, "update": update, "remoterelease": session.get("remoterelease"),
        "changes": report if update else None, "transfer": transfer})


def announce(run: RunContext, bank: Bank, event: str, log: logging.Logger, **summary: Any) -> None:
    """Send ``event`` to the webhooks of the bank (config.yml's, and those its ``notify.webhooks``
    names), in the background: see :mod:`biomaj.notify.webhooks`. ``summary``: the fields of
    :func:`~biomaj.notify.webhooks.payload`."""
    if run.webhooks:
        run.webhooks.send(event, payload(event, bank.name, **summary), named=bank.props.get_list("notify.webhooks"),
                          log=log)


async def _announce_update(run: RunContext, bank: Bank, outcome: Outcome, session: Session, start: float,
                           log: logging.Logger) -> None:
    """update.failed, or release.published when the run made a release and published it."""
    if not run.webhooks:
        return
    summary = dict(action="update", session=session, started=start, ended=time.time(),
                   release_dir=str(outcome.release_dir) if outcome.release_dir else None)
    if not outcome.ok:
        announce(run, bank, "update.failed", log, status="cancelled" if outcome.cancelled else "failed",
                 error=outcome.error, **summary)
    elif outcome.updated and ((await run.store.get_bank(bank.name)) or {}).get("current") == session["id"]:
        announce(run, bank, "release.published", log, status="done", **summary)


def _summary(outcome: Outcome) -> str:
    if outcome.cancelled:
        return f"cancelled; the next update resumes it (release {outcome.release or 'unknown yet'})"
    if not outcome.ok:
        return f"failed at {outcome.failed_task}: {outcome.error}"
    if outcome.stopped:
        return f"stopped as asked; the next update resumes it (release {outcome.release})"
    if outcome.updated:
        return f"release {outcome.release} updated"
    return f"no need to update: release {outcome.release} is current"


# --- publish, freeze ---------------------------------------------------------------------------


def _production_entry(bank: Bank, doc: dict, release: str | None) -> dict:
    entry = find_production(doc, release)
    if entry is None:
        if release is None:
            raise UnknownRelease(f"bank {bank.name}: no production release to publish yet")
        raise UnknownRelease(f"bank {bank.name}: no production release named {release}")
    return entry


async def publish_bank(run: RunContext, name: str, release: str | None = None) -> Outcome:
    bank = load_bank(run, name)
    doc = await _owned_document(run, bank)
    entry = _production_entry(bank, doc, release)
    session = find_session(doc, entry["session"]) or {
        "id": entry["session"], "release": entry["release"], "remoterelease": entry.get("remoterelease"),
        "data_dir": entry["data_dir"], "dir_version": entry["dir_version"]}
    target = bucket_publish.target_of(bank)
    if target is None:
        await publishing.publish(run.store, bank, session)
    else:
        await _publish_with_bucket(run, bank, session, entry, target)
    announce(run, bank, "release.published", logging.getLogger(f"biomaj.bank.{name}"), action="publish",
             status="done", session=session, release=entry["release"], release_dir=str(Bank.production_dir(entry)))
    return Outcome(True, name, "publish", release=entry["release"], session_id=entry["session"])


async def _publish_with_bucket(run: RunContext, bank: Bank, session: Session, entry: dict,
                               target: bucket_publish.Target) -> None:
    """Publish here, then upload what the bucket lacks of the release and switch its marker,
    under the bank lock (an upload takes a while; an update must not delete the release meanwhile)."""
    holder = locks.LockHolder.here(run.job_id, run.user or "")
    locks.acquire(bank.lock_dir, bank.name, holder)
    bank_log = logging.getLogger(f"biomaj.bank.{bank.name}")
    try:
        await publishing.publish(run.store, bank, session)
        try:
            done = await bucket_publish.publish_release(run, bank, entry, target, switch=True, log=bank_log)
        except bucket_publish.PublishFailed as exc:
            raise BiomajError(f"{exc}; release {entry['release']} stays published here; rerun "
                              f"`biomaj ctl publish {bank.name} {entry['release']}` to finish it") from None
        await bucket_publish.record(run.store, bank.name, entry["release"], done)
    finally:
        locks.release(bank.lock_dir, bank.name, holder)


async def unpublish_bank(run: RunContext, name: str) -> Outcome:
    bank = load_bank(run, name)
    await _owned_document(run, bank)
    await publishing.unpublish(run.store, bank)
    await bucket_publish.unpublish(run.store, bank, logging.getLogger(f"biomaj.bank.{name}"))
    return Outcome(True, name, "unpublish")


async def freeze_release(run: RunContext, name: str, release: str, frozen: bool = True) -> Outcome:
    bank = load_bank(run, name)
    doc = await _owned_document(run, bank)
    entry = _production_entry(bank, doc, release)
    await run.store.update_production(name, entry["release"], {"freeze": frozen})
    return Outcome(True, name, "freeze" if frozen else "unfreeze", release=entry["release"])


async def set_owner(run: RunContext, name: str, owner: str) -> Outcome:
    """Give the bank to another user (its owner or an admin may)."""
    bank = load_bank(run, name)
    doc = await _owned_document(run, bank)
    properties = dict(doc.get("properties") or {}, owner=owner)
    await run.store.set_bank_fields(name, properties=properties)
    return Outcome(True, name, "owner", details={"owner": owner})


async def set_visibility(run: RunContext, name: str, visibility: str) -> Outcome:
    """Make the bank public or private (kept across updates, unlike BioMAJ 3: quirk 8.2)."""
    if visibility not in VISIBILITIES:
        raise BiomajError(f"visibility must be public or private, not {visibility!r}")
    bank = load_bank(run, name)
    doc = await _owned_document(run, bank)
    properties = dict(doc.get("properties") or {}, visibility=visibility)
    await run.store.set_bank_fields(name, properties=properties)
    return Outcome(True, name, "visibility", details={"visibility": visibility})


# --- removals ----------------------------------------------------------------------------------


async def remove_bank_release(run: RunContext, name: str, release: str) -> Outcome:
    """Remove one production release (never a frozen or the published one)."""
    bank = load_bank(run, name)
    doc = await _owned_document(run, bank)
    entry = _production_entry(bank, doc, release)
    if entry.get("freeze"):
        raise BiomajError(f"cannot remove release {entry['release']} of {name}: it is frozen (unfreeze it first)")
    if entry.get("session") == doc.get("current"):
        raise BiomajError(f"cannot remove release {entry['release']} of {name}: it is the published release, "
                          "unpublish it first")
    holder = locks.LockHolder.here(run.job_id, run.user or "")
    locks.acquire(bank.lock_dir, name, holder)
    start = time.time()
    session = new_session("remove", data_dir=entry["data_dir"], dir_version=entry["dir_version"], flow=REMOVE_FLOW)
    session.update(release=entry["release"], remoterelease=entry.get("remoterelease"),
                   update_session_id=entry["session"], remove=True)
    ok, error = True, None
    try:
        with session_logger(bank, start) as (bank_log, log_file):
            session["log_file"] = str(log_file)
            session["status"]["init"] = True
            try:
                await publishing.remove_release(run, bank, entry, bank_log, str(log_file), session)
                session["status"].update(removeprocess=True, remove_release=True, over=True)
            except BiomajError as exc:
                ok, error = False, str(exc)
                bank_log.error("remove %s failed: %s", entry["release"], exc)
    finally:
        locks.release(bank.lock_dir, name, holder)
    session["workflow_status"] = ok
    await bank.save_session(run.store, session, run.user)
    await run.store.add_history({"bank": name, "error": not ok, "start": start, "end": time.time(),
                                 "action": "remove", "updated": None})
    with session_logger(bank, start) as (bank_log, _):  # the same session log, appended to
        await notify_bank_action(bank.props, BankAction.from_session(name, "remove", session, ok=ok), log=bank_log)
        if ok:
            announce(run, bank, "release.removed", bank_log, action="remove", status="done", session=session,
                     started=start, ended=time.time())
    if not ok:
        raise BiomajError(f"remove {entry['release']} of {name} failed: {error}")
    return Outcome(True, name, "remove", release=entry["release"], log_file=session["log_file"])


async def remove_all(run: RunContext, name: str, force: bool = False) -> Outcome:
    """Delete every release, the offline directory, the logs and the bank's record.

    Only the owner or an admin may (BioMAJ 3 checks nothing: quirk 8.10, fixed), a locked bank
    is refused, and frozen releases block it unless ``force``.
    """
    bank = load_bank(run, name)
    doc = await run.store.get_bank(name)
    if doc is None:
        raise UnknownRelease(f"bank {name}: nothing to remove (no record)")
    bank.check_owner(doc, run.user, run.admins)
    frozen = [e["release"] for e in doc.get("production") or [] if e.get("freeze")]
    if frozen and not force:
        raise BiomajError(f"bank {name} has frozen releases ({', '.join(frozen)}): unfreeze them or use --force")
    holder = locks.LockHolder.here(run.job_id, run.user or "")
    locks.acquire(bank.lock_dir, name, holder)
    start = time.time()
    try:
        for entry in doc.get("production") or []:  # the bucket's copies first (and its marker)
            await bucket_publish.remove_release(bank, entry, logging.getLogger(f"biomaj.bank.{name}"))
        dirs = {Bank.production_dir(e).parent for e in doc.get("production") or []} | {bank.bank_dir}
        for directory in dirs:
            fs.remove_tree(directory)
        fs.remove_tree(bank.offline_dir)
        fs.remove_tree(bank.log_root / name)
        for session in doc.get("sessions") or []:
            bank.forget_file_list(session["id"])
        await run.store.delete_bank(name)
    finally:
        locks.release(bank.lock_dir, name, holder)
    await run.store.add_history({"bank": name, "error": False, "start": start, "end": time.time(),
                                 "action": "remove", "updated": None})
    releases = [e["release"] for e in doc.get("production") or []]
    await notify_bank_action(bank.props, BankAction(  # its logs are gone: no log in the mail (as BioMAJ 3)
        name, "remove-all", status=True, release="all", remove=True,
        message=f"Bank {name} removed with its releases: {', '.join(releases) or 'none'}"))
    announce(run, bank, "release.removed", logging.getLogger(f"biomaj.bank.{name}"), action="remove-all",
             status="done", release="all", started=start, ended=time.time())
    return Outcome(True, name, "remove-all", details={"releases": releases})


async def remove_pending(run: RunContext, name: str, release: str | None = None) -> Outcome:
    """Delete unfinished releases (or only ``release``): their directories and sessions."""
    bank = load_bank(run, name)
    doc = await _owned_document(run, bank)
    holder = locks.read_holder(bank.lock_dir, name)
    if holder is not None:
        raise locks.BankLocked(name, holder, stale=False)
    pending = [p for p in doc.get("pending") or [] if release is None or p.get("release") == release]
    if release is not None and not pending:
        raise UnknownRelease(f"bank {name}: no pending release named {release}")
    in_production = {e.get("release") for e in doc.get("production") or []}
    removed = []
    for item in pending:
        session = find_session(doc, item.get("id"))
        if item.get("release") not in in_production:
            fs.remove_tree(bank.release_dir(item["release"], session))
        await run.store.delete_session(name, item["id"])
        await run.store.remove_pending(name, session_id=item["id"])
        bank.forget_file_list(item["id"])
        if doc.get("last_update_session") == item["id"]:
            await run.store.set_bank_fields(name, last_update_session=None)
        removed.append(item.get("release"))
    return Outcome(True, name, "remove-pending", details={"removed": removed})


async def repair(run: RunContext, name: str, release: str | None = None) -> Outcome:
    """Make a release whole. A finished release with a provenance file gets its missing and
    changed files fetched again (:func:`.integrity.repair_release`); an unfinished session (a
    failed update an admin fixed by hand) is unlocked and recorded as finished and in production,
    as BioMAJ 3 does. The last update's release, or ``release``."""
    bank = load_bank(run, name)
    doc = await _owned_document(run, bank)
    if locks.is_maintenance(bank.lock_dir):
        raise locks.InMaintenance("biomaj is in maintenance: repair refused")
    locks.release(bank.lock_dir, name)
    start = time.time()
    sessions = {s["id"]: s for s in doc.get("sessions") or [] if s.get("action") == "update"}
    entry = find_production(doc, release) if release is not None else None
    if release is not None:
        session = sessions.get(entry["session"]) if entry else next(
            (s for s in sessions.values() if s.get("release") == release), None)
        if session is None and entry is None:
            raise UnknownRelease(f"bank {name}: release {release} does not exist")
    else:
        session = sessions.get(doc.get("last_update_session"))
        entry = find_production(doc, session.get("release")) if session and session.get("release") else None
    if entry is not None and (session is None or is_over(session)):
        fixed = await _repair_files(run, bank, entry, session, start)
        if fixed is not None:
            return fixed
    if session is None or not session.get("release"):
        return Outcome(True, name, "repair", details={"repaired": False})
    for task in session["status"]:
        if session["status"][task] is not True:
            session["status"][task] = None
    session["status"]["over"] = True
    session["update"] = True
    session["workflow_status"] = True
    session["error"] = None
    await bank.save_session(run.store, session, run.user)
    await bank.record_outcome(run.store, session)
    await run.store.add_history({"bank": name, "error": False, "start": start, "end": time.time(),
                                 "action": "repair", "updated": True})
    await notify_bank_action(bank.props, BankAction.from_session(
        name, "repair", session, message=f"Release {session['release']} of {name} repaired: recorded as finished"))
    return Outcome(True, name, "repair", release=session["release"], session_id=session["id"],
                   details={"repaired": True})


async def _repair_files(run: RunContext, bank: Bank, entry: dict, session: Session | None,
                        start: float) -> Outcome | None:
    """The files of production release ``entry`` fetched again where they differ from its
    provenance file, under the bank lock; None when it has none (nothing to repair against)."""
    name = bank.name
    holder = locks.LockHolder.here(run.job_id, run.user or "")
    locks.acquire(bank.lock_dir, name, holder)
    try:
        outcome = await integrity.repair_release(
            run, bank, entry, entry["session"], progress=_hash_events(run, name, "repair"),
            fetched=lambda done, total: run.event(name, "running", step="repair",
                                                  message=f"repair {entry['release']}: {done}/{total} files fetched again"))
    except Cancelled:
        return Outcome(False, name, "repair", release=entry["release"], cancelled=True, error=CANCELLED)
    finally:
        locks.release(bank.lock_dir, name, holder)
    if outcome is None:
        return None
    summary = outcome.summary()
    log.info("repair of %s: %s", name, summary)
    await run.store.add_history({"bank": name, "error": not outcome.repaired, "start": start, "end": time.time(),
                                 "action": "repair", "updated": bool(outcome.fetched)})
    recorded = session or {"id": entry["session"], "release": entry["release"], "update": True,
                           "remoterelease": entry.get("remoterelease"), "status": {"over": True}}
    await notify_bank_action(bank.props, BankAction.from_session(
        name, "repair", recorded, ok=outcome.repaired, message=f"Bank {name} repaired: {summary}"))
    return Outcome(outcome.repaired, name, "repair", release=entry["release"], session_id=entry["session"],
                   error=None if outcome.repaired else summary, details={**outcome.to_dict(), "summary": summary})


def _hash_events(run: RunContext, name: str, step: str):
    """Job events telling how far the reading of a release's files is."""

    async def tell(what: str, where: HashProgress) -> None:
        await run.event(name, "running", step=step, message=progress_message(what, where), **progress_fields(where))

    return tell


# --- verify ------------------------------------------------------------------------------------


def _releases_to_verify(bank: Bank, doc: dict, release: str | None, every: bool) -> list[dict]:
    production = doc.get("production") or []
    if not production:
        raise UnknownRelease(f"bank {bank.name}: no release to verify yet (update it first)")
    if every:
        return list(production)
    if release is not None:
        entry = find_production(doc, release)
        if entry is None:
            raise UnknownRelease(f"bank {bank.name}: no production release named {release} "
                                 f"(releases: {', '.join(e['release'] for e in production)})")
        return [entry]
    published = [e for e in production if e.get("session") == doc.get("current")]
    return published or [production[-1]]


async def verify(run: RunContext, name: str, release: str | None = None, *, every: bool = False,
                 record: bool = False) -> Outcome:
    """Read the files of a production release (the published one, ``release`` or, ``every``,
    all of them) and compare them with its provenance file; with ``record``, write that file
    from what the release holds now. Not ok when any file is missing, changed or extra."""
    bank = load_bank(run, name)
    doc = await run.store.get_bank(name)
    if doc is None:
        raise UnknownRelease(f"bank {name}: never updated, no release to verify")
    bank.check_owner(doc, run.user, run.admins)
    reports = []
    try:
        for entry in _releases_to_verify(bank, doc, release, every):
            await run.event(name, "running", step=f"verify {entry['release']}", message=f"verify {entry['release']}",
                            task_state="running")
            reports.append(await integrity.verify_release(
                bank, entry, find_session(doc, entry["session"]), record=record,
                progress=_hash_events(run, name, "verify"), cancelled=run.cancelled))
    except Cancelled:
        return Outcome(False, name, "verify", cancelled=True, error=CANCELLED)
    ok = all(report.ok for report in reports)
    return Outcome(ok, name, "verify", release=reports[0].release if len(reports) == 1 else None,
                   error=None if ok else "; ".join(r.summary() for r in reports if not r.ok),
                   details={"summary": "; ".join(r.summary() for r in reports),
                            "releases": [report.to_dict() for report in reports]})


async def unlock(run: RunContext, name: str, force: bool = False, lease_free: bool = False) -> Outcome:
    """Clear a bank lock left by a dead process (a live holder needs ``force``). ``lease_free``:
    the shared state (Redis) has no lease on the bank, so no live job of any host holds it; a
    lock file naming a job is then known stale even when its process ran on another host."""
    bank = load_bank(run, name)
    await _owned_document(run, bank)
    holder = locks.read_holder(bank.lock_dir, name)
    if holder is None:
        return Outcome(True, name, "unlock", details={"was_locked": False})
    dead = holder.is_dead() or (lease_free and bool(holder.job))
    if not dead and not force:
        if holder.known:
            raise locks.BankLocked(name, holder, stale=False)
        raise BiomajError(f"bank {name}: the lock holder is unknown ({holder.describe()}); "
                          "check that no update runs, then unlock with --force")
    await close_dead_job(run.store, holder, dead=dead)
    locks.release(bank.lock_dir, name)
    return Outcome(True, name, "unlock", details={"was_locked": True, "holder": holder.describe()})


async def close_dead_job(store, holder: locks.LockHolder, dead: bool | None = None) -> bool:
    """Mark failed the job that ``holder`` ran when its process died (killed, crashed) and the
    store still says it runs: else no job of that kind can be queued on the bank again.
    ``dead``: already known (else the holder's process is checked, on this host only)."""
    from biomaj.storage.base import JOB_FAILED, JOB_RUNNING, StoreError

    if not holder.job or not (holder.is_dead() if dead is None else dead):
        return False
    job = await store.get_job(holder.job)
    if job is None or job.get("state") != JOB_RUNNING:
        return False
    if (job.get("started") or 0) > holder.since:
        return False  # requeued and claimed again since: that run takes the lock over (resume_job)
    try:
        await store.finish_job(holder.job, JOB_FAILED, error=f"its process died: {holder.describe()}")
    except StoreError:  # finished or requeued meanwhile
        return False
    return True


async def release_check(run: RunContext, name: str) -> Outcome:
    """The remote release, found as an update would, without downloading, locking or
    recording anything (BioMAJ 3's ReleaseCheckWorkflow); fails when the bank is locked.

    A bank with checksum manifests (remote.checksums) whose remote release is the one in
    production has its manifests read: a checksum that changed under the same release (a fix
    re-published under the same name) makes the release new, and the update takes it."""
    bank = load_bank(run, name)
    refuse_bad_config(bank)
    holder = locks.read_holder(bank.lock_dir, name)
    if holder is not None:
        raise locks.BankLocked(name, holder, stale=False)
    doc = await run.store.get_bank(name) or {}
    session = new_session("update", data_dir=str(bank.data_dir), dir_version=bank.dir_version)
    bank_log = logging.getLogger(f"biomaj.bank.{name}")
    workflow = UpdateWorkflow(bank, session, UpdateOptions(), run, bank_log)
    workflow._doc = doc
    workflow.record = False
    production = doc.get("production") or []
    latest = production[-1].get("remoterelease") if production else None
    changed: list[str] = []
    manifests = checksums.Manifests(bank.props, workflow.pool, bank_log) if checksums.enabled(bank.props) else None
    seen = manifests.seen if manifests is not None else None
    wanted = None
    try:
        await workflow.wf_release()
        if not session.get("remoterelease"):
            from .release import checked_release, release_from_dates

            wanted = await wanted_files(bank.props, workflow.pool, seen=seen)
            session["remoterelease"] = checked_release(
                release_from_dates((w.entry.mtime for w in wanted), bank.props.get("release.format")), "file dates")
        if manifests is not None and latest is not None and session["remoterelease"] == latest:
            if wanted is None:
                wanted = await wanted_files(bank.props, workflow.pool, seen=seen)
            previous = bank.read_file_list(production[-1].get("session"))
            changed = await checksums.changed_remote_files(manifests, wanted, previous, bank.props)
    except TaskFailed as exc:
        raise BiomajError(f"release check of {name} failed: {exc}") from None
    finally:
        await workflow.close()
    details = {"remoterelease": session["remoterelease"], "production": latest,
               "new": session["remoterelease"] != latest or bool(changed)}
    if changed:
        details["changed_under_same_release"] = {"count": len(changed), "files": changed[:checksums.SHOWN_CHANGES]}
    return Outcome(True, name, "release-check", release=session["remoterelease"], details=details)
