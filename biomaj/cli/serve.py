"""`biomaj serve --all | --role ROLE[,ROLE]`."""

from __future__ import annotations

import logging

import click

from biomaj.cli.context import CliContext, config_option, run_async
from biomaj.config.roles import ROLES, parse_roles

log = logging.getLogger(__name__)


@click.command()
@click.option("--all", "all_roles", is_flag=True, help="Run every actor in this process.")
@click.option("--role", "role_spec", metavar="ROLE[,ROLE]", help=f"Run the actors of these roles: {', '.join(ROLES)}.")
@click.option("--node-id", metavar="ID", help="This node's id (default: node.id in config.yml, else <host>-<pid>-<random>). "
              "Give a manager a fixed id to have it resume, after a restart, the jobs it was running.")
@config_option
@click.pass_obj
def serve(obj: CliContext, all_roles: bool, role_spec: str | None, node_id: str | None) -> None:
    """Run the service until SIGINT or SIGTERM."""
    from biomaj.node.serve import Node, serve_until_signalled
    from biomaj.runtime.memory import tune_malloc

    roles = parse_roles(all_roles, role_spec, warn=lambda text: click.echo(f"warning: {text}", err=True))
    config = obj.config()
    if node_id is not None:
        if not node_id.strip():
            raise click.BadParameter("must not be empty", param_hint="--node-id")
        config.settings.node.id = node_id.strip()
    node = Node(config, roles)
    tune_malloc()
    run_async(serve_until_signalled(node))
