"""Retry strings as BioMAJ writes them, archive tests and checksum sidecars on real files."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
import zipfile

import pytest

from biomaj.download.retry import RetryPolicy, parse_stop, parse_wait
from biomaj.download.verify import (
    StreamCheck, VerificationFailed, archive_kind, check_sidecars, check_archive as archive_test,
)
from biomaj.errors import ConfigError


def test_biomaj_defaults():
    policy = RetryPolicy.parse(None, None)
    assert [policy.stop(a, 0) for a in (1, 2, 3)] == [False, False, True]
    assert policy.wait(1) == 3


@pytest.mark.parametrize(
    "text, stops",
    [
        ("stop_after_attempt(5)", [False] * 4 + [True]),
        ("stop_never", [False] * 5),
        ("stop_after_attempt(2) | stop_after_delay(100)", [False, True, True, True, True]),
        ("stop_after_attempt(2) & stop_after_delay(100)", [False] * 5),
        ("stop_any(stop_after_attempt(3), stop_after_delay(100))", [False, False, True, True, True]),
        ("stop_after_attempt(max_attempt_number=1)", [True] * 5),
    ],
)
def test_stop_conditions(text, stops):
    rule = parse_stop(text)
    assert [rule(attempt, 1.0) for attempt in range(1, 6)] == stops


def test_stop_after_delay_uses_elapsed_time():
    rule = parse_stop("stop_after_delay(10)")
    assert not rule(7, 9.9) and rule(1, 10)


@pytest.mark.parametrize(
    "text, waits",
    [
        ("wait_fixed(2)", [2, 2, 2]),
        ("wait_none", [0, 0, 0]),
        ("wait_incrementing(start=1, increment=2, max=4)", [1, 3, 4]),
        ("wait_exponential(multiplier=1, max=3)", [1, 2, 3]),
        ("wait_fixed(1) + wait_exponential(multiplier=2)", [3, 5, 9]),
        ("wait_chain(wait_fixed(1), wait_fixed(5))", [1, 5, 5]),
        ("wait_combine(wait_fixed(1), wait_fixed(2))", [3, 3, 3]),
    ],
)
def test_wait_policies(text, waits):
    rule = parse_wait(text)
    assert [rule(attempt) for attempt in (1, 2, 3)] == waits


def test_wait_random_stays_in_bounds():
    rule = parse_wait("wait_random(1, 2)")
    assert all(1 <= rule(1) <= 2 for _ in range(50))


@pytest.mark.parametrize(
    "text", ["__import__('os').system('true')", "stop_after_attempt(", "stop_after_attempt('3')", "open('/etc/passwd')", "stop_after_attempt(1, 2)"]
)
def test_anything_else_is_a_clear_config_error_never_evaluated(text):
    with pytest.raises(ConfigError, match="stop_condition="):
        parse_stop(text)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


PAYLOAD = b"ACGT" * 50_000
ARCHIVES = {
    "x.gz": gzip.compress(PAYLOAD),
    "x.bz2": bz2.compress(PAYLOAD),
    "x.xz": lzma.compress(PAYLOAD),
    "x.tar.gz": _tar_gz({"a.fasta": PAYLOAD}),
    "x.tgz": _tar_gz({"a.fasta": PAYLOAD}),
    "x.zip": _zip({"a.fasta": PAYLOAD}),
}


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_sound_archives_pass_and_truncated_ones_fail(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(ARCHIVES[name])
    archive_test(path)
    path.write_bytes(ARCHIVES[name][: len(ARCHIVES[name]) * 2 // 3])
    with pytest.raises(VerificationFailed, match=f"{name}: broken"):
        archive_test(path)


def test_non_archives_are_not_tested(tmp_path):
    path = tmp_path / "x.fasta"
    path.write_bytes(b"not an archive")
    archive_test(path)
    assert archive_kind("x.fasta") is None and archive_kind("X.TAR.BZ2") == "tar"


def _variants(data: bytes, compress) -> dict[str, bytes]:
    return {
        "whole": data,
        "two members": data + compress(b"second member"),
        "truncated": data[:-10],
        "corrupt": data[:100] + bytes([data[100] ^ 0xFF]) + data[101:],
        "zeros after": data + b"\0" * 64,
        "garbage after": data + b"garbage!",
        "empty": b"",
    }


STREAMED = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.mark.parametrize("suffix", sorted(STREAMED))
@pytest.mark.parametrize("chunk", [1000, 65536, 1 << 20])
def test_the_streamed_archive_test_agrees_with_the_test_of_the_whole_file(tmp_path, suffix, chunk):
    """What the downloader checks while a file streams in is what the test of the written file
    would say, for every kind of good and bad file, whatever the chunk size."""
    compress = STREAMED[suffix]
    payload = PAYLOAD + bytes(range(256)) * 4000  # several output chunks, not all alike
    for what, data in _variants(compress(payload), compress).items():
        path = tmp_path / f"x{suffix}"
        path.write_bytes(data)
        try:
            archive_test(path)
            whole = "sound"
        except VerificationFailed:
            whole = "broken"
        check = StreamCheck.for_name(path.name)
        try:
            for start in range(0, len(data), chunk):
                check.feed(data[start:start + chunk])
            check.finish()
            streamed = "sound"
        except VerificationFailed:
            streamed = "broken"
        assert streamed == whole, f"{suffix}, {what}: streamed {streamed}, whole file {whole}"


def test_the_streamed_test_covers_compressed_tars_not_zips():
    assert StreamCheck.for_name("x.tar.gz").kind == "gzip" and StreamCheck.for_name("X.TBZ2") is None
    assert StreamCheck.for_name("x.zip") is None and StreamCheck.for_name("x.tar") is None


def test_sidecars(tmp_path):
    (tmp_path / "a").write_bytes(b"data")
    (tmp_path / "a.md5").write_text(hashlib.md5(b"data").hexdigest() + "  a\n")
    (tmp_path / "b").write_bytes(b"other")
    (tmp_path / "b.sha256").write_text(hashlib.sha256(b"nope").hexdigest())
    assert check_sidecars(tmp_path, ["a", "a.md5"]) == ["a"]
    with pytest.raises(VerificationFailed, match="b: sha256"):
        check_sidecars(tmp_path, ["a", "a.md5", "b", "b.sha256"])
