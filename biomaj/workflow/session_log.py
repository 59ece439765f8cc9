"""One log file per run of a bank: ``<log.dir>/<bank>/<start time>/<bank>.log`` (BioMAJ 3's
layout and line format), at the level of ``historic.logfile.level``.

Messages go to the logger ``biomaj.bank.<bank>``, so they also reach the application log.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from .bank import Bank

FORMAT = "%(asctime)s %(levelname)-5.5s [%(name)s][%(threadName)s] %(message)s"
LEVELS = {"DEBUG": logging.DEBUG, "VERBOSE": logging.INFO, "INFO": logging.INFO, "WARN": logging.WARNING,
          "WARNING": logging.WARNING, "ERR": logging.ERROR, "ERROR": logging.ERROR}


def log_dir(bank: Bank, start: float) -> Path:
    return bank.log_root / bank.name / f"{start:.6f}"


@contextlib.contextmanager
def session_logger(bank: Bank, start: float) -> Iterator[tuple[logging.Logger, Path]]:
    """The bank's logger with a file handler on a new session log, removed at exit."""
    directory = log_dir(bank, start)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{bank.name}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    level = LEVELS.get((bank.props.get("historic.logfile.level") or "INFO").upper(), logging.INFO)
    handler.setLevel(level)
    logger = logging.getLogger(f"biomaj.bank.{bank.name}")
    logger.setLevel(min(level, logging.INFO))
    logger.addHandler(handler)
    try:
        yield logger, path
    finally:
        logger.removeHandler(handler)
        handler.close()
