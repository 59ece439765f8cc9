"""Clients of a remote biomaj server: api.py, the REST API client of `biomaj ctl --proxy`."""
