"""The ftp role in a node and in `biomaj serve`: off unless enabled, a clear error on a taken port, the
settings, and the acceptance test: a second biomaj mirrors a bank over the FTP view with protocol=ftp."""

from __future__ import annotations

import asyncio
import ftplib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import PurePosixPath

import pytest
import yaml

from biomaj.config.scaffold import init_root
from biomaj.config.service import config_from_mapping, load_config
from biomaj.errors import BiomajError, ConfigError
from biomaj.ftp.view import virtual_path
from biomaj.jobs import submit_job
from biomaj.node.serve import Node
from tests.conftest import free_port
from tests.servers.published_tree import mirror_bank_file, tree

from .conftest import Site, release_dir


def test_virtual_paths_go_up_no_further_than_the_root():
    here = PurePosixPath("/example/current")
    assert virtual_path(here, "flat/a.fa") == PurePosixPath("/example/current/flat/a.fa")
    assert virtual_path(here, "..") == PurePosixPath("/example")
    assert virtual_path(here, "../../../../etc/passwd") == PurePosixPath("/etc/passwd")  # a bank named etc
    assert virtual_path(here, "/./x/./y/..") == PurePosixPath("/x")
    assert virtual_path(here, "") == here


def test_ftp_settings():
    ftp = config_from_mapping({}, None, environ={}).settings.ftp
    assert (ftp.enabled, ftp.host, ftp.port, ftp.data_ports, ftp.anonymous) == (False, "127.0.0.1", 2121, None, True)
    ftp = config_from_mapping({"ftp": {"passive_ports": "30000-30009"}}, None, environ={}).settings.ftp
    assert ftp.data_ports == range(30000, 30010)
    upstream = {"ftp": {"listen": "0.0.0.0", "port": 21, "passive_ports_start": 60000, "passive_ports_end": 60099}}
    ftp = config_from_mapping(upstream, None, environ={"MASQUERADE_ADDRESS": "203.0.113.7"}).settings.ftp
    assert (ftp.host, ftp.port, ftp.data_ports, ftp.masquerade_address) == ("0.0.0.0", 21, range(60000, 60100),
                                                                          "203.0.113.7")
    for bad, message in (({"passive_ports": "30009-30000"}, r"ftp\.passive_ports"),
                         ({"passive_ports": "many"}, r"(?i)ftp\.passive_ports: .*first-last"),
                         ({"masquerade_address": "ftp.example.org"}, r"(?i)ftp\.masquerade_address: .*ipv4"),
                         ({"prot": 21}, r"ftp\.prot: unknown key")):
        with pytest.raises(ConfigError, match=message):
            config_from_mapping({"ftp": bad}, None, environ={})


async def test_the_ftp_role_does_not_listen_unless_enabled(tmp_path, caplog):
    root = tmp_path / "root"
    init_root(root, web_port=0)
    config = load_config(root / "config.yml", environ={})
    node = Node(config, ["ftp"])
    await node.start()
    try:
        [actor] = [a for a in node.actors if a.name == "ftp"]
        assert actor.server is None and actor.describe()["listen"] is None and actor.in_flight == 0
    finally:
        await node.stop()
    assert any(r.levelno == logging.WARNING and "ftp.enabled is false" in r.getMessage() for r in caplog.records)


async def test_a_taken_port_is_a_clear_error(tmp_path):
    root = tmp_path / "root"
    init_root(root, web_port=0)
    config = load_config(root / "config.yml", environ={})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config.settings.ftp.enabled, config.settings.ftp.port = True, port
        node = Node(config, ["ftp"])
        with pytest.raises(BiomajError, match=f"ftp: cannot listen on 127.0.0.1:{port}: .*ftp.port"):
            await node.start()
    assert node.actors == [] and node.store is None


async def test_stop_lets_a_running_download_finish(ftp_site: Site):
    site = ftp_site
    big = await release_dir(site.node, "example") / "flat" / "big.bin"
    big.write_bytes(os.urandom(32 * 1024 * 1024))  # more than the socket buffers hold
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def scenario():
        ftp = site.login("anonymous")
        try:
            ftp.sendcmd("TYPE I")
            with ftp.transfercmd("RETR /example/current/flat/big.bin") as data:
                received = bytearray(data.recv(65536))
                loop.call_soon_threadsafe(started.set)
                time.sleep(0.5)  # the node stops meanwhile
                while block := data.recv(1 << 20):
                    received.extend(block)
            reply = ftp.voidresp()
            with pytest.raises(ftplib.error_temp) as closing:
                ftp.sendcmd("NOOP")
            return bytes(received), reply, str(closing.value)
        finally:
            ftp.close()

    client = asyncio.create_task(site.run(scenario))
    await started.wait()
    assert site.actor.in_flight == 1
    await site.node.stop()  # within the node's grace (10 s by default)
    received, reply, farewell = await client
    assert received == big.read_bytes() and reply.startswith("226")
    assert farewell.startswith("421 ")


# --- a mirror of a mirror, over FTP ---------------------------------------------------------------

@pytest.mark.parametrize("bank, login", [("example", None), ("secret", "owner"), ("secret", None)])
async def test_a_bank_mirrors_another_servers_ftp_view(ftp_site: Site, tmp_path, bank, login):
    """biomaj's own ftp protocol (MLSD, SIZE, REST ...) against the FTP view: a public bank anonymously, a
    private one with server.credentials=owner:apikey, and not without them."""
    site = ftp_site
    expected = tree(await release_dir(site.node, bank))
    root = tmp_path / "mirror-root"
    init_root(root, web_port=0)
    credentials = ""
    if login:  # release.credentials: remote_config(prefix="release.") does not fall back to server.credentials
        credentials = f"server.credentials={login}:{site.keys[login]}\nrelease.credentials={login}:{site.keys[login]}"
    (root / "conf" / "mirror.properties").write_text(mirror_bank_file("ftp", site.port, f"/{bank}/current/", credentials))
    node = Node(load_config(root / "config.yml", environ={}), ["manager", "download", "process"])
    await node.start()
    try:
        job_id = await submit_job(node.store, node.bus, "update", "mirror", {}, "mirror-admin", admin=True)
        async with asyncio.timeout(90):
            while (job := await node.store.get_job(job_id))["state"] not in ("done", "failed", "cancelled"):
                await asyncio.sleep(0.1)  # the manager runs the job; its record is what tells
        if bank == "secret" and not login:
            assert job["state"] == "failed" and "550" in str(job), job
            return
        assert job["state"] == "done", job
        mirrored = await release_dir(node, "mirror")
    finally:
        await node.stop()
    assert tree(mirrored / "flat") == expected  # the remote tree, under the mirror's flat/


# --- through `biomaj serve --all` -----------------------------------------------------------------


def test_biomaj_serve_all_serves_ftp_when_enabled(tmp_path, biomaj_cmd):
    from tests.servers.biomaj_service import KEY_LINE, Server, clean_env

    root = tmp_path / "root"
    web_port, ftp_port = free_port(), free_port()
    init_root(root, web_port=web_port)
    config = root / "config.yml"
    settings = yaml.safe_load(config.read_text())
    settings["ftp"].update(enabled=True, port=ftp_port)
    config.write_text(yaml.safe_dump(settings))
    made = subprocess.run([*biomaj_cmd, "-c", str(config), "users", "create", "owner", "--admin"],  # a bank with no owner is the admins'
                          capture_output=True, text=True,
                          timeout=60, env=clean_env())
    assert made.returncode == 0, made.stderr
    key = KEY_LINE.search(made.stdout).group(1)
    log = root / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*biomaj_cmd, "-c", str(config), "serve", "--all"], stdout=out,
                                stderr=subprocess.STDOUT, env=clean_env())
    server = Server(f"http://127.0.0.1:{web_port}", root, config, {"owner": key}, proc, log)
    try:
        end = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(server.url + "/healthz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < end, log.read_text()
                time.sleep(0.1)  # the child is starting
        request = urllib.request.Request(server.url + "/api/v1/banks/example/update", data=b"{}", method="POST",
                                         headers={"Authorization": f"APIKEY {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            job = server.wait_job(json.loads(response.read())["id"], "owner")
        assert job["state"] == "done", job
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", ftp_port, timeout=10)
            ftp.login("owner", key)
            data = bytearray()
            ftp.retrbinary("RETR /example/current/flat/release.txt", data.extend)
            banks = ftp.nlst()
        assert banks == ["example"] and bytes(data) == b"Release 1\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    text = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text
    assert "ftp actor listening" in text and "ftp: logged in" in text and key not in text
