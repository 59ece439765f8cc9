"""The roles of `biomaj serve` and the actors each one hosts (kept light: the CLI reads it)."""

from __future__ import annotations

from typing import Callable

from biomaj.errors import BiomajError

#: role -> actors it hosts, in start order. Authentication is a library (biomaj.auth) that the
#: web and ftp actors use, not an actor.
ROLE_ACTORS: dict[str, tuple[str, ...]] = {
    "manager": ("manager",),
    "download": ("downloader",),
    "process": ("processor",),
    "scheduler": ("scheduler",),
    "web": ("web",),
    "ftp": ("ftp",),
}
ROLES = tuple(ROLE_ACTORS)
#: Role words still accepted by ``--role``, which run nothing: word -> why.
DEPRECATED_ROLES = {
    "auth": "authentication is part of the web and ftp roles",
}
#: Roles that read or write the store.
STORE_ROLES = {"manager", "scheduler", "web", "ftp"}


def parse_roles(all_roles: bool, spec: str | None, warn: Callable[[str], None] | None = None) -> list[str]:
    """The roles asked for by `--all` or `--role a,b`; BiomajError for an unknown or missing role.
    A deprecated role word is dropped, and ``warn`` is told so once."""
    if all_roles and spec:
        raise BiomajError("serve: give either --all or --role, not both")
    if all_roles:
        return list(ROLES)
    if not spec:
        raise BiomajError(f"serve: give --all or --role ROLE[,ROLE] (roles: {', '.join(ROLES)})")
    roles: list[str] = []
    deprecated: list[str] = []
    for role in (r.strip().lower() for r in spec.split(",")):
        if not role:
            continue
        if role in DEPRECATED_ROLES:
            if role not in deprecated and warn is not None:
                warn(f"serve: role {role} is deprecated and ignored ({DEPRECATED_ROLES[role]})")
            deprecated.append(role)
            continue
        if role not in ROLE_ACTORS:
            raise BiomajError(f"serve: unknown role {role!r} (roles: {', '.join(ROLES)})")
        if role not in roles:
            roles.append(role)
    if not roles and deprecated:
        raise BiomajError(f"serve: --role {','.join(deprecated)} runs nothing: give the roles to run ({', '.join(ROLES)})")
    if not roles:
        raise BiomajError(f"serve: --role is empty (roles: {', '.join(ROLES)})")
    return roles
