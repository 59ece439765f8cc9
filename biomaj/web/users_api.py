"""`/api/v1/me` and `/api/v1/users...` (admins): accounts and API keys over HTTP. A key is in the
answer that creates it, and nowhere else; hashes never leave the server."""

from __future__ import annotations

from aiohttp import web

from .auth import USERS_KEY, identity_of
from .errors import ApiError, json_body
from .registry import Api

api = Api()

CREATE_SCHEMA = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
    "name": {"type": "string"}, "email": {"type": "string"}, "admin": {"type": "boolean"},
    "password": {"type": "string", "writeOnly": True}}}


@api.route("GET", "/api/v1/me", summary="Who the API key belongs to", access="user", tag="users")
async def me(request: web.Request) -> web.Response:
    who = identity_of(request)
    return web.json_response(await request.app[USERS_KEY].get(who.name))


@api.route("GET", "/api/v1/users", summary="Every user (no secrets)", access="admin", tag="users")
async def list_users(request: web.Request) -> web.Response:
    return web.json_response(await request.app[USERS_KEY].list())


@api.route("POST", "/api/v1/users", summary="Create a user; the answer holds its first API key, once",
           access="admin", tag="users", body=CREATE_SCHEMA, responses={201: "the user and its API key"})
async def create_user(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    unknown = sorted(set(body) - set(CREATE_SCHEMA["properties"]))
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
    name, email, password = body.get("name"), body.get("email"), body.get("password")
    if not isinstance(name, str) or (email is not None and not isinstance(email, str)) or \
            (password is not None and not isinstance(password, str)) or not isinstance(body.get("admin", False), bool):
        raise ApiError(400, "name, email and password are strings, admin a boolean")
    user, key = await request.app[USERS_KEY].create(name, email=email, password=password,
                                                    admin=body.get("admin", False))
    return web.json_response({"user": user, "api_key": key}, status=201)


@api.route("GET", "/api/v1/users/{name}", summary="One user (no secrets)", access="admin", tag="users")
async def get_user(request: web.Request) -> web.Response:
    return web.json_response(await request.app[USERS_KEY].get(request.match_info["name"]))


@api.route("DELETE", "/api/v1/users/{name}", summary="Delete a user and its API keys", access="admin", tag="users")
async def delete_user(request: web.Request) -> web.Response:
    await request.app[USERS_KEY].delete(request.match_info["name"])
    return web.json_response({"deleted": request.match_info["name"]})


@api.route("POST", "/api/v1/users/{name}/apikeys", summary="A new API key for the user, in the answer only",
           access="admin", tag="users", body={"type": "object", "properties": {"label": {"type": "string"}}},
           responses={201: "the key id and the key"})
async def new_key(request: web.Request) -> web.Response:
    label = (await json_body(request)).get("label", "")
    if not isinstance(label, str) or len(label) > 200:
        raise ApiError(400, "label must be a string of at most 200 characters")
    key_id, key = await request.app[USERS_KEY].new_api_key(request.match_info["name"], label)
    return web.json_response({"user": request.match_info["name"], "id": key_id, "api_key": key}, status=201)


@api.route("DELETE", "/api/v1/users/{name}/apikeys/{key_id}", summary="Revoke an API key", access="admin",
           tag="users")
async def revoke_key(request: web.Request) -> web.Response:
    await request.app[USERS_KEY].revoke_api_key(request.match_info["name"], request.match_info["key_id"])
    return web.json_response({"revoked": request.match_info["key_id"]})
