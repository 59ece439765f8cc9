"""The bank update workflow and bank operations (update, remove, publish, repair ...): arrive with the workflow version."""
