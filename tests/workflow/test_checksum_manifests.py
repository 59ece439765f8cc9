"""Updates of banks whose provider publishes checksum manifests (remote.checksums), against real
HTTP and FTP servers (tests/servers) serving trees shaped like NCBI's (md5checksums.txt in each
assembly folder), Ensembl's (CHECKSUMS, the output of BSD sum), a SHA256SUMS, and NCBI BLAST's
(a .md5 beside each volume, blastdb-manifest.json). The servers count the transfers of each file."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from biomaj.download.manifests import bsd_sum
from biomaj.workflow import runner
from tests.servers import ftp_server, http_server
from tests.servers.faults import Faults
from tests.workflow.harness import Site

BANK = "local"
WHEN = time.mktime((2024, 3, 5, 12, 0, 0, 0, 0, -1))  # noon, local time: the release is 2024-3-5
RELEASE = "2024-3-5"

ASSEMBLIES = {
    "GCF_000001215.4_Release_6_plus_ISO1_MT": ("genomic.fna.gz", "assembly_report.txt", "protein.faa.gz"),
    "GCF_000001405.40_GRCh38.p14": ("genomic.fna.gz", "assembly_report.txt"),
}
CORRUPT = "GCF_000001405.40_GRCh38.p14/GCF_000001405.40_GRCh38.p14_genomic.fna.gz"


def content(path: str) -> bytes:
    data = (path.encode() + b"\n") * 20
    return gzip.compress(data, mtime=0) if path.endswith(".gz") else data


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def ncbi_tree(root: Path) -> dict[str, bytes]:
    """Each assembly folder with its files and its md5checksums.txt (``hex  ./name``, NCBI's shape)."""
    files = {}
    for assembly, kinds in ASSEMBLIES.items():
        folder = root / assembly
        folder.mkdir(parents=True)
        lines = []
        for kind in kinds:
            name = f"{assembly}_{kind}"
            data = content(f"{assembly}/{name}")
            (folder / name).write_bytes(data)
            files[f"{assembly}/{name}"] = data
            lines.append(f"{md5(data)}  ./{name}\n")
        (folder / "md5checksums.txt").write_text("".join(lines))
    stamp(root)
    return files


def stamp(root: Path) -> None:
    for path in root.rglob("*"):
        os.utime(path, (WHEN, WHEN))


def ncbi_bank(site: Site, server, protocol: str, **values: str) -> None:
    settings = {"protocol": protocol, "server": f"127.0.0.1:{server.config.port}", "remote__dir": "/",
                "remote__files": r"^GCF_.*/GCF_.*", "local__files": "**/*", "no__extract": "true",
                "remote__checksums": r"md5checksums\.txt", "wait_policy": "wait_none"}
    if protocol == "ftp":
        settings["server__credentials"] = f"{server.config.user}:{server.config.password}"
    settings.update(values)
    site.add_bank(BANK, **settings)


def log_of(outcome) -> str:
    return Path(outcome.log_file).read_text()


async def test_a_file_corrupted_on_the_server_is_fetched_twice_then_the_update_fails_naming_it(site: Site, tmp_path):
    root = tmp_path / "ncbi"
    files = ncbi_tree(root)
    right = files[CORRUPT]
    # a byte flipped mid-file: its gzip CRC is wrong too, but the checksum decides (no archive test)
    (root / CORRUPT).write_bytes(right[:40] + bytes([right[40] ^ 0xFF]) + right[41:])
    stamp(root)
    faults = Faults()
    server = await http_server.start(root, faults, protocol="http")
    try:
        ncbi_bank(site, server, "http")
        failed = await site.update(BANK, publish=True)

        assert not failed.ok and failed.failed_task == "download"
        got = md5((root / CORRUPT).read_bytes())
        assert faults.transfers[CORRUPT] == 2  # fetched, then fetched again once
        assert {name: faults.transfers[name] for name in files if name != CORRUPT} == dict.fromkeys(
            set(files) - {CORRUPT}, 1)
        assert failed.error.startswith("1 file(s) do not match the provider's checksum manifest, each fetched twice: ")
        assert (f"{CORRUPT}: expected md5:{md5(right)} (GCF_000001405.40_GRCh38.p14/md5checksums.txt), got md5:{got}"
                in failed.error)
        assert f"checksum mismatch: md5 {got}, expected {md5(right)}" in log_of(failed)
        doc = await site.doc(BANK)
        assert not doc.get("production") and not (site.bank_dir(BANK) / "current").exists()

        # the provider fixes its file: the next update resumes and fetches it alone
        (root / CORRUPT).write_bytes(right)
        stamp(root)
        faults.transfers.clear()
        fixed = await site.update(BANK, publish=True)
        assert fixed.ok and fixed.updated and fixed.release == RELEASE, fixed.error
        manifests = [f"{assembly}/md5checksums.txt" for assembly in ASSEMBLIES]
        assert dict(faults.transfers) == {CORRUPT: 1, **dict.fromkeys(manifests, 1)}  # the manifests: read again
        session = await site.session(BANK)
        assert session["checksums"] == {"manifests": 2, "files": 5, "without": 0, "verified": 1, "reused": 0,
                                        "present": 4}
        assert "checked against the provider's checksums: 1 of 5 files (1 verified as they streamed in" in log_of(fixed)
        assert (fixed.release_dir / "flat" / CORRUPT).read_bytes() == right
    finally:
        await server.close()


async def test_every_file_verified_then_a_fix_under_the_same_release_is_found_and_fetched(site: Site, tmp_path):
    """An FTP server; the release is the files' date. The release check compares the manifests'
    checksums with those recorded for the release in production."""
    root = tmp_path / "ncbi"
    files = ncbi_tree(root)
    faults = Faults()
    server = await ftp_server.start(root, faults, protocol="ftp")
    try:
        ncbi_bank(site, server, "ftp")
        first = await site.update(BANK, publish=True)
        assert first.ok and first.updated and first.release == RELEASE, first.error
        session = await site.session(BANK)
        assert session["checksums"] == {"manifests": 2, "files": 5, "without": 0, "verified": 5, "reused": 0,
                                        "present": 0}
        log = log_of(first)
        assert "checksum manifests: 2 read (remote.checksums=md5checksums\\.txt); 5 of 5 files have a checksum" in log
        assert "checked against the provider's checksums: 5 of 5 files (5 verified as they streamed in" in log
        records = {r["save_as"]: r for r in site_file_list(site, session["id"])}
        assert {name: r["checksum"] for name, r in records.items()} == {n: f"md5:{md5(d)}" for n, d in files.items()}

        check = await runner.release_check(site.context(), BANK)
        assert check.details == {"remoterelease": RELEASE, "production": RELEASE, "new": False}
        again = await site.update(BANK)
        assert again.ok and not again.updated  # same release, same checksums

        # the provider re-publishes a fixed file under the same release: same name, size and date
        fixed_name = "GCF_000001215.4_Release_6_plus_ISO1_MT/GCF_000001215.4_Release_6_plus_ISO1_MT_protein.faa.gz"
        fixed = gzip.compress(b"fixed upstream\n" * 20, mtime=0)
        (root / fixed_name).write_bytes(fixed)
        manifest = root / "GCF_000001215.4_Release_6_plus_ISO1_MT" / "md5checksums.txt"
        manifest.write_text(manifest.read_text().replace(md5(files[fixed_name]), md5(fixed)))
        stamp(root)

        check = await runner.release_check(site.context(), BANK)
        assert check.details["new"] is True and check.details["remoterelease"] == RELEASE
        assert check.details["changed_under_same_release"] == {"count": 1, "files": [fixed_name]}

        faults.transfers.clear()
        update = await site.update(BANK, publish=True)
        assert update.ok and update.updated and update.release == f"{RELEASE}__1", update.error
        manifests = [f"{assembly}/md5checksums.txt" for assembly in ASSEMBLIES]
        assert dict(faults.transfers) == {fixed_name: 1, **dict.fromkeys(manifests, 1)}  # the others: reused
        assert "changed under the same release 2024-3-5: 1 file(s)" in log_of(update)
        session = await site.session(BANK)
        assert session["checksums"]["verified"] == 1 and session["checksums"]["reused"] == 4
        assert (update.release_dir / "flat" / fixed_name).read_bytes() == fixed
        for name in set(files) - {fixed_name}:  # reused: the same file, hard-linked
            assert (update.release_dir / "flat" / name).stat().st_ino == (first.release_dir / "flat" / name).stat().st_ino
    finally:
        await server.close()


def site_file_list(site: Site, session_id: float) -> list[dict]:
    from biomaj.workflow.bank import Bank

    return Bank.load(site.global_properties, BANK).read_file_list(session_id)


@pytest.mark.skipif(shutil.which("sum") is None, reason="coreutils' sum is not installed")
async def test_ensembl_checksums_made_by_bsd_sum(site: Site, tmp_path):
    """CHECKSUMS written by the real `sum`, and wanted itself (remote.files=.*): fetched once,
    first, to its place in the offline directory, where the download finds it."""
    root = tmp_path / "ensembl"
    root.mkdir()
    files = {"Homo_sapiens.GRCh38.pep.all.fa.gz": os.urandom(9000), "Homo_sapiens.GRCh38.ncrna.fa.gz": os.urandom(3000),
             "README": b"Ensembl release 110\n"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    sums = subprocess.run(["sum", *sorted(files)], cwd=root, capture_output=True, text=True, check=True).stdout
    (root / "CHECKSUMS").write_text(sums)
    stamp(root)
    faults = Faults()
    server = await http_server.start(root, faults, protocol="http")
    try:
        # random bytes named .fa.gz: a file with a checksum is not put to the archive test
        ncbi_bank(site, server, "http", remote__files=".*", remote__checksums="CHECKSUMS")
        outcome = await site.update(BANK)
        assert outcome.ok and outcome.updated, outcome.error
        assert dict(faults.transfers) == dict.fromkeys([*files, "CHECKSUMS"], 1)
        records = {r["save_as"]: r.get("checksum") for r in site_file_list(site, (await site.session(BANK))["id"])}
        assert records == {**{n: f"bsd-sum:{bsd_sum(d)[0]:04x}" for n, d in files.items()}, "CHECKSUMS": None}
        assert (await site.session(BANK))["checksums"]["verified"] == 3
        assert (outcome.release_dir / "flat" / "CHECKSUMS").read_text() == sums
    finally:
        await server.close()


async def test_sha256sums_mismatch_names_both_sha256(site: Site, tmp_path):
    root = tmp_path / "sha"
    root.mkdir()
    files = {"proteome.fasta.gz": b"A" * 5000, "genome.fasta.gz": b"C" * 7000}
    for name, data in files.items():
        (root / name).write_bytes(data)
    published = hashlib.sha256(b"G" * 7000).hexdigest()  # the manifest's, not the server's
    (root / "SHA256SUMS").write_text(f"{hashlib.sha256(files['proteome.fasta.gz']).hexdigest()} *proteome.fasta.gz\n"
                                     f"{published} *genome.fasta.gz\n")
    stamp(root)
    faults = Faults()
    server = await ftp_server.start(root, faults, protocol="ftp")
    try:
        ncbi_bank(site, server, "ftp", remote__files=r".*\.fasta\.gz$", remote__checksums="SHA256SUMS",
                  remote__checksums__format="sha256sum")
        failed = await site.update(BANK)
        assert not failed.ok
        got = hashlib.sha256(files["genome.fasta.gz"]).hexdigest()
        assert f"genome.fasta.gz: expected sha256:{published} (SHA256SUMS), got sha256:{got}" in failed.error
        assert faults.transfers["genome.fasta.gz"] == 2 and faults.transfers["proteome.fasta.gz"] == 1
    finally:
        await server.close()


def tar_gz(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_blast_volumes_with_their_md5_and_the_json_manifest(site: Site, tmp_path):
    """Each volume's .md5 (``hex  nt.00.tar.gz``) checks it as it streams in, and is not read again
    by the checksum step; blastdb-manifest.json says which volumes a database needs."""
    root = tmp_path / "blast"
    root.mkdir()
    volumes = {f"nt.{i:02d}.tar.gz": tar_gz(f"nt.{i:02d}.nsq", os.urandom(2000)) for i in range(3)}
    for name, data in volumes.items():
        (root / name).write_bytes(data)
        (root / f"{name}.md5").write_text(f"{md5(data)}  {name}\n")
    (root / "blastdb-manifest.json").write_text(json.dumps({
        "version": "1.0", "nt": {"size": 0.1, "description": "Nucleotide collection", "last_updated": "2024-03-05",
                                 "files": [f"gs://blast-db/2024-03-05-01-05-02/{n}" for n in volumes]}}))
    stamp(root)
    faults = Faults()
    server = await http_server.start(root, faults, protocol="http")
    try:
        ncbi_bank(site, server, "http", remote__files=r"^nt\.0[01]\.tar\.gz.*",
                  remote__checksums=r".*\.tar\.gz\.md5|blastdb-manifest\.json",
                  remote__checksums__format="ncbi-blast-manifest")
        partial = await site.update(BANK)
        assert not partial.ok
        assert partial.error == ("BLAST database nt: blastdb-manifest.json lists 3 volumes and remote.files does not "
                                 "select nt.02.tar.gz: a database needs every volume")
        assert not any(name in volumes for name in faults.transfers)  # found before any download

        site.set(BANK, remote__files=r"^nt\..*")
        outcome = await site.update(BANK)
        assert outcome.ok and outcome.updated, outcome.error
        assert (await site.session(BANK))["checksums"] == {"manifests": 4, "files": 3, "without": 3, "verified": 3,
                                                           "reused": 0, "present": 0}
        log = log_of(outcome)
        assert "blastdb-manifest.json: lists the files of 1 database(s) and no checksums" in log
        assert "match their .md5" not in log  # checked as they streamed in: not read again
    finally:
        await server.close()


async def test_auto_detection_refuses_a_manifest_it_cannot_read(site: Site, tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "data.txt").write_bytes(b"data\n")
    (root / "CHECKSUMS").write_text(f"{md5(b'data')}  data.txt\n12345 1 other.txt\n")
    stamp(root)
    server = await http_server.start(root, Faults(), protocol="http")
    try:
        ncbi_bank(site, server, "http", remote__files=r"^data\.txt$", remote__checksums="CHECKSUMS")
        failed = await site.update(BANK)
        assert not failed.ok and failed.failed_task == "download"
        assert failed.error.startswith("checksum manifest CHECKSUMS: its lines have several formats: md5sum (line 1), "
                                       "bsd-sum (line 2); set remote.checksums.format to one of md5sum, sha1sum, "
                                       "sha256sum, sha512sum, bsd-sum, ncbi-blast-manifest")
        site.set(BANK, remote__checksums__format="md5sum")
        declared = await site.update(BANK)
        assert not declared.ok and "line 2: remote.checksums.format=md5sum, but this is a bsd-sum line" in declared.error
        site.set(BANK, remote__checksums__format="crc32")
        unknown = await site.update(BANK)
        assert not unknown.ok and unknown.error.startswith("remote.checksums.format='crc32': expected auto or one of md5sum")
    finally:
        await server.close()


async def test_a_release_recorded_without_checksums_is_compared_by_hashing_its_copies(site: Site, tmp_path):
    """remote.checksums set on a bank with a release in production: its files have no recorded
    checksum, so their copies are hashed once; a file whose date moved but whose checksum is the
    same is reused (the checksum decides alone), a file whose content changed is fetched."""
    root = tmp_path / "ncbi"
    files = ncbi_tree(root)
    faults = Faults()
    server = await ftp_server.start(root, faults, protocol="ftp")
    try:
        ncbi_bank(site, server, "ftp", remote__checksums="")
        first = await site.update(BANK, publish=True)
        assert first.ok and first.updated, first.error
        records = site_file_list(site, (await site.session(BANK))["id"])
        assert not any("checksum" in r for r in records) and "checksums" not in await site.session(BANK)

        changed = "GCF_000001405.40_GRCh38.p14/GCF_000001405.40_GRCh38.p14_assembly_report.txt"
        (root / changed).write_bytes(b"revised report\n" * 30)
        manifest = root / "GCF_000001405.40_GRCh38.p14" / "md5checksums.txt"
        manifest.write_text(manifest.read_text().replace(md5(files[changed]), md5((root / changed).read_bytes())))
        later = WHEN + 86400  # every file touched a day later: a new release
        for path in root.rglob("*"):
            os.utime(path, (later, later))
        site.set(BANK, remote__checksums=r"md5checksums\.txt")
        faults.transfers.clear()
        second = await site.update(BANK, publish=True)
        assert second.ok and second.updated and second.release == "2024-3-6", second.error
        assert {name for name in faults.transfers if not name.endswith("md5checksums.txt")} == {changed}
        assert (await site.session(BANK))["checksums"] == {"manifests": 2, "files": 5, "without": 0, "verified": 1,
                                                           "reused": 4, "present": 0}
    finally:
        await server.close()


async def test_a_manifest_that_cannot_be_fetched_fails_the_update_before_any_file(site: Site, tmp_path):
    root = tmp_path / "ncbi"
    files = ncbi_tree(root)
    manifest = "GCF_000001405.40_GRCh38.p14/md5checksums.txt"
    faults = Faults(transient_errors={manifest: 10})
    server = await http_server.start(root, faults, protocol="http")
    try:
        ncbi_bank(site, server, "http", stop_condition="stop_after_attempt(2)")
        failed = await site.update(BANK)
        assert not failed.ok and failed.failed_task == "download"
        assert failed.error.startswith(f"1 checksum manifest(s) could not be fetched: {manifest}: ")
        assert "503" in failed.error and faults.transfers[manifest] == 2
        assert not any(name in files for name in faults.transfers)
    finally:
        await server.close()


async def test_a_sidecar_holding_the_checksum_alone(site: Site, tmp_path):
    """``<file>.md5`` beside each file, the hex alone in it: the sidecar's name says which file."""
    root = tmp_path / "sidecars"
    root.mkdir()
    files = {"uniprot_sprot.dat.gz": gzip.compress(b"ID   001R_FRG3G\n" * 50, mtime=0),
             "uniprot_trembl.dat.gz": gzip.compress(b"ID   A0A000\n" * 70, mtime=0)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "uniprot_sprot.dat.gz.md5").write_text(md5(files["uniprot_sprot.dat.gz"]) + "\n")
    (root / "uniprot_trembl.dat.gz.md5").write_text(md5(b"an older trembl") + "\n")
    stamp(root)
    faults = Faults()
    server = await ftp_server.start(root, faults, protocol="ftp")
    try:
        ncbi_bank(site, server, "ftp", remote__files=r".*\.dat\.gz$", remote__checksums=r".*\.md5")
        failed = await site.update(BANK)
        assert not failed.ok
        assert (f"uniprot_trembl.dat.gz: expected md5:{md5(b'an older trembl')} (uniprot_trembl.dat.gz.md5), "
                f"got md5:{md5(files['uniprot_trembl.dat.gz'])}") in failed.error
        assert "uniprot_sprot" not in failed.error
        assert (faults.transfers["uniprot_trembl.dat.gz"], faults.transfers["uniprot_sprot.dat.gz"]) == (2, 1)
    finally:
        await server.close()


def test_a_mismatch_names_where_each_expected_checksum_came_from():
    from biomaj.bus.messages import FileOutcome
    from biomaj.protocols.base import RemoteConfig, RemoteEntry
    from biomaj.workflow.checksums import ChecksumReport, mismatch_error
    from biomaj.workflow.remote_files import Wanted

    config = RemoteConfig("s3", "127.0.0.1", 9000, "bucket/")
    etag, listed = "md5:" + "1" * 32, "md5:" + "2" * 32
    wanted = [Wanted(config, RemoteEntry("a.fa", 3, checksum=etag), "a.fa", checksum=etag),
              Wanted(config, RemoteEntry("b.fa", 3, checksum=etag), "b.fa", checksum=listed)]
    outcomes = {name: FileOutcome(name, False, got_checksum="md5:" + "f" * 32) for name in ("a.fa", "b.fa")}
    message = mismatch_error(wanted, outcomes, ChecksumReport(1, 1, 1, {"b.fa": "md5checksums.txt"}), "failed")
    assert "a.fa: expected md5:1111" in message and "(the object's ETag)" in message
    assert "(md5checksums.txt)" in message
