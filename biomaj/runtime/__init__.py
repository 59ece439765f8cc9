"""The actor kernel: the actor base, hooks, cancels, bank leases and the manager's work dispatch."""
