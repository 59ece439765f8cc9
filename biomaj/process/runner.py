"""Running a bank's processes of one phase through the processor actors (manager side).

Scheduling is BioMAJ 3's: blocks one after the other; the metas of a block dealt round-robin
over ``bank.num.threads`` lanes that run in parallel, each lane running its metas one after the
other; the processes of a meta in sequence. A failed process stops its meta (the lane goes on
with its next meta) and fails the task; a failed block stops the blocks after it. Each process
is one ProcessRequest on the bus; its status is saved in the session as soon as it is known, so
a resumed run re-runs only the processes that failed or did not run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from biomaj.bus.messages import ProcessRequest, ProcessResult
from biomaj.config.properties import BankProperties
from biomaj.errors import BiomajError
from biomaj.redaction import redact_args

from . import dag
from .environment import build_environment, command_args
from .metadata import apply_defaults


class ProcessDispatcher(Protocol):
    """What the process runner needs from the dispatcher of process requests (the manager passes a
    :class:`biomaj.runtime.dispatch.Processes`): send one request, return its result."""

    async def run_one(self, request: ProcessRequest, cancelled: asyncio.Event) -> ProcessResult: ...


class ProcessFailed(BiomajError):
    """A process of the phase failed; the message names it and where its output is."""


@dataclass
class PhaseRun:
    """What one phase needs from the workflow that runs it."""

    phase: str
    bank: str
    props: BankProperties
    session: dict[str, Any]  # its process statuses and metadata are updated in place
    job_id: str
    cancelled: asyncio.Event
    data_dir: str
    dir_version: str
    offline_dir: str
    release: str | None
    remote_release: str | None
    release_dir_name: str | None
    log_file: str
    log: logging.Logger
    dependencies: dict[str, str] = field(default_factory=dict)  # dep -> its release directory
    persist: Callable[[], Awaitable[None]] | None = None  # save the session
    progress: Callable[[dict], Awaitable[None]] | None = None  # live status of the phase


class ProcessRunner:
    """The ``processes`` of a RunContext: runs phases through a process dispatcher."""

    def __init__(self, dispatcher: ProcessDispatcher):
        self.dispatcher = dispatcher

    async def run_phase(self, run: PhaseRun, start: str | None = None) -> bool:
        """Run the phase's processes not yet successful. Raises ProcessFailed (after every lane
        of the failing block finished) naming the failed processes."""
        plan = dag.plan(run.props, run.phase)
        if plan.empty:
            return True
        tree = plan.status_tree(run.session.setdefault("process", {}).get(run.phase))
        run.session["process"][run.phase] = tree
        env = self._environment(run)
        threads = run.props.get_int("bank.num.threads", 2) or 2
        for block in plan.blocks:
            statuses = plan.statuses(tree, block)
            lanes = dag.deal_round_robin(block.metas, threads)
            failures: list[str] = []
            await asyncio.gather(*(self._lane(run, env, block, lane, statuses, failures) for lane in lanes))
            if run.cancelled.is_set():
                return False
            if failures:
                where = f"block {block.name}" if block.name else run.phase
                raise ProcessFailed(f"{where}: " + "; ".join(failures))
        return True

    async def _lane(self, run: PhaseRun, env: dict, block: dag.Block, lane: list[dag.Meta],
                    statuses: dict, failures: list[str]) -> None:
        for meta in lane:
            for proc in meta.processes:
                if run.cancelled.is_set():
                    return
                if statuses[meta.name].get(proc.id) is True:
                    run.log.info("PROC:META:SKIP:PROCESS:%s (done in an earlier run)", proc.full_name)
                    continue
                run.log.info("PROC:META:RUN:PROCESS:%s", proc.full_name)
                await self._progress(run, proc.full_name, None)
                request = self._request(run, env, block, proc)
                started = time.time()
                result = await self.dispatcher.run_one(request, run.cancelled)
                statuses[meta.name][proc.id] = result.ok
                record_run(run.session, run.phase, request, result, started)
                if result.ok:
                    run.session.setdefault("per_process_metadata", {})[proc.full_name] = apply_defaults(
                        result.metadata, format=proc.format, types=list(proc.types), tags=dict(proc.tags),
                        files=list(proc.files))
                    run.log.info("PROC:META:DONE:PROCESS:%s in %.1fs", proc.full_name, result.elapsed)
                else:
                    run.log.error("PROC:META:FAILED:PROCESS:%s: %s", proc.full_name, result.error)
                await self._progress(run, proc.full_name, result.ok)
                if run.persist is not None:
                    await run.persist()
                if not result.ok:
                    if result.error != "cancelled":
                        failures.append(f"{proc.full_name}: {result.error}")
                    break  # the rest of this meta does not run; the lane goes on with its next meta

    async def _progress(self, run: PhaseRun, name: str, ok: bool | None) -> None:
        if run.progress is not None:
            await run.progress({name: ok})

    def _environment(self, run: PhaseRun, *, node_environment: bool = True) -> dict[str, str]:
        """The process environment; a container gets only the bank's variables (as BioMAJ 3
        sends them to docker), not this node's own environment."""
        props = run.props
        return build_environment(
            props.as_dict(), bank=run.bank, data_dir=run.data_dir, dir_version=run.dir_version,
            offline_dir=run.offline_dir, process_dir=props.get("process.dir") or "",
            release_dir_name=run.release_dir_name, remote_release=run.remote_release, release=run.release,
            log_dir=str(Path(run.log_file).parent), log_file=run.log_file, dependencies=run.dependencies,
            base=None if node_environment else {"PATH": os.environ.get("PATH", "")},
        )

    def _request(self, run: PhaseRun, env: dict, block: dag.Block, proc: dag.ProcessDef) -> ProcessRequest:
        docker = None
        if proc.docker:
            env = self._environment(run, node_environment=False)
            bank_dir = str(Path(run.data_dir) / run.dir_version)
            workdir = str(Path(bank_dir) / run.release_dir_name) if run.release_dir_name else bank_dir
            volumes = [[bank_dir, bank_dir, "rw"]] + [[d, d, "ro"] for d in run.dependencies.values()]
            docker = {"image": proc.docker, "sudo": run.props.get_bool("docker.sudo", True),
                      "workdir": workdir, "volumes": volumes}
        return ProcessRequest(
            job_id=run.job_id, bank=run.bank, session_id=str(run.session.get("id")), name=proc.full_name,
            exe=proc.exe, args=command_args(proc.args, env, shell=proc.expand), env=env, phase=run.phase,
            block=block.name, meta=proc.meta, log_dir=str(Path(run.log_file).parent),
            cwd=run.props.get("process.dir") or "", shell_expand=proc.expand, timeout=proc.timeout, docker=docker,
        )


def record_run(session: dict, phase: str, request: ProcessRequest, result: ProcessResult, started: float) -> None:
    """What a process did, kept in the session's ``process_runs`` for the release's provenance
    file: its command (secrets hidden), exit code, status and times."""
    session.setdefault("process_runs", {}).setdefault(phase, {})[request.name] = {
        "exe": request.exe,
        "args": redact_args(list(request.args)),
        "docker": (request.docker or {}).get("image"),
        "exit_code": result.exit_code,
        "ok": result.ok,
        "started": started,
        "elapsed": round(result.elapsed, 3),
    }


def reset_phase(props: BankProperties, session: dict, phase: str, start: str | None) -> None:
    """--from-task: the phase's processes run again, all of them or from ``start`` (a block, a
    meta or a process id, in declaration order). ConfigError when ``start`` names nothing."""
    plan = dag.plan(props, phase)
    tree = session.setdefault("process", {}).get(phase)
    session["process"][phase] = plan.reset(tree or {}, start)


def merge_formats(session: dict, declared: list[str]) -> dict[str, list]:
    """The metadata step: every process's ``##BIOMAJ#`` entries merged by format."""
    formats: dict[str, list] = {name: [] for name in declared}
    for per_format in (session.get("per_process_metadata") or {}).values():
        for name, entries in per_format.items():
            formats.setdefault(name, []).extend(entries)
    return formats


__all__ = ["PhaseRun", "ProcessFailed", "ProcessRunner", "ProcessResult", "merge_formats", "record_run", "reset_phase"]
