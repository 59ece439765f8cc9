"""Helpers for the properties tests: temporary global/bank pairs, and a set's test global file
(ours from tests/fixtures, or upstream's in the compat suite: tests/conftest.py ``BankFiles``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping

import pytest

from biomaj.config.properties import BankProperties
from tests.conftest import BankFiles

#: A bank file that passes every check, as key -> value.
VALID_BANK = {
    "db.fullname": "test bank",
    "db.formats": "fasta",
    "dir.version": "test/bank",
    "offline.dir.name": "offline/test/bank_tmp",
    "protocol": "ftp",
    "server": "ftp.example.org",
    "remote.dir": "/pub/",
    "remote.files": r"^test.*\.gz$",
    "local.files": r"^test.*",
}


def valid_global(root: Path) -> dict[str, str]:
    """A global.properties whose directories are under ``root`` and whose mail is configured."""
    return {
        "root.dir": str(root),
        "conf.dir": "%(root.dir)s/conf",
        "data.dir": "%(root.dir)s/data",
        "log.dir": "%(root.dir)s/log",
        "process.dir": "%(root.dir)s/process",
        "lock.dir": "%(root.dir)s/lock",
        "cache.dir": "%(root.dir)s/cache",
        "mail.smtp.host": "localhost",
        "mail.from": "biomaj@example.org",
    }


def render(values: Mapping[str, str | None], extra: str = "") -> str:
    """A properties file: [GENERAL] then ``key=value`` lines (None drops the key), then ``extra``."""
    lines = ["[GENERAL]"] + [f"{k}={v}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n" + extra


MakeBank = Callable[..., BankProperties]


@pytest.fixture
def make_bank(tmp_path: Path) -> MakeBank:
    """Write a global + bank pair under tmp_path and load it.

    ``make_bank(bank={...}, glob={...})`` overrides keys of VALID_BANK / valid_global (None
    removes a key); ``bank_text`` / ``global_text`` replace a file entirely; ``by_path`` loads
    the bank by the path of its file instead of by name (then conf.dir is not needed).
    """

    def make(
        bank: Mapping[str, str | None] | None = None,
        glob: Mapping[str, str | None] | None = None,
        *,
        bank_text: str | None = None,
        global_text: str | None = None,
        name: str = "bank",
        environ: Mapping[str, str] | None = None,
        by_path: bool = False,
    ) -> BankProperties:
        conf = tmp_path / "conf"
        conf.mkdir(exist_ok=True)
        gpath = conf / "global.properties"
        gpath.write_text(global_text if global_text is not None else render({**valid_global(tmp_path), **(glob or {})}))
        bpath = conf / f"{name}.properties"
        bpath.write_text(bank_text if bank_text is not None else render({**VALID_BANK, **(bank or {})}))
        # Tests never see the real environment unless they pass one.
        return BankProperties.load(gpath, bpath if by_path else name, environ=environ if environ is not None else {})

    return make


def suite_global(files: BankFiles, root: Path) -> Path:
    """The set's test global.properties with its directories moved under ``root`` (data.dir is
    ``<root>/``), as upstream's harness does."""
    text = files.test_global.read_text()
    for key in ("conf.dir", "log.dir", "process.dir", "data.dir", "lock.dir", "cache.dir"):
        value = f"{root}/" if key == "data.dir" else f"{root}/{key.split('.')[0]}"
        text = re.sub(rf"^{re.escape(key)}=.*$", lambda _: f"{key}={value}", text, count=1, flags=re.MULTILINE)
    path = root / "global.properties"
    path.write_text(text)
    return path
