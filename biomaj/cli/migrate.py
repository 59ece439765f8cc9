"""`biomaj migrate`: copy a BioMAJ 3 MongoDB database into this installation's store, or this
store into MongoDB. The work is :mod:`biomaj.migration.biomaj3`; this prints its counts.
"""

from __future__ import annotations

import click

from biomaj.cli.context import CliContext, config_option, emit_json, emit_table, json_option
from biomaj.redaction import redact_url

_MONGO_SCHEMES = ("mongodb://", "mongodb+srv://")


def _mongo_url(value: str | None, option: str) -> str | None:
    if value is not None and not value.startswith(_MONGO_SCHEMES):
        raise click.BadParameter(f"expected a mongodb:// or mongodb+srv:// URL, got {redact_url(value)!r}",
                                 param_hint=option)
    return value


@click.command()
@click.option("--from-mongo", "from_url", metavar="URL",
              help="Copy the BioMAJ 3 database at URL (mongodb://...) into the configured store.")
@click.option("--to-mongo", "to_url", metavar="URL",
              help="Copy the configured store into the MongoDB database at URL (single node to cluster).")
@click.option("--db", "database", metavar="NAME",
              help="MongoDB database: BioMAJ 3's db.name (default: the URL's path, else biomaj).")
@click.option("--users-db", metavar="NAME",
              help="With --from-mongo: the database of BioMAJ 3's users collection (biomaj-user's own:"
                   " biomaj_user, or microbiomaj in biomaj-docker); default: --db.")
@click.option("--dry-run", is_flag=True, help="Count what would be copied; write nothing.")
@config_option
@json_option
@click.pass_obj
def migrate(obj: CliContext, from_url: str | None, to_url: str | None, database: str | None,
            users_db: str | None, dry_run: bool) -> None:
    """Copy a BioMAJ 3 MongoDB database into this store (--from-mongo), or this store into MongoDB
    (--to-mongo). Running it again copies only what is missing, and says when nothing is."""
    from biomaj.migration.biomaj3 import export_to_mongo, import_biomaj3
    from biomaj.storage import open_store

    if (from_url is None) == (to_url is None):
        raise click.UsageError("give exactly one of --from-mongo URL and --to-mongo URL")
    _mongo_url(from_url, "--from-mongo")
    _mongo_url(to_url, "--to-mongo")
    if users_db and to_url:
        raise click.UsageError("--users-db goes with --from-mongo")
    obj.console_level = obj.console_level or "WARNING"  # the command prints its own results
    cfg = obj.config()

    def progress(message: str) -> None:
        click.echo(message, err=True)

    async def run():
        store = open_store(cfg.storage_url, cfg.root)
        async with store:
            if from_url:
                return await import_biomaj3(from_url, store, database=database, users_database=users_db,
                                            dry_run=dry_run, progress=progress)
            return await export_to_mongo(store, to_url or "", database=database, dry_run=dry_run,
                                         progress=progress)

    import asyncio

    report = asyncio.run(run())
    if obj.json_output:
        emit_json(report.as_dict())
        return
    click.echo(f"from {report.source}")
    click.echo(f"into {report.target}")
    if report.dry_run:
        click.echo("dry run: nothing was written; 'copied' is what a real run would copy")
    skipped = {kind: 0 for kind in report.copied}
    for s in report.skipped:
        skipped[s.kind] = skipped.get(s.kind, 0) + 1
    emit_table(["", "Copied", "Already there", "Skipped"],
               [[kind.replace("_", " "), report.copied[kind], report.present[kind], skipped[kind]]
                for kind in report.copied])
    for s in report.skipped:
        click.echo(f"skipped {s.kind} {s.name}: {s.reason}")
    for filled in report.filled:
        click.echo(f"filled bank fields {filled}")
    for note in report.notes:
        click.echo(f"note: {note}")
    if not report.changed:
        click.echo("nothing to copy: the target already holds everything the source has")
