"""Alembic, driven from code: upgrade, downgrade and revision checks on a Database."""

from __future__ import annotations

import ast
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from kg.db.session import Database
from kg.errors import SchemaNotMigrated, UsageError

log = logging.getLogger(__name__)


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
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


@cache
def head_revision() -> str:
    """The newest migration this version of kg ships."""
    head = _script().get_current_head()
    assert head is not None
    return head


@cache
def known_revisions() -> tuple[str, ...]:
    """Every revision id, oldest first."""
    return tuple(rev.revision for rev in reversed(list(_script().walk_revisions())))


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_current(db: Database) -> None:
    """Raise SchemaNotMigrated unless the database is at the newest migration."""
    db.require_file()
    db.ping()
    current = current_revision(db)
    head = head_revision()
    log.debug("schema %s (newest %s) at %s", current, head, db.display_url)
    if current is None:
        raise SchemaNotMigrated(
            f"the database at {db.display_url} has no kg schema; run `kg db upgrade`"
        )
    if current not in known_revisions():
        raise SchemaNotMigrated(
            f"the database at {db.display_url} is at schema {current}, which is newer "
            f"than this kg ({head}); upgrade kg"
        )
    if current != head:
        raise SchemaNotMigrated(
            f"the database at {db.display_url} is at schema {current}, this kg needs "
            f"{head}; run `kg db upgrade`"
        )


def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate up (creating a SQLite file and its folder if needed); returns (before, after)."""
    db.ensure_folder()
    db.ping()
    if db.dialect == "sqlite":
        # Persistent in the file: readers (`kg runs list`) keep working while a run writes.
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    before = current_revision(db)
    _run(command.upgrade, db, revision)
    after = current_revision(db)
    if before != after:
        log.info("migrated %s: %s -> %s", db.display_url, before or "empty", after)
    return before, after


def downgrade(db: Database, revision: str) -> tuple[str | None, str | None]:
    """Migrate down to `revision` ('base' removes every kg table); returns (before, after)."""
    db.require_file()
    db.ping()
    before = current_revision(db)
    _run(command.downgrade, db, revision)
    after = current_revision(db)
    log.info("migrated %s down: %s -> %s", db.display_url, before, after or "base")
    return before, after


def ensure_current(db: Database) -> tuple[str | None, str] | None:
    """Create or upgrade a SQLite database kg owns; (before, after) when it migrated, else None.

    A lock on the file's folder makes two first commands started at once migrate only once.
    """
    head = head_revision()
    if db.file_state() == "present" and _checked(db) == head:
        return None
    db.ensure_folder()
    assert db.sqlite_path is not None
    with _folder_lock(db.sqlite_path.parent):
        before = _checked(db) if db.file_state() == "present" else None
        if before == head:
            return None
        upgrade(db)
    log.info("the database at %s was %s automatically", db.display_url,
             "created" if before is None else f"upgraded from schema {before}")
    return before, head


def _checked(db: Database) -> str | None:
    db.ping()
    current = current_revision(db)
    if current is not None and current not in known_revisions():
        raise SchemaNotMigrated(
            f"the database at {db.display_url} is at schema {current}, which is newer than "
            f"this kg ({head_revision()}); upgrade kg"
        )
    return current


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class Step:
    """One revision a downgrade undoes: its id, title and the tables it drops."""

    revision: str
    title: str
    tables: tuple[str, ...]


def resolve_target(revision: str) -> str | None:
    """A downgrade target as a revision id (None for 'base'), or a UsageError naming the known."""
    known = known_revisions()
    if revision == "base":
        return None
    if revision == "head":
        return head_revision()
    if revision in known:
        return revision
    raise UsageError(
        f"cannot migrate to {revision!r}: no such revision; known revisions: "
        f"{', '.join(['base', *known, 'head'])}"
    )


def downgrade_plan(current: str | None, target: str | None) -> list[Step]:
    """The revisions undone going from `current` down to `target`, newest first."""
    known = known_revisions()
    if current is None or current not in known:
        return []
    stop = -1 if target is None else known.index(target)
    return [_step(rev) for rev in reversed(known[stop + 1: known.index(current) + 1])]


def _step(revision: str) -> Step:
    script = _script().get_revision(revision)
    assert script is not None and script.path is not None
    title = (script.doc or "").strip().splitlines()[0] if script.doc else ""
    return Step(revision, title.rstrip("."), _created_tables(Path(script.path)))


def _created_tables(path: Path) -> tuple[str, ...]:
    """Tables a migration creates in its upgrade(), i.e. the ones its downgrade drops."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "create_table" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.append(node.args[0].value)
    return tuple(names)


def row_counts(db: Database, tables: list[str]) -> dict[str, int]:
    """Rows in each of `tables` that exists (what a downgrade would lose)."""
    existing = set(sa.inspect(db.engine).get_table_names())
    counts: dict[str, int] = {}
    with db.engine.connect() as conn:
        for name in tables:
            if name in existing:
                query = sa.select(sa.func.count()).select_from(sa.table(name))
                counts[name] = int(conn.execute(query).scalar_one())
    return counts


def _run(func: Callable[[Config, str], None], db: Database, revision: str) -> None:
    try:
        func(_config(db), revision)
    except CommandError as exc:
        known = ", ".join(["base", *known_revisions(), "head"])
        raise UsageError(
            f"cannot migrate to {revision!r}: {exc}; known revisions: {known}"
        ) from None
