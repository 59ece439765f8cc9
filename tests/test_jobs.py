"""The job vocabulary (:mod:`biomaj.jobs`): each kind's options declared once, and every place
that speaks them generated from that declaration."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import click
import pytest

from biomaj import jobs
from biomaj.workflow.session import UnknownTask
from biomaj.workflow.update import UpdateOptions


def test_the_kinds_in_their_order():
    assert jobs.JOB_KINDS == ("update", "remove", "remove-all", "remove-pending", "repair", "release-check", "verify")
    with pytest.raises(Exception, match="unknown job kind 'nosuch'; expected one of update, remove"):
        jobs.kind_of("nosuch")


def test_the_update_options_are_declared_once_as_the_workflow_s_fields():
    fields = dataclasses.fields(UpdateOptions)
    assert [(f.name, f.default, f.metadata["help"]) for f in fields] == [
        (o.name, o.default, o.help) for o in jobs.UPDATE.options]
    types = {o.name: o.type for o in jobs.UPDATE.options}
    assert types == {"fromscratch": bool, "from_task": str, "process": str, "release": str,
                     "stop_before": str, "stop_after": str, "publish": bool, "dry_run": bool}
    assert jobs.UPDATE.option("fromscratch").aliases == ("-z", "--from-scratch")
    assert "download" in jobs.UPDATE.option("stop_after").tasks


def test_task_options_are_checked():
    jobs.check_options("update", {"from_task": "download", "stop_after": None})
    with pytest.raises(UnknownTask, match="--stop-before: no task named 'nosuch'; tasks: init, check"):
        jobs.check_options("update", {"stop_before": "nosuch"})


def test_the_cli_options_are_the_declared_ones():
    from biomaj.cli import bank_ops

    commands = {"update": bank_ops.update, "remove": bank_ops.remove, "remove-all": bank_ops.remove_all,
                "remove-pending": bank_ops.remove_pending, "repair": bank_ops.repair,
                "release-check": bank_ops.release_check, "verify": bank_ops.verify}
    positional = {"verify": ("release",)}  # `biomaj ctl verify BANK [RELEASE]`
    for kind, command in commands.items():
        params = {p.name: p for p in command.params}
        for option in jobs.KINDS[kind].options:
            param = params[option.name]
            if option.name in positional.get(kind, ()):
                assert isinstance(param, click.Argument) and param.required == option.required
                continue
            assert param.opts == [option.flag, *option.aliases] and param.help == option.help
            assert param.required == option.required and param.is_flag == (option.type is bool)


def test_biomaj_cli_speaks_the_declared_update_options():
    """biomaj-cli's option names for an update are the declared ones, with the same types."""
    from biomaj.web.daemon.options import FLAGS, TEXTS
    from biomaj.web.daemon.routes import UPDATE_BODY

    for option in jobs.UPDATE.options:
        assert option.name in (FLAGS if option.type is bool else TEXTS)
    assert sorted(UPDATE_BODY) == sorted(o.name for o in jobs.UPDATE.options)


def test_the_rest_schemas_are_generated():
    from biomaj.web.app import api_operations

    bodies = {(op.method, op.path): op.body for op in api_operations()}
    assert bodies[("POST", "/api/v1/banks/{bank}/update")] == jobs.UPDATE.body_schema()
    assert bodies[("POST", "/api/v1/banks/{bank}/repair")] == jobs.REPAIR.body_schema()
    assert bodies[("POST", "/api/v1/banks/{bank}/verify")] == jobs.VERIFY.body_schema()
    assert bodies[("POST", "/api/daemon/bank/{bank}")]["properties"]["from_task"]["enum"][0] == "init"


def test_jobs_imports_nothing_above_the_domain():
    tree = ast.parse(Path(jobs.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    above = [m for m in imported if m.split(".")[:2] in (["biomaj", layer] for layer in ("actors", "runtime", "web", "cli"))]
    assert not above, above
