"""The ftp actor: serves the read-only FTP view (:class:`~biomaj.ftp.server.FtpServer`) on ``ftp.host:ftp.port``
when ``ftp.enabled`` is true; otherwise it only starts, registers and stops, so that ``serve --all`` on one
machine never fights over the FTP port."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from biomaj.config.service import FtpSettings
from biomaj.errors import BiomajError

from .server import ApiKeyUsers, FtpServer

log = logging.getLogger(__name__)


class FtpActor:
    """``users``: :class:`biomaj.auth.users.Users` of the store; ``grace``: seconds running downloads get
    to finish on stop; ``asked``: the role was named (``--role ftp``) rather than implied by ``--all``."""

    name = "ftp"

    def __init__(self, settings: FtpSettings, store: Any, users: Any, *, grace: float = 10.0, asked: bool = False):
        self.settings = settings
        self.store = store
        self.users = users
        self.grace = grace
        self.asked = asked
        self.host = settings.host
        self.port = settings.port
        self.server: FtpServer | None = None

    @property
    def in_flight(self) -> int:
        return self.server.transfers if self.server is not None else 0

    async def start(self) -> None:
        s = self.settings
        if not s.enabled:
            (log.warning if self.asked else log.info)(
                "actor ftp: not listening (ftp.enabled is false in config.yml)")
            return
        server = FtpServer(self.store, ApiKeyUsers(self.users, anonymous=s.anonymous), idle_timeout=s.idle_timeout,
                           data_timeout=s.data_timeout, max_connections=s.max_connections, data_ports=s.data_ports,
                           masquerade_address=s.masquerade_address or None)
        try:
            await server.start(self.host, self.port)
        except OSError as exc:
            raise BiomajError(f"ftp: cannot listen on {self.host}:{self.port}: {exc.strerror or exc} "
                              "(set ftp.port, or ftp.enabled: false)") from None
        self.server = server
        self.port = server.address[1]
        log.info("ftp actor listening", extra={"url": f"ftp://{self.host}:{self.port}",
                                               "passive_ports": s.passive_ports or "any",
                                               "anonymous": s.anonymous})

    async def stop(self) -> None:
        """No new session; running downloads get ``grace`` seconds; then every session is told (421) and closed."""
        server, self.server = self.server, None
        if server is None:
            return
        server.server.close()
        if server.transfers:
            log.info("actor ftp: waiting up to %gs for %d download(s)", self.grace, server.transfers)
            try:
                async with asyncio.timeout(self.grace):
                    await server.quiet.wait()
            except TimeoutError:
                log.warning("actor ftp: %d download(s) cut at stop", server.transfers)
        await server.farewell()
        await server.close()
        log.info("actor ftp: stopped")

    def describe(self) -> dict:
        return {"name": self.name, "listen": f"{self.host}:{self.port}" if self.server else None}


__all__ = ["FtpActor"]
