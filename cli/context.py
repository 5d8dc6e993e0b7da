"""Shared helpers for commands: opening the database, who is acting."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from kg.db import Database, open_database
from kg.settings import Settings, load_settings


def settings() -> Settings:
    return load_settings()


def database(check_schema: bool = True) -> Database:
    """The configured database; by default refuses an unmigrated one with a one-line error."""
    return open_database(settings().database_url, check_schema=check_schema)


@contextmanager
def session() -> Iterator[Session]:
    """A session on the configured (migrated) database, committed on success."""
    db = database()
    try:
        with db.session() as s:
            yield s
    finally:
        db.dispose()


def actor(by: str | None) -> str:
    """Who made a change: --by, else $USER, else the login name."""
    if by:
        return by
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
