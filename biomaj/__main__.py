"""`python -m biomaj` is the `biomaj` command."""

from biomaj.cli import main

main()
