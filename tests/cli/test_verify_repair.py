"""`biomaj ctl verify` and `biomaj ctl repair` against a release's provenance file, end to end: the
installed console script on a fresh `biomaj init` root and its example bank (example.fasta,
example2.fasta.gz extracted to example2.fasta, release.txt), served by the project's real HTTP
server where files must be fetched again."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.servers import http_server
from tests.servers.faults import Faults

_SCRIPT = Path(sys.executable).with_name("biomaj")
BIOMAJ = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "biomaj"]
ENV = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG")}


def ctl_args(root: Path, *args: str) -> list[str]:
    return [*BIOMAJ, "-c", str(root / "config.yml"), "ctl", *args]


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(ctl_args(root, *args), capture_output=True, text=True, env=ENV, timeout=90)
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def arun(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`run` without blocking the event loop (the HTTP server lives in it)."""
    proc = await asyncio.create_subprocess_exec(*ctl_args(root, *args), env=ENV, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert b"Traceback" not in err, err.decode()
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def release_dir(root: Path, release: str = "1") -> Path:
    return root / "data" / "example" / f"example_{release}"


def flip_a_byte(path: Path, offset: int = 3) -> None:
    """Bit rot: one byte changed in place, the size and the date kept."""
    st = path.stat()
    with path.open("r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0x20]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def report_of(result: subprocess.CompletedProcess) -> list[dict]:
    return json.loads(result.stdout)["result"]["details"]["releases"]


def test_verify_passes_then_catches_a_flipped_byte_a_deleted_file_and_an_added_one(biomaj_root):
    root = biomaj_root
    assert run(root, "update", "example").returncode == 0
    passed = run(root, "verify", "example", "--progress-interval", "0")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.startswith("example: release 1: 3 files (") and "as recorded" in passed.stdout
    assert re.search(r"\[example\] verify 1: 3/3 files, .* read", passed.stderr), passed.stderr  # progress lines

    flat = release_dir(root) / "flat"
    flip_a_byte(flat / "example.fasta")
    flipped = run(root, "--json", "verify", "example")
    assert flipped.returncode == 1
    [report] = report_of(flipped)
    assert [c["path"] for c in report["changed"]] == ["flat/example.fasta"]
    assert report["changed"][0]["sha256"] != report["changed"][0]["expected_sha256"]
    assert report["missing"] == report["extra"] == [] and report["ok"] is False

    (flat / "release.txt").unlink()
    (flat / "added.txt").write_text("not from the remote\n")
    found = run(root, "--json", "verify", "example", "1")
    assert found.returncode == 1
    [report] = report_of(found)
    assert ([c["path"] for c in report["changed"]], report["missing"], report["extra"]) == (
        ["flat/example.fasta"], ["flat/release.txt"], ["flat/added.txt"])
    text = run(root, "verify", "example")
    assert text.returncode == 1
    assert text.stdout.splitlines()[0] == "example: release 1: 1 changed, 1 missing, 1 extra"
    assert "  missing     flat/release.txt" in text.stdout and "  extra       flat/added.txt" in text.stdout


def test_a_release_without_a_provenance_file_says_how_to_make_one(biomaj_root):
    root = biomaj_root
    assert run(root, "update", "example").returncode == 0
    (release_dir(root) / "ro-crate-metadata.json").unlink()  # as a release made before biomaj wrote them
    refused = run(root, "verify", "example")
    assert refused.returncode == 1
    assert "has no provenance file (ro-crate-metadata.json)" in refused.stdout
    assert "biomaj ctl verify example 1 --record" in refused.stdout
    recorded = run(root, "verify", "example", "--record")
    assert recorded.returncode == 0 and "provenance file written, 3 files" in recorded.stdout, recorded.stdout
    again = run(root, "verify", "example")
    assert again.returncode == 0, again.stdout


def test_verify_all_releases_and_an_unknown_one(biomaj_root):
    root = biomaj_root
    assert run(root, "update", "example").returncode == 0
    (root / "example-remote" / "release.txt").write_text("Release 2\n")
    assert run(root, "update", "example").returncode == 0
    every = run(root, "--json", "verify", "example", "--all")
    assert every.returncode == 0, every.stdout
    assert [(r["release"], r["ok"]) for r in report_of(every)] == [("1", True), ("2", True)]
    unknown = run(root, "verify", "example", "9")
    assert unknown.returncode == 2
    assert "no production release named 9 (releases: 1, 2)" in unknown.stderr


async def _serve_example(root: Path):
    faults = Faults()
    server = await http_server.start(root / "example-remote", faults, protocol="http")
    conf = root / "conf" / "example.properties"
    text = conf.read_text().replace("protocol=local", "protocol=http")
    text = re.sub(r"(?m)^server=.*$", f"server=127.0.0.1:{server.config.port}", text)
    conf.write_text(re.sub(r"(?m)^remote\.dir=.*$", "remote.dir=/", text))
    return server


def file_gets(server, since: int) -> list[str]:
    return [s["path"] for s in server.seen[since:] if s["method"] == "GET" and not s["path"].endswith("/")]


async def test_repair_fetches_again_only_the_changed_file_and_keeps_the_other_links(biomaj_root):
    root = biomaj_root
    server = await _serve_example(root)
    try:
        assert (await arun(root, "update", "example")).returncode == 0
        target = release_dir(root) / "flat" / "example.fasta"
        good = target.read_bytes()
        witness = root / "witness.fasta"  # another release's hard link to the same file
        os.link(target, witness)
        flip_a_byte(target)
        seen = len(server.seen)

        repaired = await arun(root, "repair", "example")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert repaired.stdout.strip() == "example: release 1 repaired, 1 files fetched again: flat/example.fasta"
        assert file_gets(server, seen) == ["/example.fasta"]  # nothing else is fetched
        assert target.read_bytes() == good
        assert witness.read_bytes() != good  # the old inode stays, untouched, with its other link
        assert not os.path.samestat(target.stat(), witness.stat())
        assert (await arun(root, "verify", "example")).returncode == 0

        (release_dir(root) / "flat" / "release.txt").unlink()
        seen = len(server.seen)
        again = await arun(root, "--json", "repair", "example")
        assert again.returncode == 0, again.stdout
        assert json.loads(again.stdout)["result"]["details"]["fetched"] == ["flat/release.txt"]
        assert file_gets(server, seen) == ["/release.txt"]
        nothing = await arun(root, "repair", "example")
        assert "3 files as recorded, nothing to repair" in nothing.stdout
    finally:
        await server.close()


async def test_repair_refuses_a_remote_file_that_is_not_the_recorded_one_any_more(biomaj_root):
    root = biomaj_root
    server = await _serve_example(root)
    try:
        assert (await arun(root, "update", "example")).returncode == 0
        flip_a_byte(root / "example-remote" / "example.fasta")  # the provider changed it, same size
        target = release_dir(root) / "flat" / "example.fasta"
        target.unlink()
        (release_dir(root) / "flat" / "example2.fasta").unlink()  # extracted from an archive: no URL
        failed = await arun(root, "repair", "example")
        assert failed.returncode == 1
        assert "flat/example.fasta: the remote file is not the recorded one any more" in failed.stderr
        assert "1 cannot be fetched again (flat/example2.fasta): no remote URL recorded" in failed.stderr
        assert not target.exists()  # nothing that is not the recorded file is put in the release
        assert not list((root / "data" / "example").glob(".biomaj-repair-*"))
    finally:
        await server.close()


def test_on_a_terminal_verify_draws_a_bar(biomaj_root):
    import pty

    root = biomaj_root
    assert run(root, "update", "example").returncode == 0
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(ctl_args(root, "verify", "example"), stdout=subprocess.PIPE, stderr=slave, env=ENV)
        os.close(slave)
        out, _ = proc.communicate(timeout=90)
        terminal = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end is closed: all read
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0 and out.decode().startswith("example: release 1: 3 files")
    assert re.search(rb"\r\[example\] verify 1 \[#{20}\] 3/3 files", terminal), terminal
