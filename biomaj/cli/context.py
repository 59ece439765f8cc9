"""What every command shares: the -c/--config option, the loaded configuration, output helpers."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Sequence, TypeVar

import click

from biomaj.logs import setup_logging

if TYPE_CHECKING:  # pydantic and yaml: imported by the commands that read config.yml, not by --help
    from biomaj.config.service import Config

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class CliContext:
    """State carried from the group to its commands (click's ctx.obj)."""

    config_option: str | None = None
    json_output: bool = False
    console_level: str | None = None  # ctl commands print their own results: only warnings on stderr
    proxy: str | None = None  # `ctl --proxy URL`: every command goes through that server's REST API
    api_key: str | None = field(default=None, repr=False)
    _config: Config | None = field(default=None, repr=False)

    @property
    def remote(self) -> bool:
        """True when commands ask the server at --proxy instead of reading config.yml and the store."""
        return bool(self.proxy)

    def ask_server(self, request: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``request(api)`` with an :class:`~biomaj.client.api.ApiClient` of the --proxy server."""
        from biomaj.client.api import ApiClient

        setup_logging(self.console_level or "INFO")

        async def run() -> T:
            async with ApiClient(self.proxy or "", self.api_key) as api:
                return await request(api)

        return run_async(run())

    @property
    def config_path(self) -> Path:
        from biomaj.config.service import config_path_from

        return config_path_from(self.config_option)

    def config(self) -> Config:
        """The validated config.yml (loaded once); logging is set up from it."""
        if self._config is None:
            from biomaj.config.service import load_config

            self._config = load_config(self.config_path)
            logging_settings = self._config.settings.logging
            log_file = self._config.resolve(logging_settings.file) if logging_settings.file else None
            setup_logging(logging_settings.level, logging_settings.format, logging_settings.levels, log_file)
            if self.console_level and not log_file:
                for handler in logging.getLogger().handlers:
                    handler.setLevel(self.console_level)
            for warning in self._config.warnings:
                log.warning(warning)
        return self._config


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (biomaj[fast]: its sockets and callbacks cost
    less per file), else on asyncio's loop; imported when a command runs, so ``--help`` does
    without either."""
    return loop_runner()(main)


def loop_runner() -> Callable[[Coroutine[Any, Any, T]], T]:
    """``uvloop.run`` when uvloop is installed, else ``asyncio.run``."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run
    return uvloop.run


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value:
        ctx.ensure_object(CliContext).config_option = value
    return value


def config_option(func: Callable) -> Callable:
    """-c/--config on any command; the innermost one given wins."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        metavar="PATH",
        expose_value=False,
        is_eager=True,
        callback=_remember_config,
        help="config.yml to use (default: $BIOMAJ_CONFIG, else ./config.yml).",
    )(func)


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.ensure_object(CliContext).json_output = True
    return value


def json_option(func: Callable) -> Callable:
    """--json on a group or a command."""
    return click.option(
        "--json", "json_flag", is_flag=True, expose_value=False, callback=_remember_json, help="Print JSON instead of tables."
    )(func)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table, like BioMAJ 3's psql tables."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "+".join("-" * (w + 2) for w in widths)
    click.echo(" " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)))
    click.echo(line)
    for row in cells[1:]:
        click.echo(" " + " | ".join(c.ljust(w) for c, w in zip(row, widths)))


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
