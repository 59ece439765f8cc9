"""Helpers of the process tests: is a process (or a process group) still running?"""

from __future__ import annotations

import os
from pathlib import Path


def running(pid: int, *, group: bool) -> bool:
    """A process (or any process of a group) exists and is not a zombie waiting to be reaped."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        state, _ppid, pgrp = data[data.rfind(b")") + 2:].split()[:3]
        if state != b"Z" and (int(pgrp) == pid if group else int(entry) == pid):
            return True
    return False
