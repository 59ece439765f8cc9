"""The remote of docker/smoke.sh: python's http.server over a folder on 127.0.0.1, slowed down,
recording which container asked for each file.

    python3 docker/smoke_remote.py FOLDER --delay 0.1 --port-file P --pids PIDS --log LOG

It writes the port it listens on to P, then serves FOLDER (HTTP/1.1, python's index pages, which
biomaj reads) until killed, sleeping ``--delay`` seconds before each file. Each file request is
logged as ``<container> <path>``: the container is found from the client's TCP port (the containers
run on the host's network, so their sockets are in this host's /proc/net/tcp) and the socket's owner
among the processes listed in PIDS (``<pid> <name>`` lines, written by smoke.sh once the
containers run; ``?`` when none owns it). Needs root to read other processes' /proc/PID/fd.
Standard library only: it runs on the host's python3.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def socket_inode(port: int) -> str | None:
    """The inode of the TCP socket bound locally to ``port`` (the client's side)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                return fields[9]
    return None


def owner(port: int, pids_file: Path) -> str:
    """The name (from ``pids_file``) of the process holding the client socket of ``port``."""
    inode = socket_inode(port)
    if inode is None:
        return "?"
    wanted = f"socket:[{inode}]"
    try:
        entries = [line.split(None, 1) for line in pids_file.read_text().splitlines() if line.strip()]
    except OSError:
        return "?"
    for pid, name in entries:
        fd_dir = Path("/proc", pid, "fd")
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(fd_dir / fd) == wanted:
                        return name.strip()
                except OSError:
                    continue
        except OSError:
            continue
    return "?"


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and pipelining, as biomaj uses them
    delay = 0.0
    pids_file = Path("/nonexistent")
    log_lock = threading.Lock()
    log_file = None

    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            who = owner(self.client_address[1], self.pids_file)
            with self.log_lock:
                self.log_file.write(f"{who} {self.path}\n")
                self.log_file.flush()
            if self.delay:
                time.sleep(self.delay)
        return super().send_head()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # the request log above is the record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--pids", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    Handler.delay = args.delay
    Handler.pids_file = args.pids
    Handler.log_file = args.log.open("a", buffering=1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(args.folder)))
    server.daemon_threads = True
    args.port_file.write_text(f"{server.server_address[1]}\n")
    print(f"smoke remote: {args.folder} on http://127.0.0.1:{server.server_address[1]}/", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
