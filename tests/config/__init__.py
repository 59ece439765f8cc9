"""Tests of biomaj.config: BioMAJ 3 properties loading, settings and checks."""
