"""`biomaj ctl schedule list|add|delete`: the cron schedules of the scheduler actor (and the
release-driven entries it keeps for ``schedule.auto`` banks). Admins only, in-process (the store of
config.yml, as the unix user, an admin by config.yml, global.properties or the user's flag) or
through `ctl --proxy URL` (``/api/v1/schedules``), with the same output.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import click

from biomaj.cli.context import CliContext, config_option, emit_json, emit_table, json_option, run_async
from biomaj.errors import BiomajError

# `ctl --help` imports this module for the group's help: the scheduler (cronsim), the store and the
# users are imported by the commands that use them.


@click.group()
@config_option
@json_option
def schedule() -> None:
    """Cron schedules of bank updates (admins): list, add, delete."""


def _when(value: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(value)))


def _local(obj: CliContext, work: Callable[[Any, Any, str], Awaitable[Any]]) -> Any:
    """``work(config, store, user)`` on config.yml's store, if the unix user is an admin."""
    from biomaj.auth.identity import current_user, users_of
    from biomaj.storage import open_store

    cfg = obj.config()
    me = current_user()

    async def run() -> Any:
        store = open_store(cfg.storage_url, cfg.root)
        async with store:
            if not users_of(cfg, store).is_admin(me, await store.get_user(me)):
                raise BiomajError(f"schedules are managed by admins, and {me} is not one: add {me} to auth.admins of "
                                  f"config.yml (or `biomaj users admin {me} on`)")
            return await work(cfg, store, me)

    return run_async(run())


def _views(cfg: Any, docs: list[dict]) -> list[dict]:
    from biomaj.scheduler import schedules
    from biomaj.scheduler.cron import time_zone

    return schedules.views(docs, time.time(), time_zone(cfg.settings.scheduler.timezone))


@schedule.command("list")
@config_option
@json_option
@click.pass_obj
def list_schedules(obj: CliContext) -> None:
    """Every schedule: its banks, user, next run and last run (local time)."""
    from biomaj.scheduler import schedules

    if obj.remote:
        records = obj.ask_server(lambda api: api.get("/api/v1/schedules"))
    else:
        async def read(cfg, store, _me):
            return _views(cfg, await schedules.list_schedules(store))

        records = _local(obj, read)
    if obj.json_output:
        emit_json(records)
    elif not records:
        click.echo("no schedule: add one with `biomaj ctl schedule add NAME --cron '0 3 * * *' --bank BANK`")
    else:
        emit_table(schedules.TABLE_HEADERS, schedules.table_rows(records, _when))


@schedule.command()
@click.argument("name")
@click.option("--cron", "expr", required=True, metavar='"M H DOM MON DOW"',
              help="When, as a 5-field crontab expression, e.g. '0 3 * * *' (03:00 every day).")
@click.option("--bank", "banks", multiple=True, required=True, metavar="BANK",
              help="A bank to update (repeat it, or give a comma-separated list).")
@click.option("--user", metavar="USER", help="Whom the updates run as (default: you).")
@config_option
@json_option
@click.pass_obj
def add(obj: CliContext, name: str, expr: str, banks: tuple[str, ...], user: str | None) -> None:
    """Create schedule NAME, or replace the one of that name."""
    names = [b.strip() for value in banks for b in value.split(",") if b.strip()]
    if obj.remote:
        body = {"name": name, "cron": expr, "banks": names, **({"user": user} if user else {})}
        answer = obj.ask_server(lambda api: api.post("/api/v1/schedules", body))
        record, replaced = answer["schedule"], answer["replaced"]
    else:
        async def write(cfg, store, me):
            from biomaj.scheduler import schedules

            doc, replaced = await schedules.add_schedule(store, cfg.global_properties, name=name, cron=expr,
                                                         banks=names, user=user or me, by=me)
            return _views(cfg, [doc])[0], replaced

        record, replaced = _local(obj, write)
    if obj.json_output:
        emit_json(record)
        return
    when = _when(record["next_run"]) if record.get("next_run") else "never"
    click.echo(f"schedule {record['name']} {'replaced' if replaced else 'added'}: {record['cron']}, "
               f"update of {', '.join(record['banks'])} as {record['user']}; next run {when}")


@schedule.command()
@click.argument("name")
@config_option
@json_option
@click.pass_obj
def delete(obj: CliContext, name: str) -> None:
    """Delete schedule NAME (an auto:BANK entry comes back, back-off reset, while schedule.auto is set)."""
    if obj.remote:
        obj.ask_server(lambda api: api.delete(f"/api/v1/schedules/{quote(name, safe='')}"))
    else:
        async def remove(_cfg, store, _me):
            from biomaj.scheduler import schedules

            await schedules.delete_schedule(store, name)

        _local(obj, remove)
    if obj.json_output:
        emit_json({"deleted": name})
    else:
        click.echo(f"schedule {name} deleted")
