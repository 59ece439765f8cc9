"""`biomaj ctl`: operate banks and look at the service. Each command is one small function.

Commands read the configuration and the store directly (the SQLite store is safe to share with
a running server); what only a running server knows (its nodes, in embedded mode) is asked of
its web actor.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import click

from biomaj.cli.context import CliContext, config_option, emit_json, emit_table, json_option
from biomaj.config.check import check_bank, check_support, verdict
from biomaj.config.properties import BankProperties, GlobalProperties, list_bank_names
from biomaj.errors import BiomajError, ConfigError
from biomaj.storage import open_store


@click.group()
@config_option
@json_option
@click.option("-v", "--verbose", is_flag=True, help="Show the application log (info level) on stderr.")
@click.pass_context
def ctl(ctx: click.Context, verbose: bool) -> None:
    """Operate banks and inspect the service."""
    ctx.ensure_object(CliContext).console_level = None if verbose else "WARNING"


def _conf_dir(cfg) -> Path:
    conf_dir = GlobalProperties.load(cfg.global_properties).get("conf.dir")
    if not conf_dir:
        raise ConfigError(f"{cfg.global_properties}: conf.dir is not set; expected the folder of the bank files")
    return Path(conf_dir)


def _load_bank(cfg, bank: str) -> BankProperties:
    """A bank by name (from conf.dir) or by the path of its .properties file."""
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
    cfg = obj.config()
    props = _load_bank(cfg, bank)
    problems = check_bank(props) + check_support(props)  # BioMAJ 3's rules, then what biomaj lacks
    ok = verdict(problems)
    if obj.json_output:
        emit_json(
            {
                "bank": props.name,
                "file": str(props.path),
                "valid": ok,
                "problems": [{"level": p.level, "key": p.key, "message": p.message} for p in problems],
            }
        )
    else:
        click.echo(f"{props.name} check: {ok} ({props.path})")
        for p in problems:
            click.echo(f"  {p.level:<7} {p.key or '-'}: {p.message}")
        if ok and not problems:
            click.echo("  no problem found")
    if not ok:
        raise SystemExit(1)


# banks ---------------------------------------------------------------------------------------
def _format_time(value: Any) -> str:
    if not value:
        return "N/A"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(value)))
    except (TypeError, ValueError):
        return str(value)


def _published_release(doc: dict | None) -> str | None:
    if not doc or not doc.get("current"):
        return None
    for prod in doc.get("production") or []:
        if prod.get("session") == doc["current"]:
            return prod.get("release")
    return None


def _bank_row(name: str, cfg, doc: dict | None) -> dict:
    try:
        problems = check_bank(BankProperties.load(cfg.global_properties, name))
        config_state = "ok" if verdict(problems) else "invalid"
    except BiomajError as exc:
        config_state = f"unreadable: {exc}"
    props = (doc or {}).get("properties") or {}
    return {
        "name": name,
        "config": config_state,
        "in_store": doc is not None,
        "visibility": props.get("visibility"),
        "owner": props.get("owner"),
        "published": _published_release(doc),
        "releases": len((doc or {}).get("production") or []),
        "pending": len((doc or {}).get("pending") or []),
        "last_update": (doc or {}).get("last_update_session"),
    }


async def _bank_documents(cfg) -> dict[str, dict]:
    store = open_store(cfg.storage_url, cfg.root)
    async with store:
        return {doc["name"]: doc for doc in await store.list_banks()}


@ctl.command()
@config_option
@json_option
@click.pass_obj
def banks(obj: CliContext) -> None:
    """The banks of conf/ with their state in the store."""
    cfg = obj.config()
    names = list_bank_names(_conf_dir(cfg))
    docs = asyncio.run(_bank_documents(cfg))
    rows = [_bank_row(name, cfg, docs.get(name)) for name in names]
    # Banks known to the store whose file has gone: shown, so that nothing is silently lost.
    rows += [
        {**_bank_row(name, cfg, doc), "config": "no bank file"} for name, doc in sorted(docs.items()) if name not in names
    ]
    if obj.json_output:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no bank: add <name>.properties files to {_conf_dir(cfg)}")
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
    cfg = obj.config()
    if cfg.state_url.startswith("memory"):
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


def _register_bank_commands() -> None:
    from biomaj.cli import bank_ops, bank_reports

    bank_ops.register(ctl)
    bank_reports.register(ctl)


_register_bank_commands()
