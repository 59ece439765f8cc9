"""The secret reader of a node: a bank file is parsed once, and again only when it changes."""

from __future__ import annotations

import logging
import os

import pytest

from biomaj.auth.identity import secret_reader
from biomaj.config.properties import BankProperties
from biomaj.config.scaffold import init_root
from biomaj.config.service import load_config
from biomaj.errors import UnknownBank


@pytest.fixture
def config(tmp_path):
    init_root(tmp_path)
    return load_config(tmp_path / "config.yml", environ={})


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The banks BankProperties.load parsed, in order (a spy on the real loader)."""
    loaded: list[str] = []
    load = BankProperties.load

    def counted(global_path, bank, **options):
        loaded.append(bank)
        return load(global_path, bank, **options)

    monkeypatch.setattr(BankProperties, "load", counted)
    return loaded


def write(path, password: str, mtime: int) -> None:
    path.write_text(f"[GENERAL]\nserver.credentials=anonymous:{password}\n")
    os.utime(path, (mtime, mtime))


def test_a_bank_file_is_parsed_again_only_when_it_changes(config, loads, caplog):
    bank = config.global_properties.parent / "alu.properties"
    write(bank, "first", 1_700_000_000)
    read = secret_reader(config)
    with caplog.at_level(logging.DEBUG):
        assert read("alu", "server.credentials") == "anonymous:first"
        assert read("alu", "server.credentials") == "anonymous:first"
        assert read("alu", "no.such.key") is None
        assert loads == ["alu"]

        write(bank, "other", 1_700_000_000)  # same size, same mtime: taken as unchanged
        assert read("alu", "server.credentials") == "anonymous:first"
        assert loads == ["alu"]

        os.utime(bank, (1_700_000_060, 1_700_000_060))  # a minute later
        assert read("alu", "server.credentials") == "anonymous:other"
        assert loads == ["alu", "alu"]

        write(bank, "longer one", 1_700_000_060)  # same mtime, another size
        assert read("alu", "server.credentials") == "anonymous:longer one"
        assert loads == ["alu", "alu", "alu"]

        config.global_properties.touch()  # global.properties is merged in: it counts too
        assert read("alu", "server.credentials") == "anonymous:longer one"
        assert loads == ["alu", "alu", "alu", "alu"]
    assert not any(secret in caplog.text for secret in ("first", "other", "longer one"))


def test_a_removed_bank_file_is_reported_not_served_from_memory(config):
    bank = config.global_properties.parent / "alu.properties"
    write(bank, "first", 1_700_000_000)
    read = secret_reader(config)
    assert read("alu", "server.credentials") == "anonymous:first"
    bank.unlink()
    with pytest.raises(UnknownBank):
        read("alu", "server.credentials")
    with pytest.raises(UnknownBank):
        read("alu", "server.credentials")
