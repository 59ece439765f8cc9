"""The provenance file of a release: ``ro-crate-metadata.json``, an RO-Crate 1.1 document.

RO-Crate (https://w3id.org/ro/crate/1.1) is JSON-LD over schema.org: a metadata descriptor,
a root data entity ``./`` (the release: name, description, datePublished, license, hasPart),
one ``File`` entity per file of the release (size, sha256, date, the remote URL and the provider's
checksum when there was one), and contextual entities: the bank file, biomaj, the update and
each process that ran (``CreateAction``). Terms schema.org lacks come from the Workflow Run
Crate profile (``sha256``) or biomaj's own namespace (``biomaj:exitCode`` ...), declared in the
document's ``@context`` as RO-Crate's extension rules ask.

This module only builds, checks and parses the document (no hashing: see :mod:`.provenance`).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from biomaj.errors import BiomajError

FILE_NAME = "ro-crate-metadata.json"
SPEC = "https://w3id.org/ro/crate/1.1"
TERMS = "https://biomaj.genouest.org/terms#"
CONTEXT: list[Any] = [f"{SPEC}/context",
                      {"sha256": "https://w3id.org/ro/terms/workflow-run#sha256", "biomaj": TERMS}]
COMPLETED = "http://schema.org/CompletedActionStatus"
FAILED = "http://schema.org/FailedActionStatus"
UPDATE_ID = "#update"
BANK_FILE_ID = "#bank-file"
BIOMAJ_ID = "#biomaj"
#: Characters an ``@id`` keeps as they are (RO-Crate: relative URI paths, space and % escaped; a
#: ':' too, or ``a:b.txt`` would read as a URI of scheme ``a``).
_ID_SAFE = "/!$&'()*+,;=@~-._"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class CrateError(BiomajError):
    """A provenance file that cannot be read or is not the RO-Crate biomaj writes."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a release as the provenance file records it; ``path`` is relative and
    ``/``-separated, ``mtime`` the file's date then (the remote date for a downloaded file)."""

    path: str
    size: int
    sha256: str
    mtime: float | None = None
    url: str | None = None  # where it was downloaded from (no credentials)
    checksum: str | None = None  # the provider's "algo:hex", when it published one


@dataclass(frozen=True)
class ProcessEntry:
    """One pre- or post-process that ran for the release (its args with secrets hidden)."""

    phase: str
    name: str
    exe: str
    args: tuple[str, ...]
    exit_code: int | None
    ok: bool
    started: float | None
    elapsed: float
    docker: str | None = None


@dataclass
class Release:
    """What the provenance file of a release says."""

    bank: str
    release: str
    session: str | None = None
    remote_release: str | None = None
    description: str = ""
    license: str | None = None  # a URL or a text (db.license)
    source: str | None = None  # the remote's root URL
    bank_file: str | None = None  # its name
    bank_file_sha256: str | None = None
    version: str | None = None  # biomaj's
    started: float | None = None
    published: float | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    processes: list[ProcessEntry] = field(default_factory=list)


# --- writing -------------------------------------------------------------------------------------


def iso(timestamp: float | None) -> str | None:
    """A POSIX time as ISO 8601 in UTC (microseconds kept: a file's date is compared to it)."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()


def from_iso(text: Any) -> float | None:
    """ISO 8601 back to a POSIX time; None when absent or not a date."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def entity_id(path: str) -> str:
    """The ``@id`` of a file of the crate: its relative path as a URI path."""
    return quote(path, safe=_ID_SAFE)


def _license(text: str | None, release: Release) -> tuple[Any, list[dict]]:
    if text and urlsplit(text).scheme in ("http", "https"):
        return {"@id": text}, [{"@id": text, "@type": "CreativeWork", "name": text}]
    where = f" ({release.source})" if release.source else ""
    return text or f"The terms of use of the provider{where}: biomaj mirrors the data as published.", []


def build(release: Release) -> dict[str, Any]:
    """The JSON-LD document of ``release``."""
    return {"@context": CONTEXT, "@graph": list(entities(release))}


def entities(release: Release) -> Iterator[dict[str, Any]]:
    """The entities of the ``@graph`` of ``release``'s document, in order: the descriptor, the
    release, the contextual entities, then one per file (made as they are written)."""
    license_value, license_entities = _license(release.license, release)
    actions, software = _process_entities(release.processes)
    root: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "name": f"{release.bank} {release.release}",
        "description": release.description or f"Release {release.release} of the bank {release.bank}",
        "datePublished": iso(release.published),
        "license": license_value,
        "version": release.release,
        "biomaj:bank": release.bank,
        "isBasedOn": {"@id": release.source} if release.source else None,
        "hasPart": [{"@id": entity_id(path)} for path in release.files],
        "mentions": [{"@id": UPDATE_ID}] + [{"@id": action["@id"]} for action in actions],
    }
    update: dict[str, Any] = {
        "@id": UPDATE_ID,
        "@type": "CreateAction",
        "name": f"update of {release.bank} to release {release.release}",
        "instrument": {"@id": BIOMAJ_ID},
        "object": {"@id": BANK_FILE_ID},
        "result": {"@id": "./"},
        "startTime": iso(release.started),
        "endTime": iso(release.published),
        "actionStatus": {"@id": COMPLETED},
        "identifier": release.session,
        "biomaj:remoteRelease": release.remote_release,
    }
    context = [
        {"@id": FILE_NAME, "@type": "CreativeWork", "conformsTo": {"@id": SPEC}, "about": {"@id": "./"}},
        root,
        update,
        {"@id": BANK_FILE_ID, "@type": "CreativeWork", "name": release.bank_file,
         "description": "The bank file the release was made with", "sha256": release.bank_file_sha256},
        {"@id": BIOMAJ_ID, "@type": "SoftwareApplication", "name": "biomaj", "version": release.version},
        *license_entities, *software, *actions,
    ]
    for entity in context:
        yield _without_none(entity)
    for entry in release.files.values():
        yield _file_entity(entry)


def _file_entity(entry: FileEntry) -> dict[str, Any]:
    entity: dict[str, Any] = {"@id": entity_id(entry.path), "@type": "File", "contentSize": str(entry.size),
                              "sha256": entry.sha256}
    if entry.mtime is not None:
        entity["dateModified"] = iso(entry.mtime)
    if entry.url:
        entity["url"] = entry.url
    if entry.checksum:
        entity["biomaj:providerChecksum"] = entry.checksum
    return entity


def _process_entities(processes: list[ProcessEntry]) -> tuple[list[dict], list[dict]]:
    actions, software = [], {}
    for run in processes:
        tool = f"#software/{quote(run.exe, safe='')}"
        software.setdefault(tool, {"@id": tool, "@type": "SoftwareApplication", "name": run.exe})
        ended = run.started + run.elapsed if run.started is not None else None
        actions.append(_without_none({
            "@id": f"#process/{quote(run.phase, safe='')}/{quote(run.name, safe='')}",
            "@type": "CreateAction",
            "name": f"{run.phase} process {run.name}",
            "description": " ".join([run.exe, *run.args]),
            "instrument": {"@id": tool},
            "startTime": iso(run.started),
            "endTime": iso(ended),
            "actionStatus": {"@id": COMPLETED if run.ok else FAILED},
            "biomaj:exitCode": run.exit_code,
            "biomaj:arguments": list(run.args),
            "biomaj:containerImage": run.docker,
        }))
    return actions, list(software.values())


def _without_none(entity: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entity.items() if value is not None}


def write(release_dir: Path, release: Release) -> Path:
    """Write the provenance file of ``release`` at the root of ``release_dir``, one entity at a
    time (200,000 files are never one document in memory), in one rename (blocking)."""
    path = release_dir / FILE_NAME
    tmp = release_dir / f".{FILE_NAME}.{os.getpid()}.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as out:
            out.write('{"@context": ' + json.dumps(CONTEXT) + ',\n "@graph": [\n')
            for index, entity in enumerate(entities(release)):
                out.write((",\n  " if index else "  ") + json.dumps(entity, ensure_ascii=False))
            out.write("\n ]\n}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- checking and reading ------------------------------------------------------------------------


def _types(entity: dict[str, Any]) -> list[str]:
    kind = entity.get("@type")
    return [kind] if isinstance(kind, str) else [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []


def _ref(value: Any) -> str | None:
    return value.get("@id") if isinstance(value, dict) and isinstance(value.get("@id"), str) else None


def relative_path(identifier: str) -> str | None:
    """The release-relative path an ``@id`` names, or None when it names no local file (an
    absolute URI, a ``#`` fragment) or would leave the release (``..``, an absolute path)."""
    if not identifier or identifier.startswith("#") or urlsplit(identifier).scheme:
        return None
    path = unquote(identifier)
    parts = path.split("/")
    if path.startswith("/") or "\x00" in path or "\\" in path or any(p in ("", ".", "..") for p in parts):
        return None
    return path


def problems(document: Any) -> list[str]:
    """What keeps ``document`` from being a valid RO-Crate 1.1 metadata document as biomaj
    writes it (the spec's MUSTs, and biomaj's own: every hasPart a File with a relative path,
    a size and a sha256); [] when valid."""
    if not isinstance(document, dict):
        return ["not a JSON object"]
    found: list[str] = []
    context = document.get("@context")
    contexts = context if isinstance(context, list) else [context]
    if f"{SPEC}/context" not in contexts:
        found.append(f"@context does not name {SPEC}/context")
    graph = document.get("@graph")
    if not isinstance(graph, list) or not all(isinstance(e, dict) and isinstance(e.get("@id"), str) for e in graph):
        return found + ["@graph is not a list of entities each with an @id"]
    by_id: dict[str, dict] = {}
    for entity in graph:
        if entity["@id"] in by_id:
            found.append(f"@id {entity['@id']!r} appears twice")
        by_id[entity["@id"]] = entity
    descriptor = by_id.get(FILE_NAME)
    if descriptor is None:
        return found + [f"no metadata descriptor ({FILE_NAME})"]
    if "CreativeWork" not in _types(descriptor):
        found.append("the metadata descriptor is not a CreativeWork")
    if not (_ref(descriptor.get("conformsTo")) or "").startswith("https://w3id.org/ro/crate/"):
        found.append("the metadata descriptor has no conformsTo https://w3id.org/ro/crate/...")
    root_id = _ref(descriptor.get("about"))
    root = by_id.get(root_id or "")
    if root is None:
        return found + ["the metadata descriptor is not about an entity of the graph"]
    if root_id != "./":
        found.append(f"the root data entity is {root_id!r}, not './'")
    if "Dataset" not in _types(root):
        found.append("the root data entity is not a Dataset")
    for key in ("name", "description", "license"):
        if not root.get(key):
            found.append(f"the root data entity has no {key}")
    if from_iso(root.get("datePublished")) is None:
        found.append("the root data entity has no datePublished in ISO 8601")
    parts = root.get("hasPart", [])
    if not isinstance(parts, list):
        parts = [parts]
    listed = set()
    for part in parts:
        ref = _ref(part)
        entity = by_id.get(ref or "")
        if entity is None:
            found.append(f"hasPart {ref!r} is not an entity of the graph")
            continue
        listed.add(ref)
        found.extend(_file_problems(entity))
    for entity in graph:
        if "File" in _types(entity) and entity["@id"] not in listed and relative_path(entity["@id"]):
            found.append(f"file {entity['@id']!r} is not in the root's hasPart")
    return found


def _file_problems(entity: dict[str, Any]) -> list[str]:
    name = entity["@id"]
    if "File" not in _types(entity):
        return [f"hasPart {name!r} is not a File"]
    if relative_path(name) is None:
        return [f"file {name!r} is not a path inside the release"]
    found = []
    if not str(entity.get("contentSize", "")).isdigit():
        found.append(f"file {name!r} has no contentSize in bytes")
    if not _HEX64.fullmatch(str(entity.get("sha256", ""))):
        found.append(f"file {name!r} has no sha256")
    return found


def parse(document: Any) -> Release:
    """The release a provenance document describes; CrateError listing its problems when it is
    not one biomaj can check against."""
    found = problems(document)
    if found:
        raise CrateError("; ".join(found[:5]) + (f" (and {len(found) - 5} more)" if len(found) > 5 else ""))
    by_id = {entity["@id"]: entity for entity in document["@graph"]}
    root = by_id["./"]
    update = by_id.get(UPDATE_ID, {})
    bank_file = by_id.get(BANK_FILE_ID, {})
    release = Release(
        bank=str(root.get("biomaj:bank") or ""), release=str(root.get("version") or ""),
        session=update.get("identifier"), remote_release=update.get("biomaj:remoteRelease"),
        description=str(root.get("description", "")),
        license=_ref(root.get("license")) or (root["license"] if isinstance(root.get("license"), str) else None),
        source=_ref(root.get("isBasedOn")), bank_file=bank_file.get("name"),
        bank_file_sha256=bank_file.get("sha256"), version=by_id.get(BIOMAJ_ID, {}).get("version"),
        started=from_iso(update.get("startTime")), published=from_iso(root.get("datePublished")),
    )
    for part in root.get("hasPart") or []:
        entity = by_id[part["@id"]]
        path = relative_path(entity["@id"])
        release.files[path] = FileEntry(
            path, int(entity["contentSize"]), entity["sha256"], from_iso(entity.get("dateModified")),
            entity.get("url") if isinstance(entity.get("url"), str) else None,
            entity.get("biomaj:providerChecksum") if isinstance(entity.get("biomaj:providerChecksum"), str) else None)
    return release


def read(release_dir: Path) -> Release | None:
    """The provenance file of ``release_dir``, or None when it has none (blocking)."""
    path = release_dir / FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CrateError(f"{FILE_NAME}: cannot be read ({exc})") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise CrateError(f"{FILE_NAME}: not JSON ({exc})") from None
    try:
        return parse(document)
    except CrateError as exc:
        raise CrateError(f"{FILE_NAME}: {exc}") from None
