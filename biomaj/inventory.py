"""The banks of an installation: every bank file of conf.dir beside its record in the store, and
the records whose bank file has gone (``biomaj ctl banks``, ``GET /api/v1/bank-files``).

Pure but for reading the bank files: the caller passes the store's documents, so the command and
the web API build the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from biomaj import reports
from biomaj.config.check import check_bank, verdict
from biomaj.config.properties import BankProperties, GlobalProperties, list_bank_names
from biomaj.errors import BiomajError, ConfigError

__all__ = ["NO_BANK_FILE", "bank_rows", "conf_dir_of"]

NO_BANK_FILE = "no bank file"


def conf_dir_of(global_properties_path: str | os.PathLike) -> Path:
    """The folder of the bank files (global.properties' conf.dir); ConfigError when unset."""
    conf_dir = GlobalProperties.load(global_properties_path).get("conf.dir")
    if not conf_dir:
        raise ConfigError(f"{global_properties_path}: conf.dir is not set; expected the folder of the bank files")
    return Path(conf_dir)


def bank_rows(global_properties_path: str | os.PathLike, conf_dir: str | os.PathLike,
              docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per bank file of ``conf_dir`` (by name), then one per store document whose bank
    file has gone (``config`` is ``"no bank file"``), so that nothing is silently lost.

    ``docs``: the store's bank documents (``store.list_banks()``). A row is ``{name, config,
    in_store, visibility, owner, published, releases, pending, last_update}``: ``config`` is
    ``ok``, ``invalid`` (BioMAJ 3's check fails) or ``unreadable: <why>``; ``published`` the
    published release or None; ``last_update`` the raw session id (epoch seconds) or None.
    """
    by_name = {doc["name"]: doc for doc in docs}
    names = list_bank_names(conf_dir)
    rows = [_row(name, _config_state(global_properties_path, conf_dir, name), by_name.get(name)) for name in names]
    rows += [_row(name, NO_BANK_FILE, doc) for name, doc in sorted(by_name.items()) if name not in names]
    return rows


def _config_state(global_properties_path: str | os.PathLike, conf_dir: str | os.PathLike, name: str) -> str:
    try:
        props = BankProperties.load(global_properties_path, name, conf_dir=conf_dir)
        return "ok" if verdict(check_bank(props)) else "invalid"
    except BiomajError as exc:
        return f"unreadable: {exc}"


def _row(name: str, config: str, doc: dict[str, Any] | None) -> dict[str, Any]:
    record = doc or {}
    props = record.get("properties") or {}
    published = reports._published(record)  # noqa: SLF001 - the reports' own rule
    return {
        "name": name,
        "config": config,
        "in_store": doc is not None,
        "visibility": props.get("visibility"),
        "owner": props.get("owner"),
        "published": published.get("release") if published else None,
        "releases": len(record.get("production") or []),
        "pending": len(record.get("pending") or []),
        "last_update": record.get("last_update_session"),
    }
