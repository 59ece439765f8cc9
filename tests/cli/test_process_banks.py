"""Banks with processes, end to end through `biomaj ctl`: the localprocess bank (ours, and
upstream's in the compat suite) and a UniProt-shaped bank (blocks of metas of processes writing
files and ##BIOMAJ# lines)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import BOTH

UNIPROT = """[GENERAL]
db.fullname="UniProt-shaped test bank"
db.name=uniprot
db.type=proteic
db.formats=fasta
dir.version=uniprot
offline.dir.name=offline/uniprot_tmp
protocol=local
server=
remote.dir={remote}/
remote.files=^uniprot_.*\\.fasta\\.gz$
local.files=^uniprot_.*\\.fasta$
BLOCKS=FASTA,INDEXATIONS
FASTA.db.post.process=ORGANIZATION
INDEXATIONS.db.post.process=BLAST_SWISS,BLAST_TREMBL
ORGANIZATION=mkfasta
BLAST_SWISS=blast_sprot
BLAST_TREMBL=blast_trembl
mkfasta.name=mkfasta
mkfasta.exe=organize.sh
mkfasta.args=${{localrelease}}
blast_sprot.name=blast_sprot
blast_sprot.exe=index.sh
blast_sprot.args=sprot
blast_sprot.types=proteic
blast_trembl.name=blast_trembl
blast_trembl.exe=index.sh
blast_trembl.args=trembl
blast_trembl.format=blast
blast_trembl.tags=db:trembl
"""

ORGANIZE = """#!/bin/sh
set -e
cd "$datadir/$dirversion/$1"
mkdir -p fasta
cp flat/*.fasta fasta/
echo "##BIOMAJ#fasta#proteic#source:uniprot#fasta/uniprot_sprot.fasta,fasta/uniprot_trembl.fasta"
"""

INDEX = """#!/bin/sh
set -e
cd "$datadir/$dirversion/future_release"
mkdir -p blast
grep -c '>' fasta/uniprot_$1.fasta > blast/$1.count
echo "##BIOMAJ#blast###blast/$1.count"
"""


def ctl(cmd, root, *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([*cmd, "-c", str(root / "config.yml"), "ctl", *args], capture_output=True, text=True,
                            timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def executable(path, text):
    path.write_text(text)
    path.chmod(0o755)


def test_a_uniprot_shaped_bank_updates_and_reports_its_formats(biomaj_root, biomaj_cmd):
    remote = biomaj_root / "uniprot-remote"
    remote.mkdir()
    for name, count in (("sprot", 3), ("trembl", 5)):
        with gzip.open(remote / f"uniprot_{name}.fasta.gz", "wt") as out:
            out.writelines(f">{name}{i}\nMKV\n" for i in range(count))
    (biomaj_root / "conf" / "uniprot.properties").write_text(UNIPROT.format(remote=remote))
    executable(biomaj_root / "process" / "organize.sh", ORGANIZE)
    executable(biomaj_root / "process" / "index.sh", INDEX)

    job = json.loads(ctl(biomaj_cmd, biomaj_root, "--json", "update", "uniprot").stdout)
    assert job["state"] == "done" and job["result"]["updated"], job
    release_dir = biomaj_root / "data" / "uniprot" / f"uniprot_{job['result']['release']}"
    assert (release_dir / "blast" / "sprot.count").read_text().strip() == "3"
    assert (release_dir / "blast" / "trembl.count").read_text().strip() == "5"
    assert (release_dir / "fasta" / "uniprot_trembl.fasta").is_file()

    shown = json.loads(ctl(biomaj_cmd, biomaj_root, "--json", "show", "uniprot").stdout)
    assert len(shown) == 1
    assert set(shown[0]["Format(s)"].split(",")) == {"blast", "fasta"}
    assert "db:trembl" in shown[0]["Tag(s)"] and "blast/sprot.count" in shown[0]["File(s)"]
    found = json.loads(ctl(biomaj_cmd, biomaj_root, "--json", "search", "--formats", "blast").stdout)
    assert [row["Name"] for row in found] == ["uniprot"]
    assert json.loads(ctl(biomaj_cmd, biomaj_root, "--json", "search", "--types", "nucleic").stdout) == []
    text = ctl(biomaj_cmd, biomaj_root, "show", "uniprot").stdout
    assert "blast" in text and "fasta" in text


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_localprocess_updates_with_ctl(biomaj_root, biomaj_cmd, files):
    remote = biomaj_root / "test-remote"
    shutil.copytree(files.remote, remote)
    bank = re.sub(r"^remote\.dir=.*$", lambda _: f"remote.dir={remote}/", files.bank("localprocess").read_text(),
                  count=1, flags=re.MULTILINE)
    (biomaj_root / "conf" / "localprocess.properties").write_text(bank)
    executable(biomaj_root / "process" / "test.sh",
               '#!/bin/sh\necho "##BIOMAJ#blast#nucleic#organism:hg19#blast/chr1/chr1db"\n')
    job = json.loads(ctl(biomaj_cmd, biomaj_root, "--json", "update", "localprocess").stdout)
    assert job["state"] == "done", job
    status = ctl(biomaj_cmd, biomaj_root, "status", "localprocess").stdout
    assert job["result"]["release"] in status
    formats = f"blast,{files.expect['proc5']['format']}"  # test.sh's and PROC5.format
    found = json.loads(ctl(biomaj_cmd, biomaj_root, "--json", "search", "--formats", formats).stdout)
    assert [row["Name"] for row in found] == ["localprocess"]
