"""A bank as the workflows see it: its merged properties, its directories, its stored document,
rights, and the bookkeeping done when a session is saved (BioMAJ 3's ``Bank.save_session``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol, Sequence

from biomaj.bus.messages import JobEvent, Message
from biomaj.config.properties import BankProperties
from biomaj.download.engine import ClientPool
from biomaj.errors import BiomajError, ConfigError
from biomaj.notify.webhooks import Webhooks
from biomaj.storage.base import Doc, Store

from .session import Session, is_over

log = logging.getLogger(__name__)

#: (step, state, message, progress) -> None: job events of the running job
EventSink = Callable[[JobEvent], Awaitable[None]]


class WorkDispatcher(Protocol):
    """What a workflow needs from the dispatcher of its work messages (the manager passes a
    :class:`biomaj.runtime.dispatch.Downloads`): publish every request, give each result to
    ``on_result`` as it comes, return them all; once ``cancelled`` (the job's cancel) or ``stop``
    (these requests only, the job goes on) is set, every request still gets a (failed) result."""

    async def run_all(self, requests: Sequence[Message], on_result: Callable[[Any], Awaitable[None]],
                      cancelled: asyncio.Event, stop: asyncio.Event | None = None) -> list[Any]: ...


class NotAuthorized(BiomajError):
    """The user is neither the bank's owner nor an admin."""


@dataclass
class RunContext:
    """What a running job gives its workflows: the store, downloads, events, identity, cancel."""

    store: Store
    global_properties: Path
    job_id: str
    user: str | None
    admins: frozenset[str] = frozenset()
    downloads: WorkDispatcher | None = None
    processes: Any = None  # runs pre/post/remove processes: a biomaj.process.runner.ProcessRunner
    emit: EventSink | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    kind: str = "update"
    #: The manager holds the bank's lease in the shared state: no live process works on the bank,
    #: so a lock file left by this same job (its earlier, dead run) may be taken over.
    lease_held: bool = False
    bandwidth: str | None = None  # limits.bandwidth of the download nodes (config.yml), for the progress
    #: The manager's pool for listings and release files, within the node's host budget
    #: (download/limits.py LISTING_SHARE of it); None: the workflow opens a local one of its own.
    listing: ClientPool | None = None
    #: The webhooks the bank's events go to (config.yml notify.webhooks); None: none.
    webhooks: Webhooks | None = None

    async def event(self, bank: str, state: str, *, step: str | None = None, message: str = "", **progress: Any) -> None:
        if self.emit is not None:
            await self.emit(JobEvent(job_id=self.job_id, bank=bank, kind=self.kind, state=state, step=step,
                                     message=message, progress=progress))


class Bank:
    """One bank: ``props`` (global + bank file) and the paths derived from them."""

    def __init__(self, props: BankProperties):
        self.props = props
        self.name = props.name
        missing = [k for k in ("data.dir", "dir.version", "offline.dir.name") if not props.get(k)]
        if missing:
            raise ConfigError(f"bank {self.name}: {', '.join(missing)} not set")
        self.data_dir = Path(props.get("data.dir"))
        self.dir_version = props.get("dir.version").strip("/")
        self.offline_dir = self.data_dir / props.get("offline.dir.name").strip("/")
        self.lock_dir = Path(props.get("lock.dir") or self.data_dir)
        self.cache_dir = Path(props.get("cache.dir") or self.data_dir / "cache")
        self.log_root = Path(props.get("log.dir") or self.data_dir / "log")
        self.separator = props.get("release.separator") or "_"

    @classmethod
    def load(cls, global_properties: Path, name: str) -> Bank:
        return cls(BankProperties.load(global_properties, name))

    # --- paths -------------------------------------------------------------------------------

    @property
    def bank_dir(self) -> Path:
        return self.data_dir / self.dir_version

    def prod_dir(self, release: str) -> str:
        return f"{self.name}{self.separator}{release}"

    def release_dir(self, release: str, session: Session | None = None) -> Path:
        """The release directory, from the session's stored data.dir/dir.version when given."""
        if session and session.get("data_dir") and session.get("dir_version"):
            return Path(session["data_dir"]) / session["dir_version"] / self.prod_dir(release)
        return self.bank_dir / self.prod_dir(release)

    @staticmethod
    def production_dir(entry: Doc) -> Path:
        """The directory of a production entry, from its own stored values (BioMAJ 3 quirk 8.4 fixed)."""
        return Path(entry["data_dir"]) / entry["dir_version"] / entry["prod_dir"]

    def cache_file(self, session_id: float) -> Path:
        return self.cache_dir / f"files_{session_id}"

    # --- the stored document -----------------------------------------------------------------

    def properties_doc(self, stored: Doc | None, owner: str | None) -> Doc:
        """BioMAJ 3's ``properties``, recomputed from the config at every save, except that the
        owner and the visibility already stored are kept (BioMAJ 3 resets the visibility to
        ``visibility.default`` at every run: quirk 8.2, fixed)."""
        stored = stored or {}
        return {
            "visibility": stored.get("visibility") or self.props.get("visibility.default") or "public",
            "type": self.props.get_list("db.type"),
            "tags": stored.get("tags") or [],
            "owner": stored.get("owner") or owner,
            "desc": (self.props.get("db.fullname") or "").strip('"'),
        }

    async def document(self, store: Store, user: str | None) -> Doc:
        """The bank document, created on first access with ``user`` as owner."""
        return await store.ensure_bank(self.name, self.properties_doc(None, user))

    def check_owner(self, doc: Doc, user: str | None, admins: frozenset[str]) -> None:
        """Raise NotAuthorized unless ``user`` owns the bank or is an admin."""
        owner = (doc.get("properties") or {}).get("owner")
        if user is not None and (user in admins or user in self.admins() or owner in (None, user)):
            return
        raise NotAuthorized(f"not authorized: bank {self.name} is owned by {owner}")

    def admins(self) -> frozenset[str]:
        return frozenset(self.props.get_list("admin"))

    # --- cache of remote file lists ----------------------------------------------------------

    def write_file_list(self, session_id: float, files: list[dict]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_file(session_id)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(files))
        tmp.replace(path)

    def read_file_list(self, session_id: float | None) -> list[dict] | None:
        if session_id is None:
            return None
        try:
            return json.loads(self.cache_file(session_id).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def forget_file_list(self, session_id: float) -> None:
        self.cache_file(session_id).unlink(missing_ok=True)
        (self.cache_dir / f"local_files_{session_id}").unlink(missing_ok=True)

    # --- save_session ------------------------------------------------------------------------

    async def save_session(self, store: Store, session: Session, user: str | None) -> None:
        """Persist the session and the bank fields that go with it (last_update_session ...)."""
        # the summary (no sessions): after each task of a run, and a big bank's sessions hold
        # the file lists of its releases (megabytes of JSON)
        summaries = await store.list_banks([self.name])
        doc = summaries[0] if summaries else None
        fields: dict[str, Any] = {"properties": self.properties_doc(doc and doc.get("properties"), user)}
        fields["last_update_session" if session["action"] == "update" else "last_remove_session"] = session["id"]
        # As BioMAJ 3: the file lists stay out of the stored session (the remote one is in the
        # cache file, write_file_list). A bank of 200,000 files would otherwise store tens of
        # megabytes per session (past MongoDB's 16 MB document limit) and write them after each task.
        await store.save_session(self.name, {**session, "files": [], "download_files": []}, **fields)

    async def record_outcome(self, store: Store, session: Session) -> None:
        """After an update: a finished update that produced a release goes to production (and
        leaves pending); an unfinished one with a release is pending."""
        release = session.get("release")
        if not release or session["action"] != "update":
            return
        if not is_over(session):
            await store.add_pending(self.name, release, session["id"])
            return
        if session.get("update"):
            await store.add_production(self.name, self.production_entry(session))
            await store.remove_pending(self.name, release=release)

    def production_entry(self, session: Session) -> Doc:
        formats = sorted(set(session.get("formats") or {}) | set(self.props.get_list("db.formats")))
        types = set(self.props.get_list("db.type"))
        for entries in (session.get("formats") or {}).values():
            for item in entries:
                types.update(item.get("types") or [])
        entry = {
            "release": session["release"],
            "remoterelease": session.get("remoterelease"),
            "session": session["id"],
            "formats": formats,
            "types": sorted(types),
            "size": session.get("fullsize") or 0,
            "data_dir": session["data_dir"],
            "dir_version": session["dir_version"],
            "prod_dir": self.prod_dir(session["release"]),
            "log_file": session.get("log_file"),
            "freeze": False,
        }
        if session.get("buckets"):
            entry["buckets"] = session["buckets"]  # where the release is published besides (publish.s3)
        return entry


def find_production(doc: Doc, release: str | None) -> Doc | None:
    """The production entry named by its release or its directory name; the last one when
    ``release`` is None."""
    production = doc.get("production") or []
    if release is None:
        return production[-1] if production else None
    for entry in production:
        if release in (entry.get("release"), entry.get("prod_dir")):
            return entry
    return None


def find_session(doc: Doc, session_id: float | None) -> Doc | None:
    for session in doc.get("sessions") or []:
        if session_id is not None and session.get("id") == session_id:
            return session
    return None
