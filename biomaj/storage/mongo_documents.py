"""The MongoDB store's documents as the Store returns them: BSON-only values made plain
(:func:`plain`), backend-private fields left out (:func:`strip_private`), BioMAJ 3 bank documents
completed (:func:`bank_document`), and the keys an update must refuse (:func:`check_keys`).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from biomaj.storage.base import Doc, new_bank_document


def plain(value: Any) -> Any:
    """``value`` with BSON-only types made plain (the Store returns what JSON can encode):
    ObjectId as its hex string, datetime as epoch seconds, bytes as text, Decimal128 as float."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # the driver's datetimes are UTC
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if type(value).__name__ == "Decimal128":
        return float(str(value))
    return str(value)  # ObjectId, Regex, Timestamp ...


def strip_private(doc: Mapping[str, Any] | None, private: Iterable[str] = ("_id",)) -> Doc | None:
    """``doc`` made plain, without its ``private`` fields (MongoDB's ``_id``); None stays None."""
    if doc is None:
        return None
    hidden = set(private)
    return plain({k: v for k, v in doc.items() if k not in hidden})


def check_keys(fields: Mapping[str, Any], what: str) -> None:
    """MongoDB reads ``a.b`` and ``$x`` in an update as paths and operators: refuse such keys."""
    for key in fields:
        if not isinstance(key, str) or not key or "." in key or key.startswith("$"):
            raise ValueError(f"{what}: invalid key {key!r} (no dots, no leading $)")


def bank_document(raw: Mapping[str, Any], sessions: bool = True) -> Doc:
    """A bank document as the Store returns it: every key of BioMAJ 3's layout present, sessions
    ordered by id. A BioMAJ 3 document may lack keys, or keep pending as ``{release: id}`` (the
    layout before its ``migrate_pendings``)."""
    doc = new_bank_document(str(raw.get("name")), {})
    doc.update(strip_private(raw) or {})
    for key in ("sessions", "production", "pending"):
        if not isinstance(doc.get(key), list) and not (key == "pending" and isinstance(doc.get(key), dict)):
            doc[key] = []
    if isinstance(doc["pending"], dict):
        doc["pending"] = [{"release": r, "id": i} for r, i in doc["pending"].items()]
    for key in ("properties", "status"):
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
    if sessions:
        doc["sessions"] = sorted(doc["sessions"], key=_session_order)
    else:
        doc.pop("sessions", None)
    return doc


def _session_order(session: Any) -> float:
    sid = session.get("id") if isinstance(session, dict) else None
    return float(sid) if isinstance(sid, (int, float)) and not isinstance(sid, bool) else float("-inf")
