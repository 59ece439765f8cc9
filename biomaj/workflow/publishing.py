"""Making releases visible and making them go: publish, unpublish, retention, session purge.

``current`` is a relative symlink switched in one atomic rename, and ``RELEASE.txt`` is written
the same way, so a reader sees either the old release or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from biomaj.errors import BiomajError
from biomaj.storage.base import Store

from . import bucket_publish
from . import files as fs
from .bank import Bank, RunContext
from .session import Session

log = logging.getLogger(__name__)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def switch_current(bank_dir: Path, prod_dir: str) -> None:
    """Point ``<bank_dir>/current`` at ``prod_dir`` (relative) in one rename."""
    tmp = bank_dir / f".current.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(prod_dir, tmp)
    os.replace(tmp, bank_dir / "current")


async def publish(store: Store, bank: Bank, session: Session) -> None:
    """Publish the session's release: ``current``, ``RELEASE.txt``, the bank's ``current``.
    BiomajError when a file of the release is missing (its download failed): such a release is
    never published, whatever the path (the update's publish task, ``ctl publish`` after a repair)."""
    release = session["release"]
    bank_dir = Path(session["data_dir"]) / session["dir_version"]
    prod_dir = bank.prod_dir(release)
    missing = session.get("missing") or {}
    if missing.get("count"):
        names = ", ".join(missing.get("files", [])[:5])
        raise BiomajError(
            f"bank {bank.name}: release {release} is not published: {missing['count']} of its files failed to "
            f"download ({names}{', ...' if missing['count'] > 5 else ''}); `biomaj ctl update {bank.name} "
            f"--release {release} --from-task download` fetches them")
    if not (bank_dir / prod_dir).is_dir():
        raise BiomajError(f"bank {bank.name}: release directory {bank_dir / prod_dir} does not exist")
    switch_current(bank_dir, prod_dir)
    _atomic_write(bank_dir / "RELEASE.txt",
                  f"Bank: {bank.name}\nRelease: {release}\nRemote release:{session.get('remoterelease')}\n")
    await store.set_bank_fields(bank.name, current=session["id"])


async def unpublish(store: Store, bank: Bank) -> None:
    """Remove ``current`` and ``RELEASE.txt``; nothing is published any more."""
    (bank.bank_dir / "current").unlink(missing_ok=True)
    (bank.bank_dir / "RELEASE.txt").unlink(missing_ok=True)
    await store.set_bank_fields(bank.name, current=None)


def write_listings(release_dir: Path, formats: dict) -> None:
    """BioMAJ 1 compatible ``listingv1.<format>``: a JSON tree of ``<release>/<format>/``
    (for ``blast``, only ``*.nal``/``*.pal`` aliases, without extension)."""
    for name in formats:
        root = release_dir / name
        if not root.is_dir():
            continue
        tree = _listing(root, blast=name == "blast")
        (release_dir / f"listingv1.{name.replace('/', '_')}").write_text(json.dumps(tree))


def _listing(root: Path, blast: bool) -> dict:
    files, sections = [], []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            sections.append(_listing(entry, blast))
        elif blast:
            if entry.suffix in (".nal", ".pal"):
                files.append(str(entry.with_suffix("")))
        else:
            files.append(str(entry))
    return {"name": root.name, "sections": sections, "files": files}


async def remove_release(run: RunContext, bank: Bank, entry: dict, log: logging.Logger, log_file: str = "",
                         session: Session | None = None) -> None:
    """Remove one production release: remove processes, its directory, its session and cache.

    The caller holds the bank lock and checked that it is neither frozen nor published.
    ``session`` (a remove session) keeps the remove processes' statuses.
    """
    if bank.props.get_list("db.remove.process"):
        if run.processes is None:
            raise BiomajError(
                f"release {entry['release']}: the bank declares remove processes "
                f"({bank.props.get('db.remove.process')}) but no processor runs them here"
            )
        from biomaj.process.runner import PhaseRun

        phase = PhaseRun(
            phase="removeprocess", bank=bank.name, props=bank.props,
            session=session if session is not None else {"id": entry["session"]}, job_id=run.job_id,
            cancelled=run.cancelled, data_dir=entry["data_dir"], dir_version=entry["dir_version"],
            offline_dir=str(bank.offline_dir), release=entry["release"], remote_release=entry.get("remoterelease"),
            release_dir_name=entry["prod_dir"], log_file=log_file or str(bank.log_root / bank.name / "remove.log"),
            log=log,
        )
        if not await run.processes.run_phase(phase):
            from biomaj.workflow.engine import Cancelled

            raise Cancelled("cancelled")
    # its objects in the bucket first: a failure there leaves the release whole, to remove again
    await bucket_publish.remove_release(bank, entry, log)
    path = Bank.production_dir(entry)
    fs.remove_tree(path)
    keep = bank.props.get_bool("keep.old.sessions")
    await run.store.delete_session(bank.name, entry["session"], keep=keep)
    await run.store.remove_production(bank.name, entry["release"])
    bank.forget_file_list(entry["session"])
    log.info("removed release %s (%s)", entry["release"], path)


async def delete_old(run: RunContext, bank: Bank, session: Session, log: logging.Logger) -> list[str]:
    """keep.old.version: remove the oldest production releases beyond the number to keep,
    never this run's, a frozen or the published one, nor the one a bucket's marker still names
    (publish.s3, when its upload failed). Returns the releases removed."""
    keep = bank.props.get_int("keep.old.version", 1)
    doc = await run.store.get_bank(bank.name) or {}
    production = [e for e in doc.get("production") or [] if e.get("session") != session["id"]]
    removed = []
    excess = len(production) - keep
    for entry in production:
        if excess <= 0:
            break
        if (entry.get("release") == session.get("release") or entry.get("freeze")
                or entry.get("session") == doc.get("current") or bucket_publish.names_it(entry)):
            continue
        try:
            await remove_release(run, bank, entry, log, session.get("log_file") or "")
        except Exception as exc:  # noqa: BLE001 - an old release that stays is not a failed update
            log.error("keep.old.version: could not remove release %s: %s", entry.get("release"), exc)
            continue
        removed.append(entry["release"])
        excess -= 1
    return removed


async def clean_old_sessions(store: Store, bank: Bank, session: Session, log: logging.Logger) -> int:
    """Drop the sessions of failed or stopped runs (not in production, not this one) with their
    pending entries and release directories (BioMAJ 3's clean_old_sessions)."""
    doc = await store.get_bank(bank.name) or {}
    in_production = {e.get("session") for e in doc.get("production") or []}
    releases = {e.get("release") for e in doc.get("production") or []}
    keep = {session["id"], doc.get("current"), doc.get("last_remove_session")} | in_production
    purged = 0
    for old in doc.get("sessions") or []:
        if old.get("id") in keep:
            continue
        release = old.get("release")
        if old.get("action") == "update" and release and release not in releases and release != session.get("release"):
            fs.remove_tree(bank.release_dir(release, old))
        await store.delete_session(bank.name, old["id"])
        await store.remove_pending(bank.name, session_id=old["id"])
        bank.forget_file_list(old["id"])
        purged += 1
    if purged:
        log.info("Workflow:wf_clean_old_sessions:%d old sessions removed", purged)
    return purged
