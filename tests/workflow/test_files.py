"""Linking, selecting, moving, sizing and removing real files in tmp_path."""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from pathlib import Path
from unittest.mock import patch

import pytest

from biomaj.errors import ConfigError
from biomaj.workflow.files import (
    FileRecord,
    compile_patterns,
    copy_matching,
    link_or_copy,
    match_any,
    move_matching,
    remove_tree,
    tree_size,
)

MTIME = time.mktime((2022, 11, 30, 23, 30, 0, 0, 0, -1))  # local time, late enough to catch a UTC mix-up


def write(path: Path, data: bytes = b"x", mtime: float = MTIME) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def listing(root: Path) -> list[str]:
    """Every file and symlink under `root`, relative, sorted (directories left out)."""
    return sorted(
        Path(directory, name).relative_to(root).as_posix()
        for directory, dirs, files in os.walk(root)
        for name in files + [d for d in dirs if Path(directory, d).is_symlink()]
    )


# --- link_or_copy -------------------------------------------------------------------------------


def test_hard_link(tmp_path):
    src = write(tmp_path / "src" / "a.fasta", b"AAAA")
    dst = tmp_path / "release" / "flat" / "a.fasta"

    assert link_or_copy(src, dst) is True

    assert os.path.samefile(src, dst)
    assert dst.read_bytes() == b"AAAA"
    assert listing(tmp_path) == ["release/flat/a.fasta", "src/a.fasta"]


def test_hard_link_replaces_existing(tmp_path):
    src = write(tmp_path / "a", b"new")
    dst = write(tmp_path / "b", b"old")
    assert link_or_copy(src, dst) is True
    assert os.path.samefile(src, dst)


def test_hard_link_already_there(tmp_path):
    src = write(tmp_path / "a", b"same")
    dst = tmp_path / "b"
    os.link(src, dst)
    assert link_or_copy(src, dst) is True
    assert link_or_copy(src, src) is True
    assert os.path.samefile(src, dst) and src.read_bytes() == b"same"


def test_hard_link_replaces_a_symlink(tmp_path):
    src = write(tmp_path / "a", b"data")
    dst = tmp_path / "b"
    dst.symlink_to(src)
    assert link_or_copy(src, dst) is True
    assert not dst.is_symlink()
    assert os.path.samefile(src, dst)


def test_copy_when_asked(tmp_path):
    src = write(tmp_path / "a", b"data")
    dst = write(tmp_path / "sub" / "b", b"old")

    assert link_or_copy(src, dst, hardlink=False) is False

    assert not os.path.samefile(src, dst)
    assert dst.read_bytes() == b"data"
    assert dst.stat().st_mtime == MTIME
    assert listing(tmp_path) == ["a", "sub/b"]


def test_copy_onto_itself_keeps_the_data(tmp_path):
    src = write(tmp_path / "a", b"data")
    assert link_or_copy(src, src, hardlink=False) is False
    assert src.read_bytes() == b"data"
    assert listing(tmp_path) == ["a"]


def test_copy_when_the_file_system_refuses_links(tmp_path):
    src = write(tmp_path / "a", b"data")
    dst = tmp_path / "other-fs" / "a"
    # The only mock: a second file system cannot be mounted in a test.
    with patch("os.link", side_effect=OSError(errno.EXDEV, "Invalid cross-device link")) as link:
        assert link_or_copy(src, dst) is False
    link.assert_called_once()
    assert not os.path.samefile(src, dst)
    assert dst.read_bytes() == b"data"
    assert dst.stat().st_mtime == MTIME
    assert listing(tmp_path) == ["a", "other-fs/a"]


def test_other_link_errors_are_raised(tmp_path):
    with pytest.raises(FileNotFoundError):
        link_or_copy(tmp_path / "missing", tmp_path / "dst")
    assert listing(tmp_path) == []


# --- patterns -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patterns, relative, matches",
    [
        (["alu"], "alu.n.gz", True),  # anchored at the start, not a full match
        (["n.gz"], "alu.n.gz", False),
        ([r"^alu\.(a|n).*"], "alu.a", True),
        ([r"^alu\.(a|n).*"], "alu.p", False),
        ([r"^alu\.(a|n).*"], "sub/alu.a", False),
        ([r"sub/.*\.gz$"], "sub/x.gz", True),
        ([r"\.gz$"], "sub/x.gz", False),
        (["**/*"], "deep/down/x", True),
        (["nope", "**/*"], "x", True),
        ([], "x", False),
    ],
)
def test_match_any(patterns, relative, matches):
    assert match_any(patterns, relative) is matches
    assert match_any(compile_patterns(patterns, "local.files"), relative) is matches


def test_compile_patterns_rejects_bad_regexp():
    with pytest.raises(ConfigError) as caught:
        compile_patterns(["ok.*", "alu[.gz"], "local.files")
    assert str(caught.value).startswith("local.files: 'alu[.gz' is not a valid regular expression (")


def test_compile_patterns():
    compiled = compile_patterns([r"^a\.gz", "**/*"], "local.files")
    assert all(isinstance(p, re.Pattern) for p in compiled)
    assert compiled[0].pattern == r"^a\.gz"


# --- FileRecord ---------------------------------------------------------------------------------


def test_file_record(tmp_path):
    write(tmp_path / "sub" / "a.txt", b"12345")
    record = FileRecord.of(tmp_path, "sub/a.txt")
    assert record == FileRecord("sub/a.txt", 5, 2022, 11, 30, "text/plain")
    assert record.to_dict() == {
        "name": "sub/a.txt", "size": 5, "year": 2022, "month": 11, "day": 30, "format": "text/plain",
    }
    with pytest.raises(AttributeError):
        record.size = 1  # frozen


def test_file_record_unknown_format(tmp_path):
    write(tmp_path / "alu.n.gz")
    assert FileRecord.of(tmp_path, "alu.n.gz").format is None


# --- move_matching / copy_matching ------------------------------------------------------------


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    root = tmp_path / "offline"
    for name in ("alu.a.fasta", "alu.n.gz", "alu.p.fasta", "other.txt", "sub/alu.a.x", "sub/deep/y.txt"):
        write(root / name, name.encode())
    write(root / "alu.a.part.biomaj-part", b"partial")
    write(root / ".biomaj-extract-alu.tar" / "alu.a.staged", b"staged")
    return root


def test_move_matching(tmp_path, offline):
    flat = tmp_path / "release" / "flat"

    records = move_matching(offline, flat, [r"^alu\.(a|n).*"])

    assert [r.name for r in records] == ["alu.a.fasta", "alu.n.gz"]
    assert records[0] == FileRecord("alu.a.fasta", len(b"alu.a.fasta"), 2022, 11, 30, None)
    assert listing(flat) == ["alu.a.fasta", "alu.n.gz"]
    assert (flat / "alu.n.gz").read_bytes() == b"alu.n.gz"
    assert (flat / "alu.n.gz").stat().st_mtime == MTIME
    assert listing(offline) == [
        ".biomaj-extract-alu.tar/alu.a.staged", "alu.a.part.biomaj-part", "alu.p.fasta", "other.txt",
        "sub/alu.a.x", "sub/deep/y.txt",
    ]


def test_move_everything(tmp_path, offline):
    flat = tmp_path / "flat"

    records = move_matching(offline, flat, ["**/*"])

    moved = ["alu.a.fasta", "alu.n.gz", "alu.p.fasta", "other.txt", "sub/alu.a.x", "sub/deep/y.txt"]
    assert [r.name for r in records] == moved
    assert listing(flat) == moved
    assert (flat / "sub" / "deep" / "y.txt").read_bytes() == b"sub/deep/y.txt"
    assert listing(offline) == [".biomaj-extract-alu.tar/alu.a.staged", "alu.a.part.biomaj-part"]


def test_a_directory_whose_every_file_moves_goes_in_one_rename(tmp_path, offline):
    flat = tmp_path / "flat"
    write(offline / "sub" / "deep" / "z.txt", b"z")
    inode = (offline / "sub").stat().st_ino

    records = move_matching(offline, flat, ["**/*"])

    assert (flat / "sub").stat().st_ino == inode  # the folder itself was renamed
    assert not (offline / "sub").exists()
    assert [r.name for r in records if r.name.startswith("sub/")] == ["sub/alu.a.x", "sub/deep/y.txt", "sub/deep/z.txt"]
    assert records[-1] == FileRecord("sub/deep/z.txt", 1, 2022, 11, 30, "text/plain")


@pytest.mark.parametrize("leftover", ["unmatched.dat", "f.biomaj-part", ".biomaj-extract-x/staged", "empty/"])
def test_a_directory_holding_something_that_stays_moves_file_by_file(tmp_path, offline, leftover):
    flat = tmp_path / "flat"
    if leftover.endswith("/"):
        (offline / "sub" / "deep" / leftover).mkdir()
    else:
        write(offline / "sub" / "deep" / leftover, b"stays")
    patterns = [r".*\.(x|txt|fasta|gz)$"]

    records = move_matching(offline, flat, patterns)

    assert "sub/deep/y.txt" in [r.name for r in records]
    assert (flat / "sub" / "deep" / "y.txt").read_bytes() == b"sub/deep/y.txt"
    assert os.path.lexists(offline / "sub" / "deep" / leftover.rstrip("/"))
    assert not (offline / "sub" / "deep" / "y.txt").exists()


def test_a_directory_already_in_the_release_gets_the_files_one_by_one(tmp_path, offline):
    flat = tmp_path / "flat"
    write(flat / "sub" / "reused.dat", b"from the last release")

    move_matching(offline, flat, ["**/*"])

    assert listing(flat / "sub") == ["alu.a.x", "deep/y.txt", "reused.dat"]


def test_move_subdirectory_pattern(tmp_path, offline):
    flat = tmp_path / "flat"
    records = move_matching(offline, flat, [r"sub/.*", r"^other"])
    assert [r.name for r in records] == ["other.txt", "sub/alu.a.x", "sub/deep/y.txt"]
    assert listing(flat) == ["other.txt", "sub/alu.a.x", "sub/deep/y.txt"]


def test_move_replaces_existing(tmp_path, offline):
    flat = tmp_path / "flat"
    write(flat / "other.txt", b"old")
    move_matching(offline, flat, ["other"])
    assert (flat / "other.txt").read_bytes() == b"other.txt"


def test_zero_matches(tmp_path, offline):
    before = listing(offline)
    assert move_matching(offline, tmp_path / "flat", [r"^nothing"]) == []
    assert listing(offline) == before
    assert copy_matching(offline, tmp_path / "flat", [r"^nothing"], hardlink=True, key="dep.files.move") == []
    assert move_matching(tmp_path / "missing", tmp_path / "flat", ["**/*"]) == []
    assert not (tmp_path / "flat").exists()


def test_bad_pattern_names_the_key(tmp_path, offline):
    with pytest.raises(ConfigError, match=r"^sub1\.files\.move: '\(' is not a valid"):
        copy_matching(offline, tmp_path / "flat", ["("], hardlink=True, key="sub1.files.move")


def test_symlinks_are_moved_only_inside(tmp_path, offline, caplog):
    outside = write(tmp_path / "secret.txt", b"secret")
    (offline / "link.inside").symlink_to("alu.a.fasta")
    (offline / "link.outside").symlink_to(outside)
    (offline / "link.dangling").symlink_to("nowhere")
    (offline / "link.dir").symlink_to("sub")
    flat = tmp_path / "flat"

    with caplog.at_level(logging.WARNING, logger="biomaj.workflow.files"):
        records = move_matching(offline, flat, [r"link\."])

    assert [r.name for r in records] == ["link.inside"]
    assert (flat / "link.inside").is_symlink()
    assert os.readlink(flat / "link.inside") == "alu.a.fasta"
    assert "link.outside" in caplog.text and "link.dangling" in caplog.text
    assert (offline / "link.outside").is_symlink() and (offline / "link.dir").is_symlink()
    assert outside.read_bytes() == b"secret"


def test_symlink_record_describes_its_target(tmp_path, offline):
    write(offline / "alu.a.fasta", b"A" * 40)
    (offline / "alu.a.latest").symlink_to("alu.a.fasta")
    flat = tmp_path / "flat"
    records = move_matching(offline, flat, [r"alu\.a\."])
    assert [(r.name, r.size) for r in records] == [("alu.a.fasta", 40), ("alu.a.latest", 40)]
    assert (flat / "alu.a.latest").is_symlink()
    assert (flat / "alu.a.latest").read_bytes() == b"A" * 40


def test_copy_matching_hard_links(tmp_path, offline):
    dest = tmp_path / "release" / "sub1"
    records = copy_matching(offline, dest, [r"sub/", r"alu\.a"], hardlink=True, key="sub1.files.move")
    assert [r.name for r in records] == ["alu.a.fasta", "sub/alu.a.x", "sub/deep/y.txt"]
    for record in records:
        assert os.path.samefile(offline / record.name, dest / record.name)


def test_copy_matching_copies(tmp_path, offline):
    dest = tmp_path / "dest"
    before = listing(offline)
    records = copy_matching(offline, dest, ["**/*"], hardlink=False, key="sub1.files.move")
    assert [r.name for r in records] == listing(dest)
    assert listing(offline) == before
    assert not os.path.samefile(offline / "other.txt", dest / "other.txt")
    assert (dest / "other.txt").stat().st_mtime == MTIME


# --- tree_size / remove_tree --------------------------------------------------------------------


def test_tree_size(tmp_path):
    root = tmp_path / "release"
    write(root / "a", b"x" * 10)
    write(root / "sub" / "deep" / "b", b"x" * 100)
    big = write(tmp_path / "big", b"x" * 5000)
    (root / "link").symlink_to(big)
    (root / "dirlink").symlink_to(tmp_path)
    assert tree_size(root) == 110
    assert tree_size(tmp_path / "missing") == 0


def test_remove_tree(tmp_path):
    root = tmp_path / "release"
    write(root / "a")
    write(root / "sub" / "ro" / "b").chmod(0o444)
    (root / "sub" / "ro").chmod(0o555)
    (root / "closed").mkdir()
    write(root / "closed" / "c")
    (root / "closed").chmod(0o000)

    remove_tree(root)

    assert not root.exists()
    remove_tree(root)  # missing: nothing to do


def test_remove_tree_does_not_follow_symlinks(tmp_path):
    kept = write(tmp_path / "kept" / "file")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "kept")
    remove_tree(link)
    assert not os.path.lexists(link)
    assert kept.exists()

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "out").symlink_to(tmp_path / "kept")
    remove_tree(tree)
    assert not tree.exists()
    assert kept.exists()


def test_remove_tree_of_a_file(tmp_path):
    path = write(tmp_path / "f")
    remove_tree(path)
    assert listing(tmp_path) == []
