"""`biomaj serve` without uvloop (an optional extra): a logged traceback says what failed, and
nothing about the missing uvloop (the loop used to run inside the `except ImportError`, so
every exception was chained to it)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess

NO_UVLOOP = 'raise ImportError("No module named \'uvloop\'")\n'


def test_a_logged_traceback_does_not_mention_the_missing_uvloop(biomaj_root, biomaj_cmd, tmp_path):
    # a real store, with a schedule whose document is broken: the scheduler's pass over it fails
    # with a bug-like TypeError, logged with its traceback (log.exception)
    config = str(biomaj_root / "config.yml")
    listed = subprocess.run([*biomaj_cmd, "-c", config, "ctl", "banks"], capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    with sqlite3.connect(biomaj_root / "db" / "biomaj.sqlite") as db:
        doc = {"name": "broken", "kind": "cron", "cron": "* * * * *", "banks": 5, "created": 1}
        db.execute("INSERT INTO schedules (name, doc) VALUES (?, ?)", ("broken", json.dumps(doc)))

    fake = tmp_path / "no-uvloop"
    fake.mkdir()
    (fake / "uvloop.py").write_text(NO_UVLOOP)  # uvloop is not importable in this process
    env = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG")}
    env["PYTHONPATH"] = str(fake)
    serve = subprocess.Popen([*biomaj_cmd, "-c", config, "serve", "--role", "scheduler"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in serve.stdout:  # the first pass runs at start; its traceback ends with the TypeError
            lines.append(line)
            if line.startswith("TypeError"):
                break
        serve.send_signal(signal.SIGTERM)
        rest, _ = serve.communicate(timeout=30)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    output = "".join(lines) + rest
    assert "Traceback (most recent call last)" in output and "TypeError" in output, output
    assert "uvloop" not in output, output
