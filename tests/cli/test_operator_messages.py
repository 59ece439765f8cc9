"""Error headlines lead with the cause, in the words an operator uses: real `biomaj ctl` runs of
the example bank of `biomaj init` against real servers on 127.0.0.1 (or none: a dead port)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.servers import http_server
from tests.servers.faults import Faults

ENV = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG")}


def _ctl(root: Path, biomaj_cmd: list[str], *args: str) -> list[str]:
    return [*biomaj_cmd, "-c", str(root / "config.yml"), "ctl", *args]


def _point_at(root: Path, protocol: str, port: int, **keys: str) -> None:
    """The example bank reads its remote (and its release file) from protocol://127.0.0.1:port/."""
    conf = root / "conf" / "example.properties"
    text = conf.read_text().replace("protocol=local", f"protocol={protocol}")
    text = re.sub(r"(?m)^server=.*$", f"server=127.0.0.1:{port}", text)
    text = re.sub(r"(?m)^remote\.dir=.*$", "remote.dir=/", text)
    for key, value in keys.items():
        text = re.sub(rf"(?m)^{re.escape(key)}=.*$", lambda _: f"{key}={value}", text)
    conf.write_text(text)


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return next(line for line in result.stderr.splitlines() if line.startswith("error: "))


def _dead_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_server_is_named_first(biomaj_root, biomaj_cmd):
    port = _dead_port()
    _point_at(biomaj_root, "ftp", port)
    result = subprocess.run(_ctl(biomaj_root, biomaj_cmd, "update", "example"), capture_output=True, text=True,
                            env=ENV, timeout=120)
    assert _error_line(result) == (f"error: update of example failed: release: cannot reach ftp://127.0.0.1:{port}: "
                                   "connection refused (while reading the release from release.file)")


def test_remote_files_matching_nothing_says_so(biomaj_root, biomaj_cmd):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(biomaj_root / "example-remote"))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        _point_at(biomaj_root, "http", port, **{"remote.files": r"^nomatch.*\.fasta$"})
        result = subprocess.run(_ctl(biomaj_root, biomaj_cmd, "update", "example"), capture_output=True, text=True,
                                env=ENV, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert _error_line(result) == (r"error: update of example failed: download: no remote file matches "
                                   rf"remote.files=^nomatch.*\.fasta$ in http://127.0.0.1:{port}/")


# --- Ctrl-C on a slow transfer, and a second update meanwhile --------------------------------------

BIG = "example-big.fasta"


async def _run(args: list[str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def _stalled_update(root: Path, biomaj_cmd: list[str]):
    """`ctl update example --follow` running, its big file stalled over HTTP after the first block."""
    remote = root / "example-remote"
    (remote / BIG).write_bytes(b">big\n" + b"ACGT" * (1 << 18))
    faults = Faults(stall={BIG: 60})
    server = await http_server.start(remote, faults, protocol="http")
    update = None
    try:
        _point_at(root, "http", server.config.port)
        update = await asyncio.create_subprocess_exec(*_ctl(root, biomaj_cmd, "update", "example", "--follow"),
                                                      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        await asyncio.wait_for(faults.started(BIG).wait(), 60)
        yield update
    finally:
        if update is not None and update.returncode is None:
            update.kill()
            await update.communicate()
        await server.close()


async def test_ctrl_c_says_cancelled_by_the_user_once(biomaj_root, biomaj_cmd):
    async with _stalled_update(biomaj_root, biomaj_cmd) as update:
        update.send_signal(signal.SIGINT)
        out, err = (text.decode() for text in await asyncio.wait_for(update.communicate(), 30))
    assert update.returncode == 1, out + err
    lines = err.splitlines()
    assert "cancelling update of example (Ctrl-C again to quit at once)" in lines
    assert "[example] cancelled by the user" in lines
    assert [line for line in lines if line.startswith("error: ")] == ["error: update of example cancelled by the user"]
    assert "cancelled: " not in err


async def test_a_second_update_is_an_update(biomaj_root, biomaj_cmd):
    async with _stalled_update(biomaj_root, biomaj_cmd) as update:
        code, _out, err = await _run(_ctl(biomaj_root, biomaj_cmd, "update", "example"))
        update.send_signal(signal.SIGINT)
        await asyncio.wait_for(update.communicate(), 30)
    assert code == 1 and re.fullmatch(
        r"error: an update of example is already queued or running \(job \w+\); "
        r"`biomaj ctl cancel example` stops it\n", err), err
