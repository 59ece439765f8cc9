"""A real biomaj node in the test's own event loop (every actor but the web server, in-process bus),
on a new `biomaj init` root, with three users: owner and user (plain users) and admin."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from biomaj.auth.users import Users
from biomaj.config.scaffold import init_root
from biomaj.config.service import load_config
from biomaj.node.serve import Node

USERS = (("owner", False), ("user", False), ("admin", True))


@contextlib.asynccontextmanager
async def node_with_users(tmp_path: Path, passwords: Mapping[str, str] | None = None
                          ) -> AsyncIterator[tuple[Node, dict[str, str]]]:
    """``(node, {user: API key})``; ``passwords`` sets the users' passwords (web UI logins)."""
    root = tmp_path / "root"
    init_root(root, web_port=0)
    node = Node(load_config(root / "config.yml"), ["manager", "download", "process"])
    await node.start()
    try:
        users = Users(node.store, frozenset({"root-admin"}))
        keys = {}
        for name, admin in USERS:
            keys[name] = (await users.create(name, admin=admin, password=(passwords or {}).get(name)))[1]
        yield node, keys
    finally:
        await node.stop()
