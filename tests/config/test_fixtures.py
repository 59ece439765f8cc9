"""Every BioMAJ 3-format bank file loads and gets a verdict, with both global files of its set.

Run on our files (tests/fixtures) and, as the compatibility suite, on every real bank file and
upstream test bank of BioMAJ 3 ($BIOMAJ3_FIXTURES).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from biomaj.config.check import check_bank, verdict
from biomaj.config.properties import BankProperties
from tests.conftest import BOTH, OURS, OURS_DIR, BankFiles, require_upstream, upstream_paths


def _ours(folder: Path) -> list:
    return [pytest.param(p, id=f"ours/{p.parent.name}/{p.stem}")
            for p in sorted(folder.glob("*.properties")) if p.name != "global.properties"]


OUR_BANKS = _ours(OURS.real_world) + _ours(OURS.banks)
UPSTREAM_BANKS = upstream_paths("bank-properties/*.properties") + upstream_paths("upstream-tests/*.properties")
GLOBALS = ["example-global", "test-global"]

# Verdicts reasoned from reference 1.5, the same with both global files of the set.
EXPECTED = {
    # ours
    "test-banks/local": True,  # protocol=local, remote.dir, remote.files and local.files set
    "test-banks/localprocess": True,  # its whole process DAG is defined
    "test-banks/multi": True,  # protocol=multi needs neither server, remote.dir nor remote.files
    "test-banks/directhttp": True,  # direct protocol: remote.files may be empty; BLOCKS= declares no block
    "test-banks/alu_list_error": True,  # the missing remote directory only fails at download time
    "test-banks/locallist": False,  # BioMAJ 1's remote.files.<n>.path, remote.files empty
    "bank-properties/ncbi_nt": True,  # its top-level db.post.process is ignored, with a warning
    "bank-properties/lab_http": True,  # remote.files=**/* is not a regexp error
    "bank-properties/ebi_uniprot": True,  # a large DAG: 3 blocks, every process complete
    "bank-properties/ucsc_hg38": True,
    # upstream's
    "upstream-tests/local": True,
    "upstream-tests/localprocess": True,
    "upstream-tests/multi": True,
    "upstream-tests/directhttp": True,
    "upstream-tests/alu_list_error": True,
    # remote.dir= becomes '/' (passes), but remote.files= is empty and there is no remote.list:
    # its remote.files.<n>.path keys are BioMAJ 1 syntax that BioMAJ 3 never reads.
    "upstream-tests/locallist": False,
    "bank-properties/refseq": True,
    "bank-properties/frogs": True,
    "bank-properties/UniProt": True,
    "bank-properties/genbank": True,
}

#: The banks with a non-empty top-level db.post.process (the others have none or db.post.process=).
TOP_LEVEL_POST_PROCESS = {"ours": {"ncbi_nt"}, "upstream": {"refseq"}}

#: What the production-shaped global file and one HTTP bank with doubled backslashes read as.
GLOBAL_EXAMPLE = {
    "ours": ("lab_http", "/srv/banks//mirror", "2", r'<td><a[\s]+href=\"([\S]+)\">', ["lab"]),
    "upstream": ("frogs", "/var/lib/biomaj//data", "1", r'<a[\s]+href=\"([\S]+)\"', ["frogs"]),
}


def _set_of(bank: Path | None) -> BankFiles:
    return OURS if bank is not None and OURS_DIR in bank.parents else require_upstream()


def _global(files: BankFiles, which: str) -> Path:
    return files.global_example if which == "example-global" else files.test_global


def _key(bank: Path) -> str:
    return f"{bank.parent.name}/{bank.stem}"


def test_our_files_are_present():
    assert len(OUR_BANKS) == 4 + 14, OUR_BANKS
    assert sorted(p.name for p in OURS.remote.iterdir()) == ["test.fasta.gz", "test2.fasta", "test_100.txt"]


@pytest.mark.compat
def test_upstream_files_are_present():
    require_upstream()
    assert len(UPSTREAM_BANKS) == 17 + 14, UPSTREAM_BANKS


@pytest.mark.parametrize("which", GLOBALS)
@pytest.mark.parametrize("bank", OUR_BANKS + UPSTREAM_BANKS)
def test_every_bank_file_loads_and_gets_a_verdict(which, bank):
    files = _set_of(bank)
    props = BankProperties.load(_global(files, which), bank, environ={})
    assert props.name == bank.stem
    problems = check_bank(props)
    ok = verdict(problems)
    assert isinstance(ok, bool)
    if _key(bank) in EXPECTED:
        assert ok is EXPECTED[_key(bank)], [p for p in problems if p.level == "error"]
    assert props.as_dict()  # every value interpolates


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_locallist_fails_on_remote_files(files):
    problems = check_bank(BankProperties.load(files.test_global, files.bank("locallist"), environ={}))
    assert [(p.key, p.level) for p in problems if p.level == "error"] == [("remote.files", "error")]
    legacy = {p.key for p in problems if p.level == "warning"}
    assert {"remote.files.list", "remote.files.1.path", "remote.files.2.path"} <= legacy


@pytest.mark.parametrize("files", BOTH, indirect=True)
@pytest.mark.parametrize("which", GLOBALS)
def test_bank_files_with_top_level_db_post_process_get_the_warning(files, which):
    warned = set()
    for bank in sorted(files.real_world.glob("*.properties")) + sorted(files.banks.glob("*.properties")):
        if bank.name == "global.properties":
            continue
        problems = check_bank(BankProperties.load(_global(files, which), bank, environ={}))
        if any(p.key == "db.post.process" and p.level == "warning" for p in problems):
            warned.add(bank.stem)
    assert warned == TOP_LEVEL_POST_PROCESS[files.name]


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_legacy_key_is_a_warning_never_an_exception(files):
    props = BankProperties.load(files.test_global, files.bank("local"), environ={})
    assert ("frequency.update", "frequency.update (in local.properties) is not read by BioMAJ 3 and is ignored") in props.warnings
    problems = check_bank(props)
    assert any(p.key == "frequency.update" and p.level == "warning" for p in problems)
    assert verdict(problems) is True


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_global_example_values(files):
    bank, data_dir, keep, file_line, formats = GLOBAL_EXAMPLE[files.name]
    props = BankProperties.load(files.global_example, files.real_world / f"{bank}.properties", environ={})
    assert props.get("data.dir") == data_dir  # %(root.dir)s interpolated, the double slash kept
    assert props.get("keep.old.version") == keep  # the bank's value over the global 0
    # the bank overrides the HTML parsing regexps with doubled backslashes: read as single ones.
    assert props.get("http.parse.file.line").startswith(file_line)
    assert props.get_list("db.formats") == formats
