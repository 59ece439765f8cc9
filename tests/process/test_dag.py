"""Process declarations, statuses and --process resets, on the localprocess bank (ours, and
upstream's in the compat suite)."""

from __future__ import annotations

import shutil

import pytest

from biomaj.config.properties import BankProperties
from biomaj.errors import ConfigError
from biomaj.process import dag
from biomaj.process.environment import build_environment, command_args, is_secret, substitute
from tests.conftest import BOTH, OURS, require_upstream


@pytest.fixture(params=BOTH)
def localprocess(request, tmp_path) -> BankProperties:
    files = require_upstream() if request.param == "upstream" else OURS
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(files.test_global, conf / "global.properties")
    shutil.copy(files.bank("localprocess"), conf / "localprocess.properties")
    for path in conf.iterdir():
        path.chmod(0o644)
    props = BankProperties.load(conf / "global.properties", "localprocess", conf_dir=conf)
    props.expect = files.expect  # type: ignore[attr-defined]  (the set's content-specific values)
    return props


def test_the_plans_of_localprocess(localprocess):
    post = dag.plan(localprocess, "postprocess")
    assert [b.name for b in post.blocks] == ["BLOCK1", "BLOCK2"]
    assert [[m.name for m in b.metas] for b in post.blocks] == [["META0"], ["META1", "META2", "META3"]]
    assert [p.full_name for _, _, p in post.processes()] == [
        "META0_PROC0", "META1_PROC1", "META1_PROC2", "META2_PROC3", "META3_PROC4", "META3_PROC5"]
    proc5, expected = post.processes()[-1][2], localprocess.expect["proc5"]
    assert (proc5.exe, proc5.args, proc5.format, proc5.types) == ("test.sh", "", expected["format"], expected["types"])
    assert proc5.tags == expected["tags"]
    assert proc5.files == expected["files"]
    assert proc5.expand is True and proc5.docker is None
    pre = dag.plan(localprocess, "preprocess")
    assert [p.full_name for _, _, p in pre.processes()] == ["META0_PROC0"]
    assert not dag.plan(localprocess, "removeprocess").empty


def test_metas_are_dealt_round_robin_over_the_threads(localprocess):
    """Upstream test_postprocesses_setup: 3 metas over 2 threads -> [META1, META3], [META2]."""
    block2 = dag.plan(localprocess, "postprocess").blocks[1]
    lanes = dag.deal_round_robin(block2.metas, 2)
    assert [[m.name for m in lane] for lane in lanes] == [["META1", "META3"], ["META2"]]
    assert len(dag.deal_round_robin(block2.metas, 8)) == 3  # never more lanes than metas


def test_status_tree_keeps_what_is_stored(localprocess):
    post = dag.plan(localprocess, "postprocess")
    tree = post.status_tree({"BLOCK2": {"META1": {"PROC1": True, "PROC2": False}}})
    assert tree == {"BLOCK1": {"META0": {"PROC0": False}},
                    "BLOCK2": {"META1": {"PROC1": True, "PROC2": False}, "META2": {"PROC3": False},
                               "META3": {"PROC4": False, "PROC5": False}}}
    pre = dag.plan(localprocess, "preprocess")
    assert pre.status_tree({"META0": {"PROC0": True}}) == {"META0": {"PROC0": True}}


def _all_done(plan):
    tree = plan.status_tree({})
    for block, meta, proc in plan.processes():
        plan.statuses(tree, block)[meta.name][proc.id] = True
    return tree


@pytest.mark.parametrize("start, rerun", [
    (None, ["PROC0", "PROC1", "PROC2", "PROC3", "PROC4", "PROC5"]),
    ("BLOCK2", ["PROC1", "PROC2", "PROC3", "PROC4", "PROC5"]),
    ("META2", ["PROC3", "PROC4", "PROC5"]),
    ("PROC2", ["PROC2", "PROC3", "PROC4", "PROC5"]),
    ("PROC5", ["PROC5"]),
])
def test_reset_from_a_block_meta_or_process_is_exact(localprocess, start, rerun):
    post = dag.plan(localprocess, "postprocess")
    tree = post.reset(_all_done(post), start)
    again = [proc.id for block, meta, proc in post.processes()
             if post.statuses(tree, block)[meta.name][proc.id] is False]
    assert again == rerun


def test_reset_from_an_unknown_process_is_refused(localprocess):
    post = dag.plan(localprocess, "postprocess")
    with pytest.raises(ConfigError, match="Process fake not found in postprocess"):
        post.reset(_all_done(post), "fake")


def test_an_undefined_meta_or_missing_exe_is_a_clear_error(localprocess, tmp_path):
    bank = localprocess.path
    bank.write_text(bank.read_text().replace("META3=PROC4,PROC5", "").replace("PROC3.exe=echo", ""))
    props = BankProperties.load(localprocess.global_path, bank)
    with pytest.raises(ConfigError, match="process PROC3 \\(in META META2\\) has no PROC3.exe"):
        dag.plan(props, "postprocess")
    bank.write_text(bank.read_text() + "\nPROC3.exe=echo\n")
    props = BankProperties.load(localprocess.global_path, bank)
    with pytest.raises(ConfigError, match="META META3 .* is not defined"):
        dag.plan(props, "postprocess")


def test_environment_is_the_biomaj3_table_without_secrets(localprocess):
    props = localprocess.as_dict() | {"server.credentials": "anonymous:secret", "mail.admin": "a@b.c"}
    env = build_environment(
        props, bank="localprocess", data_dir="/data", dir_version="test/local", offline_dir="/data/offline",
        process_dir="/proc", release_dir_name="localprocess_100", remote_release="100", release="100",
        log_dir="/log/x", log_file="/log/x/localprocess.log", dependencies={"sub1": "/data/sub1/sub1_1"},
        base={"PATH": "/usr/bin", "HOME": "/root", "RABBITMQ_PASSWORD": "guest", "MONGO_URL": "mongodb://u:p@h/db"},
    )
    assert env["dbname"] == "localprocess" and env["datadir"] == env["data.dir"] == "/data"
    assert env["dirversion"] == "test/local" and env["offlinedir"] == "/data/offline"
    assert env["localrelease"] == "localprocess_100" and env["remoterelease"] == env["removedrelease"] == "100"
    assert env["logdir"] == "/log/x" and env["logfile"] == "/log/x/localprocess.log"
    assert env["processdir"] == env["PATH_PROCESS_BIOMAJ"] == "/proc" and env["PATH"] == "/usr/bin:/proc"
    assert env["sub1source"] == "/data/sub1/sub1_1" and env["mailadmin"] == "a@b.c"
    assert env["PP_DEPENDENCE"] == env["PP_WARNING"] == "#"
    assert env["remote.dir"] == localprocess.get("remote.dir") != ""  # every bank property
    assert env["db.name"] == localprocess.get("db.name") != ""
    assert "server.credentials" not in env and "RABBITMQ_PASSWORD" not in env and "MONGO_URL" not in env
    assert all(isinstance(v, str) for v in env.values())


def test_arguments_substitute_variables_and_quote_remote_values():
    env = {"datadir": "/data", "remoterelease": "1;touch pwned", "dbname": "alu"}
    assert command_args("${datadir}/${dbname} x", env, shell=False) == ["/data/alu", "x"]
    assert substitute("echo ${remoterelease}", env, shell=True) == "echo '1;touch pwned'"
    assert substitute("echo ${remoterelease}", env, shell=False) == "echo 1;touch pwned"
    assert substitute("${unknown} $datadir", env, shell=True) == "${unknown} $datadir"
    assert is_secret("ldap.password") and is_secret("x", "amqp://u:p@host/") and not is_secret("data.dir", "/d")
