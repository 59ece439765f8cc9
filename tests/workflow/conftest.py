"""Fixtures of the workflow scenario suite: `site` lives in tests/conftest.py (the actor tests use it too)."""
