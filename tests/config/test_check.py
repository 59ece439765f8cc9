"""One test per rule of BioMAJ 3's check() (reference 1.5), plus the checks biomaj adds."""

from __future__ import annotations

import pytest

from biomaj.config.check import Problem, check_bank, verdict
from biomaj.config.properties import BankProperties

from tests.conftest import BOTH

from .conftest import suite_global

PROCESSES = """
db.pre.process=META0
db.remove.process=META0
BLOCKS=BLOCK1
BLOCK1.db.post.process=META1
META0=PROC0
META1=PROC1
PROC0.name=p0
PROC0.exe=echo
PROC0.args=test
PROC1.name=p1
PROC1.exe=touch
PROC1.args=
"""


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == "error"]


def keys(problems: list[Problem], level: str = "error") -> set[str]:
    return {(p.key or "").lower() for p in problems if p.level == level}


def assert_invalid(problems: list[Problem], key: str, *words: str) -> Problem:
    """The verdict is False and an error names ``key`` (and says ``words``)."""
    assert verdict(problems) is False
    found = [p for p in errors(problems) if (p.key or "").lower() == key.lower()]
    assert found, f"no error for {key}: {problems}"
    for word in words:
        assert word in found[0].message, found[0].message
    return found[0]


def test_valid_bank_has_no_problem(make_bank):
    problems = check_bank(make_bank())
    assert verdict(problems) is True
    assert problems == []


# 1.5 rules -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["data.dir", "conf.dir", "log.dir", "process.dir", "lock.dir", "cache.dir"])
def test_required_directory_missing(make_bank, key):
    props = make_bank(glob={key: None}, by_path=True)
    assert_invalid(check_bank(props), key, f"{key} is not set")


def test_required_directory_empty(make_bank):
    assert_invalid(check_bank(make_bank(bank={"data.dir": ""})), "data.dir", "data.dir is not set")


@pytest.mark.parametrize("key", ["ldap.host", "ldap.port", "ldap.dn"])
def test_use_ldap_without_ldap_settings(make_bank, key):
    ldap = {"use_ldap": "1", "ldap.host": "localhost", "ldap.port": "389", "ldap.dn": "nodomain"}
    assert verdict(check_bank(make_bank(glob=ldap))) is True
    assert_invalid(check_bank(make_bank(glob={**ldap, key: ""})), key, "use_ldap")
    assert verdict(check_bank(make_bank(glob={**ldap, "use_ldap": "0", key: ""}))) is True


@pytest.mark.parametrize("key", ["elastic_nodes", "elastic_index"])
def test_use_elastic_without_elastic_settings(make_bank, key):
    elastic = {"use_elastic": "true", "elastic_nodes": "localhost", "elastic_index": "biomaj"}
    assert verdict(check_bank(make_bank(glob=elastic))) is True
    assert_invalid(check_bank(make_bank(glob={**elastic, key: None})), key, "use_elastic")


def test_smtp_host_without_mail_from(make_bank):
    assert_invalid(check_bank(make_bank(glob={"mail.from": ""})), "mail.from", "mail.smtp.host")


@pytest.mark.parametrize("key", ["offline.dir.name", "dir.version"])
def test_relative_directory_missing(make_bank, key):
    assert_invalid(check_bank(make_bank(bank={key: None})), key, f"{key} is not set")


@pytest.mark.parametrize("key", ["offline.dir.name", "dir.version"])
def test_relative_directory_absolute(make_bank, key):
    problem = assert_invalid(check_bank(make_bank(bank={key: "/abs"})), key)
    assert problem.message == f"{key} must be a relative path (under data.dir), got '/abs'"


def test_protocol_missing(make_bank):
    assert_invalid(check_bank(make_bank(bank={"protocol": None})), "protocol", "protocol is not set", "directhttp")


def test_protocol_not_allowed(make_bank):
    assert_invalid(check_bank(make_bank(bank={"protocol": "gopher"})), "protocol", "got 'gopher'", "irods")


@pytest.mark.parametrize("protocol", ["ftp", "ftps", "http", "https", "rsync", "sftp", "local"])
def test_allowed_protocols_including_sftp(make_bank, protocol):
    assert verdict(check_bank(make_bank(bank={"protocol": protocol}))) is True


def test_server_missing(make_bank):
    assert_invalid(check_bank(make_bank(bank={"server": ""})), "server", "protocol ftp")
    for protocol in ("local", "multi", "none"):  # no server needed
        assert verdict(check_bank(make_bank(bank={"server": "", "protocol": protocol}))) is True


def test_remote_dir_missing(make_bank):
    assert_invalid(check_bank(make_bank(bank={"remote.dir": None})), "remote.dir", "protocol ftp")
    assert verdict(check_bank(make_bank(bank={"remote.dir": None, "protocol": "multi"}))) is True
    # BioMAJ 3 appends '/' before checking: an empty remote.dir is '/' and passes.
    assert verdict(check_bank(make_bank(bank={"remote.dir": ""}))) is True


def test_remote_files_and_remote_list_missing(make_bank):
    assert_invalid(check_bank(make_bank(bank={"remote.files": ""})), "remote.files", "remote.list")
    assert verdict(check_bank(make_bank(bank={"remote.files": None, "remote.list": "/tmp/list.json"}))) is True
    direct = {"protocol": "directhttp", "remote.dir": "/debian/README.html", "remote.files": None}
    assert verdict(check_bank(make_bank(bank=direct))) is True


def test_checksum_manifests_need_a_listed_remote_and_a_known_format(make_bank):
    assert verdict(check_bank(make_bank(bank={"remote.checksums": r"md5checksums\.txt"}))) is True
    direct = {"protocol": "directhttp", "remote.dir": "/pub/uniprot_sprot.fasta.gz", "remote.checksums": r".*\.md5"}
    assert_invalid(check_bank(make_bank(bank=direct)), "remote.checksums", "protocol directhttp", "remote.files")
    assert_invalid(check_bank(make_bank(bank={"remote.checksums": "md5(checksums"})), "remote.checksums",
                   "not a valid regular expression")
    # an unknown format is a warning here, as every enum value (BioMAJ 3's verdict); the update refuses it
    problems = check_bank(make_bank(bank={"remote.checksums": "CHECKSUMS", "remote.checksums.format": "crc32"}))
    assert keys(problems, "warning") == {"remote.checksums.format"} and "bsd-sum" in problems[0].message


@pytest.mark.parametrize("key", ["irods.user", "irods.password", "irods.port", "irods.protocol"])
def test_irods_without_connection_settings(make_bank, key):
    irods = {"protocol": "irods", "irods.user": "u", "irods.password": "p", "irods.port": "1247", "irods.protocol": "tcp"}
    assert verdict(check_bank(make_bank(bank=irods))) is True
    assert_invalid(check_bank(make_bank(bank={**irods, key: None})), key, "protocol irods")


def test_local_files_missing(make_bank):
    assert_invalid(check_bank(make_bank(bank={"local.files": ""})), "local.files", "local.files is not set")


@pytest.mark.parametrize(
    "replace, listed_in",
    [
        ("db.remove.process=META0", "db.remove.process=META9"),
        ("db.pre.process=META0", "db.pre.process=META9"),
        ("BLOCK1.db.post.process=META1", "BLOCK1.db.post.process=META1,META9"),
    ],
)
def test_process_meta_undefined(make_bank, replace, listed_in):
    assert verdict(check_bank(make_bank(bank_text="[GENERAL]\n" + _valid_lines() + PROCESSES))) is True
    text = PROCESSES.replace(replace, listed_in)
    problem = assert_invalid(check_bank(make_bank(bank_text="[GENERAL]\n" + _valid_lines() + text)), "META9")
    assert "is not defined" in problem.message and listed_in.split("=")[0] in problem.message


def test_process_block_without_post_process(make_bank):
    text = PROCESSES.replace("BLOCKS=BLOCK1", "BLOCKS=BLOCK1,BLOCK2")
    assert_invalid(check_bank(make_bank(bank_text="[GENERAL]\n" + _valid_lines() + text)), "BLOCK2.db.post.process", "BLOCKS")


@pytest.mark.parametrize("field", ["name", "exe", "args"])
def test_process_field_missing(make_bank, field):
    text = PROCESSES.replace(f"PROC1.{field}=", f"#PROC1.{field}=")
    assert_invalid(check_bank(make_bank(bank_text="[GENERAL]\n" + _valid_lines() + text)), f"PROC1.{field}", "META1")


def test_process_empty_args_is_accepted_but_empty_exe_is_not(make_bank):
    text = PROCESSES.replace("PROC0.args=test", "PROC0.args=")
    assert verdict(check_bank(make_bank(bank_text="[GENERAL]\n" + _valid_lines() + text))) is True
    text = PROCESSES.replace("PROC0.exe=echo", "PROC0.exe=")
    assert_invalid(check_bank(make_bank(bank_text="[GENERAL]\n" + _valid_lines() + text)), "PROC0.exe")


@pytest.mark.parametrize("key", ["db.fullname", "db.formats", "mail.smtp.host"])
def test_missing_description_or_mail_is_only_a_warning(make_bank, key):
    props = make_bank(bank={key: None}, glob={key: None})
    problems = check_bank(props)
    assert verdict(problems) is True
    assert key in keys(problems, "warning")


# biomaj additions ----------------------------------------------------------------------------
def test_legacy_key_is_a_warning(make_bank):
    problems = check_bank(make_bank(bank={"frequency.update": "0", "remote.excluded.files": ".*asn"}))
    assert verdict(problems) is True
    assert keys(problems, "warning") == {"frequency.update", "remote.excluded.files"}
    assert "not read by BioMAJ 3" in problems[0].message


def test_top_level_db_post_process_is_a_warning(make_bank):
    problems = check_bank(make_bank(bank={"db.post.process": "POST1"}))
    assert verdict(problems) is True
    [problem] = [p for p in problems if p.key == "db.post.process"]
    assert problem.level == "warning" and "ignored by BioMAJ 3: use BLOCKS" in problem.message
    assert check_bank(make_bank(bank={"db.post.process": ""})) == []  # empty: nothing to say


@pytest.mark.parametrize("value", ["%(undefined)s/x", "100%"])
def test_bad_interpolation_is_an_error(make_bank, value):
    problems = check_bank(make_bank(bank={"dir.version": value}))
    problem = assert_invalid(problems, "dir.version", "bank.properties")
    assert "%" in problem.message
    assert [p.key for p in errors(problems)] == ["dir.version"]  # reported once, not also as "not set"


def test_bad_interpolation_read_through_an_alias_is_reported_once(make_bank):
    problems = check_bank(make_bank(bank={"db.source": "%(nothing)s"}))
    assert [p.key for p in errors(problems)] == ["db.source"]


@pytest.mark.parametrize("key", ["keep.old.version", "files.num.threads", "http.group.file.size", "mail.smtp.port"])
def test_value_not_an_integer(make_bank, key):
    assert_invalid(check_bank(make_bank(bank={key: "abc"})), key, "must be an integer", "'abc'")
    assert verdict(check_bank(make_bank(bank={key: "-1"}))) is True


@pytest.mark.parametrize(
    "key, value",
    [
        ("remote.files", r"^ok$ ^(unclosed"),
        ("local.files", "*.fasta"),
        ("release.file", "test_(\\d+"),
        ("release.regexp", "[0-9"),
        ("http.parse.dir.line", "(?P<x"),
        ("http.parse.file.line", "a{2,1}"),
        ("sub1.files.move", "flat/(x"),
    ],
)
def test_uncompilable_regexp(make_bank, key, value):
    assert_invalid(check_bank(make_bank(bank={key: value})), key, "not a valid regular expression")


def test_match_everything_is_not_a_regexp_error(make_bank):
    assert verdict(check_bank(make_bank(bank={"remote.files": "**/*", "local.files": "**/*"}))) is True


def test_enum_value_out_of_range_is_a_warning(make_bank):
    problems = check_bank(make_bank(bank={"historic.logfile.level": "LOUD", "url.method": "PUT"}))
    assert verdict(problems) is True
    assert keys(problems, "warning") == {"historic.logfile.level", "url.method"}


# valid test banks (ours, and upstream's in the compat suite) ---------------------------------
@pytest.mark.parametrize("files", BOTH, indirect=True)
@pytest.mark.parametrize("bank", ["local", "localprocess"])
def test_valid_test_banks(tmp_path, files, bank):
    props = BankProperties.load(suite_global(files, tmp_path), files.bank(bank), environ={})
    problems = check_bank(props)
    assert verdict(problems) is True, errors(problems)
    assert props.get("data.dir") == f"{tmp_path}/"


def test_problem_is_frozen_and_printable():
    problem = Problem("error", "dir.version", "dir.version must be a relative path, got '/abs'")
    with pytest.raises(AttributeError):
        problem.level = "warning"  # type: ignore[misc]
    assert str(problem) == "error: dir.version must be a relative path, got '/abs'"
    assert verdict([Problem("warning", None, "w")]) is True and verdict([]) is True


def _valid_lines() -> str:
    from .conftest import VALID_BANK

    return "".join(f"{k}={v}\n" for k, v in VALID_BANK.items())


def test_what_biomaj_cannot_do_is_reported(make_bank):
    from biomaj.config.check import check_support

    irods = {"protocol": "irods", "irods.user": "u", "irods.password": "p", "irods.port": "1247", "irods.protocol": "tcp"}
    assert [p.key for p in check_support(make_bank(bank=irods)) if p.level == "error"] == ["protocol"]
    plugin = check_support(make_bank(bank={"release.plugin": "github"}))
    assert [(p.level, p.key) for p in plugin] == [("error", "release.plugin")]
    assert check_support(make_bank()) == []


@pytest.mark.parametrize("key, value, words", [
    ("download.split.min_size", "big", "not a size"),
    ("download.split.max", "many", "must be an integer"),
    ("download.bandwidth", "08:00", "is not HH:MM,RATE"),
    ("download.bandwidth", "fast", "not a rate"),
    ("download.max_failures", "a few", "expected a count (e.g. 10) or a percentage"),
    ("download.max_failures", "2.5", "expected a count (e.g. 10) or a percentage"),
    ("download.max_failures", "150%%", "at most 100%"),  # %% is a % in a properties file
])
def test_split_and_bandwidth_settings_are_checked(make_bank, key, value, words):
    assert_invalid(check_bank(make_bank(bank={key: value})), key, words)


def test_good_split_and_bandwidth_settings_pass(make_bank):
    bank = {"download.split.min_size": "256M", "download.split.max": "4", "download.bandwidth": "08:00,2M 20:00,off"}
    assert errors(check_bank(make_bank(bank=bank))) == []
    for budget in ("0", "10", "5%%", "0.5%%"):
        assert errors(check_bank(make_bank(bank={"download.max_failures": budget}))) == [], budget


S3_BANK = {"protocol": "s3", "server": "http://127.0.0.1:9000", "remote.dir": "bank-data/blast/",
           "server.credentials": "AKIAEXAMPLE:s3cr3t"}


def test_an_s3_bank_is_valid_with_an_endpoint_url_and_a_bucket(make_bank):
    assert verdict(check_bank(make_bank(bank=S3_BANK))) is True
    aws = {**S3_BANK, "server": "s3.amazonaws.com", "server.credentials": None, "s3.anonymous": "true",
           "s3.region": "us-east-1", "s3.addressing": "virtual"}
    assert verdict(check_bank(make_bank(bank=aws))) is True


@pytest.mark.parametrize("change, key, words", [
    ({"server": "http://127.0.0.1:9000/bank-data"}, "server", "the bucket goes in remote.dir"),
    ({"server": "http://AKIA:s3cr3t@127.0.0.1:9000"}, "server", "server.credentials=KEY:SECRET"),
    ({"remote.dir": "Not_A_Bucket!/x/"}, "remote.dir", "not a bucket name"),
    ({"remote.dir": "bank-data/../other/"}, "remote.dir", "'..'"),
    ({"s3.addressing": "dns"}, "s3.addressing", "expected auto, path"),
    ({"s3.anonymous": "maybe"}, "s3.anonymous", "expected true"),
    ({"s3.region": "EU West"}, "s3.region", "expected a region name"),
    ({"server.credentials": "AKIAONLY"}, "server.credentials", "ACCESS_KEY:SECRET"),
])
def test_an_s3_bank_with_a_bad_value_is_refused_naming_the_key(make_bank, change, key, words):
    problem = assert_invalid(check_bank(make_bank(bank={**S3_BANK, **change})), key, words)
    assert "s3cr3t" not in problem.message
