"""A real FTP(S) server (aioftp) over a tree, read-only, with every fault of Faults for real.

One user (``biomaj`` and a random password, both in the config), passive ports on 127.0.0.1,
MLSD, LIST (vsftpd's layout, UTC dates), MLST, SIZE, MDTM, REST, ABOR and NOOP. Options for
test_ftp.py: ``refuse`` (commands answered ``502``, e.g. ``{"mlsd", "mlst"}`` or ``{"rest"}``),
``bare_facts`` (MLSD and MLST lines without ``size`` and ``modify``: only SIZE and MDTM tell them),
``synthetic`` (directory -> number of files to list in it without making them, for big
listings), ``dead_passive`` (EPSV and PASV name a port nobody listens on: every data connection
is refused; RETR of a file then waits ``data_wait`` seconds for it and answers 425, as vsftpd
does, without a 150 first) and, for ftps, ``tls_mode`` (``implicit``: TLS from the first byte,
or ``explicit``: ``AUTH TLS``). For ftps a self-signed certificate for 127.0.0.1 is made at start; its file is the
config's ``options["ssl_server_cert"]``.

Faults: ``throttle`` answers RETR with 421 and closes the session; ``transient_errors`` with 451;
``not_found`` with 550;
``drop_after`` sends that many bytes, closes the data connection and answers 426; ``stall``
sends 1 KiB, then stays silent. ``FtpRunningServer.drop_sessions()`` closes every control
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import secrets
import shutil
import socket
import ssl
import stat
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from pathlib import Path

import aioftp
from aioftp.server import ConnectionConditions, PathConditions, worker

from biomaj.protocols.base import RemoteConfig
from tests.servers.faults import Faults, RateCap, RunningServer

USER = "biomaj"
BLOCK = 1024 * 1024
STALL_AFTER = 1024
SYNTHETIC_MTIME = 1_600_000_000
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_LOGIN = ConnectionConditions(ConnectionConditions.login_required)
_TRANSFER = ConnectionConditions(ConnectionConditions.login_required, ConnectionConditions.passive_server_started)
_DATA = ConnectionConditions(ConnectionConditions.data_connection_made, wait=True, fail_code="425",
                             fail_info="Can't open data connection")


@dataclass
class FtpRunningServer(RunningServer):
    """A RunningServer that can also cut every FTP session (to test reconnection)."""

    server: aioftp.Server | None = field(default=None, repr=False)

    def drop_sessions(self, farewell: bytes = b"") -> None:
        """Close every control connection, after ``farewell`` (e.g. ``b"421 Timeout.\\r\\n"``)."""
        for connection in list(self.server.connections.values()):
            writer = connection.command_connection.writer
            writer.write(farewell)
            writer.close()


async def start(
    tree: Path,
    faults: Faults,
    *,
    protocol: str,
    refuse: set[str] | frozenset[str] = frozenset(),
    synthetic: dict[str, int] | None = None,
    tls_mode: str = "implicit",
    dead_passive: bool = False,
    data_wait: float = 5,
    bare_facts: bool = False,
) -> FtpRunningServer:
    """Serve `tree` on 127.0.0.1 (a free port) over ftp or ftps."""
    tree = Path(tree).resolve()
    password = secrets.token_hex(8)
    options: dict[str, str] = {}
    context, cert_dir = None, None
    if protocol.endswith("ftps"):
        cert_dir = Path(tempfile.mkdtemp(prefix="biomaj-ftps-"))
        context = _self_signed(cert_dir)
        options = {"ssl_server_cert": str(cert_dir / "cert.pem"), "ftps_mode": tls_mode}
    user = aioftp.User(USER, password, base_path=tree, home_path="/",
                       permissions=[aioftp.Permission("/", readable=True, writable=False)])
    # a port bound but not listening: connections to it are refused, and nothing else takes it
    dead = socket.socket() if dead_passive else None
    if dead is not None:
        dead.bind(("127.0.0.1", 0))
    server = _Server(_Users([user], faults), tree, faults, context=context, explicit=tls_mode == "explicit",
                     refuse=refuse, synthetic=synthetic or {}, data_wait=data_wait,
                     dead_port=dead.getsockname()[1] if dead is not None else None, bare_facts=bare_facts)
    await server.start("127.0.0.1", 0)

    async def stop() -> None:
        await server.close()
        if dead is not None:
            dead.close()
        if cert_dir is not None:
            shutil.rmtree(cert_dir, ignore_errors=True)

    config = RemoteConfig(protocol=protocol, host="127.0.0.1", port=server.address[1], root="/", user=USER,
                          password=password, options=options, connect_timeout=10, read_timeout=30)
    return FtpRunningServer(config=config, faults=faults, stop=stop, server=server)


class _Users(aioftp.MemoryUserManager):
    def __init__(self, users, faults: Faults):
        super().__init__(users)
        self.faults = faults

    async def authenticate(self, user, password: str) -> bool:
        ok = await super().authenticate(user, password)
        self.faults.logins += ok
        return ok


class _Server(aioftp.Server):
    def __init__(self, users, tree: Path, faults: Faults, *, context, explicit: bool, refuse, synthetic,
                 data_wait: float, dead_port: int | None, bare_facts: bool = False):
        super().__init__(users, block_size=BLOCK, wait_future_timeout=data_wait, ssl=None if explicit else context)
        self.tree, self.faults, self.synthetic, self.dead_port = tree, faults, synthetic, dead_port
        self.context, self.explicit = context, explicit
        self.mlsx = partial(_mlsx, bare=bare_facts)
        self.commands_mapping.update(size=self.size, mdtm=self.mdtm, noop=self.noop, auth=self.auth)
        for name in refuse:
            self.commands_mapping[name] = self.refused

    async def dispatcher(self, reader, writer) -> None:
        # Server.close() cancels the sessions; asyncio would log each cancelled session as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await super().dispatcher(reader, writer)

    def paths(self, connection, rest) -> tuple[Path, str]:
        real, virtual = self.get_paths(connection, rest)
        return real, str(virtual).lstrip("/")

    async def refused(self, connection, rest) -> bool:
        connection.response("502", "Command not implemented.")
        return True

    async def noop(self, connection, rest) -> bool:
        connection.response("200", "NOOP ok.")
        return True

    # TLS: implicit needs nothing more; explicit upgrades on AUTH TLS and protects data on PROT P.

    async def auth(self, connection, rest) -> bool:
        if not (self.explicit and self.context) or rest.upper() not in ("TLS", "SSL"):
            connection.response("504", "AUTH not supported.")
            return True
        stream = connection.command_connection
        stream.writer.transport.pause_reading()  # the ClientHello must reach TLS, not the command parser
        await stream.write(b"234 Proceed with negotiation.\r\n")
        await stream.writer.start_tls(self.context)
        return True

    async def prot(self, connection, rest) -> bool:
        connection.protected = rest.upper() == "P"
        connection.response("200", f"PROT now {'Private' if connection.protected else 'Clear'}.")
        return True

    @_LOGIN
    async def epsv(self, connection, rest) -> bool:
        if self.dead_port is None:
            return await super().epsv(connection, rest)
        await self._dead_passive(connection)
        connection.response("229", f"Entering Extended Passive Mode (|||{self.dead_port}|)")
        return True

    @_LOGIN
    async def pasv(self, connection, rest) -> bool:
        if self.dead_port is None:
            return await super().pasv(connection, rest)
        await self._dead_passive(connection)
        connection.response("227", f"Entering Passive Mode (127,0,0,1,{self.dead_port >> 8},{self.dead_port & 255})")
        return True

    async def _dead_passive(self, connection) -> None:
        """A passive listener nobody is told of (aioftp's transfer commands want one)."""
        if not connection.future.passive_server.done():
            connection.passive_server = await self._start_passive_server(connection, lambda _, writer: writer.close())

    async def _start_passive_server(self, connection, handler_callback):
        protected = not self.explicit or ("protected" in connection and connection.protected)
        return await asyncio.start_server(handler_callback, connection.server_host, 0,
                                          ssl=self.context if protected else None)

    # Metadata

    @_LOGIN
    async def size(self, connection, rest) -> bool:
        real, _ = self.paths(connection, rest)
        if real.is_file():
            connection.response("213", str(real.stat().st_size))
        else:
            connection.response("550", "Could not get file size.")
        return True

    @_LOGIN
    async def mdtm(self, connection, rest) -> bool:
        real, _ = self.paths(connection, rest)
        if real.is_file():
            connection.response("213", time.strftime("%Y%m%d%H%M%S", time.gmtime(real.stat().st_mtime)))
        else:
            connection.response("550", "Could not get file modification time.")
        return True

    @_LOGIN
    @PathConditions(PathConditions.path_must_exists)
    async def mlst(self, connection, rest) -> bool:
        real, relative = self.paths(connection, rest)
        connection.response("250", [f"Listing {relative or '/'}", self.mlsx(real.name or ".", real.stat()), "End"], True)
        return True

    # Listings

    @_TRANSFER
    @PathConditions(PathConditions.path_must_exists, PathConditions.path_must_be_dir)
    async def mlsd(self, connection, rest) -> bool:
        return self._listing(connection, rest, self.mlsx)

    @_TRANSFER
    @PathConditions(PathConditions.path_must_exists, PathConditions.path_must_be_dir)
    async def list(self, connection, rest) -> bool:
        return self._listing(connection, rest, _ls)

    def _listing(self, connection, rest, line) -> bool:
        real, relative = self.paths(connection, rest)
        if relative in self.synthetic:
            count = self.synthetic[relative]
            lines = (line(f"f{i:07d}.dat", _fake_stat(i, SYNTHETIC_MTIME + i)) for i in range(count))
        else:
            entries = sorted(os.scandir(real), key=lambda e: e.name)
            lines = (line(entry.name, entry.stat()) for entry in entries)
            if not relative:
                lines = chain(lines, (line(name, _fake_stat(1, SYNTHETIC_MTIME)) for name in self.faults.evil_names))

        @_DATA
        @worker
        async def send(self, connection, rest) -> None:
            stream = connection.data_connection
            del connection.data_connection
            batch: list[str] = []
            async with stream:
                for text in lines:
                    batch.append(text)
                    if len(batch) == 2000:
                        await stream.write(("\r\n".join(batch) + "\r\n").encode("utf-8", "surrogateescape"))
                        batch = []
                if batch:
                    await stream.write(("\r\n".join(batch) + "\r\n").encode("utf-8", "surrogateescape"))
            connection.response("226", "Directory send OK.")

        connection.extra_workers.add(asyncio.create_task(send(self, connection, rest)))
        connection.response("150", "Here comes the directory listing.")
        return True

    # Transfers

    @_TRANSFER
    @PathConditions(PathConditions.path_must_exists, PathConditions.path_must_be_file)
    async def retr(self, connection, rest) -> bool:
        real, relative = self.paths(connection, rest)
        faults = self.faults
        for table, code, text in ((faults.throttle, "421", "Too many transfers, slow down."),
                                  (faults.transient_errors, "451", "Transient failure, try again."),
                                  (faults.not_found, "550", "Failed to open file.")):
            if faults.take(table, relative):
                faults.transfer_started(relative)
                faults.transfer_ended()
                connection.response(code, text)
                return code != "421"  # 421 closes the session, as real servers do
        if self.dead_port is not None:  # vsftpd: the data connection is accepted before the 150
            await asyncio.sleep(self.wait_future_timeout)
            connection.response("425", "Failed to establish connection.")
            return True
        offset = connection.restart_offset
        drop, stall = faults.drop_after.pop(relative, None), faults.stall.pop(relative, None)

        @_DATA
        @worker
        async def send(self, connection, rest) -> None:
            stream = connection.data_connection
            del connection.data_connection
            faults.transfer_started(relative)
            try:
                complete = await _send_file(stream, real, offset, drop, stall, RateCap(faults.rate))
                stream.close()
                if complete:
                    connection.response("226", "Transfer complete.")
                else:
                    connection.response("426", "Connection closed; transfer aborted.")
            except OSError:  # the client closed the data connection
                stream.close()
                connection.response("426", "Failure writing network stream.")
            finally:
                faults.transfer_ended()

        connection.extra_workers.add(asyncio.create_task(send(self, connection, rest)))
        connection.response("150", f"Opening BINARY mode data connection for {relative}.")
        return True


async def _send_file(stream, path: Path, offset: int, drop: int | None, stall: float | None,
                     cap: RateCap) -> bool:
    """Send ``path`` from ``offset``; False when cut after ``drop`` bytes (the drop fault)."""
    sent = 0
    with open(path, "rb") as source:
        source.seek(offset)
        while True:
            size = STALL_AFTER if stall else cap.block(BLOCK)
            if drop is not None:
                size = min(size, drop - sent)
                if size <= 0:
                    return False
            block = source.read(size)
            if not block:
                return True
            await cap.pace(len(block))
            await stream.write(block)
            sent += len(block)
            if stall:
                await asyncio.sleep(stall)
                stall = None


# Listing lines ----------------------------------------------------------------------------------


def _fake_stat(size: int, mtime: float) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | 0o644, size, 0, 1, 0, 0, size, mtime, mtime, mtime))


def _mlsx(name: str, st: os.stat_result, bare: bool = False) -> str:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    if bare:  # a server that tells neither size nor date in its listings
        return f"perm=r;type={kind};unique={st.st_dev:x}U{st.st_ino:x}; {name}"
    size = f"size={st.st_size};" if kind == "file" else ""
    modify = time.strftime("%Y%m%d%H%M%S", time.gmtime(st.st_mtime))
    return f"modify={modify};perm=r;{size}type={kind};unique={st.st_dev:x}U{st.st_ino:x}; {name}"


def _ls(name: str, st: os.stat_result) -> str:
    """vsftpd's layout, in UTC; the time of day for dates less than six months old."""
    when = time.gmtime(st.st_mtime)
    if 0 <= time.time() - st.st_mtime < 182 * 86400:
        date = f"{_MONTHS[when.tm_mon - 1]} {when.tm_mday:02d} {when.tm_hour:02d}:{when.tm_min:02d}"
    else:
        date = f"{_MONTHS[when.tm_mon - 1]} {when.tm_mday:02d}  {when.tm_year}"
    return f"{stat.filemode(st.st_mode)}    1 ftp      ftp      {st.st_size:>10} {date} {name}"


# TLS ---------------------------------------------------------------------------------------------


def _self_signed(folder: Path, name: str = "cert.pem") -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1, written to ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / name, folder / "key.pem")
    return context


def make_other_ca(folder: Path) -> Path:
    """A certificate file that did not sign the server's: verification against it must fail."""
    _self_signed(folder, "other.pem")
    return folder / "other.pem"
