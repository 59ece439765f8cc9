"""The provenance file of every release (``ro-crate-metadata.json``), written by real updates:
checked against RO-Crate 1.1's required shape by a validator written here from the spec (not by
the code that writes the file), against the files on disk, and for what it must never hold."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from biomaj.workflow import crate
from biomaj.workflow.bank import Bank
from tests.servers import http_server
from tests.servers.faults import Faults

SPEC = "https://w3id.org/ro/crate/1.1"


# --- an RO-Crate 1.1 validator, from the spec's text ---------------------------------------------


def _types(entity: dict) -> list:
    kind = entity.get("@type")
    return kind if isinstance(kind, list) else [kind]


def _iso(text) -> datetime.datetime:
    assert isinstance(text, str), text
    return datetime.datetime.fromisoformat(text)  # ValueError when not ISO 8601


def files_on_disk(release_dir: Path) -> dict[str, Path]:
    """Every regular file of the release (symlinks not followed), the provenance file aside."""
    found = {}
    for directory, dirs, names in os.walk(release_dir):
        for name in names:
            path = Path(directory, name)
            relative = path.relative_to(release_dir).as_posix()
            if relative != crate.FILE_NAME and not path.is_symlink():
                found[relative] = path
    return found


def validate(release_dir: Path) -> dict:
    """Assert that ``release_dir``'s ro-crate-metadata.json is a valid RO-Crate 1.1 (Root Data
    Entity section: descriptor, root's required properties; Data Entities: File entities with
    relative URI paths linked by hasPart) listing exactly the release's files, with their true
    sizes and sha256. Returns the entities by @id."""
    document = json.loads((release_dir / crate.FILE_NAME).read_text(encoding="utf-8"))
    context = document["@context"]
    assert f"{SPEC}/context" in (context if isinstance(context, list) else [context])
    graph = document["@graph"]
    by_id = {entity["@id"]: entity for entity in graph}
    assert len(by_id) == len(graph), "an @id appears twice"
    descriptor = by_id["ro-crate-metadata.json"]  # MUST: this @id, CreativeWork, about the root
    assert "CreativeWork" in _types(descriptor)
    assert descriptor["conformsTo"] == {"@id": SPEC}
    root = by_id[descriptor["about"]["@id"]]
    assert root["@id"] == "./" and "Dataset" in _types(root)  # MUST end with /, SHOULD be ./
    for key in ("name", "description"):
        assert isinstance(root[key], str) and root[key]
    _iso(root["datePublished"])
    license_ = root["license"]  # MUST: a contextual entity, a URI or a text
    assert (isinstance(license_, str) and license_) or license_["@id"] in by_id
    listed = {}
    for part in root["hasPart"]:
        entity = by_id[part["@id"]]  # every hasPart is an entity of the graph
        assert "File" in _types(entity)
        assert not urlsplit(entity["@id"]).scheme and not entity["@id"].startswith("/")
        assert " " not in entity["@id"]  # a URI path: spaces escaped
        listed[unquote(entity["@id"])] = entity
    on_disk = files_on_disk(release_dir)
    assert set(listed) == set(on_disk)  # every path relative and present, every file listed
    for path, entity in listed.items():
        data = on_disk[path].read_bytes()
        assert entity["contentSize"] == str(len(data))
        assert entity["sha256"] == hashlib.sha256(data).hexdigest()
        assert abs(_iso(entity["dateModified"]).timestamp() - on_disk[path].stat().st_mtime) < 1e-3
    return by_id


def listed(by_id: dict, path: str) -> dict:
    return by_id[crate.entity_id(path)]


def http_bank(site, server, **overrides) -> None:
    values = {"protocol": "http", "server": f"127.0.0.1:{server.config.port}", "remote__dir": "/",
              "remote__files": "^test.*", "local__files": "^test.*"}
    site.add_bank("local", **{**values, **overrides})


# --- what an update writes -----------------------------------------------------------------------


async def test_an_update_over_http_writes_a_provenance_file_that_validates(site):
    big = site.remote / "test_big.bin"  # above inline_write_max: through a part file
    big.write_bytes(hashlib.sha256(b"big").digest() * 12_000)
    server = await http_server.start(site.remote, Faults(), protocol="http")
    try:
        http_bank(site, server)
        outcome = await site.update("local", publish=True)
    finally:
        await server.close()
    assert outcome.ok and outcome.updated, outcome.error
    release_dir = outcome.release_dir
    by_id = validate(release_dir)
    assert set(files_on_disk(release_dir)) == {"flat/test.fasta", "flat/test2.fasta", "flat/test_100.txt",
                                               "flat/test_big.bin"}

    downloaded = listed(by_id, "flat/test2.fasta")
    assert downloaded["url"] == f"http://127.0.0.1:{server.config.port}/test2.fasta"
    remote = site.remote / "test2.fasta"
    # the remote date, as the index page gives it (to the minute)
    assert abs(crate.from_iso(downloaded["dateModified"]) - remote.stat().st_mtime) < 60
    # test.fasta came out of test.fasta.gz (extracted, the archive deleted): no URL of its own
    assert "url" not in listed(by_id, "flat/test.fasta")

    root = by_id["./"]
    assert root["version"] == outcome.release and root["biomaj:bank"] == "local"
    assert root["isBasedOn"] == {"@id": f"http://127.0.0.1:{server.config.port}/"}
    update = by_id["#update"]
    assert update["identifier"] == str(outcome.session_id) and update["result"] == {"@id": "./"}
    bank_file = site.conf / "local.properties"
    assert by_id["#bank-file"]["sha256"] == hashlib.sha256(bank_file.read_bytes()).hexdigest()
    assert by_id["#biomaj"]["version"]

    # the downloaders hashed every file as it streamed in, through a part file or written whole on
    # their event loop, and the session's file list keeps it: the provenance step reads none again
    records = {r["save_as"]: r for r in Bank.load(site.global_properties, "local").read_file_list(outcome.session_id)}
    assert records["test_big.bin"]["digest"]["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert records["test2.fasta"]["digest"]["sha256"] == hashlib.sha256(remote.read_bytes()).hexdigest()
    assert downloaded["sha256"] == hashlib.sha256(remote.read_bytes()).hexdigest()
    assert records["test2.fasta"]["url"] == downloaded["url"]


async def test_no_secret_reaches_the_provenance_file(site):
    """The server's credentials, secret process arguments: none in the file."""
    password, process_secret = "s3cret-Pa55", "hunter2-xyz"
    server = await http_server.start(site.remote, Faults(), protocol="http", auth=("reader", password))
    try:
        http_bank(site, server, server__credentials=f"reader:{password}",
                  db__pre__process="META0", META0="PROC0", PROC0__name="login",
                  PROC0__exe="echo", PROC0__args=f"--password={process_secret} --api-key {process_secret} "
                                                f"ftp://me:{process_secret}@host/ in $datadir",
                  PROC0__type="info", PROC0__desc="echo")
        outcome = await site.update("local")
    finally:
        await server.close()
    assert outcome.ok, outcome.error
    text = (outcome.release_dir / crate.FILE_NAME).read_text(encoding="utf-8")
    for secret in (password, process_secret, "reader:"):
        assert secret not in text
    by_id = validate(outcome.release_dir)
    action = by_id["#process/preprocess/META0_PROC0"]
    assert action["biomaj:arguments"][:3] == ["--password=***", "--api-key", "***"]
    assert action["biomaj:arguments"][3] == "ftp://me:***@host/"
    assert action["biomaj:exitCode"] == 0 and action["actionStatus"] == {"@id": crate.COMPLETED}
    assert by_id[action["instrument"]["@id"]] == {"@id": action["instrument"]["@id"],
                                                 "@type": "SoftwareApplication", "name": "echo"}
    assert {"@id": action["@id"]} in by_id["./"]["mentions"]
    assert listed(by_id, "flat/test2.fasta")["url"].startswith(f"http://127.0.0.1:{server.config.port}/")


async def test_every_process_that_ran_is_listed_and_what_it_made_too(site):
    process = site.root / "process" / "test.sh"
    process.write_text("#!/bin/sh\nmkdir -p \"$datadir/$dirversion/future_release/out\"\n"
                       "echo made > \"$datadir/$dirversion/future_release/out/a dat%.txt\"\n"
                       "echo made > \"$datadir/$dirversion/future_release/x:y.txt\"\n")
    process.chmod(process.stat().st_mode | stat.S_IXUSR)
    site.add_bank("localprocess")
    outcome = await site.update("localprocess")
    assert outcome.ok, outcome.error
    by_id = validate(outcome.release_dir)
    assert listed(by_id, "out/a dat%.txt")["@id"] == "out/a%20dat%25.txt"  # RO-Crate's escaping
    assert listed(by_id, "x:y.txt")["@id"] == "x%3Ay.txt"  # not a URI of scheme "x"
    assert "proc1.txt" in files_on_disk(outcome.release_dir)
    actions = {e["name"]: e for e in by_id.values() if "CreateAction" in _types(e) and e["@id"] != "#update"}
    assert set(actions) == {"preprocess process META0_PROC0", "postprocess process META0_PROC0",
                            "postprocess process META1_PROC1", "postprocess process META1_PROC2",
                            "postprocess process META2_PROC3", "postprocess process META3_PROC4",
                            "postprocess process META3_PROC5"}
    three = actions["postprocess process META2_PROC3"]
    assert three["description"] == "echo three" and three["biomaj:exitCode"] == 0
    assert _iso(three["startTime"]) <= _iso(three["endTime"])


async def test_a_file_linked_from_the_previous_release_takes_its_sha256_from_there(site):
    """Not read again: the previous provenance file's sha256 stands while the file has the same
    inode (or size and date). Shown by a sha256 planted in the previous file: it is carried over."""
    site.add_bank("local")
    first = await site.update("local")
    assert first.ok, first.error
    document_path = first.release_dir / crate.FILE_NAME
    document = json.loads(document_path.read_text())
    planted = "0" * 64
    for entity in document["@graph"]:
        if entity["@id"] == "flat/test_100.txt":
            entity["sha256"] = planted
    document_path.write_text(json.dumps(document))
    new = site.remote / "test_new.txt"
    new.write_text("a new file\n")
    later = time.time() + 86400 * 3  # a newer date: a new release, named after it
    os.utime(new, (later, later))

    second = await site.update("local")
    assert second.ok and second.updated and second.release != first.release, second.error
    old, linked = first.release_dir / "flat/test_100.txt", second.release_dir / "flat/test_100.txt"
    assert os.path.samestat(old.stat(), linked.stat())  # reused by hard link
    text = json.loads((second.release_dir / crate.FILE_NAME).read_text())
    by_id = {e["@id"]: e for e in text["@graph"]}
    assert by_id["flat/test_100.txt"]["sha256"] == planted
    assert by_id["flat/test_new.txt"]["sha256"] == hashlib.sha256(b"a new file\n").hexdigest()


async def test_the_release_is_not_published_when_its_provenance_file_cannot_be_written(site):
    process = site.root / "process" / "test.sh"
    process.write_text(f"#!/bin/sh\nmkdir -p \"$datadir/$dirversion/future_release/{crate.FILE_NAME}\"\n")
    process.chmod(process.stat().st_mode | stat.S_IXUSR)
    site.add_bank("localprocess")
    outcome = await site.update("localprocess", publish=True)
    assert not outcome.ok and outcome.failed_task == "publish"
    assert "provenance file" in outcome.error and crate.FILE_NAME in outcome.error
    assert not (site.bank_dir("localprocess") / "current").exists()
    assert (await site.doc("localprocess"))["production"] == []


async def test_provider_checksums_are_recorded_and_repair_checks_them(site, tmp_path):
    """An NCBI-shaped tree with md5checksums.txt over HTTP: each downloaded file's md5 is recorded
    beside its sha256; a damaged file is fetched again, checked against both."""
    from biomaj.workflow import runner
    from tests.workflow.test_checksum_manifests import BANK, md5, ncbi_bank, ncbi_tree

    files, faults = ncbi_tree(tmp_path / "ncbi"), Faults()
    server = await http_server.start(tmp_path / "ncbi", faults, protocol="http")
    ncbi_bank(site, server, "http")
    try:
        outcome = await site.update(BANK)
        assert outcome.ok, outcome.error
        by_id = validate(outcome.release_dir)
        for name, data in files.items():
            entity = listed(by_id, f"flat/{name}")
            assert entity["biomaj:providerChecksum"] == f"md5:{md5(data)}"
            assert entity["url"] == f"http://127.0.0.1:{server.config.port}/{name}"

        damaged = outcome.release_dir / "flat" / next(iter(files))
        damaged.write_bytes(b"not the file\n")
        faults.transfers.clear()
        repaired = await runner.repair(site.context(), BANK)
        assert repaired.ok and repaired.details["fetched"] == [f"flat/{next(iter(files))}"], repaired.error
        assert dict(faults.transfers) == {next(iter(files)): 1}
        assert damaged.read_bytes() == files[next(iter(files))]
    finally:
        await server.close()


# --- the checker refuses what is not a provenance file -----------------------------------------


def _valid() -> dict:
    release = crate.Release(bank="b", release="1", published=time.time(), description="d")
    release.files["flat/a"] = crate.FileEntry("flat/a", 1, "a" * 64, time.time())
    return crate.build(release)


@pytest.mark.parametrize("break_it, problem", [
    (lambda d: d.update({"@context": "https://schema.org/"}), "@context"),
    (lambda d: d["@graph"].pop(0), "no metadata descriptor"),
    (lambda d: d["@graph"][1].pop("license"), "no license"),
    (lambda d: d["@graph"][1].update(datePublished="yesterday"), "datePublished"),
    (lambda d: d["@graph"][1]["hasPart"].append({"@id": "flat/ghost"}), "not an entity"),
    (lambda d: d["@graph"][-1].update({"@id": "../../etc/passwd"}), "not an entity"),
    (lambda d: d["@graph"][-1].pop("sha256"), "no sha256"),
    (lambda d: d["@graph"].append(dict(d["@graph"][-1])), "appears twice"),
])
def test_the_checker_refuses_a_broken_document(break_it, problem):
    document = _valid()
    assert crate.problems(document) == []
    break_it(document)
    found = crate.problems(document)
    assert any(problem in text for text in found), found
    with pytest.raises(crate.CrateError):
        crate.parse(document)


def test_paths_that_leave_the_release_are_no_paths():
    for identifier in ("../x", "/etc/passwd", "flat/../../x", "https://example.org/x", "#update", "a//b", ""):
        assert crate.relative_path(identifier) is None, identifier
    assert crate.relative_path("out/a%20b.txt") == "out/a b.txt"


def test_a_job_result_keeps_a_thousand_names_of_each_kind_and_the_whole_counts():
    from biomaj.cli.bank_ops import _verify_lines
    from biomaj.workflow import integrity

    report = integrity.Report("1", files=2000, missing=[f"flat/{i}" for i in range(1500)], extra=["flat/x"])
    doc = report.to_dict()
    assert (doc["counts"], len(doc["missing"]), doc["ok"]) == (
        {"missing": 1500, "changed": 0, "extra": 1, "unreadable": 0}, 1000, False)
    text = _verify_lines("alu", json.loads(json.dumps(doc)))
    assert text.splitlines()[0] == "alu: release 1: 1500 missing, 1 extra"
    assert text.splitlines()[-1] == "  ... and 500 more missing"
