"""Every command and every route is documented (datasette's tests/test_docs.py)."""

from __future__ import annotations

from pathlib import Path

import click

from biomaj.cli import cli
from biomaj.web.app import routes

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _commands(group: click.Group, prefix: str):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the lazy ones too (biomaj/cli/lazy.py), not only group.commands
        command = group.get_command(ctx, name)
        path = f"{prefix} {name}"
        yield path
        if isinstance(command, click.Group):
            yield from _commands(command, path)


def test_every_command_is_in_docs_cli():
    text = (DOCS / "cli.md").read_text()
    missing = [path for path in _commands(cli, "biomaj") if f"`{path}" not in text]
    assert not missing, f"undocumented commands in docs/cli.md: {missing}"


def test_every_route_is_in_docs_api():
    from biomaj.web.app import api_operations

    text = (DOCS / "api.md").read_text()
    missing = [f"{r.method} {r.path}" for r in routes if f"`{r.path}`" not in text]
    missing += [f"{op.method} {op.path}" for op in api_operations() if f"| {op.method} | `{op.path}` |" not in text]
    assert not missing, f"undocumented routes in docs/api.md: {missing}"
