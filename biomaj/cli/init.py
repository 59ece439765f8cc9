"""`biomaj init ROOT`."""

from __future__ import annotations

from pathlib import Path

import click

from biomaj.cli.context import CliContext, config_option, emit_json, json_option


@click.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True,
              help="Overwrite an existing config.yml and the other files init writes (without it: an existing "
                   "config.yml is refused, any other existing file is kept).")
@click.option("--host", default=None, help="Web address written to config.yml (default 127.0.0.1; 0.0.0.0 in a container).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Web port written to config.yml (default 5000).")
@config_option
@json_option
@click.pass_obj
def init(obj: CliContext, root: Path, force: bool, host: str | None, port: int | None) -> None:
    """Create ROOT with config.yml, conf/global.properties and an example bank; files already there are kept."""
    from biomaj.config.scaffold import EXAMPLE_BANK, init_root  # pydantic and yaml: not for --help

    done = init_root(root, force=force, web_host=host, web_port=port)
    config = (root / "config.yml").absolute()
    if obj.json_output:
        emit_json({"root": str(root.absolute()), "config": str(config), "files": [str(p) for p in done.written],
                   "kept": [str(p) for p in done.kept]})
        return
    click.echo(f"Initialised {root.absolute()}")
    for path in done.kept:
        click.echo(f"  kept the existing {path.relative_to(root.expanduser().absolute())} (--force overwrites it)")
    click.echo(f"  check the example bank:  biomaj -c {config} ctl check {EXAMPLE_BANK}")
    click.echo(f"  start the service:       biomaj -c {config} serve --all")
