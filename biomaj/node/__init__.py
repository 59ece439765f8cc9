"""The node layer, above the actors: what builds them and runs them (a ``biomaj serve`` node, the
in-process actors of a ``biomaj ctl`` command) and the job clients of ``biomaj ctl``."""
