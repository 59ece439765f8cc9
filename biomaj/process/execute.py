"""Run one bank process as a subprocess: BioMAJ 3's ``Process.run`` / ``DockerProcess.run``.

The command is ``/bin/sh -c "<exe> <args...>"`` when ``shell_expand`` (BioMAJ 3's default
``.expand=true``: variables, globs and quotes are the shell's), ``[exe, *args]`` executed
directly otherwise (nothing in an argument is ever interpreted), or the ``docker run`` line of
:mod:`biomaj.process.docker`. The environment is exactly ``request.env``; the working directory
is ``request.cwd`` (the log directory when empty); stdout and stderr go to
``<log_dir>/<name>.out`` and ``.err``. Success is exit code 0; then the ``##BIOMAJ#`` lines of
stdout are parsed (:mod:`biomaj.process.metadata`).

The process starts in its own process group, so that a timeout, a cancel or the caller's task
being cancelled stops the whole tree it started: SIGTERM to the group, SIGKILL after
``kill_grace`` seconds, and :func:`run_process` returns (or re-raises) only once no process of
the group is running. Processes a successful run leaves behind in its group are stopped too.
A process that puts itself in another session (``setsid``, daemons) escapes this, as anywhere.

"Running" ignores zombies: a finished process whose parent died waits for init to reap it,
which some containers' init never does; such a process holds no resources and runs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomaj.bus.messages import ProcessRequest

from . import metadata
from .docker import docker_command, find_program

__all__ = ["ExecOutcome", "KILL_GRACE", "group_running", "run_process"]

log = logging.getLogger(__name__)

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
GONE_TIMEOUT = 5.0  # seconds to wait for a SIGKILLed group to disappear
POLL = 0.05  # seconds between two checks of a group
TAIL_LINES = 5  # stderr lines quoted in the error of a failed process
TAIL_CHARS = 500


@dataclass
class ExecOutcome:
    """What happened to one process."""

    exit_code: int | None  # None when it never ran; negative: killed by that signal
    ok: bool
    error: str
    metadata: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    timed_out: bool = False
    cancelled: bool = False


async def run_process(
    request: ProcessRequest, *, cancelled: asyncio.Event | None = None, kill_grace: float = KILL_GRACE
) -> ExecOutcome:
    """Run ``request``'s command until it exits, times out (``request.timeout`` seconds) or
    ``cancelled`` is set. Never raises but CancelledError, after killing the process group."""
    started = time.monotonic()

    def failed(error: str, exit_code: int | None = None, **flags: bool) -> ExecOutcome:
        return ExecOutcome(exit_code, False, error, [], time.monotonic() - started, **flags)

    name = request.name
    if not name or "/" in name or name in (".", ".."):
        return failed(f"bad process name {name!r}: it names the .out and .err files")
    if not request.log_dir:
        return failed(f"{name}: no log directory given")
    log_dir = Path(request.log_dir)
    cwd = request.cwd or request.log_dir
    env = dict(request.env)
    try:
        argv = _command(request)
    except ValueError as exc:
        return failed(f"{name}: {exc}")
    program = find_program(argv[0], env, cwd)
    if program is None:
        return failed(_not_found(name, argv[0], env, cwd))
    if cancelled is not None and cancelled.is_set():
        return failed("cancelled", cancelled=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *argv, executable=program, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=env, cwd=cwd, start_new_session=True,
            )
    except OSError as exc:
        return failed(f"{name}: cannot start {argv[0]}: {exc}")
    pgid = proc.pid  # start_new_session: the child leads its own group
    exited = asyncio.ensure_future(proc.wait())
    stop = asyncio.ensure_future(cancelled.wait()) if cancelled is not None else None
    timeout = request.timeout if request.timeout and request.timeout > 0 else None
    try:
        done, _ = await asyncio.wait([t for t in (exited, stop) if t is not None], timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _kill(proc, pgid, kill_grace, name)
        raise
    finally:
        for waiter in (exited, stop):
            if waiter is not None and not waiter.done():
                waiter.cancel()
    if exited not in done:
        await _kill(proc, pgid, kill_grace, name)
        if stop is not None and stop in done:
            return failed("cancelled", proc.returncode, cancelled=True)
        return failed(f"{name} timed out after {timeout:g} s", proc.returncode, timed_out=True)
    if group_running(pgid):
        log.warning("process %s exited leaving processes in its group: stopping them", name)
        await _kill(proc, pgid, kill_grace, name)
    code = proc.returncode
    if code != 0:
        return failed(_exit_error(name, code, err_path), code)
    outcome = ExecOutcome(code, True, "", [], 0.0)
    try:
        outcome.metadata = await asyncio.to_thread(_read_metadata, out_path)
    except OSError as exc:  # the process did its work; say why its declared files are missing
        outcome.error = f"{name}: cannot read {out_path} for ##BIOMAJ# lines: {exc}"
        log.warning(outcome.error)
    outcome.elapsed = time.monotonic() - started
    return outcome


def _command(request: ProcessRequest) -> list[str]:
    if request.docker:
        return docker_command(request)
    if not request.exe:
        raise ValueError("no exe given")
    if request.shell_expand:
        return ["/bin/sh", "-c", " ".join([request.exe, *request.args])]
    return [request.exe, *request.args]


def _not_found(name: str, program: str, env: dict[str, str], cwd: str) -> str:
    if "/" in program:
        path = os.path.join(cwd, program)
        what = "is not executable" if os.path.exists(path) else "does not exist"
        return f"{name}: {program} {what}"
    return f"{name}: {program} not found in PATH {env.get('PATH', os.defpath)}"


def _exit_error(name: str, code: int, err_path: Path) -> str:
    if code < 0:
        try:
            what = f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            what = f"was killed by signal {-code}"
    else:
        what = f"exited with code {code}"
    tail = _tail(err_path)
    return f"{name} {what}" + (f": {tail}" if tail else "")


def _tail(path: Path) -> str:
    """The last TAIL_LINES non-blank lines of a file, at most TAIL_CHARS characters."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8 * TAIL_CHARS))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()][-TAIL_LINES:]
    tail = " | ".join(lines)
    return tail if len(tail) <= TAIL_CHARS else "..." + tail[-(TAIL_CHARS - 3):]


def _read_metadata(path: Path) -> list[dict[str, Any]]:
    """The ``##BIOMAJ#`` entries of a (possibly huge) stdout file, read line by line."""
    prefix = metadata.PREFIX.encode()
    entries = []
    with open(path, "rb") as f:
        for raw in f:
            if raw.lstrip().startswith(prefix):
                entry = metadata.parse_line(raw.decode("utf-8", "replace"))
                if entry is not None:
                    entries.append(entry)
    return entries


# --- process groups ----------------------------------------------------------------------------


def group_running(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs (zombies waiting to be reaped do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return True  # no /proc: a member exists, maybe a zombie; assume it runs
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2:].split()  # state ppid pgrp ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError as exc:  # a member changed its user (setuid): nothing more to do
        log.warning("cannot signal process group %d: %s", pgid, exc)


async def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_running(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL)  # polling the kernel: a group has no exit notification
    return True


async def _kill_group(proc: asyncio.subprocess.Process, pgid: int, grace: float, name: str) -> None:
    """SIGTERM the group, SIGKILL what is left after ``grace`` s, reap the leader."""
    _signal_group(pgid, signal.SIGTERM)
    if not await _group_gone(pgid, grace):
        _signal_group(pgid, signal.SIGKILL)
        if not await _group_gone(pgid, GONE_TIMEOUT):
            log.warning("process %s: group %d still has processes after SIGKILL", name, pgid)
    try:
        await asyncio.wait_for(proc.wait(), GONE_TIMEOUT)
    except TimeoutError:
        log.warning("process %s: pid %d did not exit after SIGKILL", name, proc.pid)


async def _kill(proc: asyncio.subprocess.Process, pgid: int, grace: float, name: str) -> None:
    """:func:`_kill_group`, finished even when our task is cancelled meanwhile (it is bounded);
    the cancel is raised once the group is gone."""
    kill = asyncio.ensure_future(_kill_group(proc, pgid, grace, name))
    interrupted = False
    while not kill.done():
        try:
            await asyncio.shield(kill)
        except asyncio.CancelledError:
            interrupted = True
        except Exception:  # logged below
            break
    if not kill.cancelled() and kill.exception() is not None:
        log.error("process %s: killing group %d failed", name, pgid, exc_info=kill.exception())
    if interrupted:
        raise asyncio.CancelledError
