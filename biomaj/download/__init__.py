"""The download engine: matching remote files as BioMAJ 3 does, and fetching each one resumably,
verified, with retries and per-host connection limits. Protocols only move bytes; policy is here.
"""
