"""Byte counts as people read them (``1.5 KB``): the reports, the mail and the change reports."""

from __future__ import annotations

__all__ = ["human_size"]

_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB", "EB")


def human_size(n: int) -> str:
    """Bytes in base 1024 with one decimal: ``0 B``, ``512 B``, ``1.5 KB``, ``2.0 GB``."""
    n = int(n or 0)
    if n < 0:
        return "-" + human_size(-n)
    if n < 1024:
        return f"{n} B"
    value = float(n)
    unit = 0
    # Move up while the value would print as 1024.0 or more (1023.96 KB is "1.0 MB").
    while round(value, 1) >= 1024 and unit < len(_SIZE_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {_SIZE_UNITS[unit]}"
