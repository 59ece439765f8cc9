"""Checks on downloaded files: archive integrity (in Python, no shell), checksum sidecars."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Collection
from pathlib import Path

from biomaj.download.manifests import HEX_LENGTHS, BsdSum
from biomaj.protocols.base import RemoteError

CHUNK = 1024 * 1024
SIDECARS = {".md5": "md5", ".sha256": "sha256"}


class VerificationFailed(RemoteError):
    """A downloaded file is not what it should be (size, checksum, broken archive)."""


class ChecksumMismatch(VerificationFailed):
    """A downloaded file does not have the checksum it must have (``algo:hex`` of FileSpec.checksum)."""

    def __init__(self, algorithm: str, got: str, expected: str):
        super().__init__(f"checksum mismatch: {algorithm} {got}, expected {expected}")
        self.algorithm = algorithm
        self.got = got
        self.expected = expected


def _drain(stream) -> None:
    while stream.read(CHUNK):
        pass


def archive_kind(name: str) -> str | None:
    """The archive test a file name calls for, as BioMAJ picks it by extension."""
    lower = name.lower()
    for suffix, kind in (
        (".tar.gz", "tar"), (".tgz", "tar"), (".tar.bz2", "tar"), (".tar.xz", "tar"), (".tar", "tar"),
        (".gz", "gzip"), (".bz2", "bz2"), (".xz", "xz"), (".zip", "zip"),
    ):
        if lower.endswith(suffix):
            return kind
    return None


def check_archive(path: Path, name: str | None = None) -> None:
    """Read the whole archive `path` (named `name`, default its own) and raise VerificationFailed
    if it is truncated or corrupt. Files that are not archives pass. Runs in a worker thread."""
    kind = archive_kind(name or path.name)
    if kind is None:
        return
    try:
        if kind == "tar":
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    if member.isfile():
                        extracted = archive.extractfile(member)
                        if extracted is not None:
                            _drain(extracted)
        elif kind == "zip":
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    raise VerificationFailed(f"{path.name}: zip member {bad!r} is corrupt")
        else:
            opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind]
            with opener(path, "rb") as stream:
                _drain(stream)
    except VerificationFailed:
        raise
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise VerificationFailed(f"{path.name}: broken {kind} archive ({exc})") from None


class StreamCheck:
    """The archive test of a compressed file (gzip, bz2, xz, and the compressed layer of
    .tar.gz/.tar.bz2/.tar.xz) done while the file streams in: each chunk is decompressed and
    dropped (at most CHUNK bytes of output at a time), so the file is not read again once
    written. It accepts what :func:`check_archive` accepts: several members one after the
    other, zeros after a gzip member, anything after the last bz2 or xz stream. ``feed`` raises
    VerificationFailed at the first corrupt byte, ``finish`` when the file is truncated."""

    _DECOMPRESSORS = {
        "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
        "bz2": bz2.BZ2Decompressor,
        "xz": lzma.LZMADecompressor,
    }

    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind
        self._new = self._DECOMPRESSORS[kind]
        self._decompressor = self._new()
        self._members = 0  # complete members so far
        self._fed = False
        self._ignore_rest = False

    @classmethod
    def for_name(cls, name: str) -> StreamCheck | None:
        """The streaming check for a file so named, or None when its test needs the whole file
        (zip's directory is at its end, a plain tar has no checksum of its bytes)."""
        lower = name.lower()
        for suffix, kind in ((".tar.gz", "gzip"), (".tgz", "gzip"), (".tar.bz2", "bz2"), (".tar.xz", "xz"),
                             (".gz", "gzip"), (".bz2", "bz2"), (".xz", "xz")):
            if lower.endswith(suffix):
                return cls(name, kind)
        return None

    def feed(self, data: bytes) -> None:
        self._fed = self._fed or bool(data)
        try:
            while data and not self._ignore_rest:
                d = self._decompressor
                if d.eof:  # the next member
                    if self.kind == "gzip":
                        data = data.lstrip(b"\0")
                        if not data:
                            return
                    d = self._decompressor = self._new()
                    fresh = True
                else:
                    fresh = False
                try:
                    self._decompress(d, data)
                except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError):
                    if fresh and self.kind != "gzip":
                        self._ignore_rest = True  # not a stream: data after the last one, as bz2/lzma.open ignore
                        return
                    raise
                data = b""
                if d.eof:
                    self._members += 1
                    data = d.unused_data + (d.unconsumed_tail if self.kind == "gzip" else b"")
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            raise VerificationFailed(f"{self.name}: broken {self.kind} archive ({exc})") from None

    def _decompress(self, d, data: bytes) -> None:
        d.decompress(data, CHUNK)
        if self.kind == "gzip":
            while d.unconsumed_tail and not d.eof:
                d.decompress(d.unconsumed_tail, CHUNK)
        else:
            while not d.eof and not d.needs_input:
                d.decompress(b"", CHUNK)

    def finish(self) -> None:
        """The whole file was fed: its last member must be complete."""
        if self._ignore_rest:
            return
        if self.kind == "gzip" and not self._members and not self._fed:
            return  # an empty file: gzip reads it as no member at all
        if not self._members or not self._decompressor.eof:
            raise VerificationFailed(f"{self.name}: broken {self.kind} archive (truncated)")


def parse_checksum(text: str) -> tuple[str, str]:
    """``sha256:HEX`` (or ``md5:``, ``sha1:``, ``sha512:``, ``bsd-sum:`` and 4 hex digits) as
    (algorithm, lower-case hex); VerificationFailed for anything else."""
    algorithm, _, value = text.partition(":")
    algorithm, value = algorithm.strip().lower(), value.strip().lower()
    if algorithm not in HEX_LENGTHS or len(value) != HEX_LENGTHS[algorithm] or any(
            c not in "0123456789abcdef" for c in value):
        raise VerificationFailed(f"not a checksum: {text!r} (expected e.g. sha256:<64 hex digits>)")
    return algorithm, value


def new_hash(algorithm: str):
    """A hashlib-like object (``update``, ``hexdigest``, ``name``) for one of parse_checksum's algorithms."""
    return BsdSum() if algorithm == "bsd-sum" else hashlib.new(algorithm)


class Digests:
    """Several digests of one stream at once (a provider's md5 to check, the sha256 to record):
    fed once, each read by its algorithm."""

    def __init__(self, algorithms: Collection[str | None]):
        self._hashes = {algorithm: new_hash(algorithm) for algorithm in dict.fromkeys(algorithms) if algorithm}

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def update(self, data) -> None:
        for state in self._hashes.values():
            state.update(data)

    def hexdigest(self, algorithm: str | None) -> str | None:
        state = self._hashes.get(algorithm) if algorithm else None
        return state.hexdigest() if state is not None else None


def file_digests(path: Path, algorithms: Collection[str | None]) -> Digests:
    """The digests of ``algorithms`` of a file, read once."""
    digests = Digests(algorithms)
    with path.open("rb") as stream:
        while block := stream.read(CHUNK):
            digests.update(block)
    return digests


def file_digest(path: Path, algorithm: str) -> str:
    with path.open("rb") as stream:
        if algorithm == "bsd-sum":
            state = BsdSum()
            while block := stream.read(CHUNK):
                state.update(block)
            return state.hexdigest()
        return hashlib.file_digest(stream, algorithm).hexdigest()


def check_sidecars(directory: Path, relative_paths: list[str], skip: Collection[str] = ()) -> list[str]:
    """BioMAJ's checksum step: for every file F of `relative_paths` (but those of ``skip``) whose
    ``F.md5`` or ``F.sha256`` is also there, compare the first token of the sidecar with F's digest.

    Returns the files checked; raises VerificationFailed naming every mismatch.
    """
    present = set(relative_paths)
    checked, mismatches = [], []
    for relative in relative_paths:
        if relative in skip:
            continue
        for suffix, algorithm in SIDECARS.items():
            sidecar = relative + suffix
            if sidecar not in present:
                continue
            tokens = (directory / sidecar).read_text(errors="replace").split()
            expected = tokens[0].lower() if tokens else ""
            actual = file_digest(directory / relative, algorithm)
            checked.append(relative)
            if expected != actual:
                mismatches.append(f"{relative}: {algorithm} {actual} but {sidecar} says {expected or '(empty)'}")
    if mismatches:
        raise VerificationFailed("checksum mismatch: " + "; ".join(mismatches))
    return checked
