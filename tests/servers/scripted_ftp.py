"""A scripted FTP server on 127.0.0.1 for what the aioftp server of ftp_server.py cannot show: the
order in which commands arrive against the replies sent (a reader task timestamps every command
line as it arrives while the session answers them in order, as a sequential server such as
vsftpd does). USER/PASS/TYPE/NOOP/PWD/CWD/EPSV/RETR/QUIT, anonymous, passive only."""

from __future__ import annotations

import asyncio
import time

from biomaj.protocols.base import RemoteConfig


class ScriptedFtp:
    """A sequential FTP server for ``files`` (path -> bytes) that logs when each command arrived and
    each reply went (``events``). Every RETR's 226 is held ``hold`` seconds after the data
    connection closed; ``eager``: an EPSV that came meanwhile is answered before that 226, as
    servers that read commands while sending (aioftp) may."""

    def __init__(self, files: dict[str, bytes], *, eager: bool = False, hold: float = 0.0):
        self.files, self.eager, self.hold = files, eager, hold
        self.events: list[tuple[float, str]] = []  # (time, "> CMD" received / "< CODE" sent)
        self.listeners: list[asyncio.Server] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> RemoteConfig:
        self.server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return RemoteConfig(protocol="ftp", host="127.0.0.1", port=port, read_timeout=5, connect_timeout=5)

    async def close(self) -> None:
        for server in [self.server, *self.listeners]:
            server.close()

    def commands(self) -> list[str]:
        return [what[2:] for _, what in self.events if what.startswith(">")]

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines: asyncio.Queue[str] = asyncio.Queue()

        async def read() -> None:
            while line := await reader.readline():
                text = line.decode().strip()
                self.events.append((time.monotonic(), "> " + text.split(" ")[0]))
                lines.put_nowait(text)
            lines.put_nowait("")

        def send(code: int, text: str) -> None:
            self.events.append((time.monotonic(), f"< {code}"))
            writer.write(f"{code} {text}\r\n".encode())

        reading = asyncio.create_task(read())
        cwd, data = "/", None
        send(220, "scripted")
        try:
            while command := await lines.get():
                verb, _, argument = command.partition(" ")
                if verb == "USER":
                    send(331, "password")
                elif verb == "PASS":
                    send(230, "in")
                elif verb in ("TYPE", "NOOP"):
                    send(200, "ok")
                elif verb == "PWD":
                    send(257, '"/"')
                elif verb == "CWD":
                    cwd = argument if argument.startswith("/") else cwd.rstrip("/") + "/" + argument
                    send(250, "ok")
                elif verb == "EPSV":
                    data = await self.passive()
                    send(229, f"Extended Passive Mode (|||{data[1]}|)")
                elif verb == "RETR":
                    name = (cwd.rstrip("/") + "/" + argument).lstrip("/")
                    if name not in self.files or data is None:
                        send(550, "no such file")
                        continue
                    (accepted, _), data = data, None
                    data_writer = await accepted
                    send(150, "here it comes")
                    data_writer.write(self.files[name])
                    await data_writer.drain()
                    data_writer.close()
                    await asyncio.sleep(self.hold)
                    if self.eager and not lines.empty() and lines._queue[0] == "EPSV":  # noqa: SLF001
                        await lines.get()
                        data = await self.passive()
                        send(229, f"Extended Passive Mode (|||{data[1]}|)")
                    send(226, "done")
                elif verb == "QUIT":
                    send(221, "bye")
                    break
                else:
                    send(502, "not here")
                await writer.drain()
        finally:
            reading.cancel()
            writer.close()

    async def passive(self) -> tuple[asyncio.Future, int]:
        """A listener for one data connection: (the future of its writer, its port)."""
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()

        async def on_connect(_reader, writer) -> None:
            if not accepted.done():
                accepted.set_result(writer)

        listener = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.listeners.append(listener)
        return accepted, listener.sockets[0].getsockname()[1]
