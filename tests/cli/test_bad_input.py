"""Bad input gets a one-line error and a non-zero exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml


def run(cmd: list[str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG")}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str, code: int | None = None) -> None:
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_config(tmp_path, biomaj_cmd):
    result = run(biomaj_cmd, "ctl", "banks", cwd=tmp_path)
    assert_one_line_error(result, "config.yml", "no such configuration file", "biomaj init", code=2)


def test_malformed_config(tmp_path, biomaj_cmd):
    config = tmp_path / "config.yml"
    config.write_text("web: [unclosed\n")
    result = run(biomaj_cmd, "-c", str(config), "ctl", "banks")
    assert_one_line_error(result, str(config), "not valid YAML", code=2)


def test_config_with_a_bad_value(tmp_path, biomaj_cmd):
    config = tmp_path / "config.yml"
    config.write_text("web:\n  port: 99999\n")
    result = run(biomaj_cmd, "-c", str(config), "serve", "--all")
    assert_one_line_error(result, "web.port", "99999", code=2)


def test_bank_file_with_a_syntax_error(biomaj_root, biomaj_cmd):
    (biomaj_root / "conf" / "bad.properties").write_text("[GENERAL]\ndb.name=bad\nthis line has no equal sign\n")
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "check", "bad")
    assert_one_line_error(result, "bad.properties", code=2)


def test_bank_file_without_general_section(biomaj_root, biomaj_cmd):
    (biomaj_root / "conf" / "nosection.properties").write_text("db.name=x\n")
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "check", "nosection")
    assert_one_line_error(result, "nosection.properties", code=2)


def test_unknown_bank(biomaj_root, biomaj_cmd):
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "check", "nosuchbank")
    assert_one_line_error(result, "nosuchbank", code=2)


def test_bank_name_cannot_escape_conf_dir(biomaj_root, biomaj_cmd):
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "check", "../config")
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_unknown_role(biomaj_root, biomaj_cmd):
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "serve", "--role", "web,brewer")
    assert_one_line_error(result, "unknown role 'brewer'", "manager, download, process, scheduler, web, ftp")


def test_serve_needs_a_role(biomaj_root, biomaj_cmd):
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "serve")
    assert_one_line_error(result, "--all or --role")


def test_unwritable_root(tmp_path, biomaj_cmd):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run(biomaj_cmd, "init", str(blocker / "root"))
    assert_one_line_error(result, "cannot initialise", str(blocker))


def test_store_in_an_unwritable_place(biomaj_root, biomaj_cmd):
    db = biomaj_root / "db"
    db.rmdir()
    db.write_text("a file where the db folder should be")
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "banks")
    assert_one_line_error(result, "db")


def test_unknown_storage_url(biomaj_root, biomaj_cmd):
    config = biomaj_root / "config.yml"
    settings = yaml.safe_load(config.read_text())
    settings["storage"]["url"] = "postgres://127.0.0.1/biomaj"
    config.write_text(yaml.safe_dump(settings))
    result = run(biomaj_cmd, "-c", str(config), "ctl", "banks")
    assert_one_line_error(result, "storage.url", code=2)


def test_port_already_in_use(biomaj_root, biomaj_cmd):
    import socket

    config = biomaj_root / "config.yml"
    port = yaml.safe_load(config.read_text())["web"]["port"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = run(biomaj_cmd, "-c", str(config), "serve", "--all")
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
