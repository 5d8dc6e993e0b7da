"""Opening the configured database with its schema checked, or brought up to date when the
database is kg's own SQLite file."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from kg.db.session import Database
from kg.errors import DatabaseError
from kg.settings import load_settings


def open_database(url: str | None = None, *, check_schema: bool = True,
                  auto_migrate: bool | None = None, collection: str | None = None) -> Database:
    """Open a database (default: the configured one) and, by default, insist it is migrated.

    The default database (the SQLite file KG_HOME/kg.db) is kg's own: it is created or upgraded
    instead (`auto_migrate=None`), and `db.migrated` then holds (before, after). Any other
    database is changed only by `kg db upgrade`.
    """
    settings = load_settings()
    db = Database(settings.database_url if url is None else url)
    if auto_migrate is None:
        auto_migrate = db.is_file(settings.default_database)
    try:
        if check_schema:
            # Imported here: Alembic loads only when a schema is checked, not with `kg.db`.
            from kg.db import migrate

            if auto_migrate and db.sqlite_path is not None:
                db.migrated = migrate.ensure_current(db)
            else:
                migrate.require_current(db)
            name = collection if collection is not None else settings.collection
            if name is not None:
                from kg.db.collections import scope

                db = scope(db, name)
    except SQLAlchemyError as exc:  # pragma: no cover - unexpected driver failures
        db.dispose()
        raise DatabaseError(f"database error at {db.display_url}: {exc}") from None
    except BaseException:
        db.dispose()
        raise
    return db
