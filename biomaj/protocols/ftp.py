"""FTP and FTPS, and their direct variants: one control connection and one login per instance.

Options (BioMAJ ``options.*``):

- ``ssl_verifypeer`` / ``ssl_verifyhost`` (default true): verify the server's certificate chain /
  that it names the host; ``ssl_server_cert``: a CA file (PEM) to verify it with;
- ``ftps_mode``: ``implicit`` (default: TLS from the first byte, port 990, what curl's ``ftps://``
  does, hence BioMAJ 3) or ``explicit`` (``AUTH TLS`` on port 21, what most FTPS servers offer);
- ``ftp_method``: ``default``/``singlecwd`` (one ``CWD`` to the directory, then relative names),
  ``multicwd`` (one ``CWD`` per path component) or ``nocwd`` (full paths in every command; a
  missing directory may then list as empty: vsftpd answers ``LIST missing`` with 226);
- ``ftp_listing``: ``mlsd`` (default: MLSD, LIST when the server refuses it) or ``list`` (LIST
  only: listing hashes are then BioMAJ 3's, which always used LIST);
- ``tcp_keepalive``: seconds; keeps the control connection alive through NATs during long transfers;
- ``ftp_early_epsv`` (default true): at the end of a file's data, ask ``EPSV`` for the next transfer
  before the file's ``226`` has come (one round trip less per file); ``false`` waits for the
  ``226`` first, for a firewall or server that drops a command sent before the previous reply.

As with curl, ``root`` is relative to the login directory (``PWD``): ``/`` for anonymous logins.
Names are UTF-8; other bytes survive the round trip (surrogateescape).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import posixpath
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial

from biomaj.protocols.base import (
    checked_path,
    FatalError, Features, Protocol, RemoteConfig, RemoteEntry, RemoteError, RemoteNotFound, RemoteStream,
    RetryableError, Throttled, unreachable,
)
from biomaj.protocols.ftp_listing import fact, line_hash, parse_list_line, parse_mlsd_line, parse_mlsx_time, split_lines

log = logging.getLogger(__name__)

# Options -----------------------------------------------------------------------------------------

BLOCK = 1024 * 1024  # data connections are read into blocks of this size (one copy per block)
QUEUED_BLOCKS = 4  # blocks read ahead of the consumer before the data connection is paused
NUDGE = 0.05  # seconds a waiting consumer waits at most for a block to fill before getting what came
RESYNC_TIMEOUT = 10.0  # seconds to resynchronise the control connection after an early exit
LINE_MAX = 1 << 20  # longest reply line accepted on the control connection
ANONYMOUS = ("anonymous", "ftp@example.com")  # curl's anonymous login
UNSUPPORTED = (500, 502, 504)  # "command unknown / not implemented"
FTP_METHODS = ("default", "singlecwd", "multicwd", "nocwd")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_PERMISSION = re.compile(r"permission|access denied|not permitted|forbidden", re.I)
_TOO_MANY = re.compile(r"too many|maximum number|max.*(client|connection|user|login)", re.I)
_EPSV = re.compile(r"\(([^\d])\1\1(\d+)\1\)")
_PASV = re.compile(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)")


def _choice(options, name: str, allowed: tuple[str, ...]) -> str:
    value = (options.get(name) or allowed[0]).strip().lower()
    if value not in allowed:
        raise FatalError(f"options.{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _flag(options, name: str, default: bool) -> bool:
    value = str(options.get(name, "")).strip().lower()
    if value and value not in _TRUE + _FALSE:  # a typo must not turn certificate checks off
        raise FatalError(f"options.{name}={value!r}: expected true or false")
    return value in _TRUE if value else default


class _FtpError(Exception):
    """An FTP reply other than the expected one."""

    def __init__(self, command: str, code: int, text: str):
        super().__init__(f"{command}: {code} {text}")
        self.command, self.code, self.text = command, code, text


# The protocol ------------------------------------------------------------------------------------


class FtpProtocol(Protocol):
    """A remote tree over FTP or FTPS; one login serves every list, stat and open of this instance
    (a second one only while a listing is left suspended and another call comes in)."""

    names = ("ftp", "ftps")
    # LIST dates are to the minute (to the day for old files), MLSD's to the second; a class
    # attribute cannot depend on the server, so the coarser precision is declared.
    features = Features(can_list=True, resume=True, mtime_precision=60.0)
    direct = False

    def __init__(self, config: RemoteConfig):
        super().__init__(config)
        options = config.options
        ftps = config.protocol.endswith("ftps")
        self._tls = _choice(options, "ftps_mode", ("implicit", "explicit")) if ftps else None
        self._method = _choice(options, "ftp_method", FTP_METHODS)
        self._verify_peer = _flag(options, "ssl_verifypeer", True)
        self._verify_host = _flag(options, "ssl_verifyhost", True)
        self._ca_file = options.get("ssl_server_cert") or None
        try:
            self._keepalive = int(options.get("tcp_keepalive") or 0)
        except ValueError:
            raise FatalError(f"options.tcp_keepalive={options.get('tcp_keepalive')!r}: expected seconds") from None
        # What the server answered once is not asked again (None: not known yet).
        self._mlsd: bool | None = None if _choice(options, "ftp_listing", ("mlsd", "list")) == "mlsd" else False
        self._mlst: bool | None = None
        self._early_epsv = _flag(options, "ftp_early_epsv", True)
        self._idle: list[_Control] = []  # logged-in connections waiting for the next call
        self._open: set[_Control] = set()
        self._closed = False

    # Connection helpers --------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self._ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise FatalError(f"options.ssl_server_cert={self._ca_file!r}: {exc}") from None
        context.check_hostname = self._verify_host and self._verify_peer
        if not self._verify_peer:
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _connect(self) -> _Control:
        config = self.config
        context = self._ssl_context() if self._tls else None
        implicit = self._tls == "implicit"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(config.connect_timeout):
                _, ctl = await loop.create_connection(
                    partial(_Control, config, context, self._keepalive),
                    config.host, config.port or (990 if implicit else 21),
                    ssl=context if implicit else None, server_hostname=config.host if implicit else None,
                )
        except ssl.SSLError:
            raise  # the server answered: its certificate or TLS is the problem
        except OSError as exc:  # refused, unknown host, no route, no answer (TimeoutError)
            raise unreachable(config.server_url, exc) from None
        self._open = {c for c in self._open if not c.broken} | {ctl}
        try:
            await ctl.expect(None, 220)
            if self._tls == "explicit":
                await ctl.expect("AUTH TLS", 234)
                async with asyncio.timeout(config.connect_timeout):
                    await ctl.start_tls(context, config.host)
            await ctl.login(*((config.user, config.password or "") if config.user else ANONYMOUS))
            if self._tls:
                await ctl.expect("PBSZ 0", 200)
                code, text = await ctl.command("PROT P")
                if code // 100 != 2 and self._tls == "explicit":
                    raise _FtpError("PROT P", code, text)  # never clear-text data for an ftps bank
            await ctl.expect("TYPE I", 200)
            code, text = await ctl.command("PWD")
            home = text.split('"')[1] if code == 257 and text.count('"') >= 2 else "/"
            ctl.base = posixpath.normpath(posixpath.join(home or "/", config.root.lstrip("/")))
        except BaseException:
            ctl.close()
            raise
        return ctl

    async def _acquire(self) -> _Control:
        """An idle logged-in connection, or a new one; the caller owns it until :meth:`_release`."""
        if self._closed:
            raise FatalError(f"ftp {self.config.address}: client already closed")
        while self._idle:
            ctl = self._idle.pop()
            if not ctl.broken:
                ctl.reused, ctl.sent = True, 0
                return ctl
        return await self._connect()

    def _release(self, ctl: _Control) -> None:
        if ctl.broken or self._closed:
            ctl.close()
        elif ctl not in self._idle:
            self._idle.append(ctl)

    async def _run(self, what: str, step):
        """``(ctl, await step(ctl))`` on an acquired connection. A reused connection whose first
        command meets EOF, a reset or 421 was closed by the server while idle: it is replaced
        once, transparently. Errors are translated (see :meth:`_failed`)."""
        ctl = None
        try:
            ctl = await self._acquire()
            try:
                return ctl, await step(ctl)
            except (OSError, EOFError, _FtpError) as exc:
                stale = exc.code == 421 if isinstance(exc, _FtpError) else ctl.broken
                if not (ctl.reused and stale and ctl.sent <= 1):
                    raise
                log.debug("ftp %s: connection closed while idle, logging in again", self.config.address)
                ctl.close()
                ctl = await self._connect()
                return ctl, await step(ctl)
        except BaseException as exc:
            raise self._failed(ctl, exc, what) from None

    def _failed(self, ctl: _Control | None, exc: BaseException, what: str) -> BaseException:
        """The error to raise for ``exc``. ``ctl`` goes back to the pool when the server merely
        refused a command (it is still in sync), else it is closed."""
        if ctl is not None:
            if isinstance(exc, (_FtpError, RemoteError)):
                self._release(ctl)  # closes it when broken (421)
            else:
                ctl.close()
        if isinstance(exc, Exception):
            return _translate_error(exc, f"ftp {self.config.address} {what}") or exc
        return exc

    async def _target(self, ctl: _Control, path: str, is_dir: bool = False) -> str:
        """How commands name ``path``: relative to the directory we CWD to (``""`` for that
        directory itself), or in full with ``nocwd``."""
        full = posixpath.join(ctl.base, path)
        if self._method == "nocwd":
            return full
        directory, name = (full, "") if is_dir else posixpath.split(full)
        if ctl.cwd != directory:
            ctl.cwd = None
            steps = ["/", *(p for p in directory.split("/") if p)] if self._method == "multicwd" else [directory]
            for step in steps:
                await ctl.expect(f"CWD {step}", 250, 200)
            ctl.cwd = directory
        return name

    async def _transfer(self, ctl: _Control, command: str, offset: int = 0):
        """A passive data connection (EPSV, else PASV) to the control connection's peer (a PASV
        address may be private, a host name may resolve to several servers), ``REST`` and
        ``command``. Returns (channel, offset) on 125/150, else the reply (code, text).

        ``command`` goes as soon as the passive reply came, before the data connection is made:
        the server handles it while we connect (servers accept the data connection once the
        command came, in whichever order the two arrive). Every command still waits for the
        reply to the one before (no pipelining: some servers and firewalls drop or refuse
        commands sent ahead). When the data connection fails, the command's reply tells a
        refusal (550: no such file; the session stays in sync) from a server waiting for us."""
        if ctl.ahead:
            await ctl.settle()
        port, ctl.ready_port = ctl.ready_port, None  # asked at the end of the previous file
        if port is None and ctl.epsv:
            code, text = await ctl.command("EPSV")
            if code == 229 and (found := _EPSV.search(text)):
                port = int(found.group(2))
            elif code // 100 == 5:
                ctl.epsv = False
            else:
                raise _FtpError("EPSV", code, text)
        if port is None:
            code, text = await ctl.command("PASV")
            if code != 227 or not (found := _PASV.search(text)):
                raise _FtpError("PASV", code, text)
            port = int(found.group(5)) * 256 + int(found.group(6))
        if offset and (code := (await ctl.command(f"REST {offset}"))[0]) != 350:
            log.info("ftp %s: REST refused (%s), restarting at 0", self.config.address, code)
            offset = 0
        ctl.send(command)
        loop = ctl.loop
        channel = _DataChannel(self.config.read_timeout, ctl.receive_buffer(), loop)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await loop.create_connection(lambda: channel, ctl.peer, port)
        except OSError:  # TimeoutError included
            if (refused := await _refusal(ctl)) is None:
                ctl.close()
                raise
            return refused
        try:
            if self._keepalive:
                _keepalive(channel.transport.get_extra_info("socket"), self._keepalive)
            code, text = await ctl.reply()
            if code not in (125, 150):
                channel.abort()
                return code, text
            if (context := ctl.data_context()) is not None:
                # Servers start TLS on the data connection only once the command came (vsftpd).
                async with asyncio.timeout(self.config.connect_timeout):
                    channel.transport = await loop.start_tls(channel.transport, channel, context,
                                                             server_hostname=self.config.host)
        except BaseException:
            channel.abort()
            raise
        return channel, offset

    # list / stat / open --------------------------------------------------------------------------

    async def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        path = checked_path(path, forbid="\x00\r\n")
        what, prefix, now = f"list {path or '/'}", (path + "/" if path else ""), time.time()
        ctl, (channel, mlsd) = await self._run(what, lambda ctl: self._start_listing(ctl, path))
        parse = partial(parse_mlsd_line, prefix=prefix) if mlsd else partial(parse_list_line, prefix=prefix, now=now)
        try:
            pending = b""
            while (chunk := await channel.read()) is not None:
                lines, pending = split_lines(pending, chunk)
                for raw in lines:
                    if (entry := parse(raw)) is not None:
                        yield entry
            if pending and (entry := parse(pending.rstrip(b"\r"))) is not None:
                yield entry
            await ctl.expect(None, 226, 250, 200)
        except GeneratorExit:  # left early: the rest of the listing is still on its way
            channel.abort()
            ctl.close()
            raise
        except BaseException as exc:
            channel.abort()
            raise self._failed(ctl, exc, what) from None
        self._release(ctl)

    async def _start_listing(self, ctl: _Control, path: str) -> tuple[_DataChannel, bool]:
        argument = await self._target(ctl, path, is_dir=True)
        argument = " " + argument if argument else ""
        if self._mlsd is not False:
            result = await self._transfer(ctl, "MLSD" + argument)
            if isinstance(result[0], _DataChannel):
                self._mlsd = True
                return result[0], True
            if result[0] not in UNSUPPORTED or self._mlsd:
                raise _FtpError("MLSD", *result)
            self._mlsd = False
        result = await self._transfer(ctl, "LIST" + argument)
        if not isinstance(result[0], _DataChannel):
            raise _FtpError("LIST", *result)
        return result[0], False

    async def stat(self, path: str) -> RemoteEntry:
        path = checked_path(path, forbid="\x00\r\n")
        ctl, entry = await self._run(f"stat {path}", lambda ctl: self._stat(ctl, path))
        self._release(ctl)
        return entry

    async def _stat(self, ctl: _Control, path: str) -> RemoteEntry:
        target = await self._target(ctl, path)
        if self._mlst is not False and not self.direct:
            code, text = await ctl.command(f"MLST {target}")
            if code == 250 and (entry := _mlst_entry(text, path)) is not None:
                self._mlst = True
                if entry.is_dir or (entry.size is not None and entry.mtime is not None):
                    return entry
                # facts left out (a server that gives no size of a link, or no modify): SIZE, MDTM
                try:
                    size, mtime, _ = await self._size_mdtm(ctl, target)
                except _FtpError as exc:
                    if exc.code == 421:
                        raise
                    return entry  # refused for this file (550 on a link): what MLST said
                return replace(entry, size=entry.size if entry.size is not None else size,
                               mtime=entry.mtime if entry.mtime is not None else mtime)
            if code not in UNSUPPORTED or self._mlst:
                raise _FtpError("MLST", code, text)
            self._mlst = False
        size, mtime, stamp = await self._size_mdtm(ctl, target)
        if size is None and mtime is None:
            return RemoteEntry(path)  # neither command exists: the name is all we know
        # direct*: md5 of the MDTM timestamp, as BioMAJ 3; otherwise the size counts too
        token = stamp if self.direct else f"{stamp} {size}"
        return RemoteEntry(path, size, mtime, hash=hashlib.md5(token.encode()).hexdigest())

    async def _size_mdtm(self, ctl: _Control, target: str) -> tuple[int | None, float | None, str]:
        """(size, mtime, MDTM timestamp text) from SIZE and MDTM; what a server does not
        implement is None (``""``); an error when both are refused for another reason (550)."""
        size_code, size_text = await ctl.command(f"SIZE {target}")
        mdtm_code, mdtm_text = await ctl.command(f"MDTM {target}")
        if size_code != 213 and mdtm_code != 213:
            for command, code, text in (("SIZE", size_code, size_text), ("MDTM", mdtm_code, mdtm_text)):
                if code not in UNSUPPORTED:  # 550: no such file
                    raise _FtpError(command, code, text)
        size = int(size_text) if size_code == 213 and size_text.strip().isdigit() else None
        stamp = mdtm_text.strip() if mdtm_code == 213 else ""
        return size, parse_mlsx_time(stamp), stamp

    def open(self, path: str, offset: int = 0, *, size: int | None = None, end: int | None = None) -> _Opening:
        return _Opening(self, path, offset, size)

    async def _start_retr(self, ctl: _Control, path: str, offset: int, size: int | None) -> _FtpStream:
        target = await self._target(ctl, path)
        from_server = size is None  # the listing's size saves a round trip per file
        if from_server:
            code, text = await ctl.command(f"SIZE {target}")
            size = int(text) if code == 213 and text.strip().isdigit() else None
        result = await self._transfer(ctl, f"RETR {target}", offset)
        if not isinstance(result[0], _DataChannel):
            raise _FtpError("RETR", *result)
        return _FtpStream(self, ctl, result[0], path, result[1], size, short_is_error=from_server)

    async def _abort(self, stream: _FtpStream) -> None:
        """Leave a transfer early: close the data connection, send ABOR and NOOP and skip every
        reply up to NOOP's 200. A server that does not answer in time loses the connection."""
        stream.channel.abort()
        ctl, stream.state = stream.ctl, "aborted"
        ctl.ahead, ctl.ready_port = 0, None  # an early EPSV's reply is skipped with the others
        try:
            async with asyncio.timeout(min(RESYNC_TIMEOUT, self.config.read_timeout)):
                ctl.send("ABOR")
                ctl.send("NOOP")
                while (await ctl.reply())[0] != 200:
                    pass
        except Exception as exc:
            log.debug("ftp %s: no clean abort (%r), closing the connection", self.config.address, exc)
            ctl.close()
        finally:
            self._release(ctl)  # closes it when broken or cancelled

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for ctl in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ctl.command("QUIT")
        for ctl in self._open:
            ctl.close()
        self._open.clear()


class DirectFtpProtocol(FtpProtocol):
    """``directftp``/``directftps``: the single file ``config.direct_file`` of directory ``root``.
    ``list("")`` yields it from SIZE and MDTM, hashed as BioMAJ 3 does (md5 of the MDTM timestamp)."""

    names = ("directftp", "directftps")
    features = Features(can_list=False, resume=True, mtime_precision=1.0)
    direct = True

    async def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        if checked_path(path, forbid="\x00\r\n"):
            raise FatalError(f"{self.config.protocol} lists only its file {self.config.direct_file!r}")
        yield await self.stat(self.config.direct_file)


def _mlst_entry(text: str, path: str) -> RemoteEntry | None:
    """The entry of an MLST reply, hashed as MLSD's line for the same file would be."""
    for line in text.split("\n"):
        if line.startswith(" "):
            facts = line[1:].partition(" ")[0].encode("utf-8", "surrogateescape")
            raw = facts + b" " + posixpath.basename(path).encode("utf-8", "surrogateescape")
            if fact(facts, b"type=") in (b"cdir", b"pdir"):  # MLST of a directory itself
                mtime = parse_mlsx_time(fact(facts, b"modify="))
                return RemoteEntry(path, mtime=mtime, is_dir=True, hash=line_hash(raw))
            entry = parse_mlsd_line(raw)
            return entry and RemoteEntry(path, entry.size, entry.mtime, entry.is_dir, entry.is_link, entry.hash)
    return None


# Connections -------------------------------------------------------------------------------------


async def _refusal(ctl: _Control) -> tuple[int, str] | None:
    """After a failed data connection: the final reply (code, text) with which the server refused
    the command just sent, or None if it does not come soon (the server waits for the data
    connection) or is a preliminary one; 421 raises as ever."""
    try:
        async with asyncio.timeout(min(RESYNC_TIMEOUT, ctl.read_timeout)):
            code, text = await ctl.reply()
    except (OSError, EOFError):  # TimeoutError included
        return None
    return (code, text) if code >= 200 else None


class _Control(asyncio.Protocol):
    """One control connection: commands, replies (parsed as they arrive), and what we know of
    its state. A reply waited for fails with TimeoutError after ``read_timeout`` seconds, with
    ConnectionResetError once the server closed the connection (replies that came before still
    count). One watchdog timer per connection, armed by the first wait and re-armed only when it
    fires before a wait's deadline (not a timer per reply)."""

    def __init__(self, config: RemoteConfig, context: ssl.SSLContext | None, keepalive: int):
        self.context = context
        self.read_timeout = config.read_timeout
        self.transport: asyncio.Transport | None = None
        self.peer = config.host
        self.base = "/"  # the root, absolute (login directory + config.root)
        self.cwd: str | None = None
        self.epsv = True
        self.ahead = 0  # replies owed to an EPSV sent early (see _FtpStream.__anext__)
        self.ready_port: int | None = None  # the passive port an early EPSV got, for the next transfer
        self.broken = False
        self.reused = False  # served an earlier call: the server may have closed it meanwhile
        self.sent, self.last = 0, "greeting"  # commands sent by the current call, the last one
        self._keepalive = keepalive
        self._buffer: memoryview | None = None
        self.loop = asyncio.get_running_loop()
        self._pending = b""  # the start of a line not complete yet
        self._code: str | None = None  # the code of a multi-line reply being read
        self._lines: list[str] = []  # its lines so far
        self._replies: collections.deque[tuple[str, list[str]]] = collections.deque()
        self._error: BaseException | None = None  # why no more reply will come
        self._waiter: asyncio.Future | None = None
        self._since = 0.0  # when the current wait began
        self._watchdog: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        if (peer := transport.get_extra_info("peername")) is not None:
            self.peer = peer[0]
        if self._keepalive:
            _keepalive(transport.get_extra_info("socket"), self._keepalive)

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        if self._pending:
            data = self._pending + data
        start = 0
        while self._error is None and (end := data.find(b"\n", start)) >= 0:
            self._line(data[start:end].rstrip(b"\r").decode("utf-8", "surrogateescape"))
            start = end + 1
        self._pending = data[start:]
        if len(self._pending) > LINE_MAX:
            self._fail(ConnectionResetError(f"reply line longer than {LINE_MAX} bytes"))
            self.transport.abort()
        if self._replies and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _line(self, line: str) -> None:
        if self._code is None:  # the first line of a reply
            code = line[:3]
            if not code.isdigit():
                self._fail(ConnectionResetError(f"not an FTP reply: {line[:80]!r}"))
            elif line[3:4] == "-":
                self._code, self._lines = code, [line[4:]]
            else:
                self._replies.append((code, [line[4:]]))
        elif line.startswith(self._code + " "):
            self._lines.append(line[4:])
            self._replies.append((self._code, self._lines))
            self._code, self._lines = None, []
        else:
            self._lines.append(line)

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("control connection closed by the server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("control connection closed"))
        self._disarm()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _watch(self) -> None:
        self._watchdog = None
        if (waiter := self._waiter) is None or waiter.done():
            return  # nobody waits: the next wait arms it again
        due = self._since + self.read_timeout
        if self.loop.time() >= due:
            waiter.set_exception(TimeoutError(f"no reply for {self.read_timeout:g} s"))
        else:
            self._watchdog = self.loop.call_at(due, self._watch)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # Commands and replies

    def receive_buffer(self) -> memoryview:
        """The block buffer of this connection's data channels (one transfer at a time), made
        once: a fresh zeroed megabyte per small file cost more than the file."""
        if self._buffer is None:
            self._buffer = memoryview(bytearray(BLOCK))
        return self._buffer

    def send(self, command: str) -> None:
        self.sent, self.last = self.sent + 1, command.split(" ", 1)[0]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ftp > %s", "PASS ****" if command.startswith("PASS ") else command)
        self.transport.write(command.encode("utf-8", "surrogateescape") + b"\r\n")

    async def reply(self) -> tuple[int, str]:
        """The next reply: code and text (lines of a multi-line reply joined by newlines)."""
        if not self._replies:
            try:
                if self._error is None:
                    self._waiter = waiter = self.loop.create_future()
                    self._since = self.loop.time()
                    if self._watchdog is None:
                        self._watchdog = self.loop.call_at(self._since + self.read_timeout, self._watch)
                    try:
                        await waiter
                    finally:
                        self._waiter = None
                if not self._replies:
                    raise self._error
            except BaseException:
                self.broken = True
                raise
        code, lines = self._replies.popleft()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ftp < %s %s", code, lines[0] if len(lines) == 1 else f"({len(lines)} lines)")
        if code == "421":  # the server closes the connection, whatever the command was
            self.broken = True
            raise _FtpError(self.last, 421, "\n".join(lines))
        return int(code), lines[0] if len(lines) == 1 else "\n".join(lines)

    async def settle(self) -> None:
        """Read the replies of EPSVs sent early; the port of the last one is kept for the next
        transfer (until another command than REST and the transfer's own is sent)."""
        while self.ahead:
            self.took_epsv(*await self.reply())

    def took_epsv(self, code: int, text: str) -> None:
        """The reply to an EPSV sent early."""
        self.ahead -= 1
        found = _EPSV.search(text) if code == 229 else None
        self.ready_port = int(found.group(2)) if found else None

    async def command(self, command: str) -> tuple[int, str]:
        if self.ahead or self.ready_port is not None:
            await self._before(command)
        self.send(command)
        return await self.reply()

    async def _before(self, command: str) -> None:
        # Any other command may leave the passive port asked early unusable on some servers: it is
        # dropped (the transfer asks again), as it is for a connection given back idle.
        await self.settle()
        if not command.startswith("REST "):
            self.ready_port = None

    async def expect(self, command: str | None, *codes: int) -> str:
        """Send ``command`` (None: just read a reply) and fail unless the final reply is in ``codes``."""
        if command:
            if self.ahead or self.ready_port is not None:
                await self._before(command)
            self.send(command)
        code, text = await self.reply()
        while 100 <= code < 200 and code not in codes:  # "120 ready in n minutes" and the like
            code, text = await self.reply()
        if code not in codes:
            raise _FtpError(command.split(" ", 1)[0] if command else "reply", code, text)
        return text

    async def login(self, user: str, password: str) -> None:
        code, text = await self.command(f"USER {user}")
        if code == 331:
            code, text = await self.command(f"PASS {password}")
        if code not in (230, 202):
            raise _FtpError("login", code, text)

    async def start_tls(self, context: ssl.SSLContext, host: str) -> None:
        """AUTH TLS's upgrade of this connection (no reply is pending then)."""
        self.transport = await self.loop.start_tls(self.transport, self, context, server_hostname=host)

    def data_context(self) -> ssl.SSLContext | None:
        if self.context is None:
            return None
        session = self.transport.get_extra_info("ssl_object").session
        return _Resuming(self.context, session) if session is not None else self.context

    def close(self) -> None:
        self.broken = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()


def _keepalive(sock, seconds: int) -> None:
    """BioMAJ's tcp_keepalive: probes after 2 x seconds idle, then every ``seconds``."""
    if seconds and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2 * seconds)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds)


class _Resuming(ssl.SSLContext):
    """``context`` whose connections resume ``session``: vsftpd and ProFTPD refuse data
    connections that do not reuse the control connection's TLS session; asyncio takes no session."""

    def __new__(cls, context: ssl.SSLContext, session: ssl.SSLSession):
        self = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        self._context, self._session = context, session
        return self

    def __init__(self, context: ssl.SSLContext, session: ssl.SSLSession):
        pass

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        return self._context.wrap_bio(incoming, outgoing, server_side, server_hostname, session=self._session)


class _DataChannel(asyncio.BufferedProtocol):
    """A data connection received straight into BLOCK-sized buffers, each handed over as one bytes
    object; a consumer left waiting gets a partial block within NUDGE seconds (slow links,
    stalls). ``read`` fails with TimeoutError after ``read_timeout`` seconds without a byte while
    we were ready to receive. Both are checked by one timer per connection, ticking every NUDGE
    seconds from the first wait to the end of the data (a small file ends before its first tick:
    one timer made and cancelled, not one per read)."""

    def __init__(self, read_timeout: float, buffer: memoryview, loop: asyncio.AbstractEventLoop):
        self._timeout = read_timeout
        self._loop = loop
        self._view = buffer
        self._used = 0
        self._blocks: collections.deque[bytes] = collections.deque()
        self._ended, self._error = False, None
        self._waiter: asyncio.Future | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._paused = False
        self._last = loop.time()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._used :]

    def buffer_updated(self, nbytes: int) -> None:
        self._used += nbytes
        self._last = self._loop.time()
        if self._used == BLOCK:
            self._flush()
            if len(self._blocks) >= QUEUED_BLOCKS and not self._paused:
                self._paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._end(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    def _flush(self) -> None:
        if self._used:
            self._blocks.append(bytes(self._view[: self._used]))
            self._used = 0
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended, self._error = True, error
            self._flush()  # what arrived before the end still counts
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None

    def _on_tick(self) -> None:
        self._tick = None
        if self._ended:
            return
        if self._waiter is not None and self._used:  # a waiting consumer gets what came
            self._flush()
        if not self._paused and self._loop.time() - self._last >= self._timeout:
            self._end(TimeoutError(f"no data for {self._timeout:g} s"))
            self.abort()
        else:
            self._tick = self._loop.call_later(NUDGE, self._on_tick)

    async def read(self) -> bytes | None:
        """The next block, None at the end of the data."""
        while not self._blocks:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return None
            self._waiter = self._loop.create_future()
            if self._tick is None:
                self._tick = self._loop.call_later(NUDGE, self._on_tick)
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._paused and len(self._blocks) <= QUEUED_BLOCKS // 2:
            self._paused = False
            self._last = self._loop.time()  # we were not listening: that silence was ours
            self.transport.resume_reading()
        return self._blocks.popleft()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Opening:
    """What ``open()`` returns: entering starts the RETR; leaving gives the connection back once
    the transfer's final reply was read, else aborts the transfer (ABOR, or closing the connection
    when cancelled: no resync while cancelled, that could take seconds). A class rather than
    an asynccontextmanager: no generator per file."""

    __slots__ = ("owner", "path", "offset", "size", "stream")

    def __init__(self, owner: FtpProtocol, path: str, offset: int, size: int | None):
        self.owner, self.path, self.offset, self.size = owner, path, offset, size
        self.stream: _FtpStream | None = None

    async def __aenter__(self) -> _FtpStream:
        owner, offset, size = self.owner, self.offset, self.size
        path = checked_path(self.path, forbid="\x00\r\n")
        _, self.stream = await owner._run(f"RETR {path}", lambda ctl: owner._start_retr(ctl, path, offset, size))
        return self.stream

    async def __aexit__(self, exc_type, exc, tb) -> None:
        stream = self.stream
        if stream.state == "done":
            self.owner._release(stream.ctl)
        elif stream.state == "open":
            if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                stream.state = "aborted"
                stream.channel.abort()
                stream.ctl.close()
            else:
                await self.owner._abort(stream)


class _FtpStream(RemoteStream):
    """An open RETR: the data connection's blocks, then the transfer's final reply. Its own
    iterator (no async generator per file); iterating it again after the end yields nothing."""

    def __init__(self, owner: FtpProtocol, ctl: _Control, channel: _DataChannel, path: str, offset: int, size,
                 *, short_is_error: bool = True):
        self.owner, self.ctl, self.channel, self.path = owner, ctl, channel, path
        self.offset, self.size = offset, size
        # With the server's own SIZE a short transfer is an error here; with the listing's size
        # (which may be stale) the downloader's size check reports it.
        self.short_is_error = short_is_error
        self.state = "open"  # "done": final reply read, in sync; "failed"/"aborted": connection given back
        self.received = 0

    def __aiter__(self) -> _FtpStream:
        return self

    async def __anext__(self) -> bytes:
        if self.state != "open":
            raise StopAsyncIteration
        try:
            if (block := await self.channel.read()) is not None:
                self.received += len(block)
                return block
            expected = None if self.size is None else self.size - self.offset
            ctl = self.ctl
            if self.owner._early_epsv and ctl.epsv and not ctl.ahead:
                ctl.send("EPSV")  # for the next transfer, while the 226 is on its way
                ctl.ahead = 1
            try:
                code, text = await ctl.reply()
                if code == 229 and ctl.ahead:  # a server that answers commands during a transfer
                    ctl.took_epsv(code, text)
                    code, text = await ctl.reply()
            except OSError:
                if self.received != expected:
                    raise
                self.ctl.close()  # every byte came; only the control connection was lost (a NAT forgot it)
                code, text = 226, ""
            self.state = "done"
            if code not in (226, 250):
                raise _FtpError("RETR", code, text)
            if self.short_is_error and expected is not None and self.received < expected:
                raise RetryableError(f"ftp {self.owner.config.address} RETR {self.path}: "
                                     f"short transfer, {self.received} of {expected} bytes")
        except (Exception, asyncio.CancelledError) as exc:
            self.channel.abort()
            self.state = "failed"
            raise self.owner._failed(self.ctl, exc, f"RETR {self.path}") from None
        raise StopAsyncIteration


# Errors ------------------------------------------------------------------------------------------


def _translate_error(exc: BaseException, what: str) -> RemoteError | None:
    """The shared error for an FTP reply or a network failure; None for anything else (a bug)."""
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, _FtpError):
        code, text = exc.code, exc.text.strip().split("\n")[0]
        message = f"{what}: {exc.command} answered {code} {text}"
        if code == 421 or (code in (530, 332) and _TOO_MANY.search(text)):
            return Throttled(message)
        if code in (530, 532, 332) or (code in (550, 553, 450) and _PERMISSION.search(text)):
            return FatalError(message)
        if code in (550, 553) or (code == 450 and "no such" in text.lower()):
            return RemoteNotFound(message)
        return RetryableError(message) if 400 <= code < 500 else FatalError(message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FatalError(f"{what}: TLS certificate refused ({exc.verify_message or exc})")
    if isinstance(exc, TimeoutError):
        return RetryableError(f"{what}: timed out ({exc or 'no answer'})")
    if isinstance(exc, (OSError, EOFError)):  # resets, refused connections, DNS, TLS alerts
        return RetryableError(f"{what}: {type(exc).__name__}: {exc}")
    return None
