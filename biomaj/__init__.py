"""biomaj: mirror bioinformatics data banks, BioMAJ 3 compatible, as one asyncio program."""

__version__ = "0.1.0"
