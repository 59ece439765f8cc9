"""The last lines of a log file, read from its end: memory bounded by the answer and one block,
whatever the size of the file (a session log may reach gigabytes)."""

from __future__ import annotations

import os
from typing import BinaryIO

BLOCK = 64 * 1024  # bytes read at a time, backwards from the end


def tail(handle: BinaryIO, lines: int, block: int = BLOCK, max_bytes: int | None = None) -> bytes:
    """The last ``lines`` lines of the open binary file ``handle`` (lines end with ``\\n``; the
    last one may not), and the handle left at the end of what was read. An empty file, or
    ``lines`` <= 0, gives ``b""``. ``max_bytes``: only lines that end within the last
    ``max_bytes`` bytes, whole (a line cut by that bound is left out)."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0 or lines <= 0:
        return b""
    handle.seek(size - 1)
    end = size - 1 if handle.read(1) == b"\n" else size  # the final newline ends the last line
    floor = 0 if max_bytes is None else max(0, size - max_bytes)
    start, position, wanted = floor, end, lines
    lowest = None  # the first newline at or after floor
    while position > floor and wanted:
        low = max(floor, position - block)
        handle.seek(low)
        chunk = handle.read(position - low)
        cut = len(chunk)
        while wanted and (cut := chunk.rfind(b"\n", 0, cut)) >= 0:
            wanted -= 1
            lowest = low + cut
            if not wanted:
                start = low + cut + 1
        position = low
    if wanted and floor > 0:  # the bound stopped the search: the line it cuts is left out
        handle.seek(floor - 1)
        if handle.read(1) != b"\n":
            start = size if lowest is None else lowest + 1
    handle.seek(start)
    return handle.read(size - start)
