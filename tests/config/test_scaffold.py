"""`biomaj init`'s scaffold: it never overwrites a file without --force, and says what it kept."""

from __future__ import annotations

import gzip

import pytest

from biomaj.config.scaffold import init_root
from biomaj.errors import BiomajError

BIOMAJ3_GLOBAL = "[GENERAL]\n# copied from a BioMAJ 3 site\ndata.dir=/srv/banks\n"


def test_a_new_root_gets_every_file(tmp_path):
    root = tmp_path / "root"
    done = init_root(root)
    names = {p.relative_to(root).as_posix() for p in done.written}
    assert names == {"config.yml", "conf/global.properties", "conf/example.properties", "example-remote/release.txt",
                     "example-remote/example.fasta", "example-remote/example2.fasta.gz"}
    assert done.kept == []
    assert gzip.decompress((root / "example-remote/example2.fasta.gz").read_bytes()).startswith(b">gz_seq1")


def test_files_already_there_are_kept_and_named(tmp_path):
    root = tmp_path / "root"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "global.properties").write_text(BIOMAJ3_GLOBAL)
    (root / "example-remote").mkdir()
    (root / "example-remote" / "release.txt").write_text("Release 7\n")
    done = init_root(root)
    assert {p.relative_to(root).as_posix() for p in done.kept} == {"conf/global.properties",
                                                                   "example-remote/release.txt"}
    assert (root / "conf" / "global.properties").read_text() == BIOMAJ3_GLOBAL
    assert (root / "example-remote" / "release.txt").read_text() == "Release 7\n"
    assert (root / "config.yml").is_file() and (root / "conf" / "example.properties").is_file()


def test_a_symlink_is_kept_not_followed(tmp_path):
    root = tmp_path / "root"
    (root / "conf").mkdir(parents=True)
    shared = tmp_path / "site-global.properties"
    shared.write_text(BIOMAJ3_GLOBAL)
    (root / "conf" / "global.properties").symlink_to(shared)
    done = init_root(root)
    assert root / "conf" / "global.properties" in done.kept and shared.read_text() == BIOMAJ3_GLOBAL


def test_an_existing_config_is_refused_and_force_writes_everything(tmp_path):
    root = tmp_path / "root"
    init_root(root)
    (root / "conf" / "global.properties").write_text(BIOMAJ3_GLOBAL)
    (root / "config.yml").write_text("web:\n  port: 5999\n")
    with pytest.raises(BiomajError, match="already exists; use --force"):
        init_root(root)
    assert (root / "config.yml").read_text() == "web:\n  port: 5999\n"
    assert (root / "conf" / "global.properties").read_text() == BIOMAJ3_GLOBAL  # refused: nothing touched
    done = init_root(root, force=True)
    assert done.kept == [] and len(done.written) == 6
    assert "5999" not in (root / "config.yml").read_text()
    assert (root / "conf" / "global.properties").read_text() != BIOMAJ3_GLOBAL
    assert (root / "config.yml").stat().st_mode & 0o777 == 0o600
