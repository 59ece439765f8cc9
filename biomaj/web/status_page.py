"""``GET /status``: the services and nodes of the installation on one plain page, as BioMAJ 3's public
proxy showed at ``/status`` (an HTML page drawing ``/api/daemon/status``); JSON with
``Accept: application/json``.

It reads what ``/api/v1/status`` and ``/readyz`` read (the node's ``status()`` and ``ready()``, the
:class:`~.app.StatusSource` of the node hosting the web app) and shares with ``/api/daemon/status``
the one function that turns them into BioMAJ 3's service rows (:func:`biomaj3_status`).

Who may see it: anyone (``access="public"``), as BioMAJ 3's page behind its public proxy, and as
``/healthz``, ``/readyz`` and ``/api/v1/status``: no bank data. Hosts, PIDs, where the store lives
and why a backend failed are for admins only (BioMAJ 3's page showed the Mongo URL and every host to
anyone, W33); nothing secret is ever shown (the store describes itself without credentials).
"""

from __future__ import annotations

import html
import time
from typing import Any, Iterable

from aiohttp import web

from biomaj import __version__

from .auth import identity_of
from .context import NODE_KEY
from .registry import Api

api = Api()

#: what only an admin reads of a node's entry
ADMIN_NODE_FIELDS = ("host", "pid")


def biomaj3_status(checks: dict[str, Any], nodes: Iterable[dict[str, Any]], admin: bool) -> dict[str, Any]:
    """BioMAJ 3's ``/api/daemon/status`` answer from ``ready()``'s checks and ``status()``'s nodes:
    ``status`` (one row per backend and per role: ``1`` running, ``-1`` down, with a count),
    ``biomaj_services`` (one per node and role) and ``general_services`` (the backends that answer);
    hosts for admins only, never a URL."""
    status, general, services = [], [], []
    for name, check in checks.items():
        ok = bool(check.get("ok"))
        status.append({"service": f"biomaj-{name}", "status": 1 if ok else -1, "count": 1 if ok else 0})
        if ok:
            general.append({"id": f"biomaj-{name}", "host": "", "status": True})  # no URL (W33)
    counts: dict[str, int] = {}
    for info in nodes:
        for role in info.get("roles", ()):
            counts[role] = counts.get(role, 0) + 1
            services.append({"id": f"biomaj-{role}", "host": info.get("host", "") if admin else "", "status": True})
    status += [{"service": f"biomaj-{role}", "status": 1, "count": n} for role, n in sorted(counts.items())]
    return {"status": status, "biomaj_services": services, "general_services": general}


async def service_status(request: web.Request) -> dict[str, Any]:
    """What ``/status`` shows the requester (see the module's text for who sees what)."""
    node = request.app[NODE_KEY]
    who = identity_of(request)
    admin = who is not None and who.admin
    checks = await node.ready()
    info = await node.status()
    nodes = sorted(info.get("nodes") or [], key=lambda n: str(n.get("node_id", "")))
    services = biomaj3_status(checks, nodes, admin)["status"]
    for row in services:
        check = checks.get(row["service"].removeprefix("biomaj-"))
        if admin and check is not None and not check.get("ok"):
            row["error"] = str(check.get("error", ""))
    backends = dict(info.get("backends") or {})
    if not admin and isinstance(backends.get("store"), str):
        backends["store"] = backends["store"].split(" ", 1)[0]  # its kind (sqlite, mongodb), not where
    return {
        "version": info.get("version", __version__),
        "node": info.get("node"),
        "time": time.time(),
        "ok": all(c.get("ok") for c in checks.values()),
        "services": services,
        "nodes": [{k: v for k, v in n.items() if admin or k not in ADMIN_NODE_FIELDS} for n in nodes],
        "backends": backends,
    }


def wants_json(accept: str) -> bool:
    """True when ``accept`` (an Accept header) prefers ``application/json`` to ``text/html``. Each
    type takes the quality of its most specific range (``application/json``, then ``application/*``,
    then ``*/*``); the higher quality wins, the one listed first on a tie, HTML when neither is
    named (``*/*``, nothing, nonsense). Never raises: a quality that is not a number in [0, 1]
    makes its range unacceptable."""
    ranges: dict[str, tuple[float, int]] = {}  # media range -> (quality, position), first occurrence
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
                if not 0.0 <= quality <= 1.0:  # nan, inf, negative, above 1
                    quality = 0.0
        ranges.setdefault(media.lower(), (quality, position))

    def preference(kind: str, family: str) -> tuple[float, int]:
        for media in (kind, f"{family}/*", "*/*"):
            if media in ranges:
                quality, position = ranges[media]
                return quality, -position
        return 0.0, 0

    json_pref, html_pref = preference("application/json", "application"), preference("text/html", "text")
    return json_pref[0] > 0 and json_pref > html_pref


def _when(epoch: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch))) if epoch else ""
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _cells(values: Iterable[Any], tag: str = "td") -> str:
    return "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values)


STATE_TEXT = {1: "ok", 0: "some instances down", -1: "down"}


def status_html(shown: dict[str, Any]) -> str:
    """The plain page of :func:`service_status`'s answer: no script, no external resource."""
    services = "".join(
        f'<tr class="s{row["status"]}">{_cells([row["service"], STATE_TEXT.get(row["status"], row["status"]), row["count"]])}'
        f'{_cells([row.get("error", "")]) if "error" in row else "<td></td>"}</tr>'
        for row in shown["services"])
    admin = any("host" in n for n in shown["nodes"])
    heads = ["node", "roles", "actors", "version", "in flight", "started", "last seen"] + (["host", "pid"] if admin else [])
    nodes = "".join(
        "<tr>" + _cells([n.get("node_id", ""), ", ".join(n.get("roles", ())), ", ".join(n.get("actors", ())),
                         n.get("version", ""), n.get("in_flight", 0), _when(n.get("started")), _when(n.get("last_seen"))]
                        + ([n.get("host", ""), n.get("pid", "")] if admin else [])) + "</tr>"
        for n in shown["nodes"]) or f'<tr><td colspan="{len(heads)}">no node registered</td></tr>'
    backends = "".join(f"<tr>{_cells([name, value or ''])}</tr>" for name, value in shown["backends"].items())
    verdict = "every service answers" if shown["ok"] else "a service does not answer"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>biomaj status</title>"
        "<style>body{font:15px system-ui,sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}"
        ".s1 td:nth-child(2){color:#176f2c}.s0 td:nth-child(2){color:#9a6700}.s-1 td:nth-child(2){color:#b3261e;"
        "font-weight:bold}</style></head><body>"
        f"<h1>biomaj services status</h1><p>{html.escape(verdict)}; biomaj {html.escape(str(shown['version']))}, "
        f"answered by node {html.escape(str(shown['node'] or ''))} at {html.escape(_when(shown['time']))}. "
        'JSON: <code>Accept: application/json</code>. <a href="/ui/">banks</a></p>'
        f"<h2>Services</h2><table><tr>{_cells(['service', 'state', 'count', ''], 'th')}</tr>{services}</table>"
        f"<h2>Nodes</h2><table><tr>{_cells(heads, 'th')}</tr>{nodes}</table>"
        f"<h2>Backends</h2><table>{backends}</table>"
        "</body></html>\n")


@api.route("GET", "/status", summary="The services and nodes on a plain page (BioMAJ 3's proxy /status); JSON with "
           "Accept: application/json", access="public", tag="service", content_type="text/html", head=True,
           responses={200: "an HTML page, or with Accept: application/json {version, node, time, ok, services, "
                           "nodes, backends} (hosts, pids, where the store is and backend errors: admins only)"})
async def status_page(request: web.Request) -> web.Response:
    shown = await service_status(request)
    headers = {"Cache-Control": "no-store", "Vary": "Accept, Authorization, X-API-KEY, Cookie"}
    if wants_json(request.headers.get("Accept", "")):
        return web.json_response(shown, headers=headers)
    headers.update({"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"})
    return web.Response(text=status_html(shown), content_type="text/html", charset="utf-8", headers=headers)
