"""`biomaj ctl`: operate banks and look at the service. Each command is one small function.

Commands read the configuration and the store directly (the SQLite store is safe to share with
a running server); what only a running server knows (its nodes, in embedded mode) is asked of
its web actor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from biomaj.cli.context import CliContext, config_option, emit_json, emit_table, json_option
from biomaj.cli.lazy import LazyGroup
from biomaj.errors import BiomajError

if TYPE_CHECKING:
    from biomaj.config.properties import BankProperties

# What a command needs is imported in its function: `ctl banks` must not pay for the workflow,
# the bus or aiohttp; the commands of the modules below are imported when run.

#: The commands of other modules, each imported when it runs or --help lists it (cli/lazy.py).
LAZY_COMMANDS = {
    **{name: f"biomaj.cli.bank_ops:{name.replace('-', '_')}" for name in (
        "update", "remove", "remove-all", "remove-pending", "repair", "release-check", "verify", "publish",
        "unpublish", "freeze", "unfreeze", "owner", "visibility", "cancel", "unlock")},
    **{name: f"biomaj.cli.bank_reports:{name.replace('-', '_')}" for name in (
        "status", "status-ko", "show", "search", "history", "stats", "whatsup", "maintenance")},
    "schedule": "biomaj.cli.schedule:schedule",
}


@click.group(cls=LazyGroup, lazy_subcommands=LAZY_COMMANDS)
@config_option
@json_option
@click.option("-v", "--verbose", is_flag=True, help="Show the application log (info level) on stderr.")
@click.option("--proxy", metavar="URL", envvar="BIOMAJ_PROXY",
              help="Run the command on the biomaj server at URL, through its REST API ($BIOMAJ_PROXY); "
                   "config.yml is not read.")
@click.option("--api-key", metavar="KEY", envvar="BIOMAJ_APIKEY",
              help="API key of your user on the --proxy server ($BIOMAJ_APIKEY, safer: not seen by `ps`).")
@click.pass_context
def ctl(ctx: click.Context, verbose: bool, proxy: str | None, api_key: str | None) -> None:
    """Operate banks and inspect the service.

    In-process by default (config.yml, its store and its bus); with --proxy, on a remote server as
    the owner of --api-key, with the same output.
    """
    obj = ctx.ensure_object(CliContext)
    obj.console_level = None if verbose else "WARNING"
    if proxy:
        from biomaj.client.api import proxy_url

        obj.proxy, obj.api_key = proxy_url(proxy), api_key or None


def _load_bank(cfg, bank: str) -> BankProperties:
    """A bank by name (from conf.dir) or by the path of its .properties file."""
    from biomaj.config.properties import BankProperties

    if bank.endswith(".properties") or "/" in bank:
        path = Path(bank)
        if not path.is_file():
            raise BiomajError(f"{bank}: no such bank file")
        return BankProperties.load(cfg.global_properties, path.absolute())
    return BankProperties.load(cfg.global_properties, bank)


# check ---------------------------------------------------------------------------------------
@ctl.command()
@click.argument("bank")
@config_option
@json_option
@click.pass_obj
def check(obj: CliContext, bank: str) -> None:
    """Check BANK's configuration (a name, or a .properties file): verdict and every problem."""
    from biomaj.config.check import check_bank, check_support, verdict

    if obj.remote:
        if bank.endswith(".properties") or "/" in bank:
            raise BiomajError(f"{bank}: with --proxy, give the name of a bank of the server (its bank files are checked there)")
        result = obj.ask_server(lambda api: api.get(f"/api/v1/banks/{quote(bank, safe='')}/check"))
    else:
        props = _load_bank(obj.config(), bank)
        problems = check_bank(props) + check_support(props)  # BioMAJ 3's rules, then what biomaj lacks
        result = {
            "bank": props.name,
            "file": str(props.path),
            "valid": verdict(problems),
            "problems": [{"level": p.level, "key": p.key, "message": p.message} for p in problems],
        }
    if obj.json_output:
        emit_json(result)
    else:
        click.echo(f"{result['bank']} check: {result['valid']} ({result['file']})")
        for p in result["problems"]:
            click.echo(f"  {p['level']:<7} {p['key'] or '-'}: {p['message']}")
        if result["valid"] and not result["problems"]:
            click.echo("  no problem found")
    if not result["valid"]:
        raise SystemExit(1)


# banks ---------------------------------------------------------------------------------------
def _format_time(value: Any) -> str:
    if not value:
        return "N/A"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(value)))
    except (TypeError, ValueError):
        return str(value)


async def _bank_documents(cfg) -> list[dict]:
    from biomaj.storage import open_store

    store = open_store(cfg.storage_url, cfg.root)
    async with store:
        return await store.list_banks()


@ctl.command()
@config_option
@json_option
@click.pass_obj
def banks(obj: CliContext) -> None:
    """The banks of conf/ with their state in the store."""
    if obj.remote:
        rows, where = obj.ask_server(lambda api: api.get("/api/v1/bank-files")), f"the conf.dir of {obj.proxy}"
    else:
        import asyncio

        from biomaj.inventory import bank_rows, conf_dir_of

        cfg = obj.config()
        conf_dir = conf_dir_of(cfg.global_properties)
        rows, where = bank_rows(cfg.global_properties, conf_dir, asyncio.run(_bank_documents(cfg))), str(conf_dir)
    if obj.json_output:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no bank: add <name>.properties files to {where}")
        return
    emit_table(
        ["Name", "Config", "Published release", "Releases", "Pending", "Visibility", "Last update"],
        [
            [r["name"], r["config"], r["published"] or "N/A", r["releases"], r["pending"], r["visibility"] or "N/A",
             _format_time(r["last_update"])]
            for r in rows
        ],
    )


# nodes ---------------------------------------------------------------------------------------
async def _fetch_status(url: str) -> dict:
    import asyncio

    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(f"{url}/api/v1/status") as response:
                if response.status != 200:
                    raise BiomajError(f"{url}/api/v1/status answered HTTP {response.status}")
                return await response.json()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        raise BiomajError(
            f"no biomaj server answers at {url}: start one with `biomaj serve --all` (nodes are known only to a running server)"
        ) from None


async def _nodes_from_state(cfg) -> list[dict]:
    from biomaj.state import open_state

    state = open_state(cfg.state_url, prefix=cfg.state_prefix)
    try:
        return [node.to_dict() for node in await state.nodes()]
    finally:
        await state.close()


@ctl.command()
@config_option
@json_option
@click.pass_obj
def nodes(obj: CliContext) -> None:
    """The nodes of the service, their roles and their last heartbeat."""
    import asyncio

    if obj.remote:
        node_list = obj.ask_server(lambda api: api.get("/api/v1/nodes"))
    elif (cfg := obj.config()).state_url.startswith("memory"):
        node_list = asyncio.run(_fetch_status(cfg.web_url))["nodes"]
    else:
        node_list = asyncio.run(_nodes_from_state(cfg))
    if obj.json_output:
        emit_json(node_list)
        return
    now = time.time()
    emit_table(
        ["Node", "Host", "PID", "Roles", "Version", "In flight", "Last heartbeat"],
        [
            [n["node_id"], n["host"], n["pid"], ",".join(n["roles"]), n["version"], n.get("in_flight", 0),
             f"{max(0.0, now - n['last_seen']):.1f}s ago"]
            for n in node_list
        ],
    )
