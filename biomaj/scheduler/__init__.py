"""Scheduling: cron expressions (:mod:`.cron`), schedule documents and the operations the CLI and
the API share (:mod:`.schedules`), and the release-driven mode's back-off (:mod:`.backoff`). The
actor that acts on them is :mod:`biomaj.actors.scheduler`."""
