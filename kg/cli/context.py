"""Shared helpers for commands: opening the database (in the command's collection), who is
acting, completing names."""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db import Database, open_database
from kg.db.collections import DEFAULT
from kg.errors import UsageError
from kg.settings import Settings, load_settings

T = TypeVar("T")
# Row ids and limits as the database can hold them (BIGINT): a larger number is a usage error
# in one line, not an overflow traceback from the driver.
DB_MAX = 2**63 - 1
ROW_ID = click.IntRange(1, DB_MAX)
LIMIT = click.IntRange(0, DB_MAX)
# Where a command's --collection (or KG_COLLECTION) is kept for `database()`: click's meta is
# shared by every context of one invocation, so a group's option reaches its subcommand.
COLLECTION = "kg.collection"


def settings() -> Settings:
    return load_settings()


def remember_collection(ctx: click.Context, param: click.Parameter,
                        value: str | None) -> None:
    """--collection's callback: keep the name for `database()`. A subcommand's option does
    not undo its group's unless given on the command line (`kg export --collection A
    training` stays in A whatever KG_COLLECTION says)."""
    if value is not None and not value.strip():
        raise UsageError("--collection needs a collection name; see `kg collections list`")
    given = ctx.get_parameter_source(param.name or "") == ParameterSource.COMMANDLINE
    if given or COLLECTION not in ctx.meta:
        ctx.meta[COLLECTION] = value.strip() if value is not None else None


def collection_choice() -> str | None:
    """The collection the running command works in: its --collection (else KG_COLLECTION);
    `default` for a command without the option (the server and workers serve every
    collection, and profiles or the schema belong to none); None outside a command."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    if COLLECTION in ctx.meta:
        chosen: str | None = ctx.meta[COLLECTION]
        return chosen
    return DEFAULT


def database(check_schema: bool = True) -> Database:
    """The configured database, migrated (by itself when it is the default SQLite file), working
    in the command's collection."""
    db = open_database(check_schema=check_schema, collection=collection_choice())
    if db.migrated is not None:
        before, after = db.migrated
        if before is None:
            click.echo(f"note: created the kg database {db.sqlite_path}", err=True)
        else:
            click.echo(f"note: upgraded the kg database {db.sqlite_path} from schema {before} "
                       f"to {after}", err=True)
    return db


def read(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`func(session, *args, **kwargs)` on the configured database: every read command's call."""
    db = database()
    try:
        return db.read(func, *args, **kwargs)
    finally:
        db.dispose()


@contextmanager
def session() -> Iterator[Session]:
    """A session on the configured (migrated) database, committed on success."""
    db = database()
    try:
        with db.session() as s:
            yield s
    finally:
        db.dispose()


def profile_choice(option: str | None) -> str | None:
    """--profile, else KG_PROFILE, else None (the active profile); an empty name is refused."""
    if option is not None:
        if not option.strip():
            raise UsageError("--profile needs a profile name; see `kg admin extraction list`")
        return option
    from_settings = settings().profile
    return from_settings or None


def actor(by: str | None) -> str:
    """Who made a change: --by, else $USER, else the login name."""
    if by:
        return by
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def complete_profile_names(ctx: click.Context, param: click.Parameter,
                           incomplete: str) -> list[str]:
    """Shell completion for profile names: read quietly, never migrate, [] on any error."""
    from kg.db.models import ExtractionProfile

    return _complete(select(ExtractionProfile.name).order_by(ExtractionProfile.name),
                     incomplete)


def complete_collection_names(ctx: click.Context, param: click.Parameter,
                              incomplete: str) -> list[str]:
    """Shell completion for collection names."""
    from kg.db.models import Collection

    return _complete(select(Collection.name).order_by(Collection.name), incomplete)


def complete_run_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion for run ids, newest first."""
    from kg.db.models import Run

    return _complete(select(Run.id).order_by(Run.id.desc()).limit(200), incomplete,
                     ctx.meta.get(COLLECTION, DEFAULT))


def _complete(query: object, incomplete: str, collection: str | None = DEFAULT) -> list[str]:
    # Completion runs on every TAB: it must neither print nor create or migrate anything.
    previous = logging.getLogger("kg").disabled
    logging.getLogger("kg").disabled = True
    try:
        db = open_database(check_schema=True, auto_migrate=False, collection=collection)
        try:
            with db.session() as s:
                values = [str(v) for v in s.scalars(query)]  # type: ignore[call-overload]
        finally:
            db.dispose()
    except Exception:
        return []
    finally:
        logging.getLogger("kg").disabled = previous
    return [v for v in values if v.startswith(incomplete)]
