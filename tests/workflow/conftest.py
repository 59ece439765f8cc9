"""Fixtures of the workflow scenario suite."""

from __future__ import annotations

import pytest

from tests.workflow.harness import Site


@pytest.fixture
async def site(tmp_path, fixtures_dir):
    """A BioMAJ 3 test installation with its actors running."""
    site = Site(tmp_path / "biomaj", fixtures_dir)
    await site.open()
    try:
        yield site
    finally:
        await site.close()
