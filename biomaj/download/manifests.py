"""Providers' checksum manifests, read: which file should have which checksum.

Pure parsing, no I/O. A manifest is the text of one remote file (``md5checksums.txt``,
``CHECKSUMS``, ``SHA256SUMS``, ``nt.00.tar.gz.md5``, ``blastdb-manifest.json``) and the name it
has on the server; :func:`parse_manifest` gives each file it names with its checksum as
``algo:hex`` (the shape of ``FileSpec.checksum``, see :func:`biomaj.download.verify.parse_checksum`).

The formats (``remote.checksums.format``, docs/checksums.md):

- ``md5sum``, ``sha1sum``, ``sha256sum``, ``sha512sum``: GNU coreutils lines (``hex  name``,
  ``hex *name``, names may start with ``./``, a leading ``\\`` escapes ``\\n`` and ``\\\\`` in the
  name), BSD tagged lines (``MD5 (name) = hex``, as ``md5sum --tag`` and BSD ``md5`` write them),
  and a sidecar ``<file>.md5`` holding the hex alone;
- ``bsd-sum``: the output of BSD ``sum`` (``checksum blocks name``), which Ensembl publishes as
  ``CHECKSUMS``; the algorithm (:class:`BsdSum`) is a 16-bit rotating sum, written ``bsd-sum:``
  and 4 hex digits;
- ``ncbi-blast-manifest``: NCBI's BLAST databases: the ``.md5`` beside each volume (``hex  nt.00.tar.gz``)
  and ``blastdb-manifest.json`` (or a database's ``*-metadata.json``), which lists each database's
  files without checksums: it is read for the volumes each database needs (:attr:`Manifest.groups`).

``auto`` tells them apart by their lines, which do not overlap (a GNU line starts with 32 to
128 hex digits, a BSD sum line with a number of at most 5 digits, a tagged line with its
algorithm's name, a JSON manifest with ``{``); a file mixing shapes (but tagged lines, which name
their algorithm), or with a line of none, is refused with the formats named.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from dataclasses import dataclass, field

from biomaj.errors import BiomajError

__all__ = [
    "AUTO", "FORMATS", "BsdSum", "Manifest", "ManifestError", "bsd_sum", "display_checksum", "parse_manifest",
]

AUTO = "auto"
FORMATS = ("md5sum", "sha1sum", "sha256sum", "sha512sum", "bsd-sum", "ncbi-blast-manifest")
#: the hex digits of each algorithm's checksum
HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "bsd-sum": 4}
_BY_LENGTH = {length: algorithm for algorithm, length in HEX_LENGTHS.items() if algorithm != "bsd-sum"}
_FORMAT_OF = {"md5": "md5sum", "sha1": "sha1sum", "sha256": "sha256sum", "sha512": "sha512sum", "bsd-sum": "bsd-sum"}
_SIDECAR_SUFFIXES = (".md5", ".sha1", ".sha256", ".sha512", ".md5sum", ".sha256sum")

_GNU = re.compile(r"(\\?)([0-9a-fA-F]+) [ *]?(.+)")
_TAGGED = re.compile(r"(\\?)(MD5|SHA1|SHA256|SHA512) ?\((.*)\) ?= ?([0-9a-fA-F]+)")
_BARE = re.compile(r"[0-9a-fA-F]{32,128}")
_SUM = re.compile(r"(\d{1,5})\s+(\d+)\s+(.+)")


class ManifestError(BiomajError):
    """A checksum manifest that cannot be read: the message names it, and what to set."""


@dataclass(frozen=True)
class Manifest:
    """One manifest read: ``checksums`` maps each file it names (relative to the manifest's own
    folder, ``./`` removed) to ``algo:hex``. ``groups`` (NCBI's JSON manifests): each database's
    name and the files it needs. ``note``: what an operator should know of it (no checksums)."""

    path: str
    format: str
    checksums: dict[str, str] = field(default_factory=dict)
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    note: str = ""

    def remote_paths(self) -> dict[str, str]:
        """``checksums`` keyed by remote path (the manifest's folder joined to each name)."""
        folder = posixpath.dirname(self.path)
        return {_join(folder, name): checksum for name, checksum in self.checksums.items()}


def _join(folder: str, name: str) -> str:
    path = posixpath.normpath(posixpath.join(folder, name.lstrip("/")))
    return "" if path == "." else path


# --- the BSD sum ---------------------------------------------------------------------------------


@functools.cache
def _rotations() -> list[int]:
    """The 16-bit right rotation of ``x & 0xFFFF`` for every x below 0x20000: a running sum plus
    one byte stays below that, so the loop below looks up the rotation of the unmasked sum."""
    return [((x & 0xFFFF) >> 1) | ((x & 1) << 15) for x in range(0x20000)]


class BsdSum:
    """BSD ``sum`` (coreutils ``sum -r``, the default of ``sum``): each byte is added to the 16-bit
    sum rotated right by one bit, modulo 2^16; blocks are 1 KiB, rounded up. Used as a hashlib
    object (``update``, ``hexdigest``, ``name``) by the download engine. Pure Python: about
    30 MB/s, the rate of the files Ensembl checks with it."""

    name = "bsd-sum"
    digest_size = 2

    def __init__(self, data: bytes = b""):
        self._sum = 0
        self.size = 0
        if data:
            self.update(data)

    def update(self, data: bytes) -> None:
        rotate, total = _rotations(), self._sum
        for byte in data:
            total = rotate[total] + byte
        self._sum = total & 0xFFFF
        self.size += len(data)

    @property
    def checksum(self) -> int:
        return self._sum

    @property
    def blocks(self) -> int:
        """1 KiB blocks, as ``sum`` prints them."""
        return -(-self.size // 1024)

    def hexdigest(self) -> str:
        return f"{self._sum:04x}"


def bsd_sum(data: bytes) -> tuple[int, int]:
    """(checksum, 1 KiB blocks) of ``data``, as ``sum`` prints them."""
    state = BsdSum(data)
    return state.checksum, state.blocks


def display_checksum(checksum: str) -> str:
    """``algo:hex`` for people: a BSD sum also as ``sum`` prints it (``bsd-sum:3039 (sum 12345)``)."""
    algorithm, _, value = checksum.partition(":")
    if algorithm == "bsd-sum":
        try:
            return f"{checksum} (sum {int(value, 16):05d})"
        except ValueError:
            pass
    return checksum


# --- parsing -------------------------------------------------------------------------------------


def parse_manifest(text: str, path: str, fmt: str = AUTO) -> Manifest:
    """The manifest at remote ``path`` whose content is ``text``, read as ``fmt`` (one of
    :data:`FORMATS` or ``auto``). ManifestError names the file, the line and the formats."""
    if fmt != AUTO and fmt not in FORMATS:
        raise ManifestError(f"remote.checksums.format={fmt!r}: expected {AUTO} or one of {', '.join(FORMATS)}")
    if text.lstrip().startswith("{"):
        if fmt not in (AUTO, "ncbi-blast-manifest"):
            raise _wrong(path, fmt, 1, "a JSON document", "ncbi-blast-manifest")
        return _blast_json(text, path)
    lines = [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), 1)]
    lines = [(number, line) for number, line in lines if line.strip() and not line.lstrip().startswith("#")]
    wanted = None if fmt in (AUTO, "ncbi-blast-manifest") else fmt
    checksums: dict[str, str] = {}
    formats: dict[str, int] = {}  # format -> the first line that has it
    untagged: dict[str, int] = {}  # the same, of the lines that do not name their algorithm
    for number, line in lines:
        name, checksum, tagged = _parse_line(line, path, number)
        found = _FORMAT_OF[checksum.partition(":")[0]]
        if wanted is not None and found != wanted:
            raise _wrong(path, fmt, number, f"a {found} line", found)
        if fmt == "ncbi-blast-manifest" and found != "md5sum":
            raise _wrong(path, fmt, number, f"a {found} line", found)
        formats.setdefault(found, number)
        if not tagged:
            untagged.setdefault(found, number)
        checksums[name] = checksum
    if len(untagged) > 1:  # tagged lines name their algorithm: they may mix, the others may not
        shapes = ", ".join(f"{name} (line {number})" for name, number in untagged.items())
        raise ManifestError(f"checksum manifest {path}: its lines have several formats: {shapes}; "
                            f"set remote.checksums.format to one of {', '.join(FORMATS)}, or narrow remote.checksums")
    found_format = fmt if fmt != AUTO else "+".join(formats) or AUTO
    return Manifest(path, found_format, checksums, note="" if checksums else "no checksum in it")


def _parse_line(line: str, path: str, number: int) -> tuple[str, str, bool]:
    """(file name, ``algo:hex``, whether the line names its algorithm) of one line of a text manifest."""
    tagged = _TAGGED.fullmatch(line)
    if tagged:
        escaped, tag, name, value = tagged.groups()
        algorithm = tag.lower()
        if len(value) != HEX_LENGTHS[algorithm]:
            raise _bad_line(path, number, line, f"a {tag} checksum has {HEX_LENGTHS[algorithm]} hex digits")
        return _name(name, escaped, path, number, line), f"{algorithm}:{value.lower()}", True
    if _BARE.fullmatch(line.strip()):  # a sidecar: <file>.md5 holding the checksum alone
        value = line.strip()
        target = _sidecar_target(path)
        if len(value) not in _BY_LENGTH or target is None:
            raise _bad_line(path, number, line, "a bare checksum, but the manifest's name does not say which file "
                            "it is of (expected <file>.md5, .sha1, .sha256 or .sha512)" if target is None
                            else f"{len(value)} hex digits is no known algorithm (32, 40, 64 or 128)")
        return target, f"{_BY_LENGTH[len(value)]}:{value.lower()}", False
    summed = _SUM.fullmatch(line)
    if summed and int(summed.group(1)) <= 0xFFFF:
        return _name(summed.group(3), "", path, number, line), f"bsd-sum:{int(summed.group(1)):04x}", False
    gnu = _GNU.fullmatch(line)
    if gnu:
        escaped, value, name = gnu.groups()
        if len(value) not in _BY_LENGTH:
            raise _bad_line(path, number, line, f"{len(value)} hex digits is no known algorithm (32, 40, 64 or 128)")
        return _name(name, escaped, path, number, line), f"{_BY_LENGTH[len(value)]}:{value.lower()}", False
    raise _bad_line(path, number, line, "not a checksum line of any known format")


def _name(name: str, escaped: str, path: str, number: int, line: str) -> str:
    """A file name as a manifest writes it, without ``./`` and GNU's escapes."""
    if escaped:
        name = re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\"}.get(m.group(1), m.group(0)), name)
    while name.startswith("./"):
        name = name[2:]
    if not name or name in (".", ".."):
        raise _bad_line(path, number, line, "no file name")
    return name


def _sidecar_target(path: str) -> str | None:
    base = posixpath.basename(path)
    for suffix in _SIDECAR_SUFFIXES:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return None


def _blast_json(text: str, path: str) -> Manifest:
    """NCBI's ``blastdb-manifest.json`` (``{"version": "1.0", "<db>": {"files": [...], ...}}``)
    or a database's ``<db>-<type>-metadata.json`` (``{"dbname": ..., "files": [...]}``)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"checksum manifest {path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ManifestError(f"checksum manifest {path}: expected a JSON object of BLAST databases")
    if isinstance(document.get("files"), list):
        entries = {str(document.get("dbname") or posixpath.basename(path)): document}
    else:
        entries = {name: value for name, value in document.items() if isinstance(value, dict)}
    groups = []
    for database, entry in sorted(entries.items()):
        files = entry.get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ManifestError(f"checksum manifest {path}: database {database!r} has no list of files")
        groups.append((database, tuple(posixpath.basename(f.rstrip("/")) for f in files)))
    if not groups:
        raise ManifestError(f"checksum manifest {path}: no BLAST database in it (expected "
                            '{"<db>": {"files": [...]}} or {"dbname": ..., "files": [...]})')
    return Manifest(path, "ncbi-blast-manifest", {}, tuple(groups),
                    note=f"lists the files of {len(groups)} database(s) and no checksums: NCBI publishes them in "
                         r"a .md5 beside each volume (remote.checksums=.*\.tar\.gz\.md5$)")


def _excerpt(line: str) -> str:
    return repr(line if len(line) <= 80 else line[:77] + "...")


def _bad_line(path: str, number: int, line: str, why: str) -> ManifestError:
    return ManifestError(f"checksum manifest {path}, line {number} {_excerpt(line)}: {why}; "
                         f"remote.checksums.format may be {AUTO} or one of {', '.join(FORMATS)}, and remote.checksums "
                         "should match only checksum manifests")


def _wrong(path: str, fmt: str, number: int, what: str, found: str) -> ManifestError:
    return ManifestError(f"checksum manifest {path}, line {number}: remote.checksums.format={fmt}, but this is "
                         f"{what}: set remote.checksums.format={found} (or {AUTO})")
