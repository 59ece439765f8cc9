"""Actors: each one a mailbox and a handler; they talk only through the bus."""
