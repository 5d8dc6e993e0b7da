"""Database access: typed models, engine and sessions, migrations."""

from kg.db.opening import open_database
from kg.db.session import Database

__all__ = ["Database", "open_database"]
