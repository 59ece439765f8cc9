"""Moving state between stores: a BioMAJ 3 MongoDB database into biomaj, and a store into MongoDB
(``biomaj migrate``; the copy logic is :mod:`biomaj.migration.biomaj3`)."""
