"""`biomaj init ROOT`."""

from __future__ import annotations

from pathlib import Path

import click

from biomaj.cli.context import CliContext, config_option, emit_json, json_option


@click.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing config.yml.")
@click.option("--host", default=None, help="Web address written to config.yml (default 127.0.0.1; 0.0.0.0 in a container).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Web port written to config.yml (default 5000).")
@config_option
@json_option
@click.pass_obj
def init(obj: CliContext, root: Path, force: bool, host: str | None, port: int | None) -> None:
    """Create ROOT with config.yml, conf/global.properties and an example bank."""
    from biomaj.config.scaffold import EXAMPLE_BANK, init_root  # pydantic and yaml: not for --help

    written = init_root(root, force=force, web_host=host, web_port=port)
    config = (root / "config.yml").absolute()
    if obj.json_output:
        emit_json({"root": str(root.absolute()), "config": str(config), "files": [str(p) for p in written]})
        return
    click.echo(f"Initialised {root.absolute()}")
    click.echo(f"  check the example bank:  biomaj -c {config} ctl check {EXAMPLE_BANK}")
    click.echo(f"  start the service:       biomaj -c {config} serve --all")
