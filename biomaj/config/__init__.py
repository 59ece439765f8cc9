"""Configuration: config.yml (service.py) and BioMAJ 3 properties files (properties.py, check.py)."""
