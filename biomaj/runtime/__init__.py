"""The actor runtime: actor base, hooks, heartbeat, and the node that hosts actors by role."""
