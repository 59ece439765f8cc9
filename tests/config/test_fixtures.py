"""Every real BioMAJ 3 bank file loads and gets a verdict, with both upstream global files."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomaj.config.check import check_bank, verdict
from biomaj.config.properties import BankProperties

from .conftest import FIXTURES, GLOBAL_EXAMPLE, UPSTREAM, UPSTREAM_GLOBAL

BANK_FILES = sorted((FIXTURES / "bank-properties").glob("*.properties")) + sorted(
    p for p in UPSTREAM.glob("*.properties") if p.name != "global.properties"
)
GLOBALS = [GLOBAL_EXAMPLE, UPSTREAM_GLOBAL]

# Verdicts reasoned from reference 1.5, the same with both global files.
EXPECTED = {
    # protocol=local, remote.dir, remote.files and local.files set.
    "upstream-tests/local": True,
    "upstream-tests/localprocess": True,  # its whole process DAG is defined
    # protocol=multi needs neither server, remote.dir nor remote.files.
    "upstream-tests/multi": True,
    # direct protocol: remote.files may be empty; BLOCKS= (empty) declares no block.
    "upstream-tests/directhttp": True,
    # The missing remote directory only fails at download time.
    "upstream-tests/alu_list_error": True,
    # remote.dir= becomes '/' (passes), but remote.files= is empty and there is no remote.list:
    # its remote.files.<n>.path keys are BioMAJ 1 syntax that BioMAJ 3 never reads.
    "upstream-tests/locallist": False,
    "bank-properties/refseq": True,  # its top-level db.post.process is ignored, with a warning
    "bank-properties/frogs": True,  # remote.files=**/* is not a regexp error
    "bank-properties/UniProt": True,  # a large DAG: 3 blocks, every process complete
    "bank-properties/genbank": True,
}


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_fixtures_are_present():
    assert len(BANK_FILES) == 17 + 14, BANK_FILES


@pytest.mark.parametrize("glob", GLOBALS, ids=["example-global", "upstream-global"])
@pytest.mark.parametrize("bank", BANK_FILES, ids=_id)
def test_every_fixture_loads_and_gets_a_verdict(glob, bank):
    props = BankProperties.load(glob, bank, environ={})
    assert props.name == bank.stem
    problems = check_bank(props)
    ok = verdict(problems)
    assert isinstance(ok, bool)
    if _id(bank) in EXPECTED:
        assert ok is EXPECTED[_id(bank)], [p for p in problems if p.level == "error"]
    assert props.as_dict()  # every value interpolates


def test_locallist_fails_on_remote_files():
    problems = check_bank(BankProperties.load(UPSTREAM_GLOBAL, UPSTREAM / "locallist.properties", environ={}))
    assert [(p.key, p.level) for p in problems if p.level == "error"] == [("remote.files", "error")]
    legacy = {p.key for p in problems if p.level == "warning"}
    assert {"remote.files.list", "remote.files.1.path", "remote.files.2.path"} <= legacy


@pytest.mark.parametrize("glob", GLOBALS, ids=["example-global", "upstream-global"])
def test_bank_files_with_top_level_db_post_process_get_the_warning(glob):
    warned = set()
    for bank in BANK_FILES:
        problems = check_bank(BankProperties.load(glob, bank, environ={}))
        if any(p.key == "db.post.process" and p.level == "warning" for p in problems):
            warned.add(bank.stem)
    # refseq is the only one with a non-empty db.post.process (the others have db.post.process=).
    assert warned == {"refseq"}


def test_legacy_key_is_a_warning_never_an_exception():
    props = BankProperties.load(UPSTREAM_GLOBAL, UPSTREAM / "local.properties", environ={})
    assert ("frequency.update", "frequency.update (in local.properties) is not read by BioMAJ 3 and is ignored") in props.warnings
    problems = check_bank(props)
    assert any(p.key == "frequency.update" and p.level == "warning" for p in problems)
    assert verdict(problems) is True


def test_global_example_values():
    props = BankProperties.load(GLOBAL_EXAMPLE, FIXTURES / "bank-properties" / "frogs.properties", environ={})
    assert props.get("data.dir") == "/var/lib/biomaj//data"
    assert props.get("keep.old.version") == "1"  # the bank's value over the global 0
    # frogs overrides the HTML parsing regexps with doubled backslashes: read as single ones.
    assert props.get("http.parse.file.line").startswith(r'<a[\s]+href=\"([\S]+)\"')
    assert props.get_list("db.formats") == ["frogs"]
