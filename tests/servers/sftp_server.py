"""A real SFTP server for tests: asyncssh on 127.0.0.1, one password user, read-only chroot to `tree`.

Faults are injected inside the SFTP server: `transient_errors` and `throttle` answer the open with
SSH_FX_FAILURE, `drop_after` closes the SSH connection once that many bytes of the file were read,
`stall` sleeps inside a read after the first bytes, `evil_names` are added to the root's readdir.
The returned config trusts the generated host key through its own known_hosts file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from biomaj.protocols.base import RemoteConfig
from tests.servers.faults import Faults, RateCap, RunningServer

USER = "biomaj"
PASSWORD = "sftp-test-password"
_WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC


@dataclass
class SftpServer(RunningServer):
    """The running server, plus what SFTP tests need to reach inside it."""

    host_key: asyncssh.SSHKey | None = None
    known_hosts: Path | None = None
    client_keys: list = field(default_factory=list)  # public keys accepted for USER
    connections: set = field(default_factory=set)

    def drop_connections(self) -> None:
        """Close every client connection now (the server keeps listening)."""
        for conn in list(self.connections):
            conn.abort()


async def start(tree: Path, faults: Faults, *, protocol: str = "sftp") -> SftpServer:
    state = Path(tempfile.mkdtemp(prefix="biomaj-sftp-"))
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    holder: dict = {}

    def server_factory() -> asyncssh.SSHServer:
        return _Server(faults, holder["server"])

    def sftp_factory(chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        return _TreeServer(chan, tree, faults)

    acceptor = await asyncssh.create_server(
        server_factory, "127.0.0.1", 0, server_host_keys=[host_key], sftp_factory=sftp_factory, allow_scp=False
    )
    port = acceptor.get_port()
    known_hosts = state / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")

    async def stop() -> None:
        acceptor.close()
        running.drop_connections()
        await acceptor.wait_closed()
        shutil.rmtree(state, ignore_errors=True)

    config = RemoteConfig(
        protocol="sftp",
        host="127.0.0.1",
        port=port,
        root="/",
        user=USER,
        password=PASSWORD,
        connect_timeout=10,
        read_timeout=30,
        options={"ssh_hosts_file": str(known_hosts)},
    )
    running = SftpServer(config, faults, stop, host_key=host_key, known_hosts=known_hosts)
    holder["server"] = running
    return running


class _Server(asyncssh.SSHServer):
    """Password (and optionally public key) login for USER; counts logins and connections."""

    def __init__(self, faults: Faults, running: SftpServer):
        self._faults = faults
        self._running = running
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._running.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._running.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USER and password == PASSWORD

    def public_key_auth_supported(self) -> bool:
        return bool(self._running.client_keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == USER and any(key == known for known in self._running.client_keys)

    def auth_completed(self) -> None:
        self._faults.logins += 1


class _OpenFile:
    def __init__(self, file, path: str, rate: int = 0):
        self.file = file
        self.path = path
        self.served = 0
        self.cap = RateCap(rate)


class _TreeServer(asyncssh.SFTPServer):
    """The tree, read-only, with the faults of `Faults` injected."""

    def __init__(self, chan: asyncssh.SSHServerChannel, tree: Path, faults: Faults):
        super().__init__(chan, chroot=os.fsencode(tree))
        self._top = os.path.realpath(tree)
        self._faults = faults

    def _relative(self, path: bytes) -> str:
        local = os.fsdecode(self.map_path(path))
        return os.path.relpath(local, self._top).replace(os.sep, "/")

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> _OpenFile:
        if pflags & _WRITE_FLAGS:
            raise asyncssh.SFTPPermissionDenied("read-only server")
        relative = self._relative(path)
        faults = self._faults
        if faults.take(faults.transient_errors, relative) or faults.take(faults.throttle, relative):
            faults.transfers[relative] += 1
            raise asyncssh.SFTPFailure("temporary failure (injected)")
        file = super().open(path, pflags, attrs)
        faults.transfer_started(relative)
        return _OpenFile(file, relative, faults.rate)

    async def read(self, file_obj: _OpenFile, offset: int, size: int) -> bytes:
        faults = self._faults
        if file_obj.served and file_obj.path in faults.stall:
            await asyncio.sleep(faults.stall.pop(file_obj.path))
        limit = faults.drop_after.get(file_obj.path)
        if limit is not None and offset + size > limit:
            del faults.drop_after[file_obj.path]
            asyncio.get_running_loop().call_soon(self.connection.abort)
            size = max(0, limit - offset)
        data = super().read(file_obj.file, offset, size) if size else b""
        await file_obj.cap.pace(len(data))
        file_obj.served += len(data)
        return data

    def close(self, file_obj: object) -> None:
        if isinstance(file_obj, _OpenFile):
            self._faults.transfer_ended()
            file_obj = file_obj.file
        super().close(file_obj)

    def fstat(self, file_obj: object):
        return super().fstat(file_obj.file if isinstance(file_obj, _OpenFile) else file_obj)

    def format_longname(self, name: asyncssh.SFTPName) -> None:
        # asyncssh's default looks up user and group names for every entry: too slow for 100,000.
        name.longname = name.filename

    async def scandir(self, path: bytes):
        # Like asyncssh's own, without its user and group name lookups for every entry.
        local = self.map_path(path)
        for dot in (b".", b".."):
            yield asyncssh.SFTPName(dot, attrs=_attrs(os.stat(os.path.join(local, dot))))
        with os.scandir(local) as entries:
            for entry in entries:
                yield asyncssh.SFTPName(os.fsencode(entry.name), attrs=_attrs(entry.stat(follow_symlinks=False)))
        if os.path.realpath(os.fsdecode(local)) == self._top:
            for evil in self._faults.evil_names:
                attrs = asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR, permissions=0o100644, size=5, mtime=0)
                yield asyncssh.SFTPName(os.fsencode(evil), attrs=attrs)

    def _read_only(self, *args, **kwargs):
        raise asyncssh.SFTPPermissionDenied("read-only server")

    write = remove = mkdir = rmdir = rename = posix_rename = _read_only
    setstat = fsetstat = lsetstat = symlink = link = _read_only


def _attrs(st: os.stat_result) -> asyncssh.SFTPAttrs:
    return asyncssh.SFTPAttrs(
        size=st.st_size, uid=st.st_uid, gid=st.st_gid, permissions=st.st_mode,
        atime=int(st.st_atime), mtime=int(st.st_mtime),
    )
