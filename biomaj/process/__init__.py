"""Pre-, post- and remove-processes (the BioMAJ process DAG): arrive with the process version."""
