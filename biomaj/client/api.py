"""A client of a biomaj server's REST API (``/api/v1``), for ``biomaj ctl --proxy URL``.

Errors come back as the server wrote them (``{"error": message, "status": code}``) and are raised
as :class:`RemoteError`, a :class:`~biomaj.errors.BiomajError`: the command prints the server's
message as it would print its own. The API key travels in the ``Authorization`` header only; it is
never part of a message, a log record or a URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from biomaj import __version__
from biomaj.errors import BiomajError, ConfigError
from biomaj.reports import Table

#: Seconds to wait for an answer (an event stream waits for ever, with keep-alive comments).
TIMEOUT = 60.0


class RemoteError(BiomajError):
    """The server refused or failed a request; the message is the server's own."""

    def __init__(self, message: str, status: int, exit_code: int | None = None):
        super().__init__(message)
        self.status = status
        # the server says how the same error exits in-process; an older one does not
        self.exit_code = exit_code if isinstance(exit_code, int) and exit_code > 0 else 1


def proxy_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without its trailing slash; anything else is refused."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--proxy {url!r}: expected http://HOST:PORT or https://HOST[:PORT]")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"--proxy {url!r}: give the server's address only (the API key goes in --api-key)")
    return url.strip().rstrip("/")


class ApiClient:
    """Calls one server's REST API as the owner of ``api_key`` (anonymous without one); use as
    ``async with ApiClient(url, key) as api``."""

    def __init__(self, url: str, api_key: str | None = None):
        self.url = proxy_url(url)
        self._headers = {"User-Agent": f"biomaj-ctl/{__version__}", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"APIKEY {api_key}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use ApiClient as an async context manager")
        return self._session

    async def call(self, method: str, path: str, body: dict | None = None, **params: Any) -> Any:
        """One request; the decoded JSON answer, or RemoteError with the server's message."""
        query = {k: _query_value(v) for k, v in params.items() if v is not None}
        try:
            async with self.session.request(method, self.url + path, json=body, params=query) as response:
                text = await response.text()
                if response.status >= 400:
                    raise _error(response.status, text)
                return json.loads(text) if text else None
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, **params)

    async def post(self, path: str, body: dict | None = None) -> Any:
        return await self.call("POST", path, body if body is not None else {})

    async def put(self, path: str, body: dict) -> Any:
        return await self.call("PUT", path, body)

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)

    async def tables(self, path: str, **params: Any) -> list[Table]:
        """The report tables of ``path`` (its ``format=table`` form), as ``biomaj ctl`` builds them."""
        answer = await self.get(path, format="table", **params)
        return [Table.from_dict(table) for table in answer["tables"]]

    async def events(self, **params: Any) -> AsyncIterator[tuple[str, dict]]:
        """The server-sent events of ``/api/v1/events`` as ``(type, data)``: ``job`` events, and
        ``log`` lines when asked with ``log=True``. The first item, ``("open", {})``, says that the
        server has subscribed. Ends when the server closes the stream."""
        query = {k: _query_value(v) for k, v in params.items() if v is not None}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT)
        try:
            async with self.session.get(self.url + "/api/v1/events", params=query, timeout=timeout,
                                        headers={"Accept": "text/event-stream"}) as response:
                if response.status >= 400:
                    raise _error(response.status, await response.text())
                yield "open", {}
                kind, data = "message", []
                async for raw in response.content:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line:
                        if data:
                            yield kind, json.loads("\n".join(data))
                        kind, data = "message", []
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> BiomajError:
        reason = str(exc) or type(exc).__name__
        return BiomajError(f"no biomaj server answers at {self.url} ({reason}): is `biomaj serve` running there?")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(status: int, text: str) -> RemoteError:
    try:
        answer = json.loads(text)
        message, exit_code = str(answer["error"]), answer.get("exit_code")
    except (ValueError, KeyError, TypeError, AttributeError):
        message, exit_code = text.strip()[:200] or f"HTTP {status}", None
    if status == 401:
        message += " (give the API key of a user of this server: --api-key or $BIOMAJ_APIKEY)"
    return RemoteError(message, status, exit_code)
