"""The FTP server of the ftp actor: aioftp's sessions, passive ports and limits, with biomaj's logins,
its published tree (:mod:`biomaj.ftp.view`) and read-only commands.

aioftp brings the session loop, PASV/EPSV over the configured data ports, REST, TYPE, ABOR, QUIT and the
connection limit. The file commands are biomaj's: aioftp's own work on a real directory through a path
IO, which would stat every entry of a listing one thread hop at a time and know nothing of releases.
Every command that writes is answered ``550`` before anything else; and should one ever reach aioftp's
own handlers, its path IO is :class:`ClosedPathIO`, which refuses everything, and the user's permission
is read-only: three locks on one door.

Logins (BioMAJ 3's W31, fixed): a user name and one of that user's API keys as the password (a key that is
someone else's is refused); ``anonymous``, ``ftp`` or ``biomaj_default`` with any password see the public
banks only. A refused login is ``530 Login incorrect.`` whatever the reason; three of them close the
session. Active mode (PORT, EPRT) is not offered: a data connection comes from the client's own address
to a passive port, or it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import stat
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any

import aioftp
from aioftp.server import ConnectionConditions, worker

from biomaj.published import Row
from biomaj.reports import Viewer

from .view import ROOT, Entry, NotFound, View, virtual_path

log = logging.getLogger(__name__)

ANONYMOUS = ("anonymous", "ftp", "biomaj_default")  # RFC 1635's names, and BioMAJ 3's
MAX_LOGIN_FAILURES = 3
LOGIN_TIMEOUT = 60.0  # seconds a session that has not logged in may stay silent
BLOCK = 1024 * 1024  # bytes read from a file (in a thread) and written to the data connection at once
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Commands that would change something: refused, logged in or not.
WRITE_COMMANDS = ("stor", "stou", "appe", "allo", "dele", "rmd", "xrmd", "mkd", "xmkd", "rnfr", "rnto", "site",
                  "mfmt", "mff", "mfct")
FEATURES = ("EPSV", "MDTM", "MLST type*;size*;modify*;perm*;", "PASV", "REST STREAM", "SIZE", "UTF8")
_LINE_BREAK = re.compile(r"[\r\n]")
NOWHERE = Path(os.devnull)  # aioftp.User's base_path: nothing can exist below it
_DATA = ConnectionConditions(ConnectionConditions.data_connection_made, wait=True, fail_code="425",
                             fail_info="Can't open data connection.")

Handler = Callable[[Any, aioftp.Connection, str], Awaitable[bool]]


# --- who logs in ------------------------------------------------------------------------------------


class FtpUser(aioftp.User):
    """A login in progress; ``viewer`` is set once its password is accepted."""

    def __init__(self, login: str):
        super().__init__(login, None, base_path=NOWHERE, home_path="/",
                         permissions=[aioftp.Permission("/", readable=True, writable=False)])
        self.viewer: Viewer | None = None
        self.anonymous = login in ANONYMOUS

    @property
    def name(self) -> str:
        return "anonymous" if self.anonymous else str(self.login)


class ApiKeyUsers(aioftp.AbstractUserManager):
    """Users of :class:`biomaj.auth.users.Users`, the password being an API key of the user."""

    def __init__(self, users: Any, anonymous: bool = True):
        super().__init__()
        self.users = users
        self.anonymous = anonymous

    async def get_user(self, login: str):
        # Every name asks for a password: the answer never tells whether a user exists.
        return self.GetUserResponse.PASSWORD_REQUIRED, FtpUser(login), "password required"

    async def authenticate(self, user: FtpUser, password: str) -> bool:
        admins = frozenset(self.users.admins)
        if user.anonymous:
            if not self.anonymous:
                return False
            user.viewer = Viewer(None, admins)
            return True
        who = await self.users.by_api_key(password.strip()) if password.strip() else None
        if who is None or who.name != user.login:
            return False
        user.viewer = Viewer(who.name, admins | ({who.name} if who.admin else frozenset()))
        return True


class ClosedPathIO(aioftp.AbstractPathIO):
    """The path IO of aioftp's own file commands, none of which is mapped: every call fails."""

    async def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("read-only FTP view")

    exists = is_dir = is_file = mkdir = rmdir = unlink = stat = _open = seek = write = read = close = rename = _refuse

    def list(self, path: Any) -> Any:
        raise PermissionError("read-only FTP view")


# --- listing lines ----------------------------------------------------------------------------------


def _stamp(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(epoch))


def list_line(row: Row, now: float | None = None) -> str:
    """An ``ls -l`` line as vsftpd writes it, in UTC: the time of day for dates of the last six months."""
    now = time.time() if now is None else now
    when = time.gmtime(row.mtime)
    if 0 <= now - row.mtime < 182 * 86400:
        date = f"{MONTHS[when.tm_mon - 1]} {when.tm_mday:02d} {when.tm_hour:02d}:{when.tm_min:02d}"
    else:
        date = f"{MONTHS[when.tm_mon - 1]} {when.tm_mday:02d}  {when.tm_year}"
    mode = "dr-xr-xr-x" if row.is_dir else "-r--r--r--"
    return f"{mode}    1 ftp      ftp      {row.size or 0:>10} {date} {row.name}"


def mlsx_facts(row: Row) -> str:
    """MLSD/MLST facts (RFC 3659): read-only permissions, UTC modification time."""
    if row.is_dir:
        return f"modify={_stamp(row.mtime)};perm=el;type=dir;"
    return f"modify={_stamp(row.mtime)};perm=r;size={row.size or 0};type=file;"


def _row(entry: Entry) -> Row:
    return Row(entry.path.name or "/", entry.is_dir, entry.size, entry.mtime)


# --- the server -------------------------------------------------------------------------------------


def _logged_in(handler: Handler) -> Handler:
    """The command needs a logged-in session (530 otherwise)."""

    @functools.wraps(handler)
    async def wrapper(self: FtpServer, connection: aioftp.Connection, rest: str) -> bool:
        if not connection.future.logged.done():
            connection.response("530", "Log in with USER and PASS first.")
            return True
        return await handler(self, connection, rest)

    return wrapper


class FtpServer(aioftp.Server):
    """The read-only FTP view of ``store``'s published banks for the users of ``users``."""

    def __init__(self, store: Any, users: ApiKeyUsers, *, idle_timeout: float = 300.0, data_timeout: float = 60.0,
                 max_connections: int | None = None, data_ports: range | None = None,
                 masquerade_address: str | None = None):
        super().__init__(users, block_size=BLOCK, socket_timeout=data_timeout, idle_timeout=None,
                         wait_future_timeout=data_timeout, path_io_factory=ClosedPathIO,
                         maximum_connections=max_connections, data_ports=data_ports,
                         ipv4_pasv_forced_response_address=masquerade_address or None,
                         welcome_message="biomaj: read-only view of the published banks")
        self.store = store
        self.idle = idle_timeout
        self.transfers = 0
        self.quiet = asyncio.Event()  # set while no transfer runs
        self.quiet.set()
        self._replies: weakref.WeakKeyDictionary[Any, asyncio.Queue] = weakref.WeakKeyDictionary()  # session -> replies
        self.commands_mapping = {
            "user": self.user, "pass": self.pass_, "quit": self.quit, "syst": self.syst, "feat": self.feat,
            "opts": self.opts, "noop": self.noop, "type": self.type, "mode": self.mode, "stru": self.stru,
            "pwd": self.pwd, "xpwd": self.pwd, "cwd": self.cwd, "xcwd": self.cwd, "cdup": self.cdup,
            "xcup": self.cdup, "pasv": self.pasv, "epsv": self.epsv, "rest": self.rest, "abor": self.abor,
            "list": self.list, "nlst": self.nlst, "mlsd": self.mlsd, "mlst": self.mlst, "size": self.size,
            "mdtm": self.mdtm, "retr": self.retr,
            **{name: self.refused for name in WRITE_COMMANDS},
        }

    # aioftp's own, asked to log in first with biomaj's answer (530)
    pasv = _logged_in(aioftp.Server.pasv)
    epsv = _logged_in(aioftp.Server.epsv)
    type = _logged_in(aioftp.Server.type)
    rest = _logged_in(aioftp.Server.rest)
    abor = _logged_in(aioftp.Server.abor)

    # Sessions -------------------------------------------------------------------------------------

    async def dispatcher(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # close() cancels the sessions
            await super().dispatcher(reader, writer)

    async def farewell(self, timeout: float = 2.0) -> None:
        """Tell every session that the server stops (421) and wait, ``timeout`` at most, for the replies
        still queued (a download's 226) to be sent; :meth:`close` then ends the sessions."""
        queues = []
        for stream, connection in list(self.connections.items()):
            connection.response("421", "biomaj is stopping: closing the session.")
            if (queue := self._replies.get(stream)) is not None:
                queues.append(queue.join())
        if queues:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*queues)

    async def parse_command(self, stream: Any, censor_commands: tuple[str, ...] = ("pass",)) -> Any:
        """The next command; False (the session ends) when the client leaves, sends a line too long, or
        stays silent for ``idle`` seconds while no transfer of its runs (:data:`LOGIN_TIMEOUT` at most
        before it logs in: a silent stranger does not hold one of the sessions for long)."""
        connection = self.connections.get(stream)
        while True:
            logged = connection is not None and connection.future.logged.done()
            try:
                line = await asyncio.wait_for(stream.reader.readline(), self.idle if logged else
                                              min(self.idle, LOGIN_TIMEOUT))
                break
            except TimeoutError:
                if connection is not None and connection.extra_workers:
                    continue  # a transfer runs: the control connection is quiet meanwhile
                if connection is not None:
                    connection.response("421", "Idle timeout: closing the session.")
                return False
            except ValueError:  # no end of line within the stream's limit
                if connection is not None:
                    connection.response("500", "Command line too long.")
                return False
            except OSError:
                return False
        if not line:
            return False
        command, _, rest = line.decode(self.encoding, errors="replace").rstrip("\r\n").partition(" ")
        return command.lower(), rest

    async def response_writer(self, stream: Any, response_queue: asyncio.Queue) -> None:
        self._replies[stream] = response_queue
        while True:
            args = await response_queue.get()
            try:
                await self.write_response(stream, *args)
            except (OSError, TimeoutError):
                pass  # the client is gone: its reader ends the session
            finally:
                response_queue.task_done()

    async def _start_passive_server(self, connection: aioftp.Connection, handler_callback: Any) -> asyncio.Server:
        """A passive port whose data connection must come from the client's own address."""

        async def from_the_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername") or ("",)
            if peer[0] != connection.client_host:
                log.warning("ftp: data connection from %s refused (the session's client is %s)", peer[0],
                            connection.client_host)
                writer.close()
                return
            await handler_callback(reader, writer)

        return await super()._start_passive_server(connection, from_the_client)

    # Login ----------------------------------------------------------------------------------------

    async def user(self, connection: aioftp.Connection, rest: str) -> bool:
        connection.pop("user", None)
        connection.pop("logged", None)
        connection.pop("view", None)
        login = rest.strip()
        if not login:
            connection.response("501", "Give a user name.")
            return True
        _state, user, _info = await self.user_manager.get_user(login)
        connection.user = user
        connection.current_directory = ROOT
        if user.anonymous:
            connection.response("331", "Anonymous login: any password (your email address, say).")
        else:
            connection.response("331", "Password required: one of your API keys.")
        return True

    async def pass_(self, connection: aioftp.Connection, rest: str) -> bool:
        if connection.future.logged.done():
            connection.response("503", "Already logged in.")
            return True
        if not connection.future.user.done():
            connection.response("503", "Give USER first.")
            return True
        user: FtpUser = connection.user
        try:
            accepted = await self.user_manager.authenticate(user, rest)
        except Exception:  # noqa: BLE001 - the store does not answer: the session cannot go on
            log.exception("ftp: cannot check the login of %s", user.name)
            connection.response("421", "Service not available, try again later.")
            return False
        if not accepted:
            del connection.user
            failures = (connection.login_failures if "login_failures" in connection else 0) + 1
            connection.login_failures = failures
            log.warning("ftp: login refused", extra={"user": user.login, "client": connection.client_host})
            connection.response("530", "Login incorrect.")
            return failures < MAX_LOGIN_FAILURES
        connection.view = View(self.store, user.viewer)
        connection.logged = True
        log.info("ftp: logged in", extra={"user": user.name, "client": connection.client_host})
        connection.response("230", f"Logged in as {user.name}: a read-only view of the published banks.")
        return True

    # Small talk -----------------------------------------------------------------------------------

    async def feat(self, connection: aioftp.Connection, rest: str) -> bool:
        connection.response("211", ["Features:", *FEATURES, "End"], True)
        return True

    async def opts(self, connection: aioftp.Connection, rest: str) -> bool:
        option = rest.strip().lower()
        if option in ("utf8 on", "utf8"):
            connection.response("200", "Always in UTF8 mode.")
        elif option.startswith("mlst"):
            connection.response("200", "MLST OPTS type;size;modify;perm;")
        else:
            connection.response("501", "Option not understood.")
        return True

    async def noop(self, connection: aioftp.Connection, rest: str) -> bool:
        connection.response("200", "NOOP ok.")
        return True

    @_logged_in
    async def mode(self, connection: aioftp.Connection, rest: str) -> bool:
        ok = rest.strip().upper() == "S"
        connection.response("200" if ok else "504", "Mode set to S." if ok else "Only stream mode (S).")
        return True

    @_logged_in
    async def stru(self, connection: aioftp.Connection, rest: str) -> bool:
        ok = rest.strip().upper() == "F"
        connection.response("200" if ok else "504", "Structure set to F." if ok else "Only file structure (F).")
        return True

    async def refused(self, connection: aioftp.Connection, rest: str) -> bool:
        connection.response("550", "Permission denied: this server is read-only.")
        return True

    # Navigation -----------------------------------------------------------------------------------

    async def _entry(self, connection: aioftp.Connection, argument: str | PurePosixPath) -> Entry | None:
        """The entry an argument names, or None after answering 550."""
        try:
            return await connection.view.resolve(virtual_path(connection.current_directory, argument))
        except NotFound:
            connection.response("550", "No such file or directory.")
            return None

    @_logged_in
    async def pwd(self, connection: aioftp.Connection, rest: str) -> bool:
        quoted = str(connection.current_directory).replace('"', '""')
        connection.response("257", f'"{quoted}" is the current directory.')
        return True

    @_logged_in
    async def cwd(self, connection: aioftp.Connection, rest: str) -> bool:
        entry = await self._entry(connection, rest or "/")
        if entry is None:
            return True
        if not entry.is_dir:
            connection.response("550", "Not a directory.")
            return True
        connection.current_directory = entry.path
        connection.response("250", f"Directory changed to {entry.path}.")
        return True

    @_logged_in
    async def cdup(self, connection: aioftp.Connection, rest: str) -> bool:
        return await self.cwd(connection, "..")

    @_logged_in
    async def size(self, connection: aioftp.Connection, rest: str) -> bool:
        return await self._file_fact(connection, rest, lambda entry: str(entry.size))

    @_logged_in
    async def mdtm(self, connection: aioftp.Connection, rest: str) -> bool:
        return await self._file_fact(connection, rest, lambda entry: _stamp(entry.mtime))

    async def _file_fact(self, connection: aioftp.Connection, rest: str, fact) -> bool:
        """213 with ``fact(entry)`` of a plain file (SIZE, MDTM); 550 for a directory."""
        entry = await self._entry(connection, rest)
        if entry is not None:
            if entry.is_dir:
                connection.response("550", "Not a plain file.")
            else:
                connection.response("213", fact(entry))
        return True

    @_logged_in
    async def mlst(self, connection: aioftp.Connection, rest: str) -> bool:
        entry = await self._entry(connection, rest)
        if entry is not None:
            connection.response("250", [f"Listing {entry.path}", f"{mlsx_facts(_row(entry))} {entry.path}", "End"],
                                True)
        return True

    # Listings -------------------------------------------------------------------------------------

    @_logged_in
    async def list(self, connection: aioftp.Connection, rest: str) -> bool:
        now = time.time()
        return await self._listing(connection, _without_options(rest), lambda row: list_line(row, now))

    @_logged_in
    async def nlst(self, connection: aioftp.Connection, rest: str) -> bool:
        return await self._listing(connection, _without_options(rest), lambda row: row.name)

    @_logged_in
    async def mlsd(self, connection: aioftp.Connection, rest: str) -> bool:
        return await self._listing(connection, rest, lambda row: f"{mlsx_facts(row)} {row.name}", directory=True)

    async def _listing(self, connection: aioftp.Connection, argument: str, line: Callable[[Row], str],
                       directory: bool = False) -> bool:
        if not connection.future.passive_server.done():
            connection.response("425", "Use PASV or EPSV first.")
            return True
        entry = await self._entry(connection, argument)
        if entry is None:
            return True
        if directory and not entry.is_dir:
            connection.response("501", "Not a directory.")
            return True
        try:
            rows = await connection.view.rows(entry)
        except NotFound:
            connection.response("550", "No such file or directory.")
            return True
        # A name with CR or LF cannot be one line of a listing (nor be asked for in a command): not listed.
        data = "".join(line(row) + "\r\n" for row in rows if not _LINE_BREAK.search(row.name)).encode(self.encoding)

        @_DATA
        @worker
        async def send(self: FtpServer, connection: aioftp.Connection, rest: str) -> None:
            stream = connection.data_connection
            del connection.data_connection
            try:
                async with stream:
                    await stream.write(data)
            except (OSError, TimeoutError):
                connection.response("426", "Connection closed; listing aborted.")
                return
            connection.response("226", "Listing sent.")

        connection.extra_workers.add(asyncio.create_task(send(self, connection, argument)))
        connection.response("150", "Here comes the listing.")
        return True

    # Downloads ------------------------------------------------------------------------------------

    @_logged_in
    async def retr(self, connection: aioftp.Connection, rest: str) -> bool:
        offset, connection.restart_offset = connection.restart_offset, 0
        if not connection.future.passive_server.done():
            connection.response("425", "Use PASV or EPSV first.")
            return True
        entry = await self._entry(connection, rest)
        if entry is None:
            return True
        if entry.is_dir:
            connection.response("550", "Not a plain file.")
            return True
        if offset > entry.size:
            connection.response("554", f"Restart offset {offset} is beyond the end of the file ({entry.size}).")
            return True
        try:
            source = await asyncio.to_thread(_open_same, entry.real, entry.info)
        except OSError:
            connection.response("550", "No such file or directory.")
            return True
        who = connection.user.name

        @_DATA
        @worker
        async def send(self: FtpServer, connection: aioftp.Connection, rest: str) -> None:
            stream = connection.data_connection
            del connection.data_connection
            started, sent = time.monotonic(), 0
            self._transfer_started()
            try:
                async with stream:
                    if offset:
                        await asyncio.to_thread(source.seek, offset)
                    while block := await asyncio.to_thread(source.read, BLOCK):
                        await stream.write(block)
                        sent += len(block)
            except (OSError, TimeoutError):
                log.info("ftp: download aborted", extra={"user": who, "file": str(entry.path), "offset": offset,
                                                         "bytes": sent, "client": connection.client_host})
                connection.response("426", "Connection closed; transfer aborted.")
            else:
                log.info("ftp: download", extra={"user": who, "file": str(entry.path), "offset": offset,
                                                 "bytes": sent, "seconds": round(time.monotonic() - started, 3),
                                                 "client": connection.client_host})
                connection.response("226", "Transfer complete.")
            finally:  # after the reply is queued: a stopping server sends it before closing
                self._transfer_ended()

        async def send_and_close() -> None:
            try:
                await send(self, connection, rest)
            finally:  # also when no data connection came (425) or on ABOR
                source.close()

        connection.extra_workers.add(asyncio.create_task(send_and_close()))
        connection.response("150", f"Opening BINARY mode data connection for {entry.path.name} ({entry.size} bytes).")
        return True

    def _transfer_started(self) -> None:
        self.transfers += 1
        self.quiet.clear()

    def _transfer_ended(self) -> None:
        self.transfers -= 1
        if self.transfers == 0:
            self.quiet.set()


def _without_options(argument: str) -> str:
    """LIST/NLST arguments without ``ls`` options (``-la``), which many clients send."""
    words = argument.split(" ")
    while words and words[0].startswith("-"):
        words.pop(0)
    return " ".join(words)


def _open_same(path: Path, info: os.stat_result):
    """``path`` opened for reading, if it is still the regular file ``info`` describes (not a symlink
    swapped in since it was resolved)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
            raise FileNotFoundError(str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


__all__ = ["ANONYMOUS", "ApiKeyUsers", "FtpServer", "FtpUser", "list_line", "mlsx_facts"]
