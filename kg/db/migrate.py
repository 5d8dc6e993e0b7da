"""Alembic, driven from code: upgrade, downgrade and revision checks on a Database."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from kg.db.session import Database
from kg.errors import UsageError


def migrations_dir() -> Path:
    """The Alembic folder: kg/migrations in an installed wheel, migrations/ in a checkout."""
    package_root = Path(__file__).resolve().parent.parent
    for candidate in (package_root / "migrations", package_root.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("kg's migrations folder is missing from this installation")


def _config(db: Database | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if db is not None:
        cfg.attributes["database"] = db
    return cfg


@cache
def head_revision() -> str:
    """The newest migration this version of kg ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate up; returns (before, after)."""
    db.ping()
    before = current_revision(db)
    _run(command.upgrade, db, revision)
    return before, current_revision(db)


def downgrade(db: Database, revision: str) -> tuple[str | None, str | None]:
    """Migrate down to `revision` ('base' removes every kg table); returns (before, after)."""
    db.ping()
    before = current_revision(db)
    _run(command.downgrade, db, revision)
    return before, current_revision(db)


def known_revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory.from_config(_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def _run(func, db: Database, revision: str) -> None:
    try:
        func(_config(db), revision)
    except CommandError as exc:
        known = ", ".join(["base", *known_revisions(), "head"])
        raise UsageError(
            f"cannot migrate to {revision!r}: {exc}; known revisions: {known}"
        ) from None
