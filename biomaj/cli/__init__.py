"""The `biomaj` command: init, serve, ctl, users, migrate.

Errors a user can fix are printed as one line (`error: ...`) with a non-zero exit code, never a
traceback (set BIOMAJ_DEBUG=1 to see one for an unexpected error).
"""

from __future__ import annotations

import os
import sys

import click

from biomaj import __version__
from biomaj.cli.context import CliContext, config_option
from biomaj.cli.lazy import LazyGroup
from biomaj.errors import BiomajError

#: The commands, each imported only when it runs or --help lists it (biomaj/cli/lazy.py).
COMMANDS = {
    "init": "biomaj.cli.init:init",
    "serve": "biomaj.cli.serve:serve",
    "ctl": "biomaj.cli.ctl:ctl",
    "users": "biomaj.cli.users:users",
    "migrate": "biomaj.cli.migrate:migrate",
}


class _Main(LazyGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BiomajError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback on demand
            if os.environ.get("BIOMAJ_DEBUG"):
                raise
            click.echo(f"error: unexpected {type(exc).__name__}: {exc} (set BIOMAJ_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=_Main, lazy_subcommands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="biomaj")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Mirror bioinformatics data banks: detect new releases, download, post-process, publish."""
    ctx.ensure_object(CliContext)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="biomaj")
