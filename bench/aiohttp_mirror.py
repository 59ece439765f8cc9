"""Extra row of the download benchmark (not a BioMAJ tool): the smallest reasonable asyncio/aiohttp mirror,
to show what a pure-Python asyncio HTTP client reaches on this machine.

  aiohttp_mirror.py list   URL_DIR/            -> GET one Apache index, parse entries
  aiohttp_mirror.py mirror URL_DIR/ LOCAL_DIR [N] -> crawl Apache indexes recursively,
                                                  then N concurrent GETs (default 4),
                                                  1 MiB chunks written to disk.
Prints one JSON line. Exit 0 only if every file arrived.
"""
import asyncio
import json
import os
import re
import sys
import time
from urllib.parse import urljoin

import aiohttp

# Apache FancyIndexing <pre> line: <img ... alt="[...]"> <a href="NAME">
ENTRY = re.compile(r'<img[^>]+alt="\[([^"]*)\]"[^>]*>\s*<a href="([^"?/][^"]*)"')
CHUNK = 1 << 20


async def list_dir(session, url):
    async with session.get(url) as r:
        r.raise_for_status()
        text = await r.text()
    files, dirs = [], []
    for alt, href in ENTRY.findall(text):
        if alt == "PARENTDIR":
            continue
        (dirs if href.endswith("/") else files).append(href)
    return files, dirs


async def crawl(session, url, prefix=""):
    files, dirs = await list_dir(session, url)
    out = [(urljoin(url, f), prefix + f) for f in files]
    subs = await asyncio.gather(*(crawl(session, urljoin(url, d), prefix + d) for d in dirs))
    for s in subs:
        out.extend(s)
    return out


async def fetch(session, url, path):
    async with session.get(url) as r:
        r.raise_for_status()
        with open(path, "wb") as f:
            async for chunk in r.content.iter_chunked(CHUNK):
                f.write(chunk)


async def mirror(url, local, n):
    t0 = time.time()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=n)) as s:
        entries = await crawl(s, url)
        t_list = time.time() - t0
        for d in {os.path.dirname(rel) for _, rel in entries}:
            os.makedirs(os.path.join(local, d), exist_ok=True)
        q = asyncio.Queue()
        for e in entries:
            q.put_nowait(e)
        errors = []

        async def worker():
            while not q.empty():
                u, rel = q.get_nowait()
                try:
                    await fetch(s, u, os.path.join(local, rel))
                except Exception as e:  # keep going, report
                    errors.append("%s: %s" % (u, e))

        await asyncio.gather(*(worker() for _ in range(n)))
    print(json.dumps({"op": "mirror", "files": len(entries), "list_seconds": round(t_list, 3),
                      "seconds": round(time.time() - t0, 3), "errors": errors[:5]}))
    return 1 if errors or not entries else 0


async def list_only(url):
    t0 = time.time()
    async with aiohttp.ClientSession() as s:
        files, dirs = await list_dir(s, url)
    print(json.dumps({"op": "list", "files": len(files), "dirs": len(dirs), "seconds": round(time.time() - t0, 3)}))
    return 0 if files else 1


def main(argv):
    if len(argv) >= 2 and argv[0] == "list":
        return asyncio.run(list_only(argv[1]))
    if len(argv) >= 3 and argv[0] == "mirror":
        return asyncio.run(mirror(argv[1], argv[2], int(argv[3]) if len(argv) > 3 else 4))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
