"""Bank jobs: their kinds, the options of each kind declared once, and how a job is submitted
and cancelled.

A job is a long action on a bank (update, remove, remove-all, remove-pending, repair,
release-check, verify) that a manager runs from the durable job queue. Every layer that speaks of jobs
imports this module, never the manager actor: the CLI (``biomaj ctl update``), the REST API
(``/api/v1/banks/{bank}/update``), BioMAJ 3's ``/api/daemon``, the job clients, the scheduler and
the metrics.

Each option of a kind is declared once here (:class:`JobOption`: name, type, default, help, the
tasks it may name); from it are generated the click options of ``biomaj ctl`` (``cli/bank_ops.py``),
the REST body schemas and their validation (``web/banks.py``, ``web/daemon/routes.py``), the OpenAPI
text and the checks (:func:`check_options`). The update options are the fields of the workflow's
own :class:`~biomaj.workflow.options.UpdateOptions`, read from there (:meth:`JobOption.fields_of`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from biomaj.errors import BiomajError
from biomaj.workflow.options import UpdateOptions
from biomaj.workflow.session import check_task_name

if TYPE_CHECKING:
    from biomaj.bus import Bus
    from biomaj.state import State
    from biomaj.storage.base import Store
    from biomaj.workflow.bank import RunContext
    from biomaj.workflow.runner import Outcome

# The declarations below are read by every front end, `biomaj ctl update --help` among them: what
# only running or submitting a job needs (the workflow, the bus, the store) is imported in the
# functions that do it.

JSON_TYPES = {bool: "boolean", str: "string"}


@dataclass(frozen=True)
class JobOption:
    """One option of a job kind. ``name`` is the key in the job's options, the REST body and
    biomaj-cli's request; ``--name-with-dashes`` is its command-line flag, ``aliases`` its other
    spellings there. ``tasks``: the value must name one of these workflow tasks."""

    name: str
    type: type
    help: str
    default: Any = None
    tasks: tuple[str, ...] = ()
    required: bool = False
    aliases: tuple[str, ...] = ()

    @classmethod
    def fields_of(cls, record: type) -> tuple[JobOption, ...]:
        """The options a dataclass declares: one per field, with its default and the help,
        tasks and aliases of its metadata; ``str | None`` is a str option."""
        hints = typing.get_type_hints(record)
        return tuple(
            cls(f.name, bool if hints[f.name] is bool else str, f.metadata["help"], default=f.default,
                tasks=f.metadata["tasks"], aliases=f.metadata["aliases"])
            for f in dataclasses.fields(record)
        )

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """UnknownTask when the value names no task of the flow (before any work is queued)."""
        if self.tasks:
            check_task_name(self.flag, value, self.tasks)

    def schema(self) -> dict[str, Any]:
        """The option's JSON schema, as the OpenAPI document shows it."""
        schema: dict[str, Any] = {"type": JSON_TYPES[self.type]}
        if self.tasks:
            schema["enum"] = list(self.tasks)
        return schema


Runner = Callable[["RunContext", str, dict[str, Any], bool], Awaitable["Outcome"]]


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its options and what a manager runs for it (``run(context, bank, options,
    resumed)``; ``resumed``: the job was claimed before, by a manager that died).
    ``checks_bank_file``: the bank file must pass BioMAJ 3's check before the job is queued."""

    name: str
    options: tuple[JobOption, ...]
    run: Runner
    checks_bank_file: bool = False

    def option(self, name: str) -> JobOption:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(f"{self.name} has no option {name!r}")

    def types(self) -> dict[str, type]:
        """Option name -> Python type, in declaration order."""
        return {option.name: option.type for option in self.options}

    def body_schema(self) -> dict[str, Any]:
        """The JSON schema of a request body carrying these options (nothing else is accepted)."""
        return {"type": "object", "additionalProperties": False,
                "properties": {option.name: option.schema() for option in self.options}}


# --- what a manager runs for each kind ------------------------------------------------------------


def _runner():
    """The workflow's entry points, imported when a manager runs a job (not by --help)."""
    from biomaj.workflow import runner

    return runner


async def _update(run: RunContext, bank: str, options: dict[str, Any], resumed: bool) -> Outcome:
    return await _runner().update_bank(run, bank, UpdateOptions.from_dict(options), resume_job=resumed)


async def _remove(run: RunContext, bank: str, options: dict[str, Any], resumed: bool) -> Outcome:
    if not options.get("release"):
        raise BiomajError("remove needs a release (--release R)")
    return await _runner().remove_bank_release(run, bank, options["release"])


async def _remove_all(run: RunContext, bank: str, options: dict[str, Any], resumed: bool) -> Outcome:
    return await _runner().remove_all(run, bank, force=bool(options.get("force")))


async def _remove_pending(run: RunContext, bank: str, options: dict[str, Any], resumed: bool) -> Outcome:
    return await _runner().remove_pending(run, bank, options.get("release"))


async def _repair(run: RunContext, bank: str, options: dict[str, Any], resumed: bool) -> Outcome:
    return await _runner().repair(run, bank, options.get("release"))


async def _release_check(run: RunContext, bank: str, options: dict[str, Any], resumed: bool) -> Outcome:
    return await _runner().release_check(run, bank)


async def _verify(run: RunContext, bank: str, options: dict[str, Any], resumed: bool) -> Outcome:
    return await _runner().verify(run, bank, options.get("release"), every=bool(options.get("all")),
                                  record=bool(options.get("record")))


# --- the declaration ------------------------------------------------------------------------------

UPDATE = JobKind("update", checks_bank_file=True, run=_update, options=JobOption.fields_of(UpdateOptions))
REMOVE = JobKind("remove", run=_remove, options=(
    JobOption("release", str, "Release (or its directory name) to remove.", required=True),
))
REMOVE_ALL = JobKind("remove-all", run=_remove_all, options=(
    JobOption("force", bool, "Also when some releases are frozen.", default=False),
))
REMOVE_PENDING = JobKind("remove-pending", run=_remove_pending, options=(
    JobOption("release", str, "Only this pending release."),
))
REPAIR = JobKind("repair", run=_repair, options=(
    JobOption("release", str, "Repair this release (or its unfinished session) instead of the last one."),
))
RELEASE_CHECK = JobKind("release-check", run=_release_check, options=(), checks_bank_file=True)
VERIFY = JobKind("verify", run=_verify, options=(
    JobOption("release", str, "Release to verify (default: the published one, else the latest)."),
    JobOption("all", bool, "Verify every production release.", default=False),
    JobOption("record", bool, "Write the provenance file from the files the release holds now (a release "
              "made before biomaj wrote one) instead of checking them.", default=False),
))

#: Every kind of job, by name: the only list of them.
KINDS: dict[str, JobKind] = {kind.name: kind for kind in
                             (UPDATE, REMOVE, REMOVE_ALL, REMOVE_PENDING, REPAIR, RELEASE_CHECK, VERIFY)}
JOB_KINDS = tuple(KINDS)


def kind_of(name: str) -> JobKind:
    """The declared kind, or BiomajError naming the known ones."""
    if name not in KINDS:
        raise BiomajError(f"unknown job kind {name!r}; expected one of {', '.join(KINDS)}")
    return KINDS[name]


def check_options(kind: str, options: dict[str, Any]) -> None:
    """Run every declared option's check on ``options`` (UnknownTask for a task no flow has)."""
    for option in kind_of(kind).options:
        option.check(options.get(option.name))


# --- submit and cancel ----------------------------------------------------------------------------


async def submit_job(store: Store, bus: Bus, kind: str, bank: str, options: dict[str, Any] | None = None,
                     user: str | None = None, admin: bool = False) -> str:
    """Record a job and queue it; DuplicateJob (with the active job's id) if the same kind of
    job is already queued or running on that bank. ``admin``: the submitter was authenticated as
    an admin (by the web API, from the user's flag), which the manager honours."""
    from biomaj.bus import names
    from biomaj.bus.messages import JobEvent, JobRequest
    from biomaj.storage.base import JOB_QUEUED

    kind_of(kind)
    options = {k: v for k, v in (options or {}).items() if v not in (None, False, "")}
    job_id = await store.add_job({"kind": kind, "bank": bank, "options": options, "user": user, "admin": admin},
                                 dedup_key=f"{kind}:{bank}")
    await bus.declare_queue(names.JOBS)
    await bus.publish(names.JOBS, JobRequest(job_id=job_id, kind=kind, bank=bank, options=options, user=user))
    await bus.broadcast(names.job_topic(bank), JobEvent(job_id=job_id, bank=bank, kind=kind, state=JOB_QUEUED,
                                                         message=f"{kind} of {bank} queued"))
    return job_id


#: Seconds the cancel flag of a job lives (its manager clears it when the job ends).
CANCEL_TTL = 24 * 3600.0


async def request_cancel(store: Store, bus: Bus, state: State | None, job_id: str) -> dict:
    """Cancel a job: a queued one at once, a running one through its manager. The store's record
    tells a manager that shares nothing else with this process (``biomaj ctl cancel`` beside a
    running ``biomaj ctl update``)."""
    from biomaj.bus import names
    from biomaj.bus.messages import JobEvent
    from biomaj.storage.base import JOB_CANCELLED

    job = await store.cancel_job(job_id)
    await signal_cancel(bus, state, job_id, job["bank"])
    if job["state"] == JOB_CANCELLED:
        await bus.broadcast(names.job_topic(job["bank"]), JobEvent(
            job_id=job_id, bank=job["bank"], kind=job["kind"], state=JOB_CANCELLED, message="cancelled before it started"))
    return job


async def signal_cancel(bus: Bus, state: State | None, job_id: str, bank: str, *, ttl: float = CANCEL_TTL) -> None:
    """A job's cancel on its one carrier: the state's cancel flag (the truth, for ``ttl`` seconds),
    then one CancelJob broadcast, only a wake-up so that the holders of the job's work react at
    once (:class:`biomaj.runtime.cancels.JobCancels`). Without a state, the wake-up alone."""
    from biomaj.bus import names
    from biomaj.bus.messages import CancelJob

    if state is not None:
        await state.set_cancel(job_id, ttl=ttl)
    await bus.broadcast(names.CANCEL_TOPIC, CancelJob(job_id=job_id, bank=bank))
