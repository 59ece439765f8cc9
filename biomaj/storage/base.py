"""The store contract: banks, sessions, history, users, schedules and the durable job queue.

Every backend (SQLite, MongoDB) implements :class:`Store` and passes the same suite,
``tests/storage/test_store_conformance.py``. The interface is about *documents* (plain dicts
that JSON can encode) laid out as in BioMAJ 3's MongoDB collections, so that an existing
BioMAJ 3 database can be served by the MongoDB backend without conversion. The argument checks
and document builders here (``check_*``, ``new_bank_document``, ``new_job_document``) are shared by
both backends, so that they refuse and create the same documents.

Rules every backend keeps:

* Each method is one atomic operation. Two stores on the same database (two processes, or two
  managers) never lose each other's writes: there is no read-modify-write outside a transaction
  (SQLite) or a single-document update (MongoDB).
* Documents go in and come out as plain ``dict``/``list``/``str``/``int``/``float``/``bool``/
  ``None``; keys are strings. Backend-private keys (MongoDB's ``_id``) never come out.
* A mutating method on a bank, user, schedule or job that does not exist raises :class:`NotFound`.
  Removing an element that is already gone is not an error: the method returns ``False`` / ``0``.
"""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from biomaj.errors import BiomajError

Doc = dict[str, Any]

# Top-level bank fields that set_bank_fields() accepts; the rest have their own methods.
BANK_FIELDS = frozenset({"current", "properties", "last_update_session", "last_remove_session"})

JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
ACTIVE_JOB_STATES = (JOB_QUEUED, JOB_RUNNING)
FINAL_JOB_STATES = (JOB_DONE, JOB_FAILED, JOB_CANCELLED)
JOB_STATES = ACTIVE_JOB_STATES + FINAL_JOB_STATES


class StoreError(BiomajError):
    """Base class of store errors."""


class NotFound(StoreError):
    """The bank, session, user, schedule or job does not exist."""


class Conflict(StoreError):
    """The write would break a uniqueness rule (user name, API key, job dedup key, bank name)."""


class DuplicateJob(Conflict):
    """add_job() refused a job because an active job has the same dedup key.

    ``job_id`` is the id of that queued or running job, so a caller that wants idempotence
    (``biomaj ctl update alu`` twice) can report or follow it instead.
    """

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class IncompatibleSchema(StoreError):
    """The database was written by a newer biomaj, or is not a biomaj database."""

    exit_code = 2


def new_bank_document(name: str, properties: Mapping[str, Any]) -> Doc:
    """The document BioMAJ 3's ``Bank.__init__`` creates on first access, with every key present."""
    return {
        "name": name,
        "current": None,
        "sessions": [],
        "production": [],
        "pending": [],
        "properties": dict(properties),
        "status": {},
        "last_update_session": None,
        "last_remove_session": None,
    }


def new_job_id() -> str:
    """A random job id (32 hex digits)."""
    return uuid.uuid4().hex


def now() -> float:
    """Epoch seconds, the time unit of every stored timestamp (as in BioMAJ 3)."""
    return time.time()


def check_bank_fields(fields: Mapping[str, Any]) -> None:
    """Raise ValueError when ``fields`` names something set_bank_fields() must not set."""
    unknown = set(fields) - BANK_FIELDS
    if unknown:
        raise ValueError(
            f"set_bank_fields: unknown field(s) {sorted(unknown)}; allowed: {sorted(BANK_FIELDS)}"
        )


def check_session_id(session: Mapping[str, Any]) -> float:
    """Return the session's ``id`` as a float, or raise ValueError."""
    sid = session.get("id")
    if isinstance(sid, bool) or not isinstance(sid, (int, float)):
        raise ValueError(f"session: 'id' must be a number (time.time()), got {sid!r}")
    return float(sid)


def check_limit(limit: int | None) -> None:
    """Raise ValueError unless ``limit`` is None (no limit) or a positive int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def check_job_state(state: str, allowed: Iterable[str] = JOB_STATES) -> None:
    """Raise ValueError for a job state outside ``allowed``."""
    allowed = tuple(allowed)
    if state not in allowed:
        raise ValueError(f"job state {state!r}: expected one of {', '.join(allowed)}")


def check_release(entry: Mapping[str, Any]) -> str:
    """Return a production entry's ``release``, or raise ValueError unless a non-empty string."""
    release = entry.get("release")
    if not isinstance(release, str) or not release:
        raise ValueError(f"production entry: 'release' must be a non-empty string: {release!r}")
    return release


def check_user_id(user: Mapping[str, Any]) -> str:
    """Return the user document's ``id`` (the user name), or raise ValueError."""
    name = user.get("id")
    if not isinstance(name, str) or not name:
        raise ValueError(f"user: 'id' (the user name) must be a non-empty string: {name!r}")
    return name


def check_unchanged(what: str, name: str, key: str, fields: Mapping[str, Any]) -> None:
    """Raise ValueError when an update's ``fields`` would change the ``key`` that names the
    document (a user's ``id``, a schedule's ``name``)."""
    if fields.get(key, name) != name:
        raise ValueError(f"{what} {name}: '{key}' cannot be changed")


def check_claim_fields(name: str, fields: Mapping[str, Any] | None) -> Doc:
    """claim_schedule_run's ``fields`` as a new dict; ValueError if they set ``name`` or
    ``last_run``."""
    fields = dict(fields or {})
    if "name" in fields or "last_run" in fields:
        raise ValueError(f"schedule {name}: fields cannot set 'name' or 'last_run'")
    return fields


def check_job_states(state: str | Iterable[str]) -> list[str]:
    """list_jobs' ``state`` filter as a list of states; ValueError for an unknown one."""
    states = [state] if isinstance(state, str) else list(state)
    for s in states:
        check_job_state(s)
    return states


def new_job_document(doc: Mapping[str, Any], dedup_key: str | None) -> Doc:
    """The document add_job() queues: ``doc``'s fields over the defaults, then the queue's own
    fields (state queued, no worker, no attempts, created now). ValueError without a ``kind``."""
    if not isinstance(doc.get("kind"), str) or not doc["kind"]:
        raise ValueError(f"job: 'kind' must be a non-empty string: {doc.get('kind')!r}")
    return {
        "bank": None, "options": {}, "user": None, "result": None, "error": None,
        **doc,
        "id": doc.get("id") or new_job_id(), "state": JOB_QUEUED, "dedup_key": dedup_key,
        "worker": None, "attempts": 0, "cancel_requested": False,
        "created": now(), "started": None, "finished": None,
    }


class Store(abc.ABC):
    """Persistent state of a biomaj installation; see the module docstring for the rules.

    Use it as ``async with store: ...`` or call :meth:`open` / :meth:`close`.
    """

    # ---- lifecycle -------------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema. Calling it twice is harmless."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Calling it twice is harmless."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abc.abstractmethod
    def describe(self) -> str:
        """One line naming the backend and location, without secrets (for ``/status``)."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The schema version of the open database."""

    # ---- banks -----------------------------------------------------------------------------
    # Document: {name, current, sessions[], production[], pending[], properties{visibility, type,
    # tags, owner, desc}, status{}, last_update_session, last_remove_session}; every key present.
    # sessions are ordered by id; production and pending in insertion order (a replaced
    # production entry moves to the end, as BioMAJ 3's $pull + $push does).

    @abc.abstractmethod
    async def get_bank(self, name: str) -> Doc | None:
        """The full bank document, or None."""

    @abc.abstractmethod
    async def ensure_bank(self, name: str, properties: Mapping[str, Any]) -> Doc:
        """Return the bank document, creating it with ``properties`` if absent.

        An existing bank is returned unchanged. Concurrent calls create one bank.
        """

    @abc.abstractmethod
    async def list_banks(self, names: Iterable[str] | None = None) -> list[Doc]:
        """Bank summaries sorted by name: the document **without** ``sessions``.

        ``names`` restricts the list; names that do not exist are skipped.
        """

    @abc.abstractmethod
    async def delete_bank(self, name: str) -> bool:
        """Delete the bank with its sessions, production and pending entries (not its history)."""

    @abc.abstractmethod
    async def rename_bank(self, name: str, new_name: str) -> None:
        """Rename a bank (``--change-dbname``). Conflict if ``new_name`` exists."""

    @abc.abstractmethod
    async def set_bank_fields(self, name: str, **fields: Any) -> None:
        """Set top-level fields among :data:`BANK_FIELDS` (ValueError for others)."""

    @abc.abstractmethod
    async def set_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Replace the whole live-progress ``status`` (reset at each workflow init)."""

    @abc.abstractmethod
    async def update_status_task(self, name: str, task: str, fields: Mapping[str, Any]) -> None:
        """Set ``status.<task>.<key>`` for each key of ``fields``, leaving other keys and tasks."""

    # ---- sessions --------------------------------------------------------------------------

    @abc.abstractmethod
    async def save_session(self, name: str, session: Mapping[str, Any], **bank_fields: Any) -> None:
        """Insert the session, or replace the one with the same ``id``.

        ``bank_fields`` (as in :meth:`set_bank_fields`, e.g. ``last_update_session``,
        ``properties``) are set in the same atomic write, as BioMAJ 3's save_session does.
        """

    @abc.abstractmethod
    async def get_session(self, name: str, session_id: float) -> Doc | None:
        """One session of the bank, or None."""

    @abc.abstractmethod
    async def delete_session(self, name: str, session_id: float, *, keep: bool = False) -> bool:
        """BioMAJ 3's remove_session: drop the session and the production and pending entries
        that point to it.

        With ``keep`` (``keep.old.sessions``) the session stays, with ``deleted`` set to now.
        Returns whether the session existed.
        """

    # ---- production and pending ------------------------------------------------------------

    @abc.abstractmethod
    async def add_production(self, name: str, entry: Mapping[str, Any]) -> None:
        """Append a production entry, replacing any entry with the same ``release``."""

    @abc.abstractmethod
    async def update_production(self, name: str, release: str, fields: Mapping[str, Any]) -> bool:
        """Set keys of the production entry for ``release`` (e.g. ``freeze``); False if absent."""

    @abc.abstractmethod
    async def remove_production(self, name: str, release: str) -> bool:
        """Remove the production entry for ``release``; False if absent."""

    @abc.abstractmethod
    async def add_pending(self, name: str, release: str, session_id: float) -> bool:
        """Append ``{release, id}`` to pending unless that release is pending; True if added."""

    @abc.abstractmethod
    async def remove_pending(
        self, name: str, release: str | None = None, session_id: float | None = None
    ) -> int:
        """Remove pending entries matching every given criterion (all of them when none is
        given); returns how many were removed."""

    # ---- history ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_history(self, entry: Mapping[str, Any]) -> None:
        """Record ``{bank, error, start, end, action, updated}``."""

    @abc.abstractmethod
    async def list_history(self, bank: str | None = None, limit: int | None = 100) -> list[Doc]:
        """At most ``limit`` entries (None: all), newest ``start`` first; insertion order
        breaks ties."""

    # ---- users and API keys ----------------------------------------------------------------
    # A user document's name is its ``id`` (biomaj-user's layout). API key records are
    # {id, user, label, created}; the hash is stored but never returned.

    @abc.abstractmethod
    async def create_user(self, user: Mapping[str, Any]) -> None:
        """Store a new user document; Conflict if its ``id`` exists."""

    @abc.abstractmethod
    async def get_user(self, name: str) -> Doc | None:
        """The user document, or None."""

    @abc.abstractmethod
    async def list_users(self) -> list[Doc]:
        """Every user document, sorted by id."""

    @abc.abstractmethod
    async def update_user(self, name: str, fields: Mapping[str, Any]) -> None:
        """Set top-level keys of the user document (``id`` cannot change)."""

    @abc.abstractmethod
    async def delete_user(self, name: str) -> bool:
        """Delete the user and its API keys; False if absent."""

    @abc.abstractmethod
    async def add_api_key(
        self, name: str, key_id: str, key_hash: str, label: str, created: float
    ) -> None:
        """Attach an API key to the user; Conflict if ``key_id`` or ``key_hash`` is in use."""

    @abc.abstractmethod
    async def find_api_key(self, key_hash: str) -> tuple[Doc, Doc] | None:
        """``(user document, key record)`` for a key hash, or None."""

    @abc.abstractmethod
    async def list_api_keys(self, name: str) -> list[Doc]:
        """The user's key records, oldest first."""

    @abc.abstractmethod
    async def revoke_api_key(self, name: str, key_id: str) -> bool:
        """Delete one key of the user; False if absent."""

    async def export_api_keys(self) -> list[Doc]:
        """Every key record **with** its hash (``{id, user, hash, label, created}``), oldest
        first, so that ``biomaj migrate`` can move keys to another store (they keep working).
        Never for an API. A backend that cannot raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} cannot export API key hashes")

    # ---- schedules -------------------------------------------------------------------------
    # {name, kind, cron, banks[], user, last_run, next_run, ...}: biomaj.scheduler.schedules

    @abc.abstractmethod
    async def put_schedule(self, name: str, doc: Mapping[str, Any], *, replace: bool = True) -> bool:
        """Create or replace the schedule (``name`` in the stored document is ``name``); True if
        written. With ``replace=False`` an existing schedule is left as it is (False): of two
        writers creating one schedule at once, one creates it."""

    @abc.abstractmethod
    async def get_schedule(self, name: str) -> Doc | None:
        """The schedule document, or None."""

    @abc.abstractmethod
    async def list_schedules(self) -> list[Doc]:
        """Every schedule, sorted by name."""

    @abc.abstractmethod
    async def update_schedule(self, name: str, fields: Mapping[str, Any]) -> None:
        """Set top-level keys (e.g. ``last_run``, ``next_run``) without replacing the rest."""

    @abc.abstractmethod
    async def delete_schedule(self, name: str) -> bool:
        """Delete the schedule; False if absent."""

    @abc.abstractmethod
    async def claim_schedule_run(self, name: str, run: float, *, previous: float | None,
                                 fields: Mapping[str, Any] | None = None) -> bool:
        """Compare-and-set of ``last_run``: when the schedule's ``last_run`` is ``previous``
        (None: unset or null), set it to ``run``, with ``fields`` in the same atomic write, and
        return True; otherwise change nothing and return False. NotFound if there is no such
        schedule.

        This is how schedulers on several nodes share one schedule: each reads the document,
        works out the run that is due, and only the one whose claim succeeds fires it.
        (MongoDB: ``find_one_and_update({name, last_run: previous}, {$set: ...})``.)
        """

    # ---- durable jobs ----------------------------------------------------------------------
    # {id, kind, bank, options, user, state, dedup_key, worker, attempts, created, started,
    #  finished, result, error, cancel_requested, ...}; states are JOB_STATES.

    @abc.abstractmethod
    async def add_job(self, doc: Mapping[str, Any], dedup_key: str | None = None) -> str:
        """Queue a job and return its id (``doc['id']`` if given, else a new one).

        With ``dedup_key`` (e.g. ``update:<bank>``) a job is refused with :class:`DuplicateJob`
        (carrying the existing id) while another job with that key is queued or running.
        """

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> Doc | None:
        """The job document, or None."""

    @abc.abstractmethod
    async def list_jobs(
        self,
        state: str | Iterable[str] | None = None,
        bank: str | None = None,
        limit: int | None = 100,
    ) -> list[Doc]:
        """At most ``limit`` jobs (None: all), newest first, filtered by state(s) and bank."""

    @abc.abstractmethod
    async def claim_job(self, worker: str, job_id: str | None = None) -> Doc | None:
        """Move the oldest queued job (or the queued job ``job_id``) to ``running`` for
        ``worker`` and return it, or None when there is none (or ``job_id`` is not queued).

        Sets ``worker``, ``started`` and increments ``attempts``. A job is never handed to two
        claimers, even from two stores on the same database.
        """

    @abc.abstractmethod
    async def finish_job(
        self, job_id: str, state: str, result: Any = None, error: str | None = None
    ) -> Doc:
        """Move a running job to a final state (done, failed, cancelled) and return it.

        Conflict if the job is not running (e.g. it was requeued meanwhile).
        """

    @abc.abstractmethod
    async def requeue_running(self, worker: str | None = None, job_id: str | None = None) -> list[str]:
        """Put jobs left ``running`` (by ``worker``, or by anyone; only ``job_id`` when given)
        back to ``queued``, keeping their place in the queue; returns their ids. Used after a
        crash, by the restarted manager or by one that takes a dead manager's job over."""

    @abc.abstractmethod
    async def cancel_job(self, job_id: str) -> Doc:
        """Cancel a job and return it.

        A queued job becomes ``cancelled`` at once; a running one gets ``cancel_requested``
        and its worker finishes it; a finished job is returned unchanged.
        """

    @abc.abstractmethod
    async def purge_jobs(self, before: float) -> int:
        """Delete finished jobs that finished before ``before`` (epoch); returns how many."""
