"""BioMAJ 3's functional tests (biomaj/tests/biomaj_tests.py, classes TestBiomajSetup and
TestBiomajFunctional; reference section 7), run on our bank files (tests/fixtures) and on the
upstream ones (compat suite), with local FTP and HTTP servers in place of ftp.ncbi.nih.gov,
ftp2.fr.debian.org and httpbin.org.

The tests of processes (test_postprocesses_*, test_preprocesses, test_removeprocesses,
test_processes_meta_data, test_search over localprocess) belong to the processes issue.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from pathlib import PurePosixPath

import pytest

from biomaj import reports
from biomaj.errors import BiomajError
from biomaj.workflow import runner
from biomaj.workflow.bank import Bank, NotAuthorized
from biomaj.workflow.session import UPDATE_TASKS, new_session
from biomaj.workflow.update import UpdateOptions, dependency_order
from tests.conftest import files_on_both
from tests.servers import ftp_server, http_server
from tests.servers.faults import Faults

files = files_on_both()

TODAY = datetime.date.today()
TODAY_RELEASE = f"{TODAY.year}-{TODAY.month}-{TODAY.day}"


def flat(outcome) -> set[str]:
    root = outcome.release_dir / "flat"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# --- TestBiomajSetup ---------------------------------------------------------------------------


async def test_new_bank_creates_its_document(site):
    site.add_bank("pdbaa")
    bank = Bank.load(site.global_properties, "pdbaa")
    doc = await bank.document(site.store, site.user)
    assert doc["name"] == "pdbaa"
    assert doc["properties"]["owner"] == site.user
    assert doc["properties"]["visibility"] == "public"
    assert doc["properties"]["type"] == site.expect["pdbaa_type"]
    assert (await site.store.get_bank("pdbaa"))["production"] == []


def test_new_session_has_every_status_false():
    session = new_session("update", data_dir="/d", dir_version="v")
    assert set(session["status"]) == set(UPDATE_TASKS)
    assert not any(session["status"].values())


async def _saved_sessions(site, bank_name: str, count: int, over: bool) -> list[dict]:
    bank = Bank.load(site.global_properties, bank_name)
    await bank.document(site.store, site.user)
    sessions = []
    for _ in range(count):
        session = new_session("update", data_dir=str(bank.data_dir), dir_version=bank.dir_version)
        session["status"]["init"] = True
        session["status"]["over"] = over
        session["remoterelease"] = "rel"
        await bank.save_session(site.store, session, site.user)
        sessions.append(session)
        time.sleep(0.001)  # distinct time.time() ids
    return sessions


async def test_session_reload_not_over_resumes_the_last(site):
    site.add_bank("local")
    sessions = await _saved_sessions(site, "local", 4, over=False)
    bank = Bank.load(site.global_properties, "local")
    chosen = runner.select_session(bank, await site.doc("local"), UpdateOptions())
    assert chosen["id"] == sessions[-1]["id"]
    assert chosen["status"]["init"] is True


async def test_session_reload_over_starts_a_new_one(site):
    site.add_bank("local")
    sessions = await _saved_sessions(site, "local", 1, over=True)
    bank = Bank.load(site.global_properties, "local")
    chosen = runner.select_session(bank, await site.doc("local"), UpdateOptions())
    assert chosen["id"] != sessions[0]["id"]
    assert chosen["status"]["init"] is False
    assert chosen["previous_release"] == "rel"


async def test_clean_old_sessions_keeps_only_the_production_one(site):
    site.add_bank("local")
    await _saved_sessions(site, "local", 4, over=False)
    outcome = await site.update("local", fromscratch=True)
    assert outcome.ok and outcome.updated
    doc = await site.doc("local")
    assert [s["id"] for s in doc["sessions"]] == [outcome.session_id]


async def test_bank_list(site):
    for name in ("local", "sub2"):
        site.add_bank(name)
        await Bank.load(site.global_properties, name).document(site.store, site.user)
    assert [b["name"] for b in await site.store.list_banks()] == ["local", "sub2"]


async def test_remove_session(site):
    site.add_bank("local")
    sessions = await _saved_sessions(site, "local", 4, over=False)
    assert await site.store.delete_session("local", sessions[0]["id"])
    assert len((await site.doc("local"))["sessions"]) == 3


def test_dependencies_list(site):
    for name in ("computed", "sub1", "sub2"):
        site.add_bank(name)
    assert dependency_order(Bank.load(site.global_properties, "computed")) == ["sub2", "sub1"]


@pytest.fixture
async def ncbi_ftp(tmp_path, site):
    """ftp.ncbi.nih.gov's /blast/db/FASTA/ (pdbaa's remote.dir) with pdbaa.gz (and not the
    remote.dir of alu_list_error)."""
    import gzip

    tree = tmp_path / "ncbi"
    folder = tree / site.source_value("pdbaa", "remote.dir").strip("/")
    folder.mkdir(parents=True)
    with gzip.open(folder / "pdbaa.gz", "wb") as out:
        out.write(b">101M:A mol:protein length:154  MYOGLOBIN\nMVLSEGEWQLVLHVWAKVEAD\n" * 50)
    server = await ftp_server.start(tree, Faults(), protocol="ftp")
    yield server
    await server.close()


def _ftp_bank(site, name: str, server) -> None:
    config = server.config
    site.add_bank(name, server=f"127.0.0.1:{config.port}", server__credentials=f"{config.user}:{config.password}")


async def test_get_release_over_ftp(site, ncbi_ftp):
    _ftp_bank(site, "pdbaa", ncbi_ftp)
    outcome = await site.update("pdbaa")
    assert outcome.ok and outcome.updated, outcome.error
    assert outcome.release == TODAY_RELEASE  # the file's date: no release.file
    assert flat(outcome) == {"pdbaa"}  # extracted, matched by local.files=^pdbaa\.*$


async def test_bank_list_error_missing_remote_dir(site, ncbi_ftp):
    _ftp_bank(site, "alu_list_error", ncbi_ftp)
    outcome = await site.update("alu_list_error")
    assert not outcome.ok
    assert outcome.failed_task == "download"
    assert PurePosixPath(site.source_value("alu_list_error", "remote.dir")).name in outcome.error
    doc = await site.doc("alu_list_error")
    assert doc["production"] == [] and doc["pending"] == []  # no release was determined


# --- TestBiomajFunctional ----------------------------------------------------------------------


async def test_extract_release_from_file_name(site):
    site.add_bank("local", release__file=r"test_(\d+)\.txt")
    outcome = await site.update("local")
    assert outcome.ok and outcome.release == "100"
    session = await site.session("local")
    assert session["remoterelease"] == "100"


async def test_remoterelease_check(site):
    site.add_bank("local", release__file=r"test_(\d+)\.txt")
    outcome = await runner.release_check(site.context(), "local")
    assert outcome.release == "100" and outcome.details["new"] is True
    assert not (site.bank_dir("local")).exists() or not any(site.bank_dir("local").iterdir())


async def test_extract_release_from_file_content(site):
    site.add_bank("local", release__file=r"test_100\.txt", release__regexp=r"Release\s*(\d+)")
    outcome = await site.update("local")
    assert outcome.ok and outcome.release == site.expect["text_release"]  # test_100.txt's "Release <n>"


async def test_publish(site):
    site.add_bank("local")
    outcome = await site.update("local")
    bank_dir = site.bank_dir("local")
    assert not (bank_dir / "current").exists()  # auto_publish=0 upstream
    assert (await site.doc("local"))["current"] is None
    await runner.publish_bank(site.context(), "local")
    assert os.readlink(bank_dir / "current") == f"local_{outcome.release}"
    assert (await site.doc("local"))["current"] == outcome.session_id
    assert (bank_dir / "RELEASE.txt").read_text() == (
        f"Bank: local\nRelease: {outcome.release}\nRemote release:{outcome.release}\n")


async def test_no_update(site):
    site.add_bank("local")
    assert (await site.update("local")).updated
    outcome = await site.update("local")
    assert outcome.ok and not outcome.updated
    session = await site.session("local")
    assert session["status"]["postprocess"] is not True
    assert session["status"]["over"] is True


async def test_download_from_list(site, tmp_path):
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([{"name": "test_100.txt", "root": str(site.remote)}]))
    site.add_bank("local", remote__list=str(listing))
    outcome = await site.update("local")
    assert outcome.ok and outcome.updated
    assert flat(outcome) == {"test_100.txt"}


async def test_release_control(site):
    for path in site.remote.rglob("*"):  # the release is the newest file's date: make it today's
        os.utime(path)
    site.add_bank("local", release__control="true")
    first = await site.update("local")
    assert first.updated and first.release == TODAY_RELEASE
    (site.remote / "test2.fasta").touch()  # same date, new listing hash
    second = await site.update("local")
    assert second.updated and second.release == f"{TODAY_RELEASE}__1"
    third = await site.update("local")
    assert not third.updated
    site.set("local", copy__skip="1", remote__files=r"^test2.*")
    fourth = await site.update("local")
    assert fourth.updated and fourth.release == f"{TODAY_RELEASE}__2"


async def test_update_hardlinks(site):
    site.add_bank("local", use_hardlinks="1", keep__old__version="3")
    first = await site.update("local")
    tomorrow = time.time() + 86400
    new_file = site.remote / "test_new.fasta"
    new_file.write_text(">new\nACGT\n")
    os.utime(new_file, (tomorrow, tomorrow))
    second = await site.update("local")
    assert second.updated and second.release != first.release
    old, new = first.release_dir / "flat", second.release_dir / "flat"
    for name in ("test2.fasta", "test_100.txt"):
        assert (new / name).samefile(old / name), name
    assert (new / "test_new.fasta").is_file() and not (old / "test_new.fasta").exists()
    assert (new / "test.fasta").is_file()  # from the archive: extracted again


async def test_fromscratch_update(site):
    site.add_bank("local")
    first = await site.update("local")
    second = await site.update("local", fromscratch=True)
    assert second.updated and second.release == f"{first.release}__1"


async def test_fromscratch_update_with_release(site):
    site.add_bank("local", release__file=r"test_(\d+)\.txt")
    (site.bank_dir("local") / "local_100").mkdir(parents=True)
    outcome = await site.update("local", fromscratch=True)
    assert outcome.updated and outcome.release == "100__1"


async def test_mix_stop_from_task(site):
    site.add_bank("local")
    first = await site.update("local")
    stopped = await site.update("local", fromscratch=True, stop_after="download")
    assert stopped.ok and stopped.stopped and stopped.release == f"{first.release}__1"
    assert not (site.root / "lock" / "local.lock").exists()
    doc = await site.doc("local")
    assert doc["pending"] == [{"release": stopped.release, "id": stopped.session_id}]
    resumed = await site.update("local")
    assert resumed.ok and resumed.updated and resumed.release == stopped.release
    assert resumed.session_id == stopped.session_id
    assert (await site.doc("local"))["pending"] == []


async def test_mix_stop_from_task4(site):
    site.add_bank("local")
    await site.update("local")
    stopped = await site.update("local", fromscratch=True, stop_before="download")
    assert stopped.ok and stopped.stopped
    with pytest.raises(BiomajError, match="previous task download was not successful"):
        await site.update("local", from_task="postprocess")


async def test_delete_old_dirs(site):
    site.add_bank("local", keep__old__version="1")
    first = await site.update("local")
    second = await site.update("local", fromscratch=True)
    third = await site.update("local", fromscratch=True)
    doc = await site.doc("local")
    assert [p["release"] for p in doc["production"]] == [second.release, third.release]
    assert not first.release_dir.exists()


async def test_delete_old_dirs_with_freeze(site):
    site.add_bank("local", keep__old__version="1")
    for fromscratch in (False, True, True):
        outcome = await site.update("local", fromscratch=fromscratch)
        await runner.freeze_release(site.context(), "local", outcome.release)
    assert len((await site.doc("local"))["production"]) == 3


async def test_remove_all(site):
    site.add_bank("local")
    outcome = await site.update("local")
    await runner.remove_all(site.context(), "local")
    assert not site.bank_dir("local").exists()
    assert await site.doc("local") is None
    assert not outcome.release_dir.exists()


async def test_remove(site):
    site.add_bank("local")
    outcome = await site.update("local")
    await runner.remove_bank_release(site.context(), "local", outcome.release)
    assert not outcome.release_dir.exists()
    doc = await site.doc("local")
    assert doc["production"] == []
    assert doc["last_remove_session"] is not None
    assert (await site.store.list_history("local"))[0]["action"] == "remove"


async def test_update_stop_after(site):
    site.add_bank("local")
    outcome = await site.update("local", stop_after="download")
    session = await site.session("local")
    assert outcome.stopped and session["status"]["download"] is True
    assert session["status"]["postprocess"] is not True


async def test_update_stop_before(site):
    site.add_bank("local")
    outcome = await site.update("local", stop_before="postprocess")
    session = await site.session("local")
    assert outcome.stopped and session["status"]["download"] is True
    assert session["status"]["postprocess"] is not True


async def test_reupdate_from_task(site):
    site.add_bank("local")
    stopped = await site.update("local", stop_after="download")
    again = await site.update("local", from_task="postprocess", release=stopped.release)
    assert again.ok and again.release_dir == stopped.release_dir
    session = await site.session("local")
    assert session["status"]["postprocess"] is True and session["status"]["over"] is True


async def test_reupdate_from_task_error(site):
    site.add_bank("local")
    await site.update("local", stop_after="check")
    with pytest.raises(BiomajError, match="not successful"):
        await site.update("local", from_task="postprocess")


async def test_reupdate_from_task_wrong_release(site):
    site.add_bank("local")
    await site.update("local", stop_after="download")
    with pytest.raises(runner.UnknownRelease, match="wrongrelease"):
        await site.update("local", from_task="postprocess", release="wrongrelease")


def _computed_banks(site, name: str, **overrides):
    for dep in ("sub1", "sub2"):
        site.add_bank(dep)
    site.add_bank(name, **overrides)


async def test_computed(site):
    _computed_banks(site, "computed")
    outcome = await site.update("computed")
    assert outcome.ok and outcome.updated, outcome.error
    assert (outcome.release_dir / "sub1" / "flat" / "test_100.txt").is_file()
    assert (await site.session("computed"))["depends"] == {"sub2": True, "sub1": True}
    again = await site.update("computed")
    assert again.ok and not again.updated


async def test_computed_nofile(site):
    _computed_banks(site, "computed2", protocol="none", sub1__files__move=r"flat/test_.*")
    outcome = await site.update("computed2")
    assert outcome.ok, outcome.error
    assert (outcome.release_dir / "sub1" / "flat" / "test_100.txt").is_file()


async def test_computed_ref_release(site):
    _computed_banks(site, "computed2")
    first = await site.update("computed2")
    sub1 = await site.session("sub1")
    assert first.ok and first.release == sub1["release"]
    again = await site.update("computed2")
    assert again.ok and not again.updated


async def test_computed_error(site):
    for name in ("sub2", "error", "computederror"):
        site.add_bank(name)
    site.set("error", remote__dir=str(site.remote / "missing") + "/")
    outcome = await site.update("computederror")
    assert not outcome.ok and outcome.failed_task == "depends"
    assert (await site.session("computederror"))["depends"] == {"sub2": True, "error": False}


@pytest.fixture
async def debian_http(tmp_path, site):
    """The release file and the page of the directhttp bank, at the paths its file names."""
    tree = tmp_path / "debian-mirror"
    release = tree / site.source_value("directhttp", "release.remote.dir").lstrip("/")
    page = tree / site.source_value("directhttp", "remote.dir").lstrip("/")
    for path in (release, page):
        path.parent.mkdir(parents=True, exist_ok=True)
    release.write_text("Sample mirror version 12.5, released 2024\n")  # read by both sets' release.regexp
    page.write_text("<html><body>Mirror</body></html>\n")
    server = await http_server.start(tree, Faults(), protocol="http")
    yield server
    await server.close()


async def test_directhttp_release(site, debian_http):
    address = f"127.0.0.1:{debian_http.config.port}"
    site.add_bank("directhttp", server=address, release__server=address)
    outcome = await site.update("directhttp")
    assert outcome.ok, outcome.error
    assert outcome.release == "12.5"
    assert flat(outcome) == {site.source_value("directhttp", "local.files")}


async def test_multi(site, debian_http):
    address = f"127.0.0.1:{debian_http.config.port}"
    site.add_bank("multi", remote__file__0__server=address, remote__file__0__path=http_server.ECHO,
                  remote__file__1__server=address, remote__file__1__path=http_server.ECHO)
    outcome = await site.update("multi")
    assert outcome.ok, outcome.error
    (get_name, get_params), (post_name, post_params) = site.expect["multi"].items()
    got = json.loads((outcome.release_dir / "flat" / get_name).read_text())
    assert got["method"] == "GET" and got["query"] == get_params
    posted = json.loads((outcome.release_dir / "flat" / post_name).read_text())
    assert posted["method"] == "POST" and posted["form"] == post_params


async def test_freeze(site):
    site.add_bank("local")
    outcome = await site.update("local")
    await runner.freeze_release(site.context(), "local", outcome.release)
    assert (await site.doc("local"))["production"][0]["freeze"] is True
    with pytest.raises(BiomajError, match="frozen"):
        await runner.remove_bank_release(site.context(), "local", outcome.release)
    await runner.freeze_release(site.context(), "local", outcome.release, frozen=False)
    await runner.remove_bank_release(site.context(), "local", outcome.release)
    assert (await site.doc("local"))["production"] == []


async def test_stats(site):
    site.add_bank("local")
    outcome = await site.update("local")
    records = reports.stats_records([await site.doc("local")], reports.Viewer(site.user))
    sizes = {r["release"]: r["size"] for r in records}
    assert sizes["All"] > 0 and sizes[outcome.release] == sizes["All"]


async def test_owner(site):
    site.add_bank("local")
    await site.update("local")
    doc = await site.doc("local")
    await site.store.set_bank_fields("local", properties={**doc["properties"], "owner": "sample"})
    with pytest.raises(NotAuthorized, match="owned by sample"):
        await site.update("local")


# --- what BioMAJ 3 gets wrong and we fix -------------------------------------------------------


async def test_visibility_is_kept_across_runs(site):
    site.add_bank("local")
    await site.update("local")
    doc = await site.doc("local")
    await site.store.set_bank_fields("local", properties={**doc["properties"], "visibility": "private"})
    await site.update("local", fromscratch=True)
    assert (await site.doc("local"))["properties"]["visibility"] == "private"


async def test_remove_all_checks_the_owner(site):
    site.add_bank("local")
    outcome = await site.update("local")
    with pytest.raises(NotAuthorized):
        await runner.remove_all(site.context(user="mallory"), "local")
    assert outcome.release_dir.exists() and await site.doc("local") is not None


async def test_remove_all_refuses_frozen_releases_without_force(site):
    site.add_bank("local")
    outcome = await site.update("local")
    await runner.freeze_release(site.context(), "local", outcome.release)
    with pytest.raises(BiomajError, match="frozen"):
        await runner.remove_all(site.context(), "local")
    await runner.remove_all(site.context(), "local", force=True)
    assert not outcome.release_dir.exists()


async def test_unknown_task_is_refused_before_any_work(site):
    site.add_bank("local")
    with pytest.raises(BiomajError, match="no task named 'downlaod'"):
        await site.update("local", from_task="downlaod")
    assert await site.doc("local") is None


async def test_a_bank_file_with_errors_is_refused(site):
    site.add_bank("local", protocol="gopher")
    with pytest.raises(BiomajError, match="wrong configuration, update refused.*protocol"):
        await site.update("local")
    assert not site.bank_dir("local").exists()


async def test_a_change_downloads_only_that_file_and_links_the_rest(site, tmp_path):
    tree = tmp_path / "mirror"
    tree.mkdir()
    for i in range(40):
        (tree / f"part{i:02d}.fasta").write_text(f">seq{i}\n" + "ACGT" * 100 + "\n")
    server = await http_server.start(tree, Faults(), protocol="http")
    try:
        site.add_bank("local", protocol="http", server=f"127.0.0.1:{server.config.port}", remote__dir="/",
                      remote__files=r"^part\d+\.fasta$", local__files=r"^part.*", release__control="true")
        first = await site.update("local")
        assert first.updated and len(flat(first)) == 40
        changed = tree / "part07.fasta"
        changed.write_text(">seq7 changed\nTTTT\n")
        server.faults.transfers.clear()
        second = await site.update("local")
        assert second.updated and second.release == f"{first.release}__1"
        assert dict(server.faults.transfers) == {"part07.fasta": 1}
        old, new = first.release_dir / "flat", second.release_dir / "flat"
        assert (new / "part07.fasta").read_text() == ">seq7 changed\nTTTT\n"
        assert not (new / "part07.fasta").samefile(old / "part07.fasta")
        assert all((new / f"part{i:02d}.fasta").samefile(old / f"part{i:02d}.fasta") for i in range(40) if i != 7)
        server.faults.transfers.clear()
        third = await site.update("local")
        assert not third.updated and not server.faults.transfers
    finally:
        await server.close()


async def test_release_removed_by_retention_leaves_history_and_current(site):
    site.add_bank("local", keep__old__version="0")
    first = await site.update("local", publish=True)
    second = await site.update("local", fromscratch=True)
    # keep.old.version=0 removes every previous release that is neither frozen nor published
    assert first.release_dir.exists() and second.release_dir.exists()
    await runner.publish_bank(site.context(), "local", second.release)
    third = await site.update("local", fromscratch=True)
    assert not first.release_dir.exists()
    assert second.release_dir.exists() and third.release_dir.exists()
    shutil.rmtree(site.remote)  # nothing needed from the remote to read the state
    assert [p["release"] for p in (await site.doc("local"))["production"]] == [second.release, third.release]
