"""Settings are declared once: the docs are generated from them and every key used is declared."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import biomaj.config.check as check_module
from biomaj.config.check import check_bank
from biomaj.config.properties import BankProperties
from biomaj.config.settings import DEFAULTS, PROPERTIES, SCOPES, SECTIONS, find_setting, render_markdown

from tests.conftest import BOTH

from .conftest import suite_global

PROJECT = Path(__file__).resolve().parents[2]
DOCS = PROJECT / "docs" / "bank-properties.md"

# BiomajConfig.DEFAULTS, reference table 1.2, copied by hand: the declarations must match it.
TABLE_1_2 = {
    "http.parse.dir.line": r'<img[\s]+src="[\S]+"[\s]+alt="\[DIR\]"[\s]*/?>[\s]*<a[\s]+href="([\S]+)/"[\s]*>.*([\d]{2}-[\w\d]{2,5}-[\d]{4}\s[\d]{2}:[\d]{2})',
    "http.parse.file.line": r'<img[\s]+src="[\S]+"[\s]+alt="\[[\s]+\]"[\s]*/?>[\s]<a[\s]+href="([\S]+)".*([\d]{2}-[\w\d]{2,5}-[\d]{4}\s[\d]{2}:[\d]{2})[\s]+([\d\.]+[MKG]{0,1})',
    "http.group.dir.name": "1",
    "http.group.dir.date": "2",
    "http.group.file.name": "1",
    "http.group.file.date": "2",
    "http.group.file.size": "3",
    "visibility.default": "public",
    "historic.logfile.level": "INFO",
    "bank.num.threads": "2",
    "files.num.threads": "4",
    "use_elastic": "0",
    "use_drmaa": "0",
    "db.type": "",
    "db.formats": "",
    "keep.old.version": "1",
    "keep.old.sessions": "0",
    "docker.sudo": "1",
    "auto_publish": "0",
    "use_hardlinks": "1",  # deliberate: biomaj hard-links unchanged files by default
    "wait_policy": "wait_fixed(3)",
    "stop_condition": "stop_after_attempt(3)",
    "ssh_hosts_file": "~/.ssh/known_hosts",
    "ssh_new_host": "reject",
}

# Reference 1.3.h: present in old files, never read by BioMAJ 3.
LEGACY_1_3_H = """frequency.update release.file.compressed remote.excluded.files
local.files.excluded do.link.copy production.directory.chmod log.files port username password ftp.timeout
ftp.automatic.reconnect ftp.active.mode extract.threads list.file.available remote.files.list
remote.files.1.path celery.queue celery.broker proxyHost proxyPort proxyUser proxyPassword use_drmaa
file.md5.check db.post.process""".split()


def test_docs_page_is_the_rendered_settings():
    assert DOCS.read_text() == render_markdown(), "regenerate: python -m biomaj.config.settings > docs/bank-properties.md"


def test_module_entry_point_prints_the_page():
    out = subprocess.run([sys.executable, "-m", "biomaj.config.settings"], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout == render_markdown()


def test_docs_list_every_setting_under_its_section():
    page = render_markdown()
    for title, group in SECTIONS:
        assert f"## {title}\n" in page
        for setting in group:
            assert f"| `{setting.name}` |" in page


def test_defaults_are_biomaj_defaults_table():
    assert DEFAULTS == TABLE_1_2
    for key in DEFAULTS:
        assert find_setting(key) is not None and find_setting(key).default == DEFAULTS[key]


def test_declarations_are_well_formed():
    names = [s.name.lower() for s in PROPERTIES]
    assert len(names) == len(set(names)), "a key is declared twice"
    kinds = {"str", "int", "bool", "path", "regex", "comma-list", "space-list", "size", "rate", "allowance"}
    for s in PROPERTIES:
        assert s.scope in SCOPES, s
        assert s.kind in kinds or re.fullmatch(r"enum\([\w-]+(, [\w-]+)*\)", s.kind), s
        # One sentence: ends with a period, no second sentence inside.
        assert s.help.endswith(".") and not re.search(r"\.\s+[A-Z]", s.help), s
        assert s.default is None or isinstance(s.default, str), s
        if s.kind == "int" and s.default:
            int(s.default)


def test_legacy_keys_of_reference_are_declared_legacy():
    for key in LEGACY_1_3_H:
        setting = find_setting(key)
        assert setting is not None and setting.legacy, key
    assert not find_setting("remote.file.1.path").legacy  # the multi key, not remote.files.<n>.path


@pytest.mark.parametrize(
    "key, declared",
    [
        ("PROC0.exe", "<proc>.exe"),
        ("remote.file.0.name", "remote.file.<i>.name"),
        ("remote.file.0.params.keys", "remote.file.<i>.params.keys"),
        ("remote.file.0.params.key1", "remote.file.<i>.params.<k>"),
        ("GALAXY.db.post.process", "<BLOCK>.db.post.process"),
        ("sub1.files.move", "<dep>.files.move"),
        ("key1.value", "<name>.value"),
        ("options.ssl_verifypeer", "options.<name>"),
        ("micro.biomaj.service.download", "micro.biomaj.service.<service>"),
        ("BLOCKS", "BLOCKS"),
        ("proxyhost", "proxyHost"),
        ("db.name", "db.name"),
    ],
)
def test_key_families_are_found(key, declared):
    assert find_setting(key).name == declared
    assert find_setting("META0") is None  # META names are free words


class _Recording(BankProperties):
    """Remembers every key that check_bank reads."""

    read: set[str]

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_every_key_read_by_check_is_declared(tmp_path, files):
    props = _Recording.load(suite_global(files, tmp_path), files.bank("localprocess"), environ={})
    props.read = set()
    check_bank(props)
    # META names are free words (values of the process lists); the interpolation check reads
    # every key of the files, so they are met both as written and lower-cased.
    metas = {"meta0", "meta1", "meta2", "meta3"}
    undeclared = sorted(k for k in props.read if find_setting(k) is None and k.lower() not in metas)
    assert undeclared == []
    assert {"protocol", "blocks", "PROC5.args"} <= {k if k == "PROC5.args" else k.lower() for k in props.read}


def test_every_key_named_in_check_module_is_declared():
    tree = ast.parse(Path(check_module.__file__).read_text())
    literals = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[A-Za-z_]+(\.[A-Za-z_]+)+|use_\w+|BLOCKS", node.value)
    }
    assert "dir.version" in literals and "use_ldap" in literals
    assert sorted(k for k in literals if find_setting(k) is None) == []
