"""A real `biomaj serve --all` in a child process on a fresh `biomaj init` root, with users made by
`biomaj users create`: the server that remote clients (biomaj-cli, `biomaj ctl --proxy`) talk to."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port

KEY_LINE = re.compile(r"API key \(shown once, keep it safe\): (\S+)")


@dataclass
class Server:
    url: str
    root: Path
    config: Path
    keys: dict[str, str]  # user name -> API key
    proc: subprocess.Popen
    log: Path

    def get(self, path: str, who: str) -> dict:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"APIKEY {self.keys[who]}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_job(self, job_id: str, who: str, timeout: float = 120) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            job = self.get(f"/api/v1/jobs/{job_id}", who)
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.2)  # another process runs the job: polling its record is the way
        raise AssertionError(f"job {job_id} not over after {timeout}s: {job}")


def clean_env() -> dict[str, str]:
    """This process's environment without what would point a child at another installation."""
    return {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_PROXY", "BIOMAJ_APIKEY")}


@contextlib.contextmanager
def biomaj_server(root: Path, biomaj_cmd: list[str], users: dict[str, bool],
                  admins: list[str] | None = None) -> Iterator[Server]:
    """Serve a new root; ``users`` maps each user to create to whether it is an admin; ``admins``
    replaces config.yml's admin names. Stops the server on exit and checks it stopped cleanly."""
    from biomaj.config.scaffold import init_root

    port = free_port()
    init_root(root, web_port=port, web_host="127.0.0.1")
    config = root / "config.yml"
    if admins is not None:
        text = re.sub(r"admins: \[.*\]", "admins: " + json.dumps(admins), config.read_text(), count=1)
        config.write_text(text)
    keys = {}
    for name, admin in users.items():
        made = subprocess.run([*biomaj_cmd, "-c", str(config), "users", "create", name, *(["--admin"] if admin else [])],
                              capture_output=True, text=True, timeout=60, env=clean_env())
        assert made.returncode == 0, made.stderr
        keys[name] = KEY_LINE.search(made.stdout).group(1)
    log = root / "serve.log"
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen([*biomaj_cmd, "-c", str(config), "serve", "--all"], stdout=out,
                                stderr=subprocess.STDOUT, env=clean_env())
    server = Server(f"http://127.0.0.1:{port}", root, config, keys, proc, log)
    try:
        end = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"biomaj serve exited with {proc.returncode}: {log.read_text()}"
            try:
                with urllib.request.urlopen(server.url + "/healthz", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < end, f"biomaj serve did not answer: {log.read_text()}"
                time.sleep(0.1)  # the child is starting
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
