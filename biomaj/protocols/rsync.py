"""rsync through the ``rsync`` program: lists with ``--list-only``, fetches natively (no streaming).

Where the tree is:

- ``server`` empty: ``remote.dir`` is a local path (BioMAJ's local mode); a ``server`` holding an
  absolute path (BioMAJ 3's other spelling of local mode, with ``remote.dir`` empty) works too;
- ``options.rsync_transport=ssh``: ``[user@]host:remote.dir`` over ssh (key authentication,
  ``options.ssh_key``, ``ssh_hosts_file``, ``ssh_new_host`` as for SFTP);
- otherwise the rsync daemon: ``rsync://[user@]host[:port]/remote.dir``, whose first component is
  the module; the password goes to the child in ``RSYNC_PASSWORD`` only.

The program is run with an argument list, never a shell, with ``--protect-args`` and ``--`` before
paths; remote wildcards are escaped so that a name is never expanded to another file. Symbolic
links are followed (``--copy-links``): a listing shows what a fetch would bring, ``is_link`` is
never set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import posixpath
import re
import signal
import time
from collections.abc import AsyncIterator, Callable

from biomaj.protocols.base import (
    Unreachable,
    checked_path,
    FatalError,
    Features,
    Protocol,
    RemoteConfig,
    RemoteEntry,
    RemoteError,
    RemoteNotFound,
    RetryableError,
    Throttled,
)

log = logging.getLogger(__name__)

# Options -----------------------------------------------------------------------------------------

RSYNC = "rsync"
TRANSPORTS = ("", "daemon", "ssh")
NEW_HOST_POLICIES = {"reject": "yes", "accept": "no", "add": "accept-new"}  # ssh StrictHostKeyChecking
STDERR_KEEP = 16 * 1024  # bytes of the child's error output kept for messages
PROGRESS_EVERY = 0.25  # seconds between two looks at the size of the file being fetched

_LINE = re.compile(
    rb"^(?P<mode>[-dlpscb][-rwxsStT]{9})\S*\s+(?P<size>[\d,.']+)\s+"
    rb"(?P<date>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) (?P<name>.+)$"
)
_ESCAPE = re.compile(rb"\\#([0-7]{3})")
_GLOB = re.compile(r"([*?\[\]\\])")


def entry_hash(name: str, mtime: float | None, size: int | None) -> str:
    """md5 of name + mtime + size, as BioMAJ hashes local files."""
    return hashlib.md5(f"{name}{mtime}{size}".encode("utf-8", "surrogateescape")).hexdigest()


def parse_list_line(line: bytes, directory: str = "") -> RemoteEntry | None:
    """One line of ``rsync --list-only`` as an entry of `directory`; None for ``.`` and noise.

    ``drwxr-xr-x          4,096 2020/09/13 12:26:40 name``: the date is in local time, names
    have their unprintable bytes escaped as ``\\#ooo``.
    """
    match = _LINE.match(line.rstrip(b"\r\n"))
    if match is None:
        return None
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), match["name"])
    name = raw.decode("utf-8", "surrogateescape")
    if name in (".", ".."):
        return None
    is_dir = match["mode"].startswith(b"d")
    size = None if is_dir else int(re.sub(rb"[,.']", b"", match["size"]))
    mtime = time.mktime(time.strptime(match["date"].decode(), "%Y/%m/%d %H:%M:%S"))
    path = f"{directory}/{name}" if directory else name
    return RemoteEntry(path, size, mtime, is_dir, False, entry_hash(name, mtime, size))


# The protocol ------------------------------------------------------------------------------------


class RsyncProtocol(Protocol):
    """A tree served by an rsync daemon, over ssh, or local; each call runs one ``rsync``."""

    names = ("rsync",)
    features = Features(native_fetch=True, resume=True, mtime_precision=1.0)

    def __init__(self, config: RemoteConfig):
        super().__init__(config)
        transport = config.options.get("rsync_transport", "") or ""
        if transport not in TRANSPORTS:
            raise FatalError(f"options.rsync_transport={transport!r}: expected daemon (default) or ssh")
        if not config.host or config.host.startswith("/"):
            self._mode = "local"
        else:
            self._mode = transport or "daemon"
            for value, key in ((config.host, "server"), (config.user or "", "server.credentials user")):
                if re.search(r"[\s@/]", value) or value.startswith("-"):
                    raise FatalError(f"{key}={value!r}: not a valid rsync host or user name")
        self._children: set[asyncio.subprocess.Process] = set()

    # Command helpers -----------------------------------------------------------------------------

    def _source(self, path: str, *, directory: bool = False) -> str:
        config = self.config
        slash = "/" if directory else ""
        if self._mode == "local":
            base = posixpath.join(config.host, config.root.lstrip("/")) if config.host else config.root
            # Absolute, so that a ':' in it never makes rsync take it for host:path.
            source = os.path.abspath(posixpath.join(base or ".", path))
            return source.rstrip("/") + slash if source != "/" else "/"
        remote = posixpath.join(config.root or "/", path) if path else (config.root or "/")
        remote = _GLOB.sub(r"\\\1", remote.rstrip("/")) + slash
        user = f"{config.user}@" if config.user else ""
        if self._mode == "ssh":
            return f"{user}{config.host}:{remote}"
        host = f"[{config.host}]" if ":" in config.host else config.host
        port = f":{config.port}" if config.port else ""
        return f"rsync://{user}{host}{port}/{remote.lstrip('/')}"

    def _command(self, *args: str) -> list[str]:
        config = self.config
        command = [RSYNC, "--no-motd", "--protect-args", "--copy-links"]
        command.append(f"--timeout={max(1, math.ceil(config.read_timeout))}")
        if self._mode == "daemon":
            command.append(f"--contimeout={max(1, math.ceil(config.connect_timeout))}")
        elif self._mode == "ssh":
            command += ["--rsh", self._ssh_command()]
        return command + list(args)

    def _ssh_command(self) -> str:
        config, options = self.config, self.config.options
        policy = options.get("ssh_new_host", "reject") or "reject"
        if policy not in NEW_HOST_POLICIES:
            raise FatalError(f"options.ssh_new_host={policy!r}: expected one of {', '.join(NEW_HOST_POLICIES)}")
        parts = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, math.ceil(config.connect_timeout))}"]
        parts += ["-o", f"StrictHostKeyChecking={NEW_HOST_POLICIES[policy]}"]
        hosts_file = options.get("ssh_hosts_file")
        if hosts_file:
            parts += ["-o", f"UserKnownHostsFile={os.path.expanduser(hosts_file)}"]
        if options.get("ssh_key"):
            parts += ["-i", os.path.expanduser(options["ssh_key"])]
        if config.port:
            parts += ["-p", str(config.port)]
        for part in parts:  # rsync splits this string itself: no room for spaces or quotes
            if re.search(r"[\s'\"\\]", part):
                raise FatalError(f"rsync over ssh: {part!r} holds spaces or quotes, which --rsh cannot carry")
        return " ".join(parts)

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RSYNC_PASSWORD"}
        env["LC_ALL"] = "C"  # fixed number and name formats in --list-only output
        if self._mode == "daemon" and self.config.password:
            env["RSYNC_PASSWORD"] = self.config.password
        return env

    async def _spawn(self, command: list[str]) -> asyncio.subprocess.Process:
        log.debug("rsync: %s", " ".join(command))
        try:
            child = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environment(),
                start_new_session=True,  # no terminal to prompt on; killpg reaches its ssh too
            )
        except FileNotFoundError as exc:
            raise FatalError(f"the {RSYNC} program is not installed (needed by protocol=rsync)") from exc
        self._children.add(child)
        return child

    def _kill(self, child: asyncio.subprocess.Process) -> None:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)

    async def _reap(self, child: asyncio.subprocess.Process, errors: asyncio.Task) -> None:
        """Kill the child if it still runs (we were cancelled or left early) and wait for it."""
        self._kill(child)
        if child.returncode is None or not errors.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(asyncio.gather(child.wait(), errors))
        self._children.discard(child)

    async def _finish(
        self, child: asyncio.subprocess.Process, errors: asyncio.Task, what: str, *, listing: bool = False
    ) -> None:
        """Wait for the child; the shared error for its exit code when it failed."""
        returncode = await child.wait()
        stderr = await errors
        self._children.discard(child)
        if returncode == 23 and listing and _only_dangling_links(stderr):
            # --copy-links cannot follow a link to nothing: the listing is complete without it.
            log.warning("rsync: %s: links to nothing left out: %s", what, stderr.decode("utf-8", "replace").strip())
        elif returncode != 0:
            raise _translate_error(returncode, stderr, f"{self.config.address or 'local'}: {what}",
                                   server=self.config.server_url if self.config.address else None)

    # list / stat / fetch -------------------------------------------------------------------------

    async def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        """``rsync --list-only`` of the directory, entries yielded as its lines arrive."""
        path = checked_path(path, no_dash=True)
        source = self._source(path, directory=True)
        async with contextlib.aclosing(self._list_only(source, path, f"list {path or '/'}")) as entries:
            async for entry in entries:
                yield entry

    async def _list_only(self, source: str, directory: str, what: str) -> AsyncIterator[RemoteEntry]:
        child = await self._spawn(self._command("--list-only", "--", source))
        errors = asyncio.ensure_future(_read_errors(child.stderr))
        try:
            async for line in child.stdout:
                entry = parse_list_line(line, directory)
                if entry is not None:
                    yield entry
            await self._finish(child, errors, what, listing=True)
        finally:
            await self._reap(child, errors)

    async def stat(self, path: str) -> RemoteEntry:
        """``rsync --list-only`` of the file itself."""
        path = checked_path(path, no_dash=True)
        if not path:
            raise FatalError("rsync: stat of the root itself is not supported")
        source = self._source(path)
        listing = self._list_only(source, posixpath.dirname(path), f"stat {path}")
        async with contextlib.aclosing(listing) as entries:
            async for entry in entries:
                return entry
        raise RemoteNotFound(f"{self.config.address or 'local'}: {path}: no such file")

    def open(self, path: str, offset: int = 0, *, size: int | None = None, end: int | None = None):
        raise NotImplementedError("rsync does not stream: the downloader must call fetch() (features.native_fetch)")

    async def fetch(
        self, path: str, dest: str, *, offset: int = 0, on_bytes: Callable[[int], None] | None = None
    ) -> RemoteEntry:
        """rsync one file to `dest` (``--partial --inplace``: a partial `dest` is completed by
        rsync's own delta transfer, so `offset` needs no handling). `on_bytes(n)`, when given, is
        told how much `dest` grew, a few times a second."""
        path = checked_path(path, no_dash=True)
        target = dest if not dest.startswith("-") else f"./{dest}"
        command = self._command("--times", "--partial", "--inplace", "--", self._source(path), target)
        progress = _Progress(dest, on_bytes) if on_bytes is not None else None
        if progress is not None:
            await progress.look()
        child = await self._spawn(command)
        errors = asyncio.ensure_future(_read_errors(child.stderr))
        watcher = asyncio.ensure_future(progress.run()) if progress is not None else None
        try:
            await child.stdout.read()
            await self._finish(child, errors, f"fetch {path}")
        finally:
            if watcher is not None:
                watcher.cancel()
            await self._reap(child, errors)
        try:
            st = await asyncio.to_thread(os.stat, dest)
        except FileNotFoundError:
            raise FatalError(f"{self.config.address or 'local'}: fetch {path}: rsync wrote nothing (a directory?)") from None
        if progress is not None:
            await progress.look()
        name = posixpath.basename(path)
        return RemoteEntry(path, st.st_size, st.st_mtime, False, False, entry_hash(name, st.st_mtime, st.st_size))

    async def close(self) -> None:
        """Kill any rsync still running for this instance."""
        for child in list(self._children):
            self._kill(child)
            with contextlib.suppress(Exception):
                await child.wait()
        self._children.clear()


async def _read_errors(stream: asyncio.StreamReader) -> bytes:
    """The child's error output (its last STDERR_KEEP bytes), read as it comes."""
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-STDERR_KEEP:]
    return kept


def _only_dangling_links(stderr: bytes) -> bool:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return any(_DANGLING in line for line in lines) and all(
        _DANGLING in line or line.startswith("rsync error: some files/attrs were not transferred") for line in lines
    )


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class _Progress:
    """Reports how much the file being fetched grew, a few times a second."""

    def __init__(self, dest: str, on_bytes):
        self.dest = dest
        self.on_bytes = on_bytes
        self.reported: int | None = None

    async def look(self) -> None:
        size = await asyncio.to_thread(_size, self.dest)
        if self.reported is not None and size > self.reported:
            self.on_bytes(size - self.reported)
        self.reported = size if self.reported is None else max(size, self.reported)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            await self.look()


# Errors ------------------------------------------------------------------------------------------

# Usage, protocol, unsupported action, local file I/O: trying again will not help. Everything else
# (5 starting the session, 10 socket, 12 data stream, 30/35 timeouts, 255 ssh ...) may pass.
_FATAL_CODES = {1, 2, 3, 4, 6, 11, 25}
_DANGLING = "symlink has no referent"
#: rsync's (or ssh's) words for a connection that did not open -> ours (protocols.base.connect_failure)
_UNREACHABLE = {"connection refused": "connection refused", "name or service not known": "unknown host",
                "could not resolve hostname": "unknown host", "connection timed out": "no answer (connection timed out)",
                "no route to host": "no route to host"}


def _translate_error(returncode: int, stderr: bytes, where: str, *, server: str | None = None) -> RemoteError:
    """Map an rsync exit code and its error output onto the shared errors."""
    text = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = "; ".join(lines[-3:])[-500:] or "no message"
    message = f"{where}: rsync exited with code {returncode}: {detail}"
    lowered = text.lower()
    for said, reason in _UNREACHABLE.items():
        if server and said in lowered:
            return Unreachable(f"cannot reach {server}: {reason}")
    if returncode < 0:
        return RetryableError(f"{where}: rsync was killed by signal {-returncode}")
    if "auth failed" in lowered or "permission denied (publickey" in lowered or "access denied" in lowered:
        return FatalError(f"{where}: rsync authentication failed (check server.credentials): {detail}")
    if "host key verification failed" in lowered or "remote host identification has changed" in lowered:
        return FatalError(f"{where}: ssh host key not trusted (see options.ssh_hosts_file and ssh_new_host): {detail}")
    if "max connections" in lowered or "try again later" in lowered:
        return Throttled(message)
    if "unknown module" in lowered or _DANGLING in lowered:
        return RemoteNotFound(f"{where}: no such rsync module (the first component of remote.dir): {detail}")
    if returncode in (23, 24):
        if "permission denied" in lowered:
            return FatalError(message)
        if "no such file" in lowered or "vanished" in lowered or "not a directory" in lowered:
            return RemoteNotFound(message)
        return RetryableError(message)
    if returncode in _FATAL_CODES:
        return FatalError(message)
    return RetryableError(message)
