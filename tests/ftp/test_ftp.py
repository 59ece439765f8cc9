"""The ftp role through a real FTP client (Python's ftplib) for each kind of user: what is listed and
downloaded, logins (BioMAJ 3's W31 fixed), read-only, traversal, REST, the passive range, the logs."""

from __future__ import annotations

import ftplib
import io
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from biomaj.protocols.ftp_listing import parse_list_line
from tests.servers.published_tree import SECRET, plant_escape_attempts, tree

from .conftest import PASSIVE_PORTS, Site, release_dir

WHO = ("anonymous", "user", "owner", "admin")
SEES_SECRET = {"anonymous": False, "user": False, "owner": True, "admin": True}
NOT_FOUND = "550 No such file or directory."


def download(ftp: ftplib.FTP, path: str, rest: int | None = None) -> bytes:
    data = bytearray()
    ftp.retrbinary(f"RETR {path}", data.extend, rest=rest)
    return bytes(data)


def refused(call, *args) -> str:
    """The 5xx reply a call gets (it must get one)."""
    with pytest.raises(ftplib.error_perm) as caught:
        call(*args)
    return str(caught.value)


# --- what each user sees -------------------------------------------------------------------------


async def test_anonymous_lists_and_downloads_a_public_bank(ftp_site: Site):
    site = ftp_site
    release = await release_dir(site.node, "example")
    expected = tree(release)
    assert release.name == "example_1" and len(expected) >= 3

    def scenario():
        with site.login("anonymous") as ftp:
            top = ftp.nlst(), ftp.nlst("/example"), ftp.pwd()
            files = {(prefix, name): download(ftp, f"/example/{prefix}/{name}")
                     for prefix in ("current", "example_1") for name in expected}
            facts = dict(ftp.mlsd("/example/current/flat"))
            lines: list[str] = []
            ftp.cwd("/example/current")
            ftp.retrlines("LIST flat", lines.append)
            names = ftp.nlst("flat")
            return top, files, facts, lines, names, ftp.size("flat/release.txt"), ftp.sendcmd("MDTM flat/release.txt")

    top, files, facts, lines, names, size, mdtm = await site.run(scenario)
    assert top == (["example"], ["current", "example_1"], "/")  # secret is private: not listed
    assert files == {(prefix, name): data for prefix in ("current", "example_1") for name, data in expected.items()}
    flat = {name[len("flat/"):]: data for name, data in expected.items() if name.startswith("flat/")}
    assert set(expected) - {f"flat/{name}" for name in flat} == {"ro-crate-metadata.json"}  # and its provenance
    assert {name: (f["type"], int(f["size"]), f["perm"]) for name, f in facts.items()} == \
        {name: ("file", len(data), "r") for name, data in flat.items()}
    assert sorted(names) == sorted(flat)
    parsed = {e.path: e for e in (parse_list_line(line.encode()) for line in lines)}  # biomaj's own LIST parser
    assert {name: e.size for name, e in parsed.items()} == {name: len(data) for name, data in flat.items()}
    for name, entry in parsed.items():  # UTC, to the minute
        assert int(entry.mtime) // 60 == int(os.stat(release / "flat" / name).st_mtime) // 60
    assert size == len(flat["release.txt"])
    assert mdtm == "213 " + time.strftime("%Y%m%d%H%M%S", time.gmtime(os.stat(release / "flat/release.txt").st_mtime))


@pytest.mark.parametrize("who", WHO)
async def test_a_private_bank_is_seen_by_its_owner_and_the_admins_only(ftp_site: Site, who):
    site = ftp_site
    expected = (await release_dir(site.node, "secret") / "flat" / "release.txt").read_bytes()

    def scenario():
        with site.login(who) as ftp:
            top = ftp.nlst()
            if not SEES_SECRET[who]:
                answers = [refused(ftp.cwd, "/secret"), refused(ftp.cwd, "/secret/current"),
                           refused(download, ftp, "/secret/current/flat/release.txt"),
                           refused(ftp.size, "/secret/current/flat/release.txt"),
                           refused(ftp.nlst, "/secret"), refused(ftp.sendcmd, "MLST /secret"),
                           refused(ftp.cwd, "/nope")]  # the same answer as a bank that does not exist
                return top, answers, ftp.pwd()
            ftp.cwd("/secret/current/flat")
            return top, download(ftp, "release.txt"), ftp.nlst("/secret")

    top, second, third = await site.run(scenario)
    if SEES_SECRET[who]:
        assert top == ["example", "secret"]
        assert second == expected and third == ["current", "secret_1"]
    else:
        assert top == ["example"]
        assert set(second) == {NOT_FOUND} and third == "/"


async def test_logins_need_the_users_own_api_key_and_say_nothing_more(ftp_site: Site):
    site = ftp_site

    def scenario():
        answers = []
        for login, password in (("owner", "nope"), ("owner", site.keys["user"]), ("nobody", site.keys["owner"]),
                                ("owner", ""), ("admin", site.keys["owner"])):
            with site.connect() as ftp:
                answers.append(refused(ftp.login, login, password))
        with site.connect() as ftp:  # not logged in: nothing but USER, PASS and small talk
            before = [refused(ftp.sendcmd, command) for command in ("PWD", "CWD /example", "SIZE /example", "PASV")]
            ftp.sendcmd("NOOP")
        with site.connect() as ftp:  # three refusals close the session
            for _ in range(2):
                refused(ftp.login, "owner", "nope")
            assert refused(ftp.login, "owner", "nope") == "530 Login incorrect."
            with pytest.raises((EOFError, OSError)):
                ftp.sendcmd("NOOP")
        with site.connect() as ftp:  # a refusal does not spoil the next try
            refused(ftp.login, "owner", "nope")
            ftp.login("owner", site.keys["owner"])
            return answers, before, ftp.nlst()

    answers, before, banks = await site.run(scenario)
    assert set(answers) == {"530 Login incorrect."}
    assert all(answer.startswith("530 ") for answer in before)
    assert banks == ["example", "secret"]


async def test_anonymous_login_can_be_turned_off(ftp_site: Site):
    site = ftp_site
    site.actor.server.user_manager.anonymous = False  # what ftp.anonymous: false builds

    def scenario():
        answers = []
        for name in ("anonymous", "ftp", "biomaj_default"):
            with site.connect() as ftp:
                answers.append(refused(ftp.login, name, "me@example.org"))
        with site.login("owner") as ftp:
            return answers, ftp.nlst()

    answers, banks = await site.run(scenario)
    assert set(answers) == {"530 Login incorrect."} and banks == ["example", "secret"]


# --- read-only ------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


@pytest.mark.parametrize("who", ["anonymous", "owner", "admin"])
async def test_no_command_writes(ftp_site: Site, who):
    site = ftp_site
    before = snapshot(site.root)

    def scenario():
        answers = []
        with site.login(who) as ftp:
            ftp.cwd("/example/current/flat")
            for target in ("new.txt", "release.txt", "/new.txt", "/example/new.txt"):
                answers.append(refused(ftp.storbinary, f"STOR {target}", io.BytesIO(b"written")))
                answers.append(refused(ftp.storbinary, f"APPE {target}", io.BytesIO(b"written")))
            answers.append(refused(ftp.storbinary, "STOU", io.BytesIO(b"written")))
            for command in ("DELE release.txt", "DELE /example/current/flat/example.fasta", "MKD new", "MKD /new",
                            "XMKD new", "RMD /example/current/flat", "RMD /example", "XRMD /example/current",
                            "RNFR release.txt", "RNTO renamed.txt", "RNFR /example", "SITE CHMOD 777 release.txt",
                            "SITE EXEC id", "ALLO 1000", "MFMT 20000101000000 release.txt"):
                answers.append(refused(ftp.sendcmd, command))
            return answers, ftp.nlst()

    answers, names = await site.run(scenario)
    assert all(a.startswith(("550 ", "502 ")) for a in answers), answers
    assert "new.txt" not in names and "renamed.txt" not in names
    assert snapshot(site.root) == before


# --- traversal ------------------------------------------------------------------------------------


async def test_no_path_leaves_the_published_tree(ftp_site: Site):
    site = ftp_site
    root = site.root
    flat = await release_dir(site.node, "example") / "flat"
    plant_escape_attempts(root, flat)
    received: list[bytes] = []

    def scenario():
        answers = {}
        with site.login("admin") as ftp:
            for up in ("..", "../..", "/..", "../../../../.."):
                ftp.cwd("/")
                ftp.cwd(up)  # going up stops at the root, as in a chroot
                answers[f"CWD {up}"] = ftp.pwd()
            ftp.sendcmd("CDUP")
            answers["CDUP"] = ftp.pwd()
            ftp.cwd("/example/current/flat")
            for path in ("../../../config.yml", "../../../../config.yml", "/../config.yml", "/../../secret.txt",
                         "../../../secret.txt", "..\\..\\..\\secret.txt", "escape", "escdir/secret.txt",
                         "escdir/config.yml", "older/secret.txt", ".hidden", "./.hidden", "loop",
                         str(root / "secret.txt"), "/" + str(root / "secret.txt"), "release.txt\x00.fasta",
                         "/example/example_0/secret.txt", "/example/RELEASE.txt", "/example/offline"):
                answers[f"RETR {path}"] = refused(lambda p: ftp.retrbinary(f"RETR {p}", received.append), path)
                answers[f"SIZE {path}"] = refused(ftp.size, path)
            for path in ("escdir", "older", "/example/example_0", ".hidden", "../../../.."):
                if path != "../../../..":
                    answers[f"CWD {path}"] = refused(ftp.cwd, path)
            ftp.retrlines("LIST", lambda line: received.append(line.encode()))
            names = ftp.nlst()
            facts = dict(ftp.mlsd())
            inner = download(ftp, "inner")
        return answers, names, facts, inner

    answers, names, facts, inner = await site.run(scenario)
    assert {answers[k] for k in ("CWD ..", "CWD ../..", "CWD /..", "CWD ../../../../..", "CDUP")} == {"/"}
    refusals = {k: v for k, v in answers.items() if not k.startswith(("CWD ..", "CWD /..", "CDUP"))}
    assert all(v.startswith("550 ") for v in refusals.values()), refusals
    assert not any(SECRET.encode() in chunk for chunk in received)
    assert set(names) == set(facts) == {"example.fasta", "example2.fasta", "inner", "release.txt"}
    assert inner == (flat / "example.fasta").read_bytes()


# --- transfers ------------------------------------------------------------------------------------


async def test_rest_resumes_a_download(ftp_site: Site):
    site = ftp_site
    data = (await release_dir(site.node, "example") / "flat" / "example.fasta").read_bytes()

    def scenario():
        with site.login("anonymous") as ftp:
            ftp.cwd("/example/current/flat")
            tails = {offset: download(ftp, "example.fasta", rest=offset) for offset in (0, 1, 100, len(data))}
            beyond = refused(download, ftp, "example.fasta", len(data) + 1)
            whole = download(ftp, "example.fasta")  # REST counts for one RETR only
            return tails, beyond, whole

    tails, beyond, whole = await site.run(scenario)
    assert tails == {offset: data[offset:] for offset in (0, 1, 100, len(data))}
    assert beyond.startswith("554 ") and whole == data


async def test_passive_ports_come_from_the_configured_range(ftp_site: Site):
    site = ftp_site
    assert len(site.passive) == PASSIVE_PORTS

    def scenario():
        sessions = [site.login("anonymous") for _ in range(PASSIVE_PORTS)]
        try:
            ports = []
            for ftp in sessions:
                ports.append(ftp.makepasv()[1])
                ports.append(int(ftp.sendcmd("EPSV").rsplit("|", 2)[1]))  # the session's port, again
                assert ftp.nlst() == ["example"]
            with site.login("anonymous") as extra:  # every port is held by a session
                with pytest.raises((ftplib.error_temp, EOFError)):
                    extra.makepasv()
            return ports
        finally:
            for ftp in sessions:
                ftp.close()

    ports = await site.run(scenario)
    assert set(ports) == set(site.passive)
    assert await site.run(lambda: site.login("anonymous").nlst()) == ["example"]  # ports are given back


async def test_a_data_connection_from_another_address_is_closed(ftp_site: Site):
    site = ftp_site

    def scenario():
        with site.login("admin") as ftp:
            host, port = ftp.makepasv()
            with socket.create_connection((host, port), timeout=5, source_address=("127.0.0.2", 0)) as thief:
                stolen = thief.recv(1024)  # closed at once: b""
            return stolen, ftp.nlst("/secret")

    stolen, names = await site.run(scenario)
    assert stolen == b"" and names == ["current", "secret_1"]


async def test_logins_and_downloads_are_logged_without_the_key(ftp_site: Site, caplog):
    site = ftp_site
    caplog.set_level(logging.INFO, logger="biomaj.ftp")

    def scenario():
        with site.connect() as ftp:
            refused(ftp.login, "owner", "wrong-" + site.keys["user"])
        with site.login("owner") as ftp:
            return download(ftp, "/secret/current/flat/release.txt")

    data = await site.run(scenario)
    records = [r for r in caplog.records if r.name.startswith("biomaj.ftp")]
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in records)
    assert all(key not in text for key in site.keys.values())
    login = next(r for r in records if r.getMessage() == "ftp: logged in")
    assert login.levelno == logging.INFO and login.user == "owner" and login.client == "127.0.0.1"
    refusal = next(r for r in records if r.getMessage() == "ftp: login refused")
    assert refusal.levelno == logging.WARNING and refusal.user == "owner"
    sent = next(r for r in records if r.getMessage() == "ftp: download")
    assert (sent.user, sent.file, sent.bytes, sent.offset) == ("owner", "/secret/current/flat/release.txt",
                                                                len(data), 0)


async def test_a_silent_session_is_closed_but_not_during_a_download(ftp_site: Site):
    site = ftp_site
    site.actor.server.idle = 0.3
    big = await release_dir(site.node, "example") / "flat" / "big.bin"
    big.write_bytes(os.urandom(32 * 1024 * 1024))  # more than the socket buffers hold: the server waits on us

    def scenario():
        with site.login("anonymous") as ftp:
            ftp.sendcmd("TYPE I")
            with ftp.transfercmd("RETR /example/current/flat/big.bin") as data:
                received = bytearray(data.recv(65536))
                time.sleep(0.6)  # longer than the idle timeout, while the download runs
                while block := data.recv(1 << 20):
                    received.extend(block)
            reply = ftp.voidresp()
            time.sleep(0.6)
            with pytest.raises(ftplib.error_temp) as closing:
                ftp.sendcmd("NOOP")
            return received, reply, str(closing.value)

    received, reply, closing = await site.run(scenario)
    assert received == big.read_bytes() and reply.startswith("226")
    assert closing.startswith("421 ")
