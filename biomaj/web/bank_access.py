"""Who may see and who may change a bank: one rule for every route of the API (``/api/v1`` and
BioMAJ 3's ``/api/daemon``).

* **Seeing**: public banks for everyone, private ones for their owner and the admins. A bank the
  requester may not see is answered exactly as a bank that does not exist: the same 404 with the
  same body, so that nobody learns that a private bank exists.
* **Changing**: the bank's owner or an admin. A bank with no owner yet (never updated, or a record
  without one) is the admins': a plain user may not update it, own it or change its visibility
  until an admin gives it an owner (BioMAJ 3 made its first updater the owner). An admin who runs
  it first becomes its owner (the workflow's rule, :meth:`biomaj.workflow.bank.Bank.document`).
  ``biomaj ctl`` run on the server does not go through here: it is the server's operator.

Messages name the bank file relative to the installation (``conf/alu.properties``), never by its
absolute path (:mod:`.server_paths`).
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from biomaj.config.check import refuse_invalid
from biomaj.config.properties import SUFFIX, BankProperties
from biomaj.errors import UnknownBank
from biomaj.inventory import conf_dir_of
from biomaj.workflow.bank import NotAuthorized

from .auth import identity_of, viewer_of
from .context import node_of
from .errors import CLIENT_TEXT, ApiError
from .server_paths import shown_path

__all__ = ["bank_file", "check_owner", "client_paths", "load_bank_file", "unknown_bank", "visible_bank"]


def bank_file(request: web.Request, name: str) -> Path | None:
    """The bank's file in conf.dir, or None when there is none (or ``name`` is no plain name)."""
    path = _bank_file_path(request, name)
    return path if path is not None and path.is_file() else None


def _bank_file_path(request: web.Request, name: str) -> Path | None:
    if not name or "/" in name or os.sep in name or "\x00" in name or name.startswith("."):
        return None
    return conf_dir_of(node_of(request).config.global_properties) / f"{name}{SUFFIX}"


def _is_admin(request: web.Request) -> bool:
    viewer = viewer_of(request)
    return viewer.user is not None and viewer.user in viewer.admins


def client_paths(request: web.Request, text: str) -> str:
    """``text`` as the requester may read it: server paths as they are for admins (the operators),
    relative to the installation for anyone else (:mod:`.server_paths`)."""
    return text if _is_admin(request) else request.app[CLIENT_TEXT](text)


def unknown_bank(request: web.Request, name: str) -> UnknownBank:
    """The 404 of a bank that does not exist (exit code 2 in ``ctl --proxy``, as in-process), which is
    also the answer about a bank the requester may not see (same body). Admins see every bank:
    theirs says only the cause."""
    path = _bank_file_path(request, name)
    where = f"no bank file {shown_path(path, node_of(request).config)}" if path is not None else "not a bank name"
    if _is_admin(request):
        return UnknownBank(f"bank {name[:200]}: {where}")
    return UnknownBank(f"bank {name[:200]}: {where}, or a private bank (only its owner and the admins see it)")


async def visible_bank(request: web.Request, name: str) -> dict:
    """The bank's record if the requester may see it; 404 otherwise (:func:`unknown_bank`, or
    "never updated" for a bank file with no record yet)."""
    doc = await node_of(request).store.get_bank(name)
    if doc is not None and viewer_of(request).can_see(doc):
        return doc
    if doc is None and bank_file(request, name) is not None:
        raise UnknownBank(f"bank {name}: never updated (no record in the store)")
    raise unknown_bank(request, name)


async def check_owner(request: web.Request, name: str) -> dict | None:
    """Refuse anyone but the bank's owner and the admins, before anything else is read: 401
    anonymous, 404 for a bank the requester may not see (as an unknown one), 403 for another
    user's bank or a bank with no owner yet (the admins'). Returns the record (None: no record)."""
    if identity_of(request) is None:
        raise ApiError(401, "authentication needed: Authorization: APIKEY <key> or X-API-KEY",
                       {"WWW-Authenticate": 'APIKEY realm="biomaj"'})
    doc = await node_of(request).store.get_bank(name)
    if _is_admin(request):
        return doc
    viewer = viewer_of(request)
    if doc is None and bank_file(request, name) is None or doc is not None and not viewer.can_see(doc):
        raise unknown_bank(request, name)
    owner = ((doc or {}).get("properties") or {}).get("owner")
    if not owner:
        raise NotAuthorized(f"not authorized: bank {name} has no owner yet, so it is the admins': an admin "
                            f"updates it or gives it an owner first (biomaj ctl owner {name} USER, "
                            f"PUT /api/v1/banks/{name}/owner)")
    if not viewer.is_owner(doc):
        raise NotAuthorized(f"not authorized: bank {name} is owned by {owner}")
    return doc


def load_bank_file(request: web.Request, name: str, validate: bool = False) -> BankProperties:
    """The bank's properties; 404 (:func:`unknown_bank`) with no bank file; with ``validate``, 400
    (ConfigError) when BioMAJ 3's check fails."""
    if bank_file(request, name) is None:
        raise unknown_bank(request, name)
    props = BankProperties.load(node_of(request).config.global_properties, name)
    if validate:
        refuse_invalid(props)
    return props
