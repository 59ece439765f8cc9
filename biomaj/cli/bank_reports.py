"""`biomaj ctl` commands that read: status, status-ko, show, search, history, stats, whatsup,
and the maintenance switch. Tables look like BioMAJ 3's (reference 3.5); --json gives records.
With ``ctl --proxy URL`` the server builds the same tables (its ``format=table`` answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import quote

import click

from biomaj import reports
from biomaj.cli.context import CliContext, config_option, emit_json, json_option, run_async
from biomaj.errors import UnknownBank

if TYPE_CHECKING:
    from biomaj.storage.base import Store

# `ctl --help` imports this module for its commands' help: the store, the locks and the users are
# imported by the functions that read them.


def _viewer(cfg) -> reports.Viewer:
    from biomaj.auth.identity import admins_of, current_user

    return reports.Viewer(user=current_user(), admins=admins_of(cfg))


def _emit(obj: CliContext, tables: list[reports.Table], style: str = "psql") -> None:
    if obj.json_output:
        data = {t.title or "rows": t.records() for t in tables} if len(tables) > 1 else tables[0].records()
        emit_json(data)
        return
    click.echo("\n".join(reports.render(t, style) for t in tables))


async def _read(cfg, reader):
    from biomaj.storage import open_store

    store = open_store(cfg.storage_url, cfg.root)
    async with store:
        return await reader(store)


Local = Callable[[Any, "Store"], Awaitable[Any]]


def _report(obj: CliContext, path: str, local: Local, **params: Any) -> list[reports.Table]:
    """A read command's tables: from the --proxy server (the ``format=table`` form of ``path``, built
    by the same :mod:`biomaj.reports` functions for the key's user), else ``local(config, store)``."""
    if obj.remote:
        return obj.ask_server(lambda api: api.tables(path, **params))
    cfg = obj.config()
    return run_async(_read(cfg, lambda store: local(cfg, store)))


def _bank_path(bank: str, *parts: str) -> str:
    return "/".join([f"/api/v1/banks/{quote(bank, safe='')}", *parts])


def _bank_report(obj: CliContext, bank: str, path: str, build: Callable[[Any, dict], list[reports.Table]],
                 release: str | None = None) -> tuple[list[reports.Table], list[dict]]:
    """A bank's tables (``build(config, document)``, or the --proxy server's ``format=table``
    answer of ``path``) and its change reports (``reports.change_records``; the server's
    ``/changes``), read together."""
    params = {"release": release} if release else {}
    if obj.remote:
        async def ask(api) -> tuple[list[reports.Table], list[dict]]:
            return await api.tables(path, **params), await api.get(_bank_path(bank, "changes"), **params)

        return obj.ask_server(ask)
    cfg = obj.config()

    async def both(store: Store) -> tuple[list[reports.Table], list[dict]]:
        doc = await _known_bank(store, bank)
        return build(cfg, doc), reports.change_records(doc, _viewer(cfg), release)

    return run_async(_read(cfg, both))


def _without_place(record: dict) -> dict:
    """A change record as the session stores it (without the release, session and state that
    ``reports.change_records`` adds)."""
    return {k: v for k, v in record.items() if k not in ("release", "session", "state")}


async def _known_bank(store: Store, bank: str) -> dict:
    doc = await store.get_bank(bank)
    if doc is None:
        raise UnknownBank(f"bank {bank}: never updated (no record in the store)")
    return doc


async def _full_banks(store) -> list[dict]:
    return [doc for doc in [await store.get_bank(b["name"]) for b in await store.list_banks()] if doc]


def _lock_dir(cfg) -> Path:
    from biomaj.workflow import locks

    return locks.installation_lock_dir(cfg.global_properties, cfg.root)


@click.command()
@click.argument("bank", required=False)
@config_option
@json_option
@click.pass_obj
def status(obj: CliContext, bank: str | None) -> None:
    """Every bank with its release and last update, or BANK's releases and pending runs."""
    if bank is None:
        async def every_bank(cfg, store: Store) -> list[reports.Table]:
            return [reports.status_all(await store.list_banks(), _viewer(cfg))]

        _emit(obj, _report(obj, "/api/v1/banks", every_bank))
        return

    tables, changes = _bank_report(obj, bank, _bank_path(bank), lambda cfg, doc: reports.status_tables(doc, _viewer(cfg)))
    if obj.json_output:  # the tables have no title (but the buckets'): one key each, pending always present
        untitled = [table for table in tables if table.title != reports.BUCKETS_TITLE]
        emit_json({"bank": [], "production": [], "pending": [], "buckets": [],
                   **{key: table.records() for key, table in zip(("bank", "production", "pending"), untitled)},
                   **{"buckets": table.records() for table in tables if table.title == reports.BUCKETS_TITLE},
                   "changes": changes})
        return
    _emit(obj, tables + ([reports.changes(changes)] if changes else []))


@click.command("status-ko")
@config_option
@json_option
@click.pass_obj
def status_ko(obj: CliContext) -> None:
    """Banks whose last update failed (and is not finished)."""
    async def failed(cfg, store: Store) -> list[reports.Table]:
        return [reports.status_ko(await _full_banks(store), _viewer(cfg))]

    _emit(obj, _report(obj, "/api/v1/status-ko", failed))


@click.command()
@click.argument("bank")
@click.option("--release", help="Only this release.")
@config_option
@json_option
@click.pass_obj
def show(obj: CliContext, bank: str, release: str | None) -> None:
    """Formats, types, tags and files of BANK's production releases, and what each changed."""
    tables, changes = _bank_report(obj, bank, _bank_path(bank, "show"),
                                   lambda cfg, doc: [reports.show(doc, _viewer(cfg), release)], release)
    if obj.json_output:  # BioMAJ 3's records, each with its release's change report (or null)
        by_release = {str(record["release"]): _without_place(record) for record in changes}
        rows = tables[0].records()
        for row in rows:
            row["changes"] = by_release.get(str(row["Release"]).removesuffix(" (current)"))
        emit_json(rows)
        return
    click.echo("\n".join(reports.render(t, "grid") for t in tables + ([reports.changes(changes)] if changes else [])))


@click.command()
@click.option("--formats", help="Comma-separated formats (any of them).")
@click.option("--types", help="Comma-separated types (any of them).")
@config_option
@json_option
@click.pass_obj
def search(obj: CliContext, formats: str | None, types: str | None) -> None:
    """Production releases having one of --formats and one of --types."""
    wanted_formats, wanted_types = reports.split_list(formats), reports.split_list(types)

    async def found(cfg, store: Store) -> list[reports.Table]:
        return [reports.search(await store.list_banks(), _viewer(cfg), wanted_formats, wanted_types)]

    tables = _report(obj, "/api/v1/search", found, formats=formats, types=types)
    if not obj.json_output:
        click.echo(f"Search by formats={wanted_formats}, types={wanted_types}")
    _emit(obj, tables)


@click.command()
@click.option("--bank", help="Only this bank.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1), help="Most recent entries shown.")
@config_option
@json_option
@click.pass_obj
def history(obj: CliContext, bank: str | None, limit: int) -> None:
    """Updates and removals, most recent first."""
    async def entries(_cfg, store: Store) -> list[reports.Table]:
        return [reports.history(await store.list_history(bank, limit))]

    _emit(obj, _report(obj, "/api/v1/history", entries, bank=bank, limit=limit))


@click.command()
@config_option
@json_option
@click.pass_obj
def stats(obj: CliContext) -> None:
    """Disk usage per bank and release."""
    if obj.json_output:
        if obj.remote:
            emit_json(obj.ask_server(lambda api: api.get("/api/v1/stats")))
        else:
            cfg = obj.config()
            emit_json(reports.stats_records(run_async(_read(cfg, lambda s: s.list_banks())), _viewer(cfg)))
        return

    async def usage(cfg, store: Store) -> list[reports.Table]:
        return [reports.stats(await store.list_banks(), _viewer(cfg))]

    _emit(obj, _report(obj, "/api/v1/stats", usage))


@click.command()
@config_option
@json_option
@click.pass_obj
def whatsup(obj: CliContext) -> None:
    """What runs now: locked banks (and maintenance), queued and running jobs."""
    from biomaj.storage.base import ACTIVE_JOB_STATES
    from biomaj.workflow import locks

    async def running(cfg, store: Store) -> list[reports.Table]:
        held = [{"bank": bank, "owner": holder.describe()} for bank, holder in locks.list_locks(_lock_dir(cfg))]
        jobs = await store.list_jobs(state=ACTIVE_JOB_STATES, limit=None)
        return [reports.whatsup(held, [job for job in jobs if job["state"] == "queued"])]

    _emit(obj, _report(obj, "/api/v1/whatsup", running))


@click.command()
@click.argument("action", type=click.Choice(["on", "off", "status"]))
@config_option
@json_option
@click.pass_obj
def maintenance(obj: CliContext, action: str) -> None:
    """Maintenance mode: while on, no workflow starts (lock.dir/biomaj.lock, as BioMAJ 3)."""
    if obj.remote:
        if action == "status":
            on = obj.ask_server(lambda api: api.get("/api/v1/maintenance"))["maintenance"]
        else:
            on = obj.ask_server(lambda api: api.put("/api/v1/maintenance", {"maintenance": action == "on"}))["maintenance"]
    else:
        from biomaj.auth.identity import current_user
        from biomaj.workflow import locks

        lock_dir = _lock_dir(obj.config())
        if action != "status":
            locks.set_maintenance(lock_dir, action == "on", current_user())
        on = locks.is_maintenance(lock_dir)
    if obj.json_output:
        emit_json({"maintenance": on})
    else:
        click.echo(f"Maintenance: {'On' if on else 'Off'}")
