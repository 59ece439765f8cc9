"""Which remote files a bank wants: listing and matching for every kind of remote.

``remote.files`` patterns over a listed tree, one file for ``direct*`` protocols, one file per
``remote.file.<i>.*`` group for ``multi``, a JSON list for ``remote.list``. Each file comes out
as a :class:`Wanted`: where to fetch it from, and the path it is saved as in the offline
directory. The manager does this; the downloaders only fetch.
"""

from __future__ import annotations

import datetime
import json
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path

from biomaj.config.properties import BankProperties
from biomaj.download.engine import ClientPool
from biomaj.download.matching import NoFileMatched, match_files
from biomaj.download.paths import safe_relative
from biomaj.download.remote import remote_config, split_server
from biomaj.errors import ConfigError
from biomaj.protocols import DIRECT_PROTOCOLS
from biomaj.protocols.base import RemoteConfig, RemoteEntry, RemoteError, Unreachable

from .engine import TaskFailed


@dataclass(frozen=True)
class Wanted:
    """One remote file to have in the offline directory as ``save_as``."""

    config: RemoteConfig
    entry: RemoteEntry
    save_as: str
    secrets: tuple[tuple[str, str], ...] = ()  # (RemoteConfig part, bank property holding it)

    def record(self) -> dict:
        """BioMAJ 3's ``download_files`` entry (kept in the cache file of the session)."""
        mtime = self.entry.mtime
        day = datetime.date.fromtimestamp(mtime) if mtime is not None else None
        return {
            "name": self.entry.path,
            "root": self.config.root,
            "save_as": self.save_as,
            "size": self.entry.size,
            "mtime": mtime,
            "year": day.year if day else None,
            "month": day.month if day else None,
            "day": day.day if day else None,
            "hash": self.entry.hash,
        }


def _secrets(props: BankProperties, prefix: str = "") -> tuple[tuple[str, str], ...]:
    found = []
    credentials = f"{prefix}credentials" if prefix else "server.credentials"
    if props.get(credentials):
        found.append(("credentials", credentials))
    if props.get(f"{prefix}proxy_auth" if prefix else "proxy_auth"):
        found.append(("proxy_auth", f"{prefix}proxy_auth" if prefix else "proxy_auth"))
    return tuple(found)


def multi_configs(props: BankProperties) -> list[tuple[RemoteConfig, str, tuple[tuple[str, str], ...]]]:
    """``multi``: (config, save_as, secrets) for each ``remote.file.<i>`` group, i = 0, 1, ..."""
    found = []
    i = 0
    while props.get(f"remote.file.{i}.path") or props.get(f"remote.file.{i}.name"):
        key = f"remote.file.{i}."
        protocol = (props.get(key + "protocol") or "directhttp").lower()
        if protocol not in DIRECT_PROTOCOLS:
            raise ConfigError(f"bank {props.name}: {key}protocol={protocol!r}; multi accepts {', '.join(DIRECT_PROTOCOLS)}")
        path = props.get(key + "path") or ""
        host, port = split_server(props.get(key + "server") or "", key + "server")
        names = [n.strip() for n in (props.get(key + "params.keys") or "").split(",") if n.strip()]
        params = {name: props.get(f"{key}params.{name}") or "" for name in names}
        credentials = key + "credentials" if props.get(key + "credentials") else (
            "server.credentials" if props.get("server.credentials") else None)  # quirk 8.11 fixed
        user = None
        if credentials:
            user = (props.get(credentials) or "").partition(":")[0]
        config = RemoteConfig(
            protocol=protocol, host=host, port=port,
            root=posixpath.dirname(path.rstrip("/")) or "/", direct_file=posixpath.basename(path.rstrip("/")),
            user=user, method=(props.get(key + "method") or "GET").upper(), params=params,
        )
        save_as = props.get(key + "name") or path.strip("/")
        found.append((config, save_as, (("credentials", credentials),) if credentials else ()))
        i += 1
    if not found:
        raise ConfigError(f"bank {props.name}: protocol=multi needs remote.file.0.path (and .server, .name ...)")
    return found


def _entries_from_list_file(path: str) -> list[dict] | None:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise TaskFailed(f"remote.list={path}: not a JSON list of files ({exc})") from None
    if not isinstance(data, list):
        raise TaskFailed(f"remote.list={path}: expected a JSON list of {{name, root, size, year, month, day}}")
    return data


def _list_entry(item: dict) -> tuple[RemoteEntry, str | None]:
    if not isinstance(item, dict) or not item.get("name"):
        raise TaskFailed(f"remote.list: entry {item!r} has no name")
    mtime = None
    if item.get("year"):
        mtime = datetime.datetime(int(item["year"]), int(item.get("month") or 1), int(item.get("day") or 1)).timestamp()
    size = item.get("size")
    return RemoteEntry(str(item["name"]), int(size) if size not in (None, "") else None, mtime,
                       hash=item.get("hash")), item.get("root")


async def wanted_files(props: BankProperties, pool: ClientPool) -> list[Wanted]:
    """The files of the bank's remote, matched and named; [] for an empty ``remote.list``.

    Raises TaskFailed (listing failed, nothing matched) with BioMAJ 3's message.
    """
    protocol = (props.get("protocol") or "").lower()
    config = None if protocol == "multi" else remote_config(props)
    try:
        if protocol == "multi":
            wanted = []
            for file_config, save_as, secrets in multi_configs(props):
                # multi targets queries (GET/POST with parameters): what HEAD says of a dynamic
                # answer's size is not what GET returns, so only its date is kept
                stat = await _stat_direct(pool, file_config)
                entry = RemoteEntry(stat.path, None, stat.mtime, hash=stat.hash)
                wanted.append(Wanted(file_config, entry, safe_relative(save_as), secrets))
            return wanted
        secrets = _secrets(props)
        list_file = props.get("remote.list")
        if list_file:
            items = _entries_from_list_file(list_file)
            wanted = []
            for item in items or []:
                entry, root = _list_entry(item)
                file_config = config if not root else replace(config, root=root)
                wanted.append(Wanted(file_config, entry, safe_relative(entry.path), secrets))
            return wanted
        if protocol in DIRECT_PROTOCOLS:
            entry = await _stat_direct(pool, config)
            target = props.get("target.name") or (props.get("remote.dir") or "").strip("/")
            return [Wanted(config, entry, safe_relative(target), secrets)]
        async with pool.client(config) as client:
            matched = await match_files(client, props.get_list("remote.files") or [".*"])
        return [Wanted(config, m.entry, m.save_as, secrets) for m in matched]
    except RemoteError as exc:
        raise remote_failure(exc, "remote.files", "listing remote.files", config.root_url if config else None) from None


def remote_failure(exc: RemoteError, key: str, doing: str, where: str | None) -> TaskFailed:
    """The failure of a remote while the update was ``doing`` something (in ``where``, a URL)
    for ``key``: the cause first, in an operator's words, then what was being done."""
    if isinstance(exc, NoFileMatched):
        return TaskFailed(f"no remote file matches {key}={' '.join(exc.patterns)}" + (f" in {where}" if where else ""))
    if isinstance(exc, Unreachable) or not where:  # the server is named already
        return TaskFailed(f"{exc} (while {doing})")
    return TaskFailed(f"{exc} (while {doing} in {where})")


async def _stat_direct(pool: ClientPool, config: RemoteConfig) -> RemoteEntry:
    async with pool.client(config) as client:
        try:
            return await client.stat(config.direct_file)
        except RemoteError:
            if config.method == "POST":  # a form endpoint may refuse HEAD: size and date unknown
                return RemoteEntry(config.direct_file)
            raise


async def release_files(props: BankProperties, pool: ClientPool) -> tuple[RemoteConfig, list[RemoteEntry], tuple]:
    """The files matching ``release.file`` on the release remote (``release.*`` keys, falling
    back to the main ones), as BioMAJ 3's release downloader lists them."""
    config = remote_config(props, prefix="release.")
    secrets = _secrets(props, "release.")
    pattern = props.get("release.file") or ""
    try:
        if config.protocol in DIRECT_PROTOCOLS:
            return config, [await _stat_direct(pool, config)], secrets
        async with pool.client(config) as client:
            matched = await match_files(client, [pattern])
    except RemoteError as exc:
        raise remote_failure(exc, "release.file", "reading the release from release.file", config.root_url) from None
    return config, [m.entry for m in matched], secrets
