"""The OpenAPI 3.1 document of the REST API, built from the route registry (never written by
hand, so it cannot drift), served at `/api/v1/openapi.json`, and a plain page listing it at
`/api/v1/docs` (no JavaScript, no CDN: the server may have no internet)."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from biomaj import __version__

from .registry import Operation

ERROR_SCHEMA = {"type": "object", "required": ["error", "status"],
                "properties": {"error": {"type": "string"}, "status": {"type": "integer"},
                               "exit_code": {"type": "integer",
                                             "description": "exit status of the same error in `biomaj ctl`"}}}
ACCESS_TEXT = {"public": "anyone (private banks need their owner or an admin)", "user": "an authenticated user",
               "owner": "the bank's owner or an admin", "admin": "an admin"}


def document(operations: list[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in op.path_params]
        parameters += [{"name": name, "in": "query", "required": False, "schema": {"type": kind},
                        "description": text} for name, kind, text in op.query]
        success = {"type": "string"} if op.content_type != "application/json" else {}
        responses: dict[str, Any] = {
            str(code): {"description": text, "content": {op.content_type: {"schema": success}}}
            for code, text in sorted(op.responses.items()) if code < 400}
        if not any(code < 400 for code in op.responses):
            responses["200"] = {"description": "OK", "content": {op.content_type: {"schema": success}}}
        errors = {400: "bad input", 404: "not found", 409: "conflict: locked, running or duplicate",
                  413: "request too large", **{c: t for c, t in op.responses.items() if c >= 400}}
        if op.access != "public":
            errors[401] = "authentication needed"
        if op.access in ("owner", "admin"):
            errors[403] = "not allowed"
        for code, text in sorted(errors.items()):
            responses[str(code)] = {"description": text,
                                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        operation: dict[str, Any] = {
            "operationId": op.handler.__name__, "summary": op.summary, "tags": [op.tag],
            "description": f"Who may call it: {ACCESS_TEXT[op.access]}.", "parameters": parameters,
            "responses": responses,
        }
        if op.access != "public":
            operation["security"] = [{"apiKey": []}, {"apiKeyHeader": []}]
        if op.body is not None:
            operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": op.body}}}
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "biomaj API", "version": __version__,
                 "description": "Mirror bioinformatics data banks. Authenticate with `Authorization: APIKEY <key>` "
                                "or `X-API-KEY: <key>`; errors are `{error, status}`."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "Authorization",
                                           "description": "APIKEY <key>"},
                                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-KEY"}},
        },
    }


def docs_page(spec: dict[str, Any]) -> str:
    rows = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op['summary'])}</td><td>{html.escape(op['description'])}</td></tr>")
    return ("<!doctype html><html lang=en><meta charset=utf-8><title>biomaj API</title>"
            "<style>body{font:15px system-ui,sans-serif;margin:2em;max-width:75em}td{padding:.3em .6em;"
            "border-bottom:1px solid #ddd;vertical-align:top}</style>"
            f"<h1>biomaj API {html.escape(spec['info']['version'])}</h1>"
            f"<p>{html.escape(spec['info']['description'])} Machine-readable: "
            "<a href=/api/v1/openapi.json>openapi.json</a>.</p>"
            f"<table><tr><th>Method<th>Path<th>What<th>Who</tr>{''.join(rows)}</table></html>")


def add_routes(app: web.Application, operations: list[Operation]) -> None:
    spec = document(operations)

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.json_response(spec)

    async def docs(_request: web.Request) -> web.Response:
        return web.Response(text=docs_page(spec), content_type="text/html")

    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/api/v1/docs", docs)
