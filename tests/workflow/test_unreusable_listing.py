"""A web server whose index pages give no size nor date (Python's own http.server): its files
cannot be compared with the last release, so every update downloads them again. The update says
so, once, in the bank's session log and in `ctl update --follow`."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

NOTICE = ("the server gives no size nor date for 3 files: they cannot be compared with the last release, "
          "so they are downloaded again")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture
def http_server_root(biomaj_root: Path):
    """The example bank of `biomaj init`, served by Python's http.server on 127.0.0.1."""
    remote = biomaj_root / "example-remote"
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(remote)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conf = biomaj_root / "conf" / "example.properties"
    text = conf.read_text().replace("protocol=local", "protocol=http")
    text = re.sub(r"(?m)^server=.*$", f"server=127.0.0.1:{server.server_address[1]}", text)
    conf.write_text(re.sub(r"(?m)^remote\.dir=.*$", "remote.dir=/", text))
    try:
        yield biomaj_root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _update(root: Path, biomaj_cmd: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG")}
    result = subprocess.run([*biomaj_cmd, "-c", str(root / "config.yml"), "ctl", "update", "example", "--follow"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_every_update_says_once_why_nothing_is_reused(http_server_root, biomaj_cmd):
    root = http_server_root
    first = _update(root, biomaj_cmd)
    assert "cannot be compared" not in first.stderr  # nothing local yet: nothing to say

    (root / "example-remote" / "release.txt").write_text("Release 2\n")
    second = _update(root, biomaj_cmd)
    assert second.stderr.splitlines().count(f"[example] {NOTICE}") == 1, second.stderr
    logs = sorted((root / "log" / "example").glob("*/example.log"))
    assert len(logs) == 2
    assert "cannot be compared" not in logs[0].read_text()
    text = logs[1].read_text()
    assert text.count(NOTICE) == 1, text
    assert "3 to download, 0 already in the offline directory, 0 reused from the previous release" in text
