"""`kg db`: create and migrate the schema."""

from __future__ import annotations

import click

from cli import context
from cli.render import emit
from kg.db import migrate


@click.group()
def db() -> None:
    """Create, migrate and inspect the database schema."""


@db.command()
def upgrade() -> None:
    """Migrate the database to the newest schema (creates it if needed)."""
    database = context.database(check_schema=False)
    before, after = migrate.upgrade(database)
    if before == after:
        emit(f"database at {database.display_url} is up to date (schema {after})")
    else:
        emit(f"migrated {database.display_url}: {before or 'empty'} -> {after}")


@db.command()
def current() -> None:
    """Print the schema revision of the database and whether it is the newest."""
    database = context.database(check_schema=False)
    database.ping()
    rev = migrate.current_revision(database)
    head = migrate.head_revision()
    state = "up to date" if rev == head else "needs `kg db upgrade`"
    emit(f"{database.display_url}: schema {rev or 'none'} (newest {head}; {state})")


@db.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Migrate down to REVISION ('base' drops every kg table)."""
    database = context.database(check_schema=False)
    before, after = migrate.downgrade(database, revision)
    emit(f"migrated {database.display_url}: {before or 'empty'} -> {after or 'base'}")
