"""The allocator tuning `biomaj serve` applies: a real mallopt call in a child process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# What a transfer does to the allocator: chunks of 64-512 KiB arrive, a few are held while the
# writer catches up, the oldest are freed.
PROGRAM = """
import collections, resource, sys
from biomaj.runtime.memory import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
window = collections.deque()
for i in range(2000):
    window.append(bytes(bytearray((64 + (i * 37) % 448) * 1024)))
    if len(window) > 8:
        window.popleft()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_received_chunks_stop_costing_page_faults():
    faults = {
        mode: int(subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True).stdout)
        for mode in ("default", "tuned")
    }
    assert faults["tuned"] * 5 < faults["default"], faults
