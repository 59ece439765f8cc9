"""BioMAJ 3's process tests (reference section 7: exec again, pre, remove, restart from proc,
wrong process name, metadata, search) on the localprocess bank (ours, and upstream's in the
compat suite), with the scripts written
by the tests, run by the real processor actor; plus parallel metas, timeouts, cancellation and
containers (a stand-in `docker` program, no engine runs here)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from biomaj import reports
from biomaj.errors import BiomajError
from biomaj.process.execute import group_running
from biomaj.workflow import runner
from tests.conftest import files_on_both

files = files_on_both()

TEST_SH = """#!/bin/sh
echo "Testing a process"
echo "##BIOMAJ#blast#nucleic#organism:hg19,chr:chr1#blast/chr1/chr1db"
echo "##BIOMAJ#blast#nucleic#organism:hg19,chr:chr2#blast/chr2/chr2db"
echo "##BIOMAJ#fasta#nucleic#organism:hg19#fasta/chr1.fa,fasta/chr2.fa"
"""


def script(site, name: str, body: str) -> Path:
    path = site.root / "process" / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def localprocess(site):
    script(site, "test.sh", TEST_SH.split("\n", 1)[1])
    site.add_bank("localprocess")
    return site


async def test_processes_run_with_the_biomaj3_contract(localprocess):
    site = localprocess
    outcome = await site.update("localprocess")
    assert outcome.ok and outcome.updated, outcome.error
    session = await site.session("localprocess")
    assert session["process"]["preprocess"] == {"META0": {"PROC0": True}}  # test_preprocesses
    assert session["process"]["postprocess"]["BLOCK2"]["META3"] == {"PROC4": True, "PROC5": True}
    assert (outcome.release_dir / "proc1.txt").is_file() and (outcome.release_dir / "proc2.txt").is_file()
    log_dir = Path(outcome.log_file).parent
    assert (log_dir / "META0_PROC0.out").read_text() == site.expect["proc0_out"].format(datadir=site.data)  # echo … $datadir
    assert (log_dir / "META3_PROC5.err").read_text() == ""
    assert not (site.bank_dir("localprocess") / "future_release").exists()  # only while postprocess runs
    # test_processes_meta_data
    formats, proc5 = session["formats"], site.expect["proc5"]  # PROC5.format/tags/files
    assert len(formats["blast"]) == 2
    assert formats[proc5["format"]][0]["files"] == list(proc5["files"])
    assert formats[proc5["format"]][0]["tags"] == proc5["tags"]
    production = (await site.doc("localprocess"))["production"][0]
    assert set(production["formats"]) >= {"blast", "fasta", proc5["format"]}
    assert set(production["types"]) >= {"nucleic", *proc5["types"], site.expect["localprocess_type"]}


async def test_search_by_formats_and_types(localprocess):
    site = localprocess
    await site.update("localprocess")
    banks = await site.store.list_banks()
    viewer = reports.Viewer(site.user)

    def count(formats, types):
        return len(reports.search(banks, viewer, formats, types).rows)

    assert count(["blast"], []) == 1
    assert count([], ["nucleic"]) == 1
    assert count(["blast"], ["nucleic"]) == 1
    assert count(["blast"], ["proteic"]) == 0
    show = reports.show(await site.doc("localprocess"), viewer)
    assert "blast" in show.rows[0][2] and "organism:hg19" in show.rows[0][4]


async def test_postprocesses_restart_from_proc(localprocess):
    site = localprocess
    outcome = await site.update("localprocess")
    proc1, proc2 = outcome.release_dir / "proc1.txt", outcome.release_dir / "proc2.txt"
    proc1.unlink()
    proc2.unlink()
    again = await site.update("localprocess", from_task="postprocess")
    assert again.ok and proc1.is_file() and proc2.is_file()
    proc1.unlink()
    proc2.unlink()
    from_proc2 = await site.update("localprocess", from_task="postprocess", process="PROC2")
    assert from_proc2.ok and proc2.is_file() and not proc1.exists()


async def test_postprocess_wrong_process_name(localprocess):
    site = localprocess
    await site.update("localprocess")
    with pytest.raises(BiomajError, match="Process fake not found in postprocess"):
        await site.update("localprocess", from_task="postprocess", process="fake")
    session = await site.session("localprocess")
    assert session["status"]["postprocess"] is True  # nothing was reset


async def test_a_resumed_update_reruns_only_the_failed_and_unrun_processes(site):
    runs = site.root / "runs.txt"
    flag = site.root / "fail-now"
    for name in ("a", "b", "c"):
        script(site, f"{name}.sh", f'echo {name} >> "{runs}"\n' + (f'if [ -e "{flag}" ]; then exit 3; fi\n' if name == "b" else ""))
    site.add_bank("local", BLOCKS="B1", B1__db__post__process="M1", M1="PA,PB,PC",
                  **{f"P{n.upper()}__{k}": v for n in "abc" for k, v in
                     (("name", n), ("exe", f"{n}.sh"), ("args", ""))})
    flag.touch()
    failed = await site.update("local")
    assert not failed.ok and failed.failed_task == "postprocess"
    assert "M1_PB exited with code 3" in failed.error
    assert runs.read_text().split() == ["a", "b"]  # the failure stopped its meta
    flag.unlink()
    resumed = await site.update("local")
    assert resumed.ok and resumed.session_id == failed.session_id
    assert runs.read_text().split() == ["a", "b", "b", "c"]  # PA is not run again


async def test_remove_processes_run_when_a_release_is_removed(localprocess):
    site = localprocess
    outcome = await site.update("localprocess")
    await runner.remove_bank_release(site.context(), "localprocess", outcome.release)
    doc = await site.doc("localprocess")
    removal = doc["sessions"][-1]
    assert removal["action"] == "remove" and removal["process"]["removeprocess"] == {"META0": {"PROC0": True}}
    assert not outcome.release_dir.exists()


async def test_metas_of_a_block_run_in_parallel(site):
    """Each process waits for the other one's marker: run one after the other, both would fail."""
    one, two = site.root / "one", site.root / "two"
    for me, other in ((one, two), (two, one)):
        script(site, f"{me.name}.sh", f'touch "{me}"\ni=0\nwhile [ ! -e "{other}" ]; do\n'
               '  i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.1\ndone\n')
    site.add_bank("local", BLOCKS="B", B__db__post__process="M1,M2", M1="P1", M2="P2", bank__num__threads="2",
                  P1__name="one", P1__exe="one.sh", P1__args="", P2__name="two", P2__exe="two.sh", P2__args="")
    outcome = await site.update("local")
    assert outcome.ok, outcome.error


async def test_a_hanging_process_is_stopped_by_its_timeout(site):
    script(site, "hang.sh", "sleep 60\n")
    site.add_bank("local", BLOCKS="B", B__db__post__process="M", M="P", P__name="hang", P__exe="hang.sh",
                  P__args="", P__timeout="1")
    outcome = await site.update("local")
    assert not outcome.ok and outcome.failed_task == "postprocess"
    assert "M_P timed out after 1" in outcome.error


async def test_a_cancelled_job_leaves_no_process_behind(site):
    pids = site.root / "pids"
    script(site, "long.sh", f'sleep 60 &\necho "$$ $!" > "{pids}"\nwait\n')
    site.add_bank("local", BLOCKS="B", B__db__post__process="M", M="P", P__name="long", P__exe="long.sh",
                  P__args="")
    ctx = site.context()
    task = asyncio.create_task(runner.update_bank(ctx, "local", runner.UpdateOptions()))
    for _ in range(200):
        if pids.exists() and len(pids.read_text().split()) == 2:
            break
        await asyncio.sleep(0.05)
    leader, child = map(int, pids.read_text().split())
    ctx.cancelled.set()
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.cancelled and not outcome.ok
    assert not group_running(leader)  # the shell and its sleep are gone
    assert not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split(")")[1].split()[0] == "Z"
    assert not (site.root / "lock" / "local.lock").exists()


async def test_a_process_in_a_container(site, monkeypatch):
    argv = site.root / "docker-argv"
    stand_in = script(site, "docker", f'for a in "$@"; do echo "$a"; done > "{argv}"\n'
                      'echo "##BIOMAJ#blast#nucleic##blast/db"\n')
    monkeypatch.setenv("PATH", f"{stand_in.parent}:{os.environ['PATH']}")  # before any real docker client
    site.add_bank("local", BLOCKS="B", B__db__post__process="M", M="P", P__name="blast", P__exe="makeblastdb",
                  P__args="-in ${localrelease}/flat/test2.fasta", P__docker="ncbi/blast:2.15", P__expand="false",
                  docker__sudo="0")
    outcome = await site.update("local")
    assert outcome.ok, outcome.error
    args = argv.read_text().split("\n")
    bank_dir = str(site.bank_dir("local"))
    assert args[:2] == ["run", "--rm"]
    assert args[args.index("-w") + 1] == str(outcome.release_dir)
    assert f"{bank_dir}:{bank_dir}:rw" in args or f"{bank_dir}:{bank_dir}" in args
    assert "dbname=local" in args and not any(a.startswith("HOME=") for a in args)
    image = args.index("ncbi/blast:2.15")
    assert args[image + 1:image + 4] == ["makeblastdb", "-in", f"local_{outcome.release}/flat/test2.fasta"]
    assert (await site.session("local"))["formats"]["blast"][0]["files"] == ["blast/db"]


async def test_release_strings_reach_a_shell_quoted(site):
    """A process argument built from the release reaches /bin/sh quoted: its value is data."""
    out = site.root / "seen"
    script(site, "show.sh", f'printf "%s\\n" "$@" > "{out}"\n')
    site.add_bank("local", release__file=r"test_(\d+)\.txt", BLOCKS="B", B__db__post__process="M", M="P",
                  P__name="show", P__exe="show.sh", P__args="${remoterelease} ${localrelease}")
    outcome = await site.update("local")
    assert outcome.ok, outcome.error
    assert out.read_text().split() == ["100", "local_100"]
    assert os.environ.get("remoterelease") is None
