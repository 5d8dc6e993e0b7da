"""Shared helpers for commands: opening the database, who is acting, completing names."""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db import Database, open_database
from kg.errors import UsageError
from kg.settings import Settings, load_settings

T = TypeVar("T")
# Row ids and limits as the database can hold them (BIGINT): a larger number is a usage error
# in one line, not an overflow traceback from the driver.
DB_MAX = 2**63 - 1
ROW_ID = click.IntRange(1, DB_MAX)
LIMIT = click.IntRange(0, DB_MAX)


def settings() -> Settings:
    return load_settings()


def database(check_schema: bool = True) -> Database:
    """The configured database, migrated (by itself when it is the default SQLite file)."""
    db = open_database(check_schema=check_schema)
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


def complete_run_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion for run ids, newest first."""
    from kg.db.models import Run

    return _complete(select(Run.id).order_by(Run.id.desc()).limit(200), incomplete)


def _complete(query: object, incomplete: str) -> list[str]:
    # Completion runs on every TAB: it must neither print nor create or migrate anything.
    previous = logging.getLogger("kg").disabled
    logging.getLogger("kg").disabled = True
    try:
        db = open_database(check_schema=True, auto_migrate=False)
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
