"""`kg db`: create, migrate and inspect the schema."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click

from kg.cli import context
from kg.cli.render import emit, emit_object, json_option, table
from kg.db import Database, migrate
from kg.db.prune import Pruned
from kg.db.prune import prune as prune_history
from kg.db.scope import parse_as_of
from kg.errors import KgError, UsageError


@click.group()
def db() -> None:
    """Create, migrate and inspect the database schema.

    The default database (the SQLite file KG_HOME/kg.db) creates and upgrades itself on first
    use, with a one-line note on stderr. Any other database, a KG_DATABASE_URL naming another
    SQLite file or a PostgreSQL server, changes only with `kg db upgrade`: until then every
    command stops with a one-line error (exit 3) and creates or rewrites nothing.
    """


def _open() -> Database:
    return context.database(check_schema=False)


@db.command()
def upgrade() -> None:
    """Migrate the database to the newest schema (creates it if needed)."""
    database = _open()
    try:
        before, after = migrate.upgrade(database)
    finally:
        database.dispose()
    if before == after:
        emit(f"database at {database.display_url} is up to date (schema {after})")
    else:
        emit(f"migrated {database.display_url}: {before or 'empty'} -> {after}")


@db.command()
def current() -> None:
    """Print the schema revision of the database and whether it is the newest."""
    database = _open()
    head = migrate.head_revision()
    try:
        state = database.file_state()
        if state in ("missing", "empty"):  # looking must not create the file
            emit(f"{database.display_url}: no database yet (the file is {state}; newest "
                 f"schema {head}; `kg db upgrade` creates it)")
            return
        database.ping()
        rev = migrate.current_revision(database)
    finally:
        database.dispose()
    state = "up to date" if rev == head else "needs `kg db upgrade`"
    emit(f"{database.display_url}: schema {rev or 'none'} (newest {head}; {state})")


@db.command()
@click.argument("revision")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; drop the data without a question.")
def downgrade(revision: str, yes: bool) -> None:
    """Migrate down to REVISION ('base' drops every kg table).

    Lists the revisions it undoes and the tables (with their rows) it drops, then asks; --yes
    skips the question. Without a terminal to ask on, it refuses unless --yes is given.
    """
    target = migrate.resolve_target(revision)
    database = _open()
    try:
        database.require_file()
        database.ping()
        current = migrate.current_revision(database)
        plan = migrate.downgrade_plan(current, target)
        if not plan:
            emit(f"{database.display_url} is at schema {current or 'base'}; nothing to undo "
                 f"for {revision}")
            return
        tables = [t for step in plan for t in step.tables]
        counts = migrate.row_counts(database, tables)
        if not yes:
            _confirm(database, revision, plan, counts)
        before, after = migrate.downgrade(database, revision)
    finally:
        database.dispose()
    emit(f"migrated {database.display_url}: {before or 'empty'} -> {after or 'base'}")
    if database.is_file(context.settings().default_database):
        emit("note: this is the default database: the next command of this kg version "
             "upgrades it again", err=True)


def _confirm(database: Database, revision: str, plan: list[migrate.Step],
             counts: dict[str, int]) -> None:
    lost = [f"{name} ({_rows(n)})" for name, n in counts.items()]
    if not sys.stdin.isatty():
        what = f"drops {', '.join(lost)}" if lost else "undoes " + ", ".join(
            s.revision for s in plan)
        raise UsageError(f"downgrading to {revision} {what}; run it in a terminal to confirm, "
                         "or add --yes")
    emit(f"Downgrading {database.display_url} to {revision} undoes:")
    emit(table([{"revision": s.revision, "change": s.title,
                 "drops": ", ".join(f"{t} ({_rows(counts.get(t, 0))})" for t in s.tables)}
                for s in plan]))
    if lost:
        emit("The data in the dropped tables is lost.")
    if not click.confirm("Downgrade?", default=False):
        raise KgError("downgrade cancelled; nothing changed")


@db.command()
@click.option("--before", required=True, metavar="DATE",
              help="Delete history retracted before DATE (ISO 8601: 2026-12-01).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def prune(before: str, yes: bool, output: str) -> None:
    """Delete history: evidence, relationships, literal values, concepts and document
    versions retracted before DATE (live rows are never touched; `--as-of` before DATE then
    shows less)."""
    when = parse_as_of(before, "--before")
    database = context.database()
    try:
        counts = prune_history(database, when, dry_run=True)
        if not yes and any(asdict(counts).values()):
            if not sys.stdin.isatty():
                raise UsageError(f"prune would delete {_pruned(counts)}; run it in a terminal "
                                 "to confirm, or add --yes")
            click.confirm(f"delete {_pruned(counts)}?", abort=True, err=True)
        if any(asdict(counts).values()):
            counts = prune_history(database, when)
    finally:
        database.dispose()
    if output != "table":
        emit_object(asdict(counts), output)
        return
    emit(f"pruned history before {when:%Y-%m-%d %H:%M}: {_pruned(counts)}")


def _pruned(counts: Pruned) -> str:
    return (f"{counts.evidence} evidence row(s), {counts.relationships} relationship(s), "
            f"{counts.attributes} literal value(s), {counts.concepts} concept(s), "
            f"{counts.documents} document version(s)")


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"
