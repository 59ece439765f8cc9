"""`biomaj users`: accounts and API keys, on this host's store (an admin's tool, like `biomaj ctl`).

An API key is printed once, when it is created: only its hash is stored.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Awaitable, Callable

import click

from biomaj.cli.context import CliContext, config_option, emit_json, emit_table, json_option
from biomaj.errors import BiomajError


@click.group()
@config_option
@json_option
@click.pass_context
def users(ctx: click.Context) -> None:
    """Users and their API keys (create, list, delete, apikey, revoke, passwd, email, admin)."""
    ctx.ensure_object(CliContext).console_level = "WARNING"  # the commands print their own results


def _run(obj: CliContext, work: Callable[[Any], Awaitable[Any]]) -> Any:
    import asyncio

    from biomaj.auth.identity import users_of
    from biomaj.storage import open_store

    cfg = obj.config()

    async def go() -> Any:
        store = open_store(cfg.storage_url, cfg.root)
        async with store:
            return await work(users_of(cfg, store))

    return asyncio.run(go())


def _read_password(from_stdin: bool, confirm: bool = True) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise BiomajError("no password on standard input")
        return password
    return click.prompt("password", hide_input=True, confirmation_prompt=confirm)


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else ""


@users.command()
@click.argument("name")
@click.option("--email", help="The user's email address.")
@click.option("--admin", is_flag=True, help="Give admin rights (every bank, every user).")
@click.option("--password", "ask_password", is_flag=True, help="Also set a password (asked for; for the web UI).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (scripts).")
@config_option
@json_option
@click.pass_obj
def create(obj: CliContext, name: str, email: str | None, admin: bool, ask_password: bool, password_stdin: bool) -> None:
    """Create user NAME and print its first API key (shown once)."""
    password = _read_password(password_stdin) if (ask_password or password_stdin) else None
    user, key = _run(obj, lambda u: u.create(name, email=email, password=password, admin=admin))
    if obj.json_output:
        emit_json({"user": user, "api_key": key})
        return
    click.echo(f"user {name} created{' (admin)' if user['is_admin'] else ''}")
    click.echo(f"API key (shown once, keep it safe): {key}")


@users.command("list")
@config_option
@json_option
@click.pass_obj
def list_users(obj: CliContext) -> None:
    """Every user: admin or not, LDAP or local, password set, API keys (ids only)."""
    found = _run(obj, lambda u: u.list())
    if obj.json_output:
        emit_json(found)
        return
    emit_table(["User", "Email", "Admin", "LDAP", "Password", "API keys", "Created"],
               [[u["id"], u.get("email") or "", "yes" if u["is_admin"] else "", "yes" if u.get("is_ldap") else "",
                 "yes" if u["has_password"] else "", " ".join(k["id"] for k in u["api_keys"]),
                 _when(u.get("created"))] for u in found])


@users.command()
@click.argument("name")
@config_option
@json_option
@click.pass_obj
def delete(obj: CliContext, name: str) -> None:
    """Delete user NAME and its API keys."""
    _run(obj, lambda u: u.delete(name))
    emit_json({"deleted": name}) if obj.json_output else click.echo(f"user {name} deleted")


@users.command()
@click.argument("name")
@click.option("--label", default="", help="What the key is for (shown in listings).")
@click.option("--renew", is_flag=True, help="Revoke NAME's other keys (BioMAJ 3's renewal: one key, replaced).")
@config_option
@json_option
@click.pass_obj
def apikey(obj: CliContext, name: str, label: str, renew: bool) -> None:
    """Create a new API key for NAME and print it (shown once); older keys stay valid unless --renew."""
    if renew:
        key_id, key, revoked = _run(obj, lambda u: u.renew_api_key(name, label))
    else:
        (key_id, key), revoked = _run(obj, lambda u: u.new_api_key(name, label)), []
    if obj.json_output:
        emit_json({"user": name, "id": key_id, "api_key": key, **({"revoked": revoked} if renew else {})})
        return
    click.echo(f"API key {key_id} for {name} (shown once, keep it safe): {key}")
    if revoked:
        click.echo(f"revoked: {' '.join(revoked)}")


@users.command()
@click.argument("name")
@click.argument("key_id")
@config_option
@json_option
@click.pass_obj
def revoke(obj: CliContext, name: str, key_id: str) -> None:
    """Revoke API key KEY_ID of NAME (the ids are in `biomaj users list`)."""
    _run(obj, lambda u: u.revoke_api_key(name, key_id))
    emit_json({"user": name, "revoked": key_id}) if obj.json_output else click.echo(f"API key {key_id} of {name} revoked")


@users.command()
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (scripts).")
@config_option
@click.pass_obj
def passwd(obj: CliContext, name: str, password_stdin: bool) -> None:
    """Set the password of NAME (asked for twice, or read from standard input)."""
    password = _read_password(password_stdin)
    _run(obj, lambda u: u.set_password(name, password))
    click.echo(f"password of {name} set")


@users.command()
@click.argument("name")
@click.argument("address")
@config_option
@click.pass_obj
def email(obj: CliContext, name: str, address: str) -> None:
    """Set the email address of NAME ("" removes it)."""
    _run(obj, lambda u: u.set_email(name, address or None))
    click.echo(f"email of {name} {'set to ' + address if address else 'removed'}")


@users.command()
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
@config_option
@click.pass_obj
def admin(obj: CliContext, name: str, state: str) -> None:
    """Give (on) or take (off) admin rights to NAME (names in auth.admins stay admins)."""
    _run(obj, lambda u: u.set_admin(name, state == "on"))
    click.echo(f"{name}: admin {state}")
