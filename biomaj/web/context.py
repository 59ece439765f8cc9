"""What the API handlers reach through the application: the node's store, bus, state, config
and the users service."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from biomaj.workflow.bank import RunContext

from .errors import ApiError
from .auth import USERS_KEY, identity_of, viewer_of

NODE_KEY = web.AppKey("node", object)


def node_of(request: web.Request) -> Any:
    node = request.app[NODE_KEY]
    if getattr(node, "store", None) is None:
        raise ApiError(503, "this node has no store: run the web role with the manager's config")
    return node


def run_context(request: web.Request) -> RunContext:
    """A RunContext for a quick operation done in the web process, as the requester."""
    node = node_of(request)
    viewer = viewer_of(request)
    return RunContext(store=node.store, global_properties=node.config.global_properties,
                      job_id=f"api-{time.time():.0f}", user=viewer.user, admins=viewer.admins,
                      webhooks=getattr(node, "webhooks", None))


__all__ = ["NODE_KEY", "USERS_KEY", "identity_of", "node_of", "run_context", "viewer_of"]
