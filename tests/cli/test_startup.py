"""Start-up (issue 19, item 2): a command imports what it needs, not every command's modules.

No timing here (speed is for benchmarks): the guard is which modules a run imports, read from
``python -X importtime``. ``biomaj`` and ``biomaj ctl`` load their commands lazily
(biomaj/cli/lazy.py) and the commands import their heavy modules in their functions; a
module-level import added back to biomaj/cli/* or to what ``ctl banks`` reads fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

#: Third-party packages that no command below needs: the web app, the bus, the clients, the
#: password hashes, the mail templates, the SSH and FTP protocols.
HEAVY = {"aiohttp", "aio_pika", "aiormq", "redis", "jinja2", "asyncssh", "argon2", "bcrypt", "ldap3",
         "aiosmtplib", "prometheus_client", "aioftp", "pymongo", "uvloop", "cronsim", "packaging"}
#: biomaj's own packages that only jobs, servers and the workflow need.
HEAVY_BIOMAJ = {"biomaj.jobs", "biomaj.workflow", "biomaj.bus", "biomaj.node", "biomaj.web", "biomaj.actors",
                "biomaj.runtime", "biomaj.download", "biomaj.protocols", "biomaj.notify", "biomaj.auth",
                "biomaj.client", "biomaj.scheduler"}
#: What reading config.yml costs: not for --help.
CONFIG = {"pydantic", "yaml", "asyncio"}
#: Where the options of the job commands are declared (biomaj/jobs.py, biomaj/workflow/options.py):
#: all of biomaj.jobs and biomaj.workflow that ``ctl update --help`` may import.
DECLARATIONS = {"biomaj.jobs", "biomaj.workflow", "biomaj.workflow.options", "biomaj.workflow.session"}


def imported_modules(*args: str, cwd: Path) -> set[str]:
    """The modules that ``biomaj ARGS`` imports, from its ``-X importtime`` report."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("BIOMAJ_CONFIG", None)
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "biomaj", *args], capture_output=True,
                            text=True, env=env, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
            and "|" in line}


def heavy_in(modules: set[str], heavy: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from biomaj.config.scaffold import init_root

    root = tmp_path_factory.mktemp("startup") / "root"
    init_root(root)
    return root


def test_ctl_banks_imports_neither_the_workflow_nor_the_servers(root: Path):
    modules = imported_modules("-c", str(root / "config.yml"), "ctl", "banks", cwd=root)
    assert "biomaj.storage.sqlite" in modules and "biomaj.inventory" in modules  # the command did run
    assert heavy_in(modules, HEAVY | HEAVY_BIOMAJ) == []


@pytest.mark.parametrize("args", [["--help"], ["ctl", "check", "--help"], ["ctl", "banks", "--help"]])
def test_help_does_not_read_the_configuration_machinery(root: Path, args: list[str]):
    modules = imported_modules(*args, cwd=root)
    assert heavy_in(modules, HEAVY | HEAVY_BIOMAJ | CONFIG) == []


@pytest.mark.parametrize("args", [["ctl", "--help"], ["ctl", "update", "--help"]])
def test_the_job_commands_help_imports_their_declarations_only(root: Path, args: list[str]):
    """``ctl --help`` imports every ctl command's module; the update options come from their
    declaration, not from the workflow, the bus or the configuration."""
    modules = imported_modules(*args, cwd=root)
    assert "biomaj.jobs" in modules and "biomaj.workflow.options" in modules  # the options were built
    assert heavy_in(modules - DECLARATIONS, HEAVY | HEAVY_BIOMAJ | CONFIG) == []


def test_every_lazy_command_is_the_one_its_module_defines():
    """The lazy tables name each command of biomaj/cli/* once, under its own name."""
    import importlib

    from biomaj.cli import cli
    from biomaj.cli.ctl import ctl
    from biomaj.cli.lazy import LazyGroup

    for group in (cli, ctl):
        assert isinstance(group, LazyGroup)
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            assert group.get_command(ctx, name).name == name
    defined = set()
    for module in ("bank_ops", "bank_reports", "schedule"):
        mod = importlib.import_module(f"biomaj.cli.{module}")
        defined |= {c.name for c in vars(mod).values() if isinstance(c, click.Command) and c.callback.__module__ == mod.__name__}
    schedule_commands = set(ctl.get_command(click.Context(ctl), "schedule").commands)
    assert defined - schedule_commands <= set(ctl.list_commands(click.Context(ctl)))
