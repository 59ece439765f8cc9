"""biomaj's side of the download benchmark: its own engine, driven as the downloader does.

  biomaj_mirror.py mirror http|ftp HOST:PORT /remote/dir/ LOCAL_DIR [--per-host 4] [--concurrency 8]
  biomaj_mirror.py mirror s3 http://HOST:PORT bucket/prefix/ LOCAL_DIR [...]   (keys: AWS_* variables)
  biomaj_mirror.py list   http|ftp|s3 SERVER DIR [--match]
  (both: [--loop auto|uvloop|asyncio])

mirror: one ClientPool(HostBudget(per_host)), one Fetcher(pool, FetchSettings(retry=...)) with the default
        retry policy and archive checks (BioMAJ's defaults); the tree is listed and matched with
        remote.files=**/* (match_files, through a client of the pool, so its login is reused by
        the first fetch), then the files go in batches of 64 to `concurrency` tasks, each
        Fetcher.fetch_many(config, [FetchItem(entry, safe_join(local, save_as))...]) as the
        downloader actor runs a download message, at most `per_host` connections at a time.
list:   one client, one listing of the directory (the protocol's list(), entries streamed and
        counted, nothing kept); with --match, match_files(client, "**/*") instead, which keeps
        every entry and builds the MatchedFile list as an update does.

Runs on uvloop when it is installed (biomaj's [fast] extra), unless --loop asyncio.
Prints one JSON line: counts, "seconds" = in-process time (after interpreter start-up and
imports), the loop used. Exit status 0 only if every file arrived (mirror) or the listing
returned entries (list).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from biomaj.download.engine import ClientPool, FetchFailed, Fetcher, FetchItem, FetchSettings
from biomaj.download.limits import HostBudget
from biomaj.download.matching import match_files
from biomaj.download.paths import safe_join
from biomaj.runtime.memory import tune_malloc
from biomaj.download.retry import RetryPolicy
from biomaj.protocols import open_protocol, protocol_class
from biomaj.protocols.base import RemoteConfig


BATCH = 64  # files per Fetcher.fetch_many call: the most the manager puts in one download message


def remote_config(proto: str, server: str, remote_dir: str) -> RemoteConfig:
    if proto == "s3":  # server: the endpoint URL; the key from the AWS_* variables, as a bank without credentials
        url = urlsplit(server)
        return RemoteConfig(protocol=proto, host=url.hostname or "", port=url.port, root=remote_dir,
                            options={"s3.endpoint": server})
    host, _, port = server.rpartition(":")
    return RemoteConfig(protocol=proto, host=host, port=int(port), root=remote_dir)


async def mirror(config: RemoteConfig, local: Path, per_host: int, concurrency: int) -> dict:
    t0 = time.perf_counter()
    pool = ClientPool(HostBudget(per_host))
    fetcher = Fetcher(pool, FetchSettings(retry=RetryPolicy.parse()))
    errors: list[str] = []
    transferred = 0
    try:
        async with pool.client(config) as client:
            matched = await match_files(client, "**/*")
        t_list = time.perf_counter() - t0
        local.mkdir(parents=True, exist_ok=True)
        resolved: dict = {}  # folders resolved once for the whole pass
        items = []
        for item in matched:
            try:
                items.append(FetchItem(item.entry, safe_join(local, item.save_as, resolved)))
            except Exception as exc:  # noqa: BLE001 - counted, reported, the run fails
                errors.append(f"{item.save_as}: {type(exc).__name__}: {exc}")
        queue = [items[i:i + BATCH] for i in range(0, len(items), BATCH)][::-1]

        async def done(index: int, result) -> None:
            nonlocal transferred
            if isinstance(result, BaseException):
                errors.append(str(result) if isinstance(result, FetchFailed) else f"{type(result).__name__}: {result}")
            else:
                transferred += result.transferred

        async def worker() -> None:
            while queue:
                await fetcher.fetch_many(config, queue.pop(), done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await pool.close()
    return {"op": "mirror", "files": len(matched), "bytes": transferred, "errors": len(errors),
            "first_errors": errors[:5], "list_seconds": round(t_list, 3),
            "seconds": round(time.perf_counter() - t0, 3)}


async def listing(config: RemoteConfig, match: bool) -> dict:
    t0 = time.perf_counter()
    files = dirs = 0
    client = open_protocol(config)
    try:
        if match:
            files = len(await match_files(client, "**/*"))
        else:
            async for entry in client.list(""):
                if entry.is_dir:
                    dirs += 1
                else:
                    files += 1
    finally:
        await client.close()
    return {"op": "list+match" if match else "list", "files": files, "dirs": dirs,
            "seconds": round(time.perf_counter() - t0, 3)}


def loop_factory(choice: str):
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("uvloop is not installed (pip install 'biomaj[fast]')")
            return None, "asyncio"
        return uvloop.new_event_loop, "uvloop"
    return None, "asyncio"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("mirror", "list"))
    ap.add_argument("proto", choices=("http", "ftp", "s3"))
    ap.add_argument("server", help="HOST:PORT (s3: the endpoint URL)")
    ap.add_argument("remote_dir")
    ap.add_argument("local_dir", nargs="?")
    ap.add_argument("--per-host", type=int, default=int(os.environ.get("BIOMAJ_BENCH_PER_HOST", 4)))
    ap.add_argument("--concurrency", type=int, default=int(os.environ.get("BIOMAJ_BENCH_CONCURRENCY", 8)))
    ap.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default=os.environ.get("BIOMAJ_BENCH_LOOP", "auto"))
    ap.add_argument("--match", action="store_true", help="list: run match_files('**/*') instead of one list()")
    a = ap.parse_args(argv)
    if a.mode == "mirror" and not a.local_dir:
        ap.error("mirror needs LOCAL_DIR")
    tune_malloc()  # as `biomaj serve` does at start
    config = remote_config(a.proto, a.server, a.remote_dir)
    protocol_class(a.proto)  # import the protocol module now: its import is not in "seconds"
    factory, loop_name = loop_factory(a.loop)
    if a.mode == "mirror":
        coro = mirror(config, Path(a.local_dir).absolute(), a.per_host, a.concurrency)
    else:
        coro = listing(config, a.match)
    with asyncio.Runner(loop_factory=factory) as runner:
        out = runner.run(coro)
    out["loop"] = loop_name
    if a.mode == "mirror":
        out.update(per_host=a.per_host, concurrency=a.concurrency)
    print(json.dumps(out))
    if a.mode == "mirror":
        return 0 if out["files"] and not out["errors"] else 1
    return 0 if out["files"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
