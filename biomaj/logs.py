"""Application logging: per-module loggers, levels from config.yml, text or JSON lines.

Bank session logs (one file per run under log.dir, as BioMAJ 3 writes them) are a separate
concern of the workflow; this module only sets up the process-wide application log.
Extra structured fields are passed with ``logger.info("msg", extra={"bank": "alu"})``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Mapping

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`2026-11-29 12:00:00 INFO  biomaj.web: message key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<5} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(
    level: str = "INFO", fmt: str = "text", levels: Mapping[str, str] | None = None, file: Path | None = None
) -> None:
    """Configure the root logger once for this process (idempotent: replaces earlier handlers)."""
    handler: logging.Handler = logging.FileHandler(file) if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name, module_level in (levels or {}).items():
        logging.getLogger(name).setLevel(module_level.upper())
