"""`biomaj ctl` commands that read: status, status-ko, show, search, history, stats, whatsup,
and the maintenance switch. Tables look like BioMAJ 3's (reference 3.5); --json gives records.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from biomaj import reports
from biomaj.cli.context import CliContext, config_option, emit_json, json_option
from biomaj.runtime.identity import admins_of, current_user
from biomaj.storage import open_store
from biomaj.storage.base import ACTIVE_JOB_STATES
from biomaj.workflow import locks


def register(ctl: click.Group) -> None:
    for command in (status, status_ko, show, search, history, stats, whatsup, maintenance):
        ctl.add_command(command)


def _viewer(cfg) -> reports.Viewer:
    return reports.Viewer(user=current_user(), admins=admins_of(cfg))


def _emit(obj: CliContext, tables: list[reports.Table], style: str = "psql") -> None:
    if obj.json_output:
        data = {t.title or "rows": t.records() for t in tables} if len(tables) > 1 else tables[0].records()
        emit_json(data)
        return
    click.echo("\n".join(reports.render(t, style) for t in tables))


async def _read(cfg, reader):
    store = open_store(cfg.storage_url, cfg.root)
    async with store:
        return await reader(store)


async def _full_banks(store) -> list[dict]:
    return [doc for doc in [await store.get_bank(b["name"]) for b in await store.list_banks()] if doc]


def _lock_dir(cfg) -> Path:
    return locks.installation_lock_dir(cfg.global_properties, cfg.root)


@click.command()
@click.argument("bank", required=False)
@config_option
@json_option
@click.pass_obj
def status(obj: CliContext, bank: str | None) -> None:
    """Every bank with its release and last update, or BANK's releases and pending runs."""
    cfg = obj.config()
    viewer = _viewer(cfg)
    if bank is None:
        banks = asyncio.run(_read(cfg, lambda s: s.list_banks()))
        _emit(obj, [reports.status_all(banks, viewer)])
        return
    doc = asyncio.run(_read(cfg, lambda s: s.get_bank(bank)))
    if doc is None:
        from biomaj.errors import UnknownBank

        raise UnknownBank(f"bank {bank}: never updated (no record in the store)")
    tables = reports.status_bank(doc, viewer)
    if obj.json_output:  # the tables have no title: one key each, pending always present
        emit_json({"bank": [], "production": [], "pending": [],
                   **{key: table.records() for key, table in zip(("bank", "production", "pending"), tables)}})
        return
    _emit(obj, tables)


@click.command("status-ko")
@config_option
@json_option
@click.pass_obj
def status_ko(obj: CliContext) -> None:
    """Banks whose last update failed (and is not finished)."""
    cfg = obj.config()
    _emit(obj, [reports.status_ko(asyncio.run(_read(cfg, _full_banks)), _viewer(cfg))])


@click.command()
@click.argument("bank")
@click.option("--release", help="Only this release.")
@config_option
@json_option
@click.pass_obj
def show(obj: CliContext, bank: str, release: str | None) -> None:
    """Formats, types, tags and files of BANK's production releases."""
    cfg = obj.config()
    doc = asyncio.run(_read(cfg, lambda s: s.get_bank(bank)))
    if doc is None:
        from biomaj.errors import UnknownBank

        raise UnknownBank(f"bank {bank}: never updated (no record in the store)")
    _emit(obj, [reports.show(doc, _viewer(cfg), release)], style="grid")


@click.command()
@click.option("--formats", help="Comma-separated formats (any of them).")
@click.option("--types", help="Comma-separated types (any of them).")
@config_option
@json_option
@click.pass_obj
def search(obj: CliContext, formats: str | None, types: str | None) -> None:
    """Production releases having one of --formats and one of --types."""
    cfg = obj.config()
    banks = asyncio.run(_read(cfg, lambda s: s.list_banks()))
    table = reports.search(banks, _viewer(cfg), reports.split_list(formats), reports.split_list(types))
    if not obj.json_output:
        click.echo(f"Search by formats={reports.split_list(formats)}, types={reports.split_list(types)}")
    _emit(obj, [table])


@click.command()
@click.option("--bank", help="Only this bank.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1), help="Most recent entries shown.")
@config_option
@json_option
@click.pass_obj
def history(obj: CliContext, bank: str | None, limit: int) -> None:
    """Updates and removals, most recent first."""
    cfg = obj.config()
    entries = asyncio.run(_read(cfg, lambda s: s.list_history(bank, limit)))
    _emit(obj, [reports.history(entries)])


@click.command()
@config_option
@json_option
@click.pass_obj
def stats(obj: CliContext) -> None:
    """Disk usage per bank and release."""
    cfg = obj.config()
    banks = asyncio.run(_read(cfg, lambda s: s.list_banks()))
    if obj.json_output:
        emit_json(reports.stats_records(banks, _viewer(cfg)))
        return
    _emit(obj, [reports.stats(banks, _viewer(cfg))])


@click.command()
@config_option
@json_option
@click.pass_obj
def whatsup(obj: CliContext) -> None:
    """What runs now: locked banks (and maintenance), queued and running jobs."""
    cfg = obj.config()
    held = [{"bank": bank, "owner": holder.describe()} for bank, holder in locks.list_locks(_lock_dir(cfg))]
    jobs = asyncio.run(_read(cfg, lambda s: s.list_jobs(state=ACTIVE_JOB_STATES, limit=None)))
    queued = [job for job in jobs if job["state"] == "queued"]
    _emit(obj, [reports.whatsup(held, queued)])


@click.command()
@click.argument("action", type=click.Choice(["on", "off", "status"]))
@config_option
@json_option
@click.pass_obj
def maintenance(obj: CliContext, action: str) -> None:
    """Maintenance mode: while on, no workflow starts (lock.dir/biomaj.lock, as BioMAJ 3)."""
    cfg = obj.config()
    lock_dir = _lock_dir(cfg)
    if action != "status":
        locks.set_maintenance(lock_dir, action == "on", current_user())
    on = locks.is_maintenance(lock_dir)
    if obj.json_output:
        emit_json({"maintenance": on})
    else:
        click.echo(f"Maintenance: {'On' if on else 'Off'}")
