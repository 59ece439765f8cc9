"""A click group whose subcommands are imported when they are used.

Click's documented pattern "Lazily loading subcommands": the group knows each subcommand as
``"module:attribute"`` and imports that module only when the command is run, or shown by
``--help``. ``biomaj ctl banks`` thus never imports the workflow, the bus or the web app, and the
command starts in a fraction of the time that importing every command's module would take.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import click


class LazyGroup(click.Group):
    """A group with ``lazy_subcommands={name: "package.module:attribute"}`` besides its own."""

    def __init__(self, *args: Any, lazy_subcommands: Mapping[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> click.Command:
        """Import the command, and keep it as one of the group's own from then on."""
        module_name, attribute = self.lazy_subcommands[name].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}:{attribute} is not a click command")
        if command.name != name:
            raise ValueError(f"{module_name}:{attribute} is the command {command.name!r}, registered as {name!r}")
        del self.lazy_subcommands[name]
        self.add_command(command)
        return command
