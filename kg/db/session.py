"""Engine and session factory, with the checks that turn connection problems into one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from kg.errors import DatabaseError, SchemaNotMigrated

URL_HINT = (
    "set KG_DATABASE_URL to sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
)


def safe_url(url: URL | str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
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


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (kg runs list in another terminal) work while a run writes;
    # busy_timeout makes a concurrent `kg admin extraction set` wait instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    """An engine plus a session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = _parse(url)
        self.display_url = safe_url(self.url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            database = self.url.database
            if database and database != ":memory:":
                parent = Path(database).expanduser().parent
                try:
                    parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DatabaseError(
                        f"cannot create the folder {parent} for the SQLite database: "
                        f"{exc.strerror}; {URL_HINT}"
                    ) from None
        try:
            self.engine: Engine = create_engine(self.url, pool_pre_ping=True, future=True)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise DatabaseError(f"database URL {self.display_url} is not usable: {exc}") from None
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

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

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a transaction: the hot path (no ORM unit of work)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            reason = _first_line(exc)
            raise DatabaseError(f"database error at {self.display_url}: {reason}") from None

    def require_current_schema(self) -> None:
        """Raise SchemaNotMigrated unless the database is at the newest migration."""
        from kg.db.migrate import current_revision, head_revision

        self.ping()
        current = current_revision(self)
        head = head_revision()
        if current is None:
            raise SchemaNotMigrated(
                f"the database at {self.display_url} has no kg schema; run `kg db upgrade`"
            )
        if current != head:
            raise SchemaNotMigrated(
                f"the database at {self.display_url} is at schema {current}, this kg needs "
                f"{head}; run `kg db upgrade`"
            )

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str | None = None, *, check_schema: bool = True) -> Database:
    """Open the configured database and, by default, insist that it is migrated."""
    if url is None:
        from kg.settings import load_settings

        url = load_settings().database_url
    db = Database(url)
    try:
        if check_schema:
            db.require_current_schema()
    except SQLAlchemyError as exc:  # pragma: no cover - unexpected driver failures
        db.dispose()
        raise DatabaseError(f"database error at {db.display_url}: {exc}") from None
    except Exception:
        db.dispose()
        raise
    return db
