"""`biomaj serve --all | --role ROLE[,ROLE]`."""

from __future__ import annotations

import asyncio
import logging

import click

from biomaj.cli.context import CliContext, config_option
from biomaj.runtime.memory import tune_malloc
from biomaj.runtime.roles import ROLES, parse_roles

log = logging.getLogger(__name__)


def _run(coro) -> None:
    try:
        import uvloop  # optional: biomaj[fast]
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


@click.command()
@click.option("--all", "all_roles", is_flag=True, help="Run every actor in this process.")
@click.option("--role", "role_spec", metavar="ROLE[,ROLE]", help=f"Run the actors of these roles: {', '.join(ROLES)}.")
@config_option
@click.pass_obj
def serve(obj: CliContext, all_roles: bool, role_spec: str | None) -> None:
    """Run the service until SIGINT or SIGTERM."""
    from biomaj.runtime.node import Node, serve_until_signalled

    roles = parse_roles(all_roles, role_spec)
    node = Node(obj.config(), roles)
    tune_malloc()
    _run(serve_until_signalled(node))
