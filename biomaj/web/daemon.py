"""BioMAJ 3's `/api/daemon` routes, so that `biomaj-cli` clients keep working (being written)."""

from __future__ import annotations

from .registry import Api

api = Api()
