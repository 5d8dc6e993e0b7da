"""Engine and session factory, with the checks that turn connection problems into one line."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kg.db import scope
from kg.db.models import DEFAULT_COLLECTION_ID
from kg.errors import DatabaseError, SchemaNotMigrated
from kg.urls import mask_params

log = logging.getLogger(__name__)
T = TypeVar("T")
URL_HINT = (
    "set KG_DATABASE_URL to sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
)
IDLE_PING_S = 1.0  # a pooled connection idle longer than this is pinged before it is used


def safe_url(url: URL | str) -> str:
    """The URL with any password (also `?password=` and other secret parameters) masked."""
    try:
        return mask_params(make_url(url).render_as_string(hide_password=True))
    except ArgumentError:
        return "<unparseable URL>"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"database URL {url!r} is not a valid URL; {URL_HINT}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"database URL {safe_url(parsed)} uses {parsed.get_backend_name()!r}, which kg does "
            f"not support; {URL_HINT}"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _first_line(exc: OperationalError) -> str:
    """The driver's own message, first line only (one-line errors)."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Connection settings only: nothing here writes to the file, so a read-only command can
    # open any file without changing it. WAL (persistent in the file) is set by the migration.
    # busy_timeout makes a concurrent `kg admin extraction set` wait instead of failing.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only if it sat idle for IDLE_PING_S: what breaks a
    connection (a server restart, an idle timeout) happens while nobody uses it. A ping on
    every checkout (pool_pre_ping) is one more round trip per transaction, paid again and
    again by the hot paths (each cache lookup, each worker job) within milliseconds of the
    connection's last use. A connection that fails its ping is replaced by the pool."""
    error = engine.dialect.loaded_dbapi.Error

    def fresh(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) <= IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi)
        except error:
            raise DisconnectionError() from None

    event.listen(engine, "connect", fresh)
    event.listen(engine, "checkin", fresh)
    event.listen(engine, "checkout", checkout)


class Database:
    """An engine plus a session factory for one database URL, working in one collection
    (`default` unless `scoped` says otherwise)."""

    collection_id: int = DEFAULT_COLLECTION_ID
    collection: str = "default"
    enforce: tuple[int, ...] | None = None

    def __init__(self, url: str) -> None:
        self.url = _parse(url)
        self.display_url = safe_url(self.url)
        self.migrated: tuple[str | None, str] | None = None
        self.dialect = self.url.get_backend_name()
        # The SQLite file, when there is one: nothing creates it or its folder except a
        # migration (`kg db upgrade`, or the automatic one of the default database).
        self.sqlite_path: Path | None = None
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            self.sqlite_path = Path(str(self.url.database)).expanduser()
        try:
            self.engine: Engine = create_engine(self.url, future=True)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise DatabaseError(f"database URL {self.display_url} is not usable: {exc}") from None
        _ping_when_idle(self.engine)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = self._sessionmaker()
        log.debug("database %s (%s)", self.display_url, self.dialect)

    def _sessionmaker(self) -> sessionmaker[Session]:
        info = {scope.SESSION_KEY: self.collection_id, scope.ENFORCE_KEY: self.enforce}
        return sessionmaker(self.engine, expire_on_commit=False, info=info)

    def scoped(self, collection_id: int, name: str, *,
               enforce: tuple[int, ...] | None = None) -> Database:
        """The same engine working in another collection (see kg.db.collections.scope for
        the lookup by name); with `enforce`, PostgreSQL's row-level security also holds
        every session to those collection ids."""
        clone = copy.copy(self)
        clone.collection_id, clone.collection, clone.enforce = collection_id, name, enforce
        clone.sessions = clone._sessionmaker()
        return clone

    def file_state(self) -> str | None:
        """For a SQLite file: 'missing', 'empty' or 'present'; None for other databases."""
        if self.sqlite_path is None:
            return None
        if not self.sqlite_path.exists():
            return "missing"
        return "present" if self.sqlite_path.stat().st_size > 0 else "empty"

    def is_file(self, path: Path) -> bool:
        """Whether this is the SQLite database stored at `path`."""
        if self.sqlite_path is None:
            return False
        return self.sqlite_path.resolve(strict=False) == path.expanduser().resolve(strict=False)

    def ensure_folder(self) -> None:
        """Create the SQLite file's folder (before a migration creates the file)."""
        if self.sqlite_path is None:
            return
        parent = self.sqlite_path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(
                f"cannot create the folder {parent} for the SQLite database: "
                f"{exc.strerror}; {URL_HINT}"
            ) from None

    def require_file(self) -> None:
        """Refuse a missing or empty SQLite file before connecting (connecting creates it)."""
        state = self.file_state()
        if state in ("missing", "empty"):
            raise SchemaNotMigrated(
                f"no kg database at {self.sqlite_path} (the file is {state}); "
                "run `kg db upgrade` to create it"
            )

    def ping(self) -> None:
        """Open one connection, or raise DatabaseError with the reason and the fix."""
        try:
            with self.engine.connect():
                pass
        except OperationalError as exc:
            reason = _first_line(exc)
            raise DatabaseError(
                f"cannot connect to the database at {self.display_url}: {reason}; "
                f"check that the server runs or {URL_HINT}"
            ) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            reason = _first_line(exc)
            raise DatabaseError(f"database error at {self.display_url}: {reason}") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def read(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`func(session, *args, **kwargs)` in a session of its own: how the CLI and the
        notebook API call the read-side functions."""
        with self.session() as session:
            return func(session, *args, **kwargs)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a transaction: the hot path (no ORM unit of work)."""
        try:
            with self.engine.begin() as conn:
                scope.begin_scope(conn, self.collection_id, self.enforce)
                yield conn
        except OperationalError as exc:
            reason = _first_line(exc)
            raise DatabaseError(f"database error at {self.display_url}: {reason}") from None

    def dispose(self) -> None:
        self.engine.dispose()
