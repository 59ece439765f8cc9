"""Providers' checksum manifests read (biomaj/download/manifests.py): each format on samples of
the shape providers publish, written here or by the real coreutils tools (md5sum, sha256sum,
sum), and the BSD sum algorithm checked against coreutils' own `sum`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest

from biomaj.download.manifests import (
    FORMATS, BsdSum, ManifestError, bsd_sum, display_checksum, parse_manifest,
)
from biomaj.download.verify import VerificationFailed, file_digest, new_hash, parse_checksum

needs_coreutils = pytest.mark.skipif(not all(shutil.which(t) for t in ("sum", "md5sum", "sha256sum")),
                                     reason="coreutils (sum, md5sum, sha256sum) not installed")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# NCBI genomes: one md5checksums.txt per assembly folder, names with ./ ----------------------------


NCBI = """\
2f2a3e1e8c3a1b27bd6b7b1b8bb9c6a2  ./GCF_000001405.40_GRCh38.p14_assembly_report.txt
6b8d9a3c0e4f5a1b2c3d4e5f60718293  ./GCF_000001405.40_GRCh38.p14_genomic.fna.gz
0123456789abcdef0123456789ABCDEF  ./GCF_000001405.40_GRCh38.p14_assembly_structure/Primary_Assembly/assembled_chromosomes/chr2acc
d41d8cd98f00b204e9800998ecf8427e  ./annotation_hashes.txt
"""


def test_ncbi_md5checksums_names_are_relative_to_the_manifest_folder():
    manifest = parse_manifest(NCBI, "genomes/all/GCF/000/001/405/GCF_000001405.40_GRCh38.p14/md5checksums.txt")
    assert manifest.format == "md5sum"
    assert manifest.checksums["GCF_000001405.40_GRCh38.p14_genomic.fna.gz"] == "md5:6b8d9a3c0e4f5a1b2c3d4e5f60718293"
    folder = "genomes/all/GCF/000/001/405/GCF_000001405.40_GRCh38.p14"
    paths = manifest.remote_paths()
    assert paths[f"{folder}/annotation_hashes.txt"] == "md5:d41d8cd98f00b204e9800998ecf8427e"
    # upper-case hex is read as lower case; a sub-folder keeps its path
    assert (paths[f"{folder}/GCF_000001405.40_GRCh38.p14_assembly_structure/Primary_Assembly/assembled_chromosomes/chr2acc"]
            == "md5:0123456789abcdef0123456789abcdef")
    assert len(paths) == 4


def test_a_manifest_at_the_root_gives_plain_names():
    manifest = parse_manifest("d41d8cd98f00b204e9800998ecf8427e *empty.txt\r\n", "md5sum.txt")
    assert manifest.remote_paths() == {"empty.txt": "md5:d41d8cd98f00b204e9800998ecf8427e"}


@needs_coreutils
def test_gnu_tools_output_read_back(tmp_path):
    """What md5sum, md5sum --tag and sha256sum really write, with a name holding a space and one
    holding a newline (GNU escapes it and starts the line with a backslash)."""
    files = {"a.fa.gz": b"ACGT" * 100, "with space.txt": b"x", "new\nline.txt": b"y" * 3}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    names = sorted(files)
    plain = subprocess.run(["md5sum", *names], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    tagged = subprocess.run(["md5sum", "--tag", *names], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    binary = subprocess.run(["sha256sum", "-b", *names], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "\\" in plain and "MD5 (" in tagged and " *" in binary  # the shapes under test
    expected_md5 = {name: f"md5:{md5(data)}" for name, data in files.items()}
    assert parse_manifest(plain, "MD5SUMS").checksums == expected_md5
    assert parse_manifest(tagged, "MD5SUMS", "md5sum").checksums == expected_md5
    sha = parse_manifest(binary, "SHA256SUMS")
    assert sha.format == "sha256sum"
    assert sha.checksums == {name: f"sha256:{hashlib.sha256(data).hexdigest()}" for name, data in files.items()}


def test_bsd_tagged_lines_of_several_algorithms():
    data = b"uniprot"
    text = (f"MD5 (uniprot_sprot.fasta.gz) = {md5(data)}\n"
            f"SHA512 (uniprot_trembl.fasta.gz) = {hashlib.sha512(data).hexdigest().upper()}\n")
    # tagged lines name their algorithm (coreutils' `cksum -a` writes any of them): they may mix
    manifest = parse_manifest(text, "knowledgebase/CHECKSUMS.tagged")
    assert manifest.checksums == {"uniprot_sprot.fasta.gz": f"md5:{md5(data)}",
                                  "uniprot_trembl.fasta.gz": f"sha512:{hashlib.sha512(data).hexdigest()}"}
    # untagged lines of two lengths may not
    untagged = f"{md5(data)}  a\n{hashlib.sha1(data).hexdigest()}  b\n"
    with pytest.raises(ManifestError, match=r"several formats: md5sum \(line 1\), sha1sum \(line 2\)"):
        parse_manifest(untagged, "CHECKSUMS")
    with pytest.raises(ManifestError, match="set remote.checksums.format=sha512sum"):
        parse_manifest(text, "CHECKSUMS", "md5sum")


def test_sidecars_with_the_checksum_alone_or_with_the_name():
    data = b"volume"
    alone = parse_manifest(md5(data) + "\n", "blast/db/nt.00.tar.gz.md5")
    assert alone.remote_paths() == {"blast/db/nt.00.tar.gz": f"md5:{md5(data)}"}
    sha = hashlib.sha256(data).hexdigest()
    assert parse_manifest(sha, "pub/big.iso.sha256").remote_paths() == {"pub/big.iso": f"sha256:{sha}"}
    # NCBI BLAST's volume .md5: the hex and the volume's name
    named = parse_manifest(f"{md5(data)}  nt.00.tar.gz\n", "blast/db/nt.00.tar.gz.md5", "ncbi-blast-manifest")
    assert named.format == "ncbi-blast-manifest"
    assert named.remote_paths() == {"blast/db/nt.00.tar.gz": f"md5:{md5(data)}"}
    with pytest.raises(ManifestError, match="does not say which file"):
        parse_manifest(md5(data), "CHECKSUM")


# Ensembl: CHECKSUMS is the output of BSD sum --------------------------------------------------------


ENSEMBL = """\
28491 37812 Homo_sapiens.GRCh38.cdna.all.fa.gz
09735     1 README
65535 12 Homo_sapiens.GRCh38.ncrna.fa.gz
"""


def test_ensembl_checksums_are_bsd_sums():
    manifest = parse_manifest(ENSEMBL, "pub/release-110/fasta/homo_sapiens/cdna/CHECKSUMS")
    assert manifest.format == "bsd-sum"
    assert manifest.remote_paths() == {
        "pub/release-110/fasta/homo_sapiens/cdna/Homo_sapiens.GRCh38.cdna.all.fa.gz": "bsd-sum:6f4b",
        "pub/release-110/fasta/homo_sapiens/cdna/README": "bsd-sum:2607",
        "pub/release-110/fasta/homo_sapiens/cdna/Homo_sapiens.GRCh38.ncrna.fa.gz": "bsd-sum:ffff",
    }
    assert display_checksum("bsd-sum:2607") == "bsd-sum:2607 (sum 09735)"
    assert display_checksum("md5:" + "0" * 32) == "md5:" + "0" * 32


@needs_coreutils
@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 70_001, 300_000])
def test_bsd_sum_is_coreutils_sum(tmp_path, size):
    data = os.urandom(size) if size != 70_001 else b"\xff" * size  # all-ones bytes carry at every step
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    printed = subprocess.run(["sum", str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert bsd_sum(data) == (int(printed[0]), int(printed[1]))
    # fed in pieces, as a stream arrives, and read back from a file
    state = BsdSum()
    for start in range(0, size, 4096 + 7):
        state.update(data[start:start + 4096 + 7])
    assert (state.checksum, state.blocks) == (int(printed[0]), int(printed[1]))
    assert file_digest(path, "bsd-sum") == f"{int(printed[0]):04x}" == new_hash("bsd-sum").__class__(data).hexdigest()


@needs_coreutils
def test_a_checksums_file_written_by_sum_is_read_back(tmp_path):
    files = {"Mus_musculus.GRCm39.dna.toplevel.fa.gz": os.urandom(5000), "README": b"Ensembl\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    text = subprocess.run(["sum", *sorted(files)], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    manifest = parse_manifest(text, "CHECKSUMS")
    assert manifest.checksums == {name: f"bsd-sum:{bsd_sum(data)[0]:04x}" for name, data in files.items()}


def test_parse_checksum_knows_bsd_sum():
    assert parse_checksum("bsd-sum:6F4B") == ("bsd-sum", "6f4b")
    with pytest.raises(VerificationFailed):
        parse_checksum("bsd-sum:28491")  # the decimal sum as printed: not the hex form
    with pytest.raises(VerificationFailed):
        parse_checksum("crc32:00000000")


# NCBI BLAST's JSON manifests -------------------------------------------------------------------------


def test_blastdb_manifest_json_lists_each_database_files():
    document = {"version": "1.0",
                "nt": {"size": 220.5, "description": "Nucleotide collection", "last_updated": "2023-06-03",
                       "files": [f"gs://blast-db/2023-06-03-01-05-02/nt.{i:02d}.tar.gz" for i in range(3)]},
                "swissprot": {"size": 0.2, "files": ["gs://blast-db/2023-06-03-01-05-02/swissprot.tar.gz"]}}
    manifest = parse_manifest(json.dumps(document, indent=2), "blast/db/blastdb-manifest.json")
    assert manifest.format == "ncbi-blast-manifest" and manifest.checksums == {}
    assert manifest.groups == (("nt", ("nt.00.tar.gz", "nt.01.tar.gz", "nt.02.tar.gz")),
                               ("swissprot", ("swissprot.tar.gz",)))
    assert "no checksums" in manifest.note and r".*\.tar\.gz\.md5$" in manifest.note
    metadata = {"dbname": "swissprot", "version": "1.1", "dbtype": "Protein", "number-of-volumes": 1,
                "files": ["ftp://ftp.ncbi.nlm.nih.gov/blast/db/swissprot.tar.gz"]}
    assert parse_manifest(json.dumps(metadata), "swissprot-prot-metadata.json").groups == (
        ("swissprot", ("swissprot.tar.gz",)),)
    with pytest.raises(ManifestError, match="no BLAST database"):
        parse_manifest('{"version": "1.0"}', "blastdb-manifest.json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest('{"nt": ', "blastdb-manifest.json")


# Auto-detection and its refusals -------------------------------------------------------------------


def test_auto_detection_refuses_what_it_cannot_tell_naming_the_file_and_the_formats():
    mixed = f"{md5(b'a')}  a.txt\n12345 1 b.txt\n"
    with pytest.raises(ManifestError) as refused:
        parse_manifest(mixed, "pub/CHECKSUMS")
    message = str(refused.value)
    assert "pub/CHECKSUMS" in message and "md5sum (line 1), bsd-sum (line 2)" in message
    assert all(fmt in message for fmt in FORMATS)
    with pytest.raises(ManifestError, match=r"pub/index.html, line 1 '<html>': not a checksum line"):
        parse_manifest("<html>\n<body>Not found</body>", "pub/index.html")
    with pytest.raises(ManifestError, match="56 hex digits is no known algorithm"):
        parse_manifest(hashlib.sha224(b"").hexdigest() + "  a\n", "SHA224SUMS")


def test_a_declared_format_refuses_other_lines():
    with pytest.raises(ManifestError, match="remote.checksums.format=sha256sum, but this is a md5sum line: "
                                            "set remote.checksums.format=md5sum"):
        parse_manifest(NCBI, "GCF_1/md5checksums.txt", "sha256sum")
    with pytest.raises(ManifestError, match="set remote.checksums.format=ncbi-blast-manifest"):
        parse_manifest('{"nt": {"files": []}}', "blastdb-manifest.json", "md5sum")
    with pytest.raises(ManifestError, match="expected auto or one of"):
        parse_manifest(NCBI, "md5checksums.txt", "crc")


def test_comments_blank_lines_and_an_empty_manifest():
    text = f"# made by hand\n\n{md5(b'x')}  ./x.txt\n   \n"
    assert parse_manifest(text, "MD5SUMS").checksums == {"x.txt": f"md5:{md5(b'x')}"}
    empty = parse_manifest("", "CHECKSUMS")
    assert empty.checksums == {} and empty.note == "no checksum in it"
