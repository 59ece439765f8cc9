"""The web actor: serves the aiohttp application on the configured address."""

from __future__ import annotations

import logging

from aiohttp import web

from biomaj.errors import BiomajError
from biomaj.web.app import StatusSource, create_app

log = logging.getLogger(__name__)


class WebActor:
    """Listens on `host:port` (port 0 picks a free one, see `port` after start)."""

    name = "web"

    def __init__(self, node: StatusSource, host: str, port: int):
        self._node = node
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(create_app(self._node), access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise BiomajError(f"web: cannot listen on {self.host}:{self.port}: {exc.strerror or exc} (set web.port or WEB_PORT)") from None
        server = getattr(site, "_server", None)
        if server and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        log.info("web actor listening", extra={"url": f"http://{self.host}:{self.port}"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def describe(self) -> dict:
        return {"name": self.name, "listen": f"{self.host}:{self.port}"}
