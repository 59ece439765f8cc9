"""Which remote files a bank wants: listing and matching for every kind of remote.

``remote.files`` patterns over a listed tree, one file for ``direct*`` protocols, one file per
``remote.file.<i>.*`` group for ``multi``, a JSON list for ``remote.list``. Each file comes out
as a :class:`Wanted`: where to fetch it from, and the path it is saved as in the offline
directory. A listing that gives no exact size or no date for a file (an index page printing
``64K``, Python's ``http.server`` printing names only) is completed by asking the server for each
such file (:func:`stat_incomplete`). The manager does this; the downloaders only fetch.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import posixpath
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from biomaj.config.properties import BankProperties
from biomaj.download.engine import ClientPool
from biomaj.download.matching import NoFileMatched, Seen, match_files
from biomaj.download.paths import safe_relative
from biomaj.download.retry import RetryPolicy
from biomaj.download.remote import credentials_key, remote_config, remote_url, split_server
from biomaj.errors import ConfigError
from biomaj.protocols import DIRECT_PROTOCOLS, PROTOCOL_MODULES
from biomaj.protocols.base import RemoteConfig, RemoteEntry, RemoteError, RetryableError, Throttled, Unreachable

from .engine import TaskFailed


@dataclass(frozen=True)
class Wanted:
    """One remote file to have in the offline directory as ``save_as``."""

    config: RemoteConfig
    entry: RemoteEntry
    save_as: str
    secrets: tuple[tuple[str, str], ...] = ()  # (RemoteConfig part, bank property holding it)
    checksum: str | None = None  # "algo:hex": the provider's manifest's (workflow/checksums.py), else the listing's (S3 ETag)

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
            **({"etag": self.entry.etag} if self.entry.etag else {}),  # for If-None-Match next time
            **({"checksum": self.checksum} if self.checksum else {}),  # compared by the next update
            **({"url": url} if (url := remote_url(self.config, self.entry.path)) else {}),  # for provenance
        }


def _secrets(props: BankProperties, prefix: str = "") -> tuple[tuple[str, str], ...]:
    found = []
    credentials = credentials_key(props, prefix)
    if credentials:
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


async def wanted_files(props: BankProperties, pool: ClientPool, *, seen: Seen | None = None) -> list[Wanted]:
    """The files of the bank's remote, matched and named; [] for an empty ``remote.list``.
    ``seen``: told of every file of the folders listed (see :func:`~biomaj.download.matching.match_files`).

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
            matched = await match_files(client, props.get_list("remote.files") or [".*"], seen=seen)
        return [Wanted(config, m.entry, m.save_as, secrets, m.entry.checksum) for m in matched]
    except RemoteError as exc:
        raise remote_failure(exc, "remote.files", "listing remote.files", config.root_url if config else None) from None


def retry_policy(props: BankProperties, config: RemoteConfig) -> RetryPolicy:
    """The bank's retry policy for the files of ``config`` (its options.stop_condition and
    .wait_policy, else the bank's stop_condition and wait_policy)."""
    options = config.options
    return RetryPolicy.parse(options.get("stop_condition") or props.get("stop_condition"),
                             options.get("wait_policy") or props.get("wait_policy"))


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


#: Files asked about at once when a listing lacks their size or date (one HEAD, MLST or SIZE+MDTM
#: each, on clients of the manager's pool, whose per-host limit holds too).
STAT_PARALLEL = 4

_FALSE = ("0", "false", "no", "off")

#: ``(done, total)`` of a stat run, told after each file.
StatProgress = Callable[[int, int], Awaitable[None]]


@dataclass
class StatReport:
    """What :func:`stat_incomplete` did. A file not completed (an error, or not asked once the
    server could not be reached) keeps its listing entry."""

    asked: int = 0  # files to ask about
    completed: int = 0  # of which the server told the size, date or validators
    unchanged: int = 0  # of which as recorded at the last release (a 304 to If-None-Match)
    failed: int = 0  # of which the answer was an error
    error: str = ""  # the first error
    elapsed: float = 0.0


def incomplete(item: Wanted) -> bool:
    """The listing gave no exact size or no date for this file, and the bank lets us ask
    (``options.stat_incomplete``, default true). Direct and multi files were asked already."""
    entry = item.entry
    return ((entry.size is None or entry.mtime is None) and item.config.protocol not in DIRECT_PROTOCOLS
            and str(item.config.options.get("stat_incomplete") or "true").strip().lower() not in _FALSE)


async def stat_incomplete(wanted: list[Wanted], pool: ClientPool, known: Mapping[str, dict], *,
                          retry: RetryPolicy | None = None, progress: StatProgress | None = None,
                          cancelled: asyncio.Event | None = None,
                          worth: Callable[[Wanted], bool] | None = None) -> tuple[list[Wanted], StatReport]:
    """``wanted`` with the size, date and validators of each :func:`incomplete` file asked of
    the server (HTTP HEAD, FTP MLST or SIZE+MDTM), STAT_PARALLEL at a time; with ``worth``, only
    those it says are worth a request.

    ``known``: the last release's file records by save_as; a file recorded with an ETag is asked
    with ``If-None-Match``, and a 304 gives its recorded facts back (unchanged since that release).
    A transient error is tried again by ``retry`` (the bank's policy); a file the server still
    gives an error for keeps its listing entry (its download will tell), and a server that cannot
    be reached ends the run (the downloads will say so).
    """
    todo = [i for i, item in enumerate(wanted) if incomplete(item) and (worth is None or worth(item))]
    report = StatReport(asked=len(todo))
    if not todo:
        return wanted, report
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = list(wanted)
    queue = iter(todo)
    done = 0
    unreachable = False

    async def ask(item: Wanted, previous: RemoteEntry | None) -> RemoteEntry:
        attempt, first = 0, loop.time()
        while True:
            attempt += 1
            try:
                async with pool.client(item.config) as client:
                    if previous is not None:
                        return await client.stat_since(item.entry.path, previous)
                    return await client.stat(item.entry.path)
            except RetryableError as exc:
                if isinstance(exc, Unreachable) or retry is None or retry.stop(attempt, loop.time() - first):
                    raise
                wait = retry.wait(attempt)
                if isinstance(exc, Throttled) and exc.retry_after is not None:
                    wait = max(wait, exc.retry_after)
                await asyncio.sleep(wait)

    async def one(index: int) -> None:
        nonlocal done, unreachable
        item = wanted[index]
        entry = item.entry
        record = known.get(item.save_as)
        previous = None
        if record and record.get("etag") and record.get("name") == entry.path:
            previous = RemoteEntry(entry.path, record.get("size"), record.get("mtime"), hash=record.get("hash"),
                                   etag=record["etag"])
        try:
            found = await ask(item, previous)
        except RemoteError as exc:
            report.failed += 1
            report.error = report.error or f"{entry.path}: {exc}"
            unreachable = unreachable or isinstance(exc, Unreachable)
        else:
            if previous is not None and found == replace(previous, path=entry.path):
                report.unchanged += 1
            out[index] = replace(item, entry=_completed(entry, found))
            report.completed += 1
        done += 1
        if progress is not None:
            await progress(done, len(todo))

    async def worker() -> None:
        for index in queue:
            if unreachable or (cancelled is not None and cancelled.is_set()):
                return
            await one(index)

    await asyncio.gather(*(worker() for _ in range(min(STAT_PARALLEL, len(todo)))))
    report.elapsed = loop.time() - started
    return out, report


def _completed(listed: RemoteEntry, found: RemoteEntry) -> RemoteEntry:
    """The listing's entry with what the server said of the file: its size, its date (to the
    second, finer than an index's minute) and validators; what it did not say stays as listed."""
    if found.size is None and found.mtime is None and not found.etag:
        return listed
    return replace(
        listed,
        size=found.size if found.size is not None else listed.size,
        mtime=found.mtime if found.mtime is not None else listed.mtime,
        hash=found.hash or listed.hash,
        etag=found.etag,
        size_hint=None if found.size is not None else listed.size_hint,
    )


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


def wanted_from_url(props: BankProperties, url: str, save_as: str, size: int | None = None,
                    mtime: float | None = None) -> Wanted:
    """The file a record says came from ``url``, to fetch again as ``save_as``: through the
    bank's own remote configuration (credentials, proxy, options, a direct file's parameters)
    when the URL is on the bank's server, else from the URL alone (no credentials are sent to
    another server). ConfigError when the URL names no protocol biomaj speaks."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    folder, name = posixpath.split(path)
    entry = RemoteEntry(name, size, mtime)
    protocol = (props.get("protocol") or "").lower()
    if protocol == "multi":
        candidates = [(config, secrets) for config, _, secrets in multi_configs(props)]
    elif protocol in ("local", "none", ""):
        candidates = []
    else:
        candidates = [(remote_config(props), _secrets(props))]
    for config, secrets in candidates:
        scheme = config.protocol.removeprefix("direct")
        if (scheme, config.host, config.port) != (parts.scheme, parts.hostname or "", parts.port):
            continue
        if config.protocol not in DIRECT_PROTOCOLS:
            return Wanted(replace(config, root=folder or "/"), entry, save_as, secrets)
        if posixpath.join(config.root, config.direct_file).strip("/") == path.strip("/"):
            return Wanted(config, replace(entry, path=config.direct_file), save_as, secrets)
    if parts.scheme == "local" or parts.scheme not in PROTOCOL_MODULES:
        raise ConfigError(f"{url}: not a URL biomaj can fetch a file from")
    config = RemoteConfig(protocol=parts.scheme, host=parts.hostname or "", port=parts.port, root=folder or "/")
    return Wanted(config, entry, save_as)
