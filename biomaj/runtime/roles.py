"""The roles of `biomaj serve` and the actors each one hosts (kept light: the CLI reads it)."""

from __future__ import annotations

from biomaj.errors import BiomajError

#: role -> actors it hosts, in start order. auth serves the roles that identify users.
ROLE_ACTORS: dict[str, tuple[str, ...]] = {
    "manager": ("auth", "manager"),
    "download": ("downloader",),
    "process": ("processor",),
    "scheduler": ("scheduler",),
    "web": ("auth", "web"),
    "ftp": ("auth", "ftp"),
}
ROLES = tuple(ROLE_ACTORS)
#: Roles that read or write the store.
STORE_ROLES = {"manager", "scheduler", "web", "ftp"}


def parse_roles(all_roles: bool, spec: str | None) -> list[str]:
    """The roles asked for by `--all` or `--role a,b`; BiomajError for an unknown or missing role."""
    if all_roles and spec:
        raise BiomajError("serve: give either --all or --role, not both")
    if all_roles:
        return list(ROLES)
    if not spec:
        raise BiomajError(f"serve: give --all or --role ROLE[,ROLE] (roles: {', '.join(ROLES)})")
    roles: list[str] = []
    for role in (r.strip().lower() for r in spec.split(",")):
        if not role:
            continue
        if role not in ROLE_ACTORS:
            raise BiomajError(f"serve: unknown role {role!r} (roles: {', '.join(ROLES)})")
        if role not in roles:
            roles.append(role)
    if not roles:
        raise BiomajError(f"serve: --role is empty (roles: {', '.join(ROLES)})")
    return roles
