"""Loading and lookups of properties files, as BioMAJ 3's BiomajConfig does them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from biomaj.config.properties import BankProperties, GlobalProperties, list_bank_names, to_bool
from biomaj.config.settings import DEFAULTS
from biomaj.errors import ConfigError, UnknownBank

from tests.conftest import BOTH

from .conftest import render, suite_global


# precedence ----------------------------------------------------------------------------------
def test_precedence_env_then_bank_then_global_then_defaults_then_default(make_bank):
    props = make_bank(bank={"files.num.threads": "6"}, glob={"files.num.threads": "5", "bank.num.threads": "3"})
    assert props.get("files.num.threads") == "6"  # bank over global
    assert props.get("bank.num.threads") == "3"  # global
    assert props.get("keep.old.version") == DEFAULTS["keep.old.version"] == "1"  # built-in default
    assert props.get("no.such.key") is None
    assert props.get("no.such.key", "x") == "x"  # caller default last
    assert props.get("keep.old.version", "9") == "1"  # built-in default before caller default

    env = {"BIOMAJ_FILES_NUM_THREADS": "7", "BIOMAJ_KEEP_OLD_VERSION": "4"}
    props = make_bank(bank={"files.num.threads": "6"}, glob={"files.num.threads": "5"}, environ=env)
    assert props.get("files.num.threads") == "7"  # environment over everything
    assert props.get("keep.old.version") == "4"


def test_empty_environment_variable_is_ignored(make_bank):
    props = make_bank(bank={"files.num.threads": "6"}, environ={"BIOMAJ_FILES_NUM_THREADS": ""})
    assert props.get("files.num.threads") == "6"


def test_environment_is_read_at_lookup_time(make_bank, monkeypatch):
    props = BankProperties.load(make_bank().global_path, "bank")  # environ=None: os.environ
    monkeypatch.setenv("BIOMAJ_DIR_VERSION", "from/env")
    assert props.get("dir.version") == "from/env"


def test_environment_value_is_not_normalised(make_bank):
    env = {"BIOMAJ_REMOTE_DIR": "/from/env", "BIOMAJ_REMOTE_FILES": r"^a\\.gz$"}
    props = make_bank(environ=env)
    assert props.get("remote.dir") == "/from/env"  # no trailing slash added
    assert props.get("remote.files") == r"^a\\.gz$"  # no unescaping


# keys, interpolation -------------------------------------------------------------------------
def test_keys_are_case_insensitive(make_bank):
    props = make_bank(bank={"BLOCKS": "B1", "B1.db.post.process": "M"}, glob={"blocks": "FROM_GLOBAL"})
    assert props.get("BLOCKS") == props.get("blocks") == "B1"  # BLOCKS in the bank overrides blocks
    assert props.get("b1.DB.post.process") == "M"
    assert "blocks" in props.keys()


def test_interpolation_across_files(make_bank, tmp_path):
    props = make_bank(
        bank={"remote.dir": "%(root.dir)s/remote", "dir.version": "mine", "offline.dir.name": None},
        glob={"offline.dir.name": "offline/%(dir.version)s_tmp"},
    )
    assert props.get("remote.dir") == f"{tmp_path}/remote/"  # bank value uses a global key
    assert props.get("offline.dir.name") == "offline/mine_tmp"  # global value uses a bank key
    assert props.get("data.dir") == f"{tmp_path}/data"


def test_double_percent_is_a_literal_percent(make_bank):
    props = make_bank(bank={"release.format": "%%Y-%%m-%%d"})
    assert props.get("release.format") == "%Y-%m-%d"


@pytest.mark.parametrize(
    "value, expected",
    [("%(undefined)s/x", "undefined"), ("50%", "bad use of '%'"), ("%(oops", "bad use of '%'")],
)
def test_bad_interpolation_is_reported_for_that_key_only(make_bank, value, expected):
    props = make_bank(bank={"release.format": value})
    with pytest.raises(ConfigError) as err:
        props.get("release.format")
    message = str(err.value)
    assert "bank.properties" in message and "release.format" in message and expected in message
    assert props.get("dir.version") == "test/bank"  # other keys still readable


# BioMAJ 3 value rules ------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [("/pub", "/pub/"), ("/pub/", "/pub/"), ("", "/")])
def test_remote_dir_gets_a_trailing_slash(make_bank, value, expected):
    assert make_bank(bank={"remote.dir": value}).get("remote.dir") == expected


@pytest.mark.parametrize("key", ["remote.files", "local.files", "http.parse.dir.line", "http.parse.file.line"])
def test_doubled_backslash_read_as_one_for_four_keys(make_bank, key):
    props = make_bank(bank={key: r"^alu.*\\.gz$"})
    assert props.get(key) == r"^alu.*\.gz$"
    assert make_bank(bank={key: r"^alu.*\.gz$"}).get(key) == r"^alu.*\.gz$"  # single stays single


@pytest.mark.parametrize("key", ["release.file", "release.regexp", "db.fullname"])
def test_doubled_backslash_kept_for_other_keys(make_bank, key):
    assert make_bank(bank={key: r"rel\\.txt"}).get(key) == r"rel\\.txt"


def test_depends_falls_back_to_db_source(make_bank):
    assert make_bank(bank={"depends": "a,b"}).get("depends") == "a,b"
    assert make_bank(bank={"depends": "a", "db.source": "s"}).get("depends") == "s"  # db.source wins when set
    assert make_bank(bank={"db.source": "s"}).get("depends") == "s"
    assert make_bank(bank={"depends": "a", "db.source": ""}).get("depends") == "a"
    props = make_bank(bank={"db.source": "s"}, environ={"BIOMAJ_DEPENDS": "e"})
    assert props.get("depends") == "e"
    assert make_bank(bank={"depends": "sub2, error"}).get_list("depends") == ["sub2", "error"]


def test_lists_comma_or_whitespace(make_bank):
    props = make_bank(
        bank={
            "db.formats": "fasta, blast,,",
            "remote.files": "^a.*  ^b.*\t^c,d",
            "local.files": "",
            "BLOCKS": "B1,B2",
            "sub1.files.move": "flat/test_.* flat/x",
            "META0": "PROC0, PROC1",
        }
    )
    assert props.get_list("db.formats") == ["fasta", "blast"]
    assert props.get_list("remote.files") == ["^a.*", "^b.*", "^c,d"]
    assert props.get_list("local.files") == []
    assert props.get_list("blocks") == ["B1", "B2"]
    assert props.get_list("sub1.files.move") == ["flat/test_.*", "flat/x"]
    assert props.get_list("META0") == ["PROC0", "PROC1"]  # a META: comma list
    assert props.get_list("db.type") == []  # built-in default ''
    assert props.get_list("absent") == []


@pytest.mark.parametrize(
    "value, expected",
    [("true", True), ("TRUE", True), ("True", True), ("1", True), ("yes", False), ("0", False), ("false", False), ("", False), ("on", False)],
)
def test_get_bool_is_true_only_for_true_or_1(make_bank, value, expected):
    assert make_bank(bank={"copy.skip": value}).get_bool("copy.skip") is expected
    assert to_bool(value) is expected


def test_get_bool_default_when_absent(make_bank):
    props = make_bank()
    assert props.get_bool("copy.skip") is False
    assert props.get_bool("copy.skip", default=True) is True
    assert props.get_bool("docker.sudo") is True  # built-in default '1'


def test_get_int(make_bank):
    props = make_bank(bank={"files.num.threads": " 3 ", "keep.old.version": "", "timeout.download": "abc"})
    assert props.get_int("files.num.threads") == 3
    assert props.get_int("keep.old.version") == 1  # empty means the built-in default
    assert props.get_int("mail.body.tail") is None
    assert props.get_int("mail.body.tail", 5) == 5
    with pytest.raises(ConfigError) as err:
        props.get_int("timeout.download")
    assert "timeout.download" in str(err.value) and "'abc'" in str(err.value) and "bank.properties" in str(err.value)


# files ---------------------------------------------------------------------------------------
def test_identity_and_merged_values(make_bank, tmp_path):
    props = make_bank(name="alu", bank={"db.name": "alu_db"})
    assert props.name == "alu"  # the file name, not db.name
    assert props.path == tmp_path / "conf" / "alu.properties"
    assert props.global_path == tmp_path / "conf" / "global.properties"
    assert props.last_modified == int(props.path.stat().st_mtime)
    values = props.as_dict()
    assert values["db.name"] == "alu_db" and values["data.dir"] == f"{tmp_path}/data"
    assert set(values) == set(props.keys())
    assert props.source_of("db.name") == props.path and props.source_of("data.dir") == props.global_path


def test_bank_by_path_and_conf_dir_override(make_bank, tmp_path):
    props = make_bank()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other.properties").write_text(render({"dir.version": "other"}))
    assert BankProperties.load(props.global_path, elsewhere / "other.properties").get("dir.version") == "other"
    assert BankProperties.load(props.global_path, "other", conf_dir=elsewhere).name == "other"


@pytest.mark.parametrize("bank", ["missing", Path("/nonexistent/missing.properties")])
def test_unknown_bank(make_bank, tmp_path, bank):
    glob = make_bank().global_path
    with pytest.raises(UnknownBank) as err:
        BankProperties.load(glob, bank)
    assert "missing" in str(err.value) and "missing.properties" in str(err.value)


def test_bank_name_cannot_leave_conf_dir(make_bank):
    with pytest.raises(UnknownBank):
        BankProperties.load(make_bank().global_path, "../conf/bank")


def test_missing_global_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.properties"):
        BankProperties.load(tmp_path / "nope.properties", "bank")
    with pytest.raises(ConfigError, match="nope.properties"):
        GlobalProperties.load(tmp_path / "nope.properties")


def test_global_without_conf_dir_cannot_load_a_bank_by_name(make_bank):
    with pytest.raises(ConfigError, match=r"global\.properties: conf\.dir is not set"):
        make_bank(glob={"conf.dir": None})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[GENERAL]\ndir.version=x\nthis line has no equal sign\n", ":3: cannot parse"),
        ("[GENERAL]\ndir.version=x\nDIR.VERSION=y\n", ":3: key 'dir.version' is set twice"),
        ("dir.version=x\n[GENERAL]\n", ":1: 'dir.version=x' comes before any section"),
        ("[OTHER]\ndir.version=x\n", "no [GENERAL] section"),
        ("[GENERAL]\na=1\n[GENERAL]\nb=2\n", ":3: section [GENERAL] appears twice"),
    ],
)
def test_syntax_errors_name_file_and_line(make_bank, text, expected):
    with pytest.raises(ConfigError) as err:
        make_bank(bank_text=text)
    assert "bank.properties" in str(err.value) and expected in str(err.value)


def test_syntax_error_in_global_names_the_global_file(make_bank):
    with pytest.raises(ConfigError, match=r"global\.properties:2: cannot parse"):
        make_bank(global_text="[GENERAL]\nbroken\n")


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_global_with_logging_sections_loads(tmp_path, files):
    glob = GlobalProperties.load(files.test_global, environ={})
    assert glob.get("db.name") == files.expect["global"]["db.name"]
    assert glob.get("use_ldap") == files.expect["global"]["use_ldap"]
    assert "format" not in glob.keys()  # [formatter_*] is not [GENERAL]
    props = BankProperties.load(suite_global(files, tmp_path), files.bank("local"), environ={})
    assert props.get("historic.logfile.level") == "DEBUG"
    assert props.get("data.dir") == f"{tmp_path}/"


def test_legacy_keys_are_listed_as_warnings(make_bank):
    props = make_bank(bank={"frequency.update": "0", "proxyHost": "p", "db.post.process": "X"})
    keys = [key for key, _ in props.warnings]
    assert keys == ["frequency.update", "proxyhost"]  # db.post.process has its own check rule
    assert "bank.properties" in props.warnings[0][1]


def test_list_bank_names(tmp_path):
    for name in ("global", "b", "a", "c.d"):
        (tmp_path / f"{name}.properties").write_text("[GENERAL]\n")
    (tmp_path / "notes.txt").write_text("")
    assert list_bank_names(tmp_path) == ["a", "b", "c.d"]
    assert list_bank_names(tmp_path / "absent") == []


def test_global_properties_lookups(tmp_path):
    path = tmp_path / "global.properties"
    path.write_text(render({"root.dir": "/r", "conf.dir": "%(root.dir)s/conf", "remote.dir": "/x"}))
    glob = GlobalProperties.load(path, environ={"BIOMAJ_ROOT_DIR": "/env"})
    assert glob.get("conf.dir") == "/r/conf"  # interpolation is within the files
    assert glob.get("root.dir") == "/env"
    assert glob.get("remote.dir") == "/x/"
    assert glob.get("bank.num.threads") == "2"
    assert glob.path == glob.global_path == path
    assert os.fspath(glob.path).endswith("global.properties")
