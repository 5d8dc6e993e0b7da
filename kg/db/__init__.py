"""Database access: typed models, engine and sessions, migrations."""

from kg.db.session import Database, open_database

__all__ = ["Database", "open_database"]
