"""Archive extraction on real archives in tmp_path: good ones, corrupt ones and malicious ones."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import subprocess
import shutil
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from biomaj.errors import BiomajError
from biomaj.workflow.extract import (
    ARCHIVE_SUFFIXES,
    ExtractionError,
    archive_kind,
    extract_archive,
)
from tests.conftest import BOTH

MTIME = time.mktime((2021, 3, 4, 5, 6, 8, 0, 0, -1))  # even seconds: zip times have a 2 s resolution


def snapshot(root: Path) -> dict[str, object]:
    """Everything under `root`: file contents, "dir" for directories, ("link", target) for symlinks."""
    tree: dict[str, object] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                tree[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                tree[relative] = "dir"
            else:
                tree[relative] = path.read_bytes()
    return tree


def make_tar(path: Path, members: list[tuple], mode: str = "w") -> Path:
    """A tar of (name, bytes) files, (name, None) directories, (name, "->", target) symlinks and
    (name, "=>", target) hard links."""
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as archive:
        for name, *rest in members:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            data = None
            if rest == [None]:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif len(rest) == 2:
                info.type = tarfile.SYMTYPE if rest[0] == "->" else tarfile.LNKTYPE
                info.linkname = rest[1]
            else:
                data = io.BytesIO(rest[0])
                info.size, info.mode = len(rest[0]), 0o644
            archive.addfile(info, data)
    return path


def make_zip(path: Path, members: dict[str, bytes | None]) -> Path:
    """A zip of files (name: bytes) and directories (name ending in "/": None)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=time.localtime(MTIME)[:6])
            archive.writestr(info, data or b"")
    return path


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    """The offline directory archives are extracted in, beside an empty ``outside`` directory."""
    (tmp_path / "outside").mkdir()
    directory = tmp_path / "offline"
    directory.mkdir()
    return directory


def assert_refused(archive: Path, *words: str) -> None:
    """Extraction fails naming the archive and `words`; the archive is intact, nothing else is written."""
    before = archive.read_bytes()
    with pytest.raises(ExtractionError) as caught:
        extract_archive(archive)
    message = str(caught.value)
    assert message.startswith(f"{archive.name}: ")
    for word in words:
        assert word in message
    assert archive.read_bytes() == before
    root = archive.parent.parent
    assert snapshot(root) == {"outside": "dir", "offline": "dir", f"offline/{archive.name}": before}


# --- kinds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind",
    [
        ("a.tar", "tar"), ("a.tar.gz", "tar"), ("a.TGZ", "tar"), ("a.tar.bz2", "tar"), ("a.tbz2", "tar"),
        ("a.tar.xz", "tar"), ("a.txz", "tar"), ("alu.n.gz", "gz"), ("a.fasta.GZ", "gz"), ("a.bz2", "bz2"),
        ("a.xz", "xz"), ("a.zip", "zip"), ("a.fasta", None), ("gz", None), ("a.tar.gz.md5", None),
    ],
)
def test_archive_kind(name, kind):
    assert archive_kind(name) == kind


def test_suffixes_longest_first():
    """A suffix never comes before a longer one ending with it (``.gz`` after ``.tar.gz``)."""
    for i, suffix in enumerate(ARCHIVE_SUFFIXES):
        assert not any(later.endswith(suffix) for later in ARCHIVE_SUFFIXES[i + 1 :]), suffix


def test_extraction_error_is_a_user_error():
    assert issubclass(ExtractionError, BiomajError)


# --- single compressed files -------------------------------------------------------------------


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
def test_single_file(offline, suffix, compress):
    data = b">seq1\nACGT\n" * 1000
    archive = offline / f"alu.n{suffix}"
    archive.write_bytes(compress(data))
    os.utime(archive, (MTIME, MTIME))

    assert extract_archive(archive) == ["alu.n"]

    assert snapshot(offline) == {"alu.n": data}
    assert (offline / "alu.n").stat().st_mtime == MTIME


def test_single_file_bigger_than_a_chunk(offline):
    data = os.urandom(3 * 1024 * 1024 + 17)
    archive = offline / "big.bin.gz"
    archive.write_bytes(gzip.compress(data, compresslevel=1))
    assert extract_archive(archive) == ["big.bin"]
    assert (offline / "big.bin").read_bytes() == data


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
def test_file_starting_with_zeros_is_not_an_empty_tar(offline, suffix, compress):
    """A tar reader takes a leading block of zeros for the end of an empty archive."""
    data = bytes(4096) + b"data"
    archive = offline / f"index.bin{suffix}"
    archive.write_bytes(compress(data))
    assert extract_archive(archive) == ["index.bin"]
    assert snapshot(offline) == {"index.bin": data}


def test_concatenated_gzip_members(offline):
    archive = offline / "a.txt.gz"
    archive.write_bytes(gzip.compress(b"first\n") + gzip.compress(b"second\n"))
    extract_archive(archive)
    assert (offline / "a.txt").read_bytes() == b"first\nsecond\n"


def test_single_file_replaces_existing(offline):
    (offline / "a.fasta").write_bytes(b"old")
    archive = offline / "a.fasta.gz"
    archive.write_bytes(gzip.compress(b"new"))
    assert extract_archive(archive) == ["a.fasta"]
    assert snapshot(offline) == {"a.fasta": b"new"}


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_the_remote_tree_archive(tmp_path, files):
    archive = tmp_path / "test.fasta.gz"
    shutil.copy2(files.remote / "test.fasta.gz", archive)
    expected = gzip.decompress(archive.read_bytes())

    assert extract_archive(archive) == ["test.fasta"]

    assert snapshot(tmp_path) == {"test.fasta": expected}
    assert expected.startswith(b">")


# --- tar ----------------------------------------------------------------------------------------

NESTED = [
    ("data", None),
    ("data/a.fasta", b"AAAA"),
    ("data/sub", None),
    ("data/sub/deep", None),
    ("data/sub/deep/b.txt", b"bb"),
    ("top.txt", b"top"),
    ("implicit/dir/c.txt", b"c"),  # no directory member for implicit/ nor implicit/dir/
]
NESTED_TREE = {
    "data": "dir", "data/a.fasta": b"AAAA", "data/sub": "dir", "data/sub/deep": "dir",
    "data/sub/deep/b.txt": b"bb", "top.txt": b"top", "implicit": "dir", "implicit/dir": "dir",
    "implicit/dir/c.txt": b"c",
}
NESTED_FILES = ["data/a.fasta", "data/sub/deep/b.txt", "implicit/dir/c.txt", "top.txt"]


@pytest.mark.parametrize(
    "name, mode",
    [
        ("bank.tar", "w"), ("bank.tar.gz", "w:gz"), ("bank.tgz", "w:gz"), ("bank.tar.bz2", "w:bz2"),
        ("bank.tbz2", "w:bz2"), ("bank.tar.xz", "w:xz"), ("bank.txz", "w:xz"),
    ],
)
def test_tar_nested(offline, name, mode):
    archive = make_tar(offline / name, NESTED, mode)

    assert extract_archive(archive) == NESTED_FILES

    assert snapshot(offline) == NESTED_TREE
    assert (offline / "data" / "a.fasta").stat().st_mtime == MTIME


@pytest.mark.parametrize("name, mode", [("bank.bz2", "w:bz2"), ("bank.gz", "w:gz"), ("bank.xz", "w:xz")])
def test_compressed_file_holding_a_tar_is_a_tar(offline, name, mode):
    """BioMAJ 3 runs ``tar xjf`` on every .bz2: a tarball behind a plain compressor suffix is a tar."""
    archive = make_tar(offline / name, NESTED, mode)
    assert extract_archive(archive) == NESTED_FILES
    assert snapshot(offline) == NESTED_TREE


def test_tar_of_dot(offline):
    """``tar czf x.tgz -C dir .`` names members ``./`` and ``./a``."""
    members = [("./", None), ("./a.txt", b"a"), ("./sub/", None), ("./sub/b", b"b")]
    archive = make_tar(offline / "dot.tgz", members, "w:gz")
    assert extract_archive(archive) == ["a.txt", "sub/b"]
    assert snapshot(offline) == {"a.txt": b"a", "sub": "dir", "sub/b": b"b"}


def test_tar_merges_into_existing_directories_and_overwrites(offline):
    (offline / "data" / "sub").mkdir(parents=True)
    (offline / "data" / "a.fasta").write_bytes(b"old")
    (offline / "data" / "keep.txt").write_bytes(b"keep")
    (offline / "top.txt").symlink_to("data/keep.txt")  # a symlink is replaced, not written through
    archive = make_tar(offline / "bank.tar.gz", NESTED, "w:gz")

    assert extract_archive(archive) == NESTED_FILES

    assert snapshot(offline) == NESTED_TREE | {"data/keep.txt": b"keep"}


def test_tar_directory_replaces_a_file(offline):
    (offline / "data").write_bytes(b"a file where the archive has a directory")
    archive = make_tar(offline / "bank.tar", NESTED)
    extract_archive(archive)
    assert snapshot(offline) == NESTED_TREE


def test_tar_file_over_directory_is_refused_before_anything_moves(offline):
    (offline / "top.txt").mkdir()
    archive = make_tar(offline / "bank.tar", NESTED)
    before = archive.read_bytes()

    with pytest.raises(ExtractionError, match=r"^bank\.tar: 'top\.txt' is a directory"):
        extract_archive(archive)

    assert snapshot(offline) == {"top.txt": "dir", "bank.tar": before}


def test_tar_symlinks_inside_are_kept_but_not_listed(offline):
    archive = make_tar(
        offline / "links.tar",
        [("data/a.txt", b"a"), ("alias", "->", "data/a.txt"), ("data/up", "->", ".."), ("hard", "=>", "data/a.txt")],
    )

    assert extract_archive(archive) == ["data/a.txt", "hard"]

    assert snapshot(offline) == {
        "data": "dir", "data/a.txt": b"a", "alias": ("link", "data/a.txt"), "data/up": ("link", ".."), "hard": b"a",
    }
    assert os.path.samefile(offline / "hard", offline / "data" / "a.txt")


def test_staging_left_by_a_crash_is_replaced(offline):
    stale = offline / ".biomaj-extract-bank.tar"
    (stale / "old").mkdir(parents=True)
    (stale / "old" / "junk").write_bytes(b"junk")
    archive = make_tar(offline / "bank.tar", NESTED)

    assert extract_archive(archive) == NESTED_FILES
    assert snapshot(offline) == NESTED_TREE


def test_archive_holding_its_own_name(offline):
    archive = make_tar(offline / "x.tar", [("x.tar", b"inner")])
    assert extract_archive(archive) == ["x.tar"]
    assert snapshot(offline) == {"x.tar": b"inner"}


# --- malicious tar ------------------------------------------------------------------------------


def test_tar_parent_member(offline):
    archive = make_tar(offline / "evil.tar", [("good.txt", b"good"), ("../outside/evil", b"evil")])
    assert_refused(archive, "unsafe member '../outside/evil'")


def test_tar_parent_after_normalisation(offline):
    archive = make_tar(offline / "evil.tar.gz", [("a/../../outside/evil", b"evil")], "w:gz")
    assert_refused(archive, "unsafe member 'a/../../outside/evil'")


def test_tar_absolute_member(offline):
    target = offline.parent / "outside" / "evil"
    archive = make_tar(offline / "evil.tar", [("good.txt", b"good"), (str(target), b"evil")])
    assert_refused(archive, f"unsafe member {str(target)!r}")


def test_tar_absolute_tmp_member(offline):
    archive = make_tar(offline / "evil.tar", [("/tmp/evil-biomaj-test", b"evil")])
    assert_refused(archive, "unsafe member '/tmp/evil-biomaj-test'")
    assert not Path("/tmp/evil-biomaj-test").exists()


@pytest.mark.parametrize("target", ["../outside", "ABSOLUTE"])
def test_tar_symlink_out_then_write_through_it(offline, target):
    if target == "ABSOLUTE":
        target = str(offline.parent / "outside")
    archive = make_tar(offline / "evil.tar", [("good.txt", b"good"), ("link", "->", target), ("link/evil", b"evil")])
    assert_refused(archive, "unsafe member 'link'")


def test_tar_hard_link_out(offline):
    (offline.parent / "outside" / "secret").write_bytes(b"secret")
    archive = make_tar(offline / "evil.tar", [("stolen", "=>", "../outside/secret")])
    before = archive.read_bytes()
    with pytest.raises(ExtractionError, match="unsafe member 'stolen'"):
        extract_archive(archive)
    assert snapshot(offline.parent) == {
        "outside": "dir", "outside/secret": b"secret", "offline": "dir", "offline/evil.tar": before,
    }


def test_tar_device_file(offline):
    archive = offline / "dev.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("null")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(info)
    assert_refused(archive, "unsafe member 'null'")


def test_tar_reserved_staging_name(offline):
    archive = make_tar(offline / "x.tar", [(".biomaj-extract-x.tar/a", b"a")])
    assert_refused(archive, "unsafe member")


# --- zip ----------------------------------------------------------------------------------------


def test_zip_nested(offline):
    members = {"data/": None, "data/a.fasta": b"AAAA", "data/sub/b.txt": b"bb", "top": b"t"}
    archive = make_zip(offline / "bank.zip", members)

    assert extract_archive(archive) == ["data/a.fasta", "data/sub/b.txt", "top"]

    assert snapshot(offline) == {
        "data": "dir", "data/a.fasta": b"AAAA", "data/sub": "dir", "data/sub/b.txt": b"bb", "top": b"t",
    }
    assert (offline / "data" / "a.fasta").stat().st_mtime == MTIME


def test_zip_overwrites(offline):
    (offline / "top").write_bytes(b"old")
    archive = make_zip(offline / "bank.zip", {"top": b"new"})
    assert extract_archive(archive) == ["top"]
    assert snapshot(offline) == {"top": b"new"}


@pytest.mark.parametrize(
    "name", ["../outside/evil", "/outside/evil", "..\\outside\\evil", "C:/evil", "c:\\evil", "a/../../evil"]
)
def test_zip_unsafe_member(offline, name):
    archive = make_zip(offline / "evil.zip", {"good.txt": b"good", name: b"evil"})
    assert_refused(archive, "unsafe member", repr(name))


# --- corrupt ------------------------------------------------------------------------------------


def test_truncated_gzip(offline):
    data = os.urandom(200_000)
    archive = offline / "alu.n.gz"
    archive.write_bytes(gzip.compress(data)[:50_000])
    assert_refused(archive, "alu.n.gz: corrupt gzip data (")


def test_not_gzip_at_all(offline):
    archive = offline / "alu.n.gz"
    archive.write_bytes(b"<html>Not found</html>")
    assert_refused(archive, "corrupt gzip data")


def test_corrupt_bz2(offline):
    archive = offline / "alu.n.bz2"
    archive.write_bytes(bz2.compress(os.urandom(100_000))[:-500])
    assert_refused(archive, "corrupt bzip2 data")


def test_corrupt_xz(offline):
    archive = offline / "alu.n.xz"
    archive.write_bytes(b"\xfd7zXZ\x00" + b"garbage" * 20)
    assert_refused(archive, "corrupt xz data")


def test_truncated_tar_gz_leaves_nothing(offline):
    big = os.urandom(300_000)
    whole = make_tar(offline / "full.tar.gz", [("first.txt", b"first"), ("big.bin", big)], "w:gz").read_bytes()
    (offline / "full.tar.gz").unlink()
    archive = offline / "bank.tar.gz"
    archive.write_bytes(whole[: len(whole) // 2])
    assert_refused(archive, "corrupt tar data")


def test_truncated_tar_member(offline):
    whole = make_tar(offline / "full.tar", [("first.txt", b"first"), ("big.bin", b"x" * 100_000)]).read_bytes()
    (offline / "full.tar").unlink()
    archive = offline / "bank.tar"
    archive.write_bytes(whole[:50_000])
    assert_refused(archive, "corrupt tar data")


def test_zip_bad_crc(offline):
    archive = offline / "bank.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("first.txt", b"first")
        zf.writestr("a.txt", b"A" * 1000)
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"A" * 1000)
    raw[at] = ord("B")
    archive.write_bytes(bytes(raw))
    assert_refused(archive, "corrupt zip data", "a.txt")


def test_not_a_zip(offline):
    archive = offline / "bank.zip"
    archive.write_bytes(b"not a zip")
    assert_refused(archive, "corrupt zip data")


def test_not_an_archive(offline):
    path = offline / "a.fasta"
    path.write_bytes(b">a")
    with pytest.raises(ExtractionError, match=r"^a\.fasta: not an archive"):
        extract_archive(path)
    assert snapshot(offline) == {"a.fasta": b">a"}


def test_missing_archive(offline):
    with pytest.raises(ExtractionError, match=r"^gone\.gz: .*No such file"):
        extract_archive(offline / "gone.gz")
    assert snapshot(offline) == {}


def _lock(folder, locked: bool) -> None:
    """Make ``folder`` refuse new entries: read-only for a user, immutable for root (whom
    permissions do not stop; chattr is from e2fsprogs)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if locked else "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555 if locked else 0o755)


def test_failure_while_moving_rolls_back(offline):
    (offline / "locked").mkdir()
    archive = make_tar(offline / "bank.tar", [("a-new.txt", b"a"), ("locked/b.txt", b"b"), ("z-new/c.txt", b"c")])
    before = archive.read_bytes()
    _lock(offline / "locked", True)
    try:
        with pytest.raises(ExtractionError, match=r"^bank\.tar: .*(Permission denied|Operation not permitted)"):
            extract_archive(archive)
        assert snapshot(offline) == {"locked": "dir", "bank.tar": before}
    finally:
        _lock(offline / "locked", False)
