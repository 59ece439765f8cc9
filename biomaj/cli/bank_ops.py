"""`biomaj ctl` commands that act on banks: update, remove*, repair, verify, publish, freeze, owner,
visibility, cancel, unlock, release-check. Each job is recorded in the store and run by a manager:
the one inside this command on the in-process bus, the manager nodes when ``bus.url`` names
RabbitMQ (:func:`biomaj.node.cluster.job_client` chooses), or the server at ``ctl --proxy URL``
(:class:`biomaj.node.remote.Remote`), which also runs the quick operations.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from biomaj import jobs
from biomaj.cli.context import CliContext, config_option, emit_json, json_option, run_async
from biomaj.errors import BiomajError
from biomaj.logs import setup_logging
from biomaj.workflow.options import VISIBILITIES

if TYPE_CHECKING:
    from biomaj.bus.messages import JobEvent
    from biomaj.workflow.runner import Outcome

# `ctl --help` and `ctl update --help` import this module for its commands' options (declared in
# biomaj.jobs): the workflow, the bus, the store and the configuration are imported by the
# functions that run a command.


# --- running a job in this process ---------------------------------------------------------------


#: Seconds between two progress lines of ``update --follow`` when stderr is not a terminal.
PROGRESS_INTERVAL = 5.0


class _Follow:
    """Shows a job's progress: a live line (steps, files, bytes, rate) on a terminal; off a
    terminal (a pipe, a cron job's log file), a line per step and a plain progress line every
    ``interval`` seconds during the download, and its last one."""

    def __init__(self, enabled: bool, interval: float = PROGRESS_INTERVAL):
        self.enabled = enabled
        self.interval = interval
        self.tty = sys.stderr.isatty()
        self.step: str | None = None
        self.width = 0
        self.printed: dict[str, tuple[float, bool]] = {}  # bank -> (when, was it the last) of its last progress line

    def __call__(self, event: JobEvent) -> None:
        if not self.enabled:
            return
        progress = event.progress
        if event.kind == "download" and progress.get("batch"):
            return  # the downloaders' events: the manager's summaries are enough here
        if progress.get("notice"):  # something the operator should know, said once
            self._show(f"[{event.bank}] {event.message}")
            return
        if "stat_total" in progress:  # a listing without sizes or dates, completed file by file
            done, total = progress["stat_done"], progress["stat_total"]
            line = f"[{event.bank}] size and date of {total} files"
            if self.tty:
                self._show(f"{line} {_bar(done, total)} {done}/{total}", transient=True)
            else:
                self._every(event.bank, f"{line}: {done}/{total}", last=False)
            return
        if "bytes_to_check" in progress:  # the files of a release read (verify, provenance, repair)
            done, total = progress["files_checked"], progress["files_to_check"]
            what = event.message.partition(":")[0]  # "verify 2024-01", "provenance"
            counts = f"{done}/{total} files, {_bytes(progress['bytes_checked'])} of {_bytes(progress['bytes_to_check'])}"
            if self.tty:
                self._show(f"[{event.bank}] {what} {_bar(progress['bytes_checked'], progress['bytes_to_check'])} "
                           f"{counts}", transient=True)
            else:
                self._every(event.bank, f"[{event.bank}] {what}: {counts} read", last=done >= total)
            return
        if "upload_total" in progress:  # a release copied into a bucket (publish.s3)
            done, total = progress["upload_done"], progress["upload_total"]
            counts = f"{done}/{total} files, {_bytes(progress['upload_bytes'])} of {_bytes(progress['upload_bytes_total'])}"
            if self.tty:
                self._show(f"[{event.bank}] upload {_bar(done, total)} {counts}", transient=True)
            else:  # its own key: the download's last line must not hide the upload's
                self._every(f"{event.bank} upload", f"[{event.bank}] upload to the bucket: {counts}", last=done >= total)
            return
        if "files_total" in progress:
            done, total = progress["files_done"], progress["files_total"]
            counts = (f"{done}/{total} files, {_bytes(progress.get('bytes', 0))}, "
                      f"{_bytes(progress.get('rate', 0))}/s")
            if progress.get("files_failed"):
                counts += f", {progress['files_failed']} failed"
                if "failures_allowed" in progress:  # download.max_failures
                    counts += f" ({progress['failures_allowed']} allowed)"
            if progress.get("limit"):  # bandwidth limits in force: {"node": "10 MiB/s", "bank": ...}
                counts += ", limit " + ", ".join(f"{v} ({k})" for k, v in progress["limit"].items())
            if self.tty:
                self._show(f"[{event.bank}] download {_bar(done, total)} {counts}", transient=True)
            else:
                self._every(event.bank, f"[{event.bank}] download {counts}", last=done >= total)
            return
        if event.step and event.step != self.step and progress.get("task_state") == "running":
            self.step = event.step
            self._show(f"[{event.bank}] {event.step}")
        elif event.state not in ("running", "queued"):
            self._show(f"[{event.bank}] {_ended(event.state, event.message)}")

    def _every(self, bank: str, line: str, last: bool) -> None:
        """A plain progress line, at most every ``interval`` seconds, and the download's last one."""
        now = time.monotonic()
        previous = self.printed.get(bank)
        if previous is not None:
            when, was_last = previous
            if (was_last and last) or (not last and now - when < self.interval):
                return
        self.printed[bank] = (now, last)
        click.echo(line, err=True)

    def log_line(self, line: str) -> None:
        """A line of the job's session log, streamed by a --proxy server (``-v``)."""
        if self.enabled:
            self._show(line)

    def _show(self, line: str, transient: bool = False) -> None:
        if self.tty:
            click.echo("\r" + line.ljust(self.width), err=True, nl=not transient)
            self.width = len(line) if transient else 0
        elif not transient:
            click.echo(line, err=True)

    def done(self) -> None:
        if self.enabled and self.tty and self.width:
            click.echo(err=True)


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = width * done // total if total else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _check_bank_file(obj: CliContext, bank: str, validate: bool) -> None:
    """Refuse an unknown bank, or (``validate``) a bank file with errors, before any job exists
    (exit 2, as every configuration error); the manager checks again when it runs the job."""
    from biomaj.config.check import refuse_invalid
    from biomaj.config.properties import BankProperties

    props = BankProperties.load(obj.config().global_properties, bank)
    if validate:
        refuse_invalid(props)


class _ReportedHere(logging.Filter):
    """Keeps off the console what the command prints itself: the job's outcome (the manager's
    last record) and the bank's session log (its path is printed when the job fails)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("biomaj.bank."):
            return False
        return not (record.name == "biomaj.actors.manager" and record.levelno < logging.ERROR
                    and record.getMessage().startswith("job "))


def _jobs(obj: CliContext):
    """Who runs the jobs: the --proxy server, else this process or the manager nodes (bus.url)."""
    if obj.remote:
        from biomaj.client.api import ApiClient
        from biomaj.node.remote import Remote

        setup_logging(obj.console_level or "INFO")
        return Remote(ApiClient(obj.proxy or "", obj.api_key))
    from biomaj.node.cluster import job_client

    return job_client(obj.config())


async def _run_job(obj: CliContext, kind: str, bank: str, options: dict[str, Any], follow: bool,
                   interval: float = PROGRESS_INTERVAL) -> dict:
    import asyncio

    if not obj.remote:  # the server checks its own bank files
        _check_bank_file(obj, bank, validate=jobs.KINDS[kind].checks_bank_file)
    if obj.console_level:  # without -v: one `error: ...` line, not the same failure three times
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.addFilter(_ReportedHere())
    follower = _Follow(follow and not obj.json_output, interval)
    loop = asyncio.get_running_loop()
    async with _jobs(obj) as client:
        job_id: list[str] = []
        interrupts = 0

        def interrupt() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1 or not job_id:
                raise KeyboardInterrupt
            click.echo(f"\ncancelling {kind} of {bank} (Ctrl-C again to quit at once)", err=True)
            loop.create_task(client.cancel(job_id[0]))

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, interrupt)
        try:
            # with -v, in-process jobs log to the console; a server streams its session log instead
            logs = {"on_log": follower.log_line} if obj.remote and follow and obj.console_level is None else {}
            job = await client.run_job(kind, bank, options, on_event=follower, on_submitted=job_id.append, **logs)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            follower.done()
    return job


def _report(obj: CliContext, job: dict, describe) -> None:
    """Print the job's outcome (or the JSON record) and exit non-zero unless it succeeded."""
    from biomaj.storage.base import JOB_DONE

    if obj.json_output:
        emit_json(job)
    else:
        result = job.get("result") or {}
        if job["state"] == JOB_DONE:
            click.echo(describe(result))
        else:
            log_file = result.get("log_file")
            click.echo(f"error: {job['kind']} of {job['bank']} {_ended(job['state'], job.get('error'))}"
                       + (f"\n  log: {log_file}" if log_file else ""), err=True)
    if job["state"] != JOB_DONE:
        raise SystemExit((job.get("result") or {}).get("exit_code") or 1)


def _ended(state: str, reason: str | None) -> str:
    """How a job ended, for one line: ``failed: why``; a cancelled job says only that (its
    reason would repeat it)."""
    from biomaj.storage.base import JOB_CANCELLED
    from biomaj.workflow.engine import CANCELLED

    if state == JOB_CANCELLED:
        return CANCELLED
    return f"{state}: {reason}"


def _update_message(result: dict) -> str:
    if (result.get("details") or {}).get("dry_run"):
        return _dry_run_message(result)
    if result.get("stopped"):
        return f"{result['bank']}: stopped as asked, release {result.get('release')}; the next update resumes it"
    if result.get("updated"):
        return f"{result['bank']}: release {result.get('release')} updated in {result.get('release_dir')}"
    return f"{result['bank']}: no need to update, release {result.get('release')} is current"


def _dry_run_message(result: dict) -> str:
    """What ``update --dry-run`` found: the release, the change report, the bytes that would move
    and the names of the files added, removed and changed."""
    from biomaj import change_report

    details = result["details"]
    if not details.get("update"):
        return f"{result['bank']}: dry run: no need to update, release {result.get('release')} is current"
    changes = details.get("changes")  # none: a run from before change reports, resumed past its download
    lines = [f"{result['bank']}: dry run: an update would make release {result.get('release')}",
             f"  {change_report.summary(changes) if changes else 'no change report (made before biomaj kept them)'}",
             f"  {change_report.transfer_summary(details.get('transfer') or {})}"]
    lines += [f"  {line}" for line in change_report.file_lines(changes or {})]
    return "\n".join(lines)


# --- update and the other jobs -------------------------------------------------------------------


def job_options(kind: str, positional: tuple[str, ...] = ()):
    """The click options of a job kind, generated from its declaration (:data:`biomaj.jobs.KINDS`);
    those named in ``positional`` are optional arguments instead. No ``default`` is given to click:
    an option left out comes as None, a flag as False, which are the declared defaults."""

    def decorate(command):
        for option in reversed(jobs.KINDS[kind].options):
            if option.name in positional:
                command = click.argument(option.name, required=option.required)(command)
                continue
            settings: dict[str, Any] = {"help": option.help}
            if option.type is bool:
                settings["is_flag"] = True
            elif option.tasks:
                settings["type"] = click.Choice(option.tasks)
            if option.required:
                settings["required"] = True
            command = click.option(option.flag, *option.aliases, **settings)(command)
        return command

    return decorate


@click.command()
@click.argument("bank")
@job_options("update")
@click.option("--follow", "-f", is_flag=True, help="Show progress: steps, files, bytes and rate.")
@click.option("--progress-interval", type=click.FloatRange(min=0), default=PROGRESS_INTERVAL, show_default=True,
              envvar="BIOMAJ_PROGRESS_INTERVAL", metavar="SECONDS",
              help="With --follow off a terminal (a pipe, a log file): seconds between two progress lines "
                   "($BIOMAJ_PROGRESS_INTERVAL).")
@config_option
@json_option
@click.pass_obj
def update(obj: CliContext, bank: str, follow: bool, progress_interval: float, **options: Any) -> None:
    """Update BANK (and the banks it depends on): a new release if the remote changed."""
    jobs.check_options("update", options)
    job = run_async(_run_job(obj, "update", bank, options, follow, progress_interval))
    _report(obj, job, _update_message)


@click.command()
@click.argument("bank")
@job_options("remove")
@config_option
@json_option
@click.pass_obj
def remove(obj: CliContext, bank: str, **options: Any) -> None:
    """Remove one release of BANK (not the published one, not a frozen one)."""
    job = run_async(_run_job(obj, "remove", bank, options, False))
    _report(obj, job, lambda r: f"{bank}: release {r.get('release')} removed")


@click.command("remove-all")
@click.argument("bank")
@job_options("remove-all")
@config_option
@json_option
@click.pass_obj
def remove_all(obj: CliContext, bank: str, **options: Any) -> None:
    """Remove every release of BANK, its offline directory, logs and record (owner or admin)."""
    job = run_async(_run_job(obj, "remove-all", bank, options, False))
    _report(obj, job, lambda r: f"{bank}: removed ({len(r.get('details', {}).get('releases', []))} releases)")


@click.command("remove-pending")
@click.argument("bank")
@job_options("remove-pending")
@config_option
@json_option
@click.pass_obj
def remove_pending(obj: CliContext, bank: str, **options: Any) -> None:
    """Remove the unfinished (pending) releases of BANK."""
    job = run_async(_run_job(obj, "remove-pending", bank, options, False))
    _report(obj, job, lambda r: f"{bank}: {len(r.get('details', {}).get('removed', []))} pending release(s) removed")


@click.command()
@click.argument("bank")
@job_options("repair")
@config_option
@json_option
@click.pass_obj
def repair(obj: CliContext, bank: str, **options: Any) -> None:
    """Make a release of BANK whole: fetch again the files that differ from its provenance file;
    after a failed update fixed by hand, unlock BANK and record its last session as done."""
    job = run_async(_run_job(obj, "repair", bank, options, True))
    _report(obj, job, lambda r: _repair_message(bank, r))


def _repair_message(bank: str, result: dict) -> str:
    details = result.get("details") or {}
    if "fetched" in details:  # a release repaired from its provenance file
        fetched, counts = details["fetched"], details["counts"]
        name = f"{bank}: release {result.get('release')}"
        text = (f"{name} repaired, {counts['fetched']} files fetched again: {', '.join(fetched)}" if fetched
                else f"{name}: {details['checked']} files as recorded, nothing to repair")
        if details["extra"]:
            text += f"\n  {counts['extra']} extra, left as they are: {', '.join(details['extra'])}"
        return text
    if details.get("repaired"):
        return f"{bank}: repaired, release {result.get('release')}"
    return f"{bank}: unlocked (the last session had no release to record)"


@click.command()
@click.argument("bank")
@job_options("verify", positional=("release",))
@click.option("--progress-interval", type=click.FloatRange(min=0), default=PROGRESS_INTERVAL, show_default=True,
              envvar="BIOMAJ_PROGRESS_INTERVAL", metavar="SECONDS",
              help="Off a terminal: seconds between two progress lines ($BIOMAJ_PROGRESS_INTERVAL).")
@config_option
@json_option
@click.pass_obj
def verify(obj: CliContext, bank: str, progress_interval: float, **options: Any) -> None:
    """Read the files of a release of BANK (RELEASE, else the published one) and compare them with
    its provenance file (ro-crate-metadata.json): exit 1 when a file is missing, changed or extra."""
    job = run_async(_run_job(obj, "verify", bank, options, True, progress_interval))
    releases = ((job.get("result") or {}).get("details") or {}).get("releases")
    if obj.json_output or not releases:
        _report(obj, job, lambda r: "")
        return
    for report in releases:
        click.echo(_verify_lines(bank, report))
    if job["state"] != "done":
        raise SystemExit(1)


def _verify_lines(bank: str, report: dict) -> str:
    """A release's verification as the command prints it: one line, then one per difference."""
    name = f"{bank}: release {report['release']}"
    if report.get("error"):
        return f"{name}: {report['error']}"
    if report.get("recorded"):
        return f"{name}: provenance file written, {report['files']} files ({_bytes(report['bytes'])}) recorded"
    if report.get("ok"):
        return f"{name}: {report['files']} files ({_bytes(report['bytes'])}) as recorded"
    counts = report.get("counts") or {key: len(report[key]) for key in ("changed", "missing", "unreadable", "extra")}
    lines = [f"{name}: " + ", ".join(f"{counts[k]} {k}" for k in ("changed", "missing", "unreadable", "extra")
                                     if counts[k])]
    for change in report["changed"]:
        how = (f"size {change['size']}, recorded {change['expected_size']}" if "size" in change
               else f"sha256 {change['sha256']}, recorded {change['expected_sha256']}")
        lines.append(f"  changed     {change['path']} ({how})")
    lines += [f"  missing     {path}" for path in report["missing"]]
    lines += [f"  unreadable  {item['path']} ({item['error']})" for item in report["unreadable"]]
    lines += [f"  extra       {path}" for path in report["extra"]]
    lines += [f"  ... and {counts[key] - len(report[key])} more {key}"
              for key in ("changed", "missing", "unreadable", "extra") if counts[key] > len(report[key])]
    return "\n".join(lines)


@click.command("release-check")
@click.argument("bank")
@job_options("release-check")
@config_option
@json_option
@click.pass_obj
def release_check(obj: CliContext, bank: str, **options: Any) -> None:
    """The remote release of BANK, and whether it is new (nothing is downloaded)."""
    job = run_async(_run_job(obj, "release-check", bank, options, False))
    _report(obj, job, lambda r: f"{bank}: remote release {r['details']['remoterelease']} ({_release_news(r['details'])})")


def _release_news(details: dict) -> str:
    """What a release check found, in words."""
    changed = details.get("changed_under_same_release")
    if changed:
        files = ", ".join(changed["files"]) + (" ..." if changed["count"] > len(changed["files"]) else "")
        return f"changed under the same release: {changed['count']} file(s) with another checksum: {files}"
    return "new" if details["new"] else "already in production"


# --- quick operations (no job) -------------------------------------------------------------------


def _quick(obj: CliContext, operation: str, bank: str, *args: Any, method: str = "POST", path: str = "",
           body: dict | None = None) -> Outcome:
    """Run a quick operation (the name of its function in :mod:`biomaj.workflow.runner`) here, or on
    the --proxy server (``method`` on the bank's ``path``, which checks that the key's user owns
    the bank)."""
    from biomaj.workflow import runner

    if obj.remote:
        url = f"/api/v1/banks/{quote(bank, safe='')}{path}"
        done = obj.ask_server(lambda api: api.call(method, url, body if body is not None else {}))
        known = {f.name for f in dataclasses.fields(runner.Outcome)}  # a newer server may say more
        outcome = runner.Outcome(**{k: v for k, v in done.items() if k in known})
        outcome.release_dir = Path(outcome.release_dir) if outcome.release_dir else None
        return outcome
    return run_async(_direct(obj, getattr(runner, operation), bank, *args))


async def _direct(obj: CliContext, operation, bank: str, *args: Any) -> Outcome:
    from biomaj.auth.identity import admins_of, current_user
    from biomaj.node.build import webhooks_of
    from biomaj.storage import open_store
    from biomaj.workflow.bank import RunContext

    cfg = obj.config()
    store = open_store(cfg.storage_url, cfg.root)
    webhooks = webhooks_of(cfg)  # `ctl publish` sends release.published
    try:
        async with store:
            run = RunContext(store=store, global_properties=cfg.global_properties, job_id=f"cli-{time.time():.0f}",
                             user=current_user(), admins=admins_of(cfg), webhooks=webhooks)
            return await operation(run, bank, *args)
    finally:
        await webhooks.close()


def _print(obj: CliContext, outcome: Outcome, text: str) -> None:
    emit_json(outcome.to_dict()) if obj.json_output else click.echo(text)


@click.command()
@click.argument("bank")
@click.option("--release", help="Release to publish (default: the latest production release).")
@config_option
@json_option
@click.pass_obj
def publish(obj: CliContext, bank: str, release: str | None) -> None:
    """Publish a release of BANK: `current` points to it."""
    outcome = _quick(obj, "publish_bank", bank, release, path="/publish", body={"release": release} if release else {})
    _print(obj, outcome, f"{bank}: release {outcome.release} published")


@click.command()
@click.argument("bank")
@config_option
@json_option
@click.pass_obj
def unpublish(obj: CliContext, bank: str) -> None:
    """Unpublish BANK: remove `current` and RELEASE.txt."""
    outcome = _quick(obj, "unpublish_bank", bank, path="/unpublish")
    _print(obj, outcome, f"{bank}: unpublished")


@click.command()
@click.argument("bank")
@click.argument("release")
@config_option
@json_option
@click.pass_obj
def freeze(obj: CliContext, bank: str, release: str) -> None:
    """Freeze RELEASE of BANK: never removed until unfrozen."""
    outcome = _quick(obj, "freeze_release", bank, release, True, path=f"/releases/{quote(release, safe='')}/freeze")
    _print(obj, outcome, f"{bank}: release {outcome.release} frozen")


@click.command()
@click.argument("bank")
@click.argument("release")
@config_option
@json_option
@click.pass_obj
def unfreeze(obj: CliContext, bank: str, release: str) -> None:
    """Unfreeze RELEASE of BANK."""
    outcome = _quick(obj, "freeze_release", bank, release, False,
                     path=f"/releases/{quote(release, safe='')}/unfreeze")
    _print(obj, outcome, f"{bank}: release {outcome.release} unfrozen")


@click.command()
@click.argument("bank")
@click.argument("user")
@config_option
@json_option
@click.pass_obj
def owner(obj: CliContext, bank: str, user: str) -> None:
    """Give BANK to USER (its owner or an admin may)."""
    outcome = _quick(obj, "set_owner", bank, user, method="PUT", path="/owner", body={"owner": user})
    _print(obj, outcome, f"{bank}: owned by {user}")


@click.command()
@click.argument("bank")
@click.argument("visibility", type=click.Choice(VISIBILITIES))
@config_option
@json_option
@click.pass_obj
def visibility(obj: CliContext, bank: str, visibility: str) -> None:
    """Make BANK public (seen by everyone) or private (its owner and the admins)."""
    outcome = _quick(obj, "set_visibility", bank, visibility, method="PUT", path="/visibility",
                     body={"visibility": visibility})
    _print(obj, outcome, f"{bank}: {visibility}")


@click.command()
@click.argument("bank")
@click.option("--force", is_flag=True, help="Also a lock whose holder cannot be checked (another host, BioMAJ 3).")
@config_option
@json_option
@click.pass_obj
def unlock(obj: CliContext, bank: str, force: bool) -> None:
    """Clear the lock of BANK left by a process that died (a running one is refused)."""
    if obj.remote:  # the server judges the lease with its own state
        outcome = _quick(obj, "unlock", bank, path="/unlock", body={"force": force})
    else:
        outcome = _quick(obj, "unlock", bank, force, run_async(_lease_free(obj, bank)))
    details = outcome.details
    _print(obj, outcome, f"{bank}: lock of {details['holder']} removed" if details.get("was_locked")
           else f"{bank}: not locked")


async def _lease_free(obj: CliContext, bank: str) -> bool:
    """True when the shared state (Redis) says no job holds BANK's lease; False without one."""
    from biomaj.runtime.lease import lease_free
    from biomaj.state import open_state

    cfg = obj.config()
    if cfg.state_url.startswith("memory"):
        return False  # nothing to open: an in-memory state would be this command's own
    state = open_state(cfg.state_url, prefix=cfg.state_prefix)
    try:
        return await lease_free(state, cfg.state_url, bank)
    finally:
        await state.close()


async def _cancel(obj: CliContext, bank: str) -> list[dict]:
    # in-process mode, the manager running the job (another command) sees it in the job record
    from biomaj.node.cluster import job_client
    from biomaj.storage.base import ACTIVE_JOB_STATES

    async with job_client(obj.config(), actors=False) as client:
        jobs = await client.store.list_jobs(state=ACTIVE_JOB_STATES, bank=bank, limit=None)
        if not jobs:
            raise BiomajError(f"no job queued or running on bank {bank}")
        return [await client.cancel(job["id"]) for job in jobs]


@click.command()
@click.argument("bank")
@config_option
@json_option
@click.pass_obj
def cancel(obj: CliContext, bank: str) -> None:
    """Cancel the jobs of BANK: queued ones at once, a running one stops within seconds."""
    if obj.remote:
        jobs = obj.ask_server(lambda api: api.post(f"/api/v1/banks/{quote(bank, safe='')}/cancel"))
    else:
        jobs = run_async(_cancel(obj, bank))
    if obj.json_output:
        emit_json(jobs)
        return
    for job in jobs:
        what = "cancelled" if job["state"] == "cancelled" else "asked to stop"
        click.echo(f"{bank}: {job['kind']} job {job['id']} {what}")

