"""The real `biomaj serve` process: health, status, node registration, graceful stop on signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


class Server:
    """`biomaj serve` in a child process, with its output collected."""

    def __init__(self, cmd: list[str], config, *args: str):
        env = {k: v for k, v in os.environ.items() if k != "BIOMAJ_CONFIG"}
        self.port = yaml.safe_load(config.read_text())["web"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*cmd, "-c", str(config), "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    def wait_healthy(self, deadline: float = 20.0) -> dict:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                return get_json(f"{self.url}/healthz")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)  # the child is starting; nothing to join on across processes
        raise AssertionError("server did not answer /healthz in time")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float, str]:
        started = time.monotonic()
        self.proc.send_signal(signum)
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
            raise AssertionError(f"server did not stop within {timeout}s after {signum}: {err}")
        return self.proc.returncode, time.monotonic() - started, err


@pytest.fixture
def server_factory(biomaj_cmd):
    servers: list[Server] = []

    def start(config, *args: str) -> Server:
        server = Server(biomaj_cmd, config, *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_all_answers_and_stops_gracefully(biomaj_root, server_factory, signum):
    server = server_factory(biomaj_root / "config.yml", "--all")
    health = server.wait_healthy()
    assert health["status"] == "ok"
    ready = get_json(f"{server.url}/readyz")
    assert ready["status"] == "ok" and ready["checks"]["store"]["ok"]
    status = get_json(f"{server.url}/api/v1/status")
    assert [n["node_id"] for n in status["nodes"]] == [status["node"]]
    node = status["nodes"][0]
    assert node["roles"] == ["manager", "download", "process", "scheduler", "web", "ftp"]
    assert set(node["actors"]) == {"manager", "downloader", "processor", "scheduler", "web", "ftp"}
    assert node["pid"] == server.proc.pid
    code, _elapsed, err = server.stop(signum)
    assert code == 0, err
    assert "stopping" in err and "Traceback" not in err
    assert "actor auth" not in err  # authentication is a library of web and ftp, not an idle actor


def test_ctl_nodes_sees_the_running_server(biomaj_root, server_factory, biomaj_cmd):
    config = biomaj_root / "config.yml"
    server = server_factory(config, "--role", "web,manager")
    server.wait_healthy()
    result = subprocess.run([*biomaj_cmd, "-c", str(config), "ctl", "--json", "nodes"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)
    assert len(nodes) == 1
    assert nodes[0]["roles"] == ["web", "manager"] and nodes[0]["pid"] == server.proc.pid
    table = subprocess.run([*biomaj_cmd, "-c", str(config), "ctl", "nodes"], capture_output=True, text=True, timeout=30)
    assert str(server.proc.pid) in table.stdout and "web,manager" in table.stdout
    code, _elapsed, err = server.stop()
    assert code == 0, err


def test_ctl_nodes_without_a_server_says_so(biomaj_root, biomaj_cmd):
    result = subprocess.run(
        [*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "nodes"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: no biomaj server answers at http://127.0.0.1:")
    assert "biomaj serve --all" in result.stderr


def test_web_port_from_the_environment(biomaj_root, biomaj_cmd, free_port):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "BIOMAJ_CONFIG"} | {"WEB_PORT": str(port)}
    proc = subprocess.Popen(
        [*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "serve", "--role", "web"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        end = time.monotonic() + 20
        while True:
            try:
                assert get_json(f"http://127.0.0.1:{port}/healthz")["status"] == "ok"
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < end, "no answer on WEB_PORT"
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


@pytest.mark.parametrize("node_id", ["", "   "])
def test_an_empty_node_id_is_refused_before_anything_starts(biomaj_root, biomaj_cmd, node_id):
    result = subprocess.run([*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "serve", "--all", "--node-id", node_id],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "Invalid value for --node-id: must not be empty" in result.stderr
    assert "started" not in result.stderr
