"""Which collection a session or connection works in, and the filter that keeps it there.

A `Database` handle belongs to one collection. Its sessions carry the collection id in
`Session.info`; every ORM SELECT, UPDATE and DELETE they run gets `collection_id = :id` on
every collection table it touches (with_loader_criteria, joins and subqueries included), and
every row they insert takes the id as its column default. Core statements on a connection
(the ingest hot path, exports) filter by `scope_of(conn)` themselves.

On PostgreSQL an `enforced` session (the server's, per request) also switches to the role
`kg_scoped` for its transaction and names the collections it may see, so the database's
row-level security policies return nothing of another collection even to a query that forgot
its filter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, event, or_, text
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from kg.db.models import COLLECTION_KEY, DEFAULT_COLLECTION_ID, InCollection, Temporal
from kg.errors import UsageError

SESSION_KEY = "kg_collection_id"
ENFORCE_KEY = "kg_enforce"  # a tuple of collection ids the database lets the session see
ROLE = "kg_scoped"
# An execution option for the few statements that look across collections (counting what a
# collection holds for `kg collections list`, a worker's queue bookkeeping).
ALL_COLLECTIONS = "kg_all_collections"
# Versions (issue #22): ORM reads of concepts, relationships and evidence see the live rows;
# a session with `AS_OF_KEY` set sees the rows valid at that moment, one with `HISTORY_KEY`
# sees every row (pruning, deleting a document, a document's history).
AS_OF_KEY = "kg_as_of"
HISTORY_KEY = "kg_history"


def scope_of(conn: Connection) -> int:
    """The collection id a connection (of a kg session or transaction) works in."""
    return int(conn.info.get(COLLECTION_KEY, DEFAULT_COLLECTION_ID))


def collection_of(reader: Session | Connection) -> int:
    """The collection id a session or connection works in (for Core statements, which the
    automatic filter does not reach: they name `collection_id` themselves)."""
    if isinstance(reader, Session):
        return int(reader.info.get(SESSION_KEY, DEFAULT_COLLECTION_ID))
    return scope_of(reader)


def begin_scope(conn: Connection, collection_id: int,
                enforce: tuple[int, ...] | None = None) -> None:
    """Mark a connection's transaction as working in `collection_id` (and, with `enforce`
    on PostgreSQL, let the database hold it to those ids)."""
    conn.info[COLLECTION_KEY] = collection_id
    if enforce is not None and conn.dialect.name == "postgresql" and rls_available(conn):
        conn.execute(text(f"SET LOCAL ROLE {ROLE}"))
        conn.execute(text("SELECT set_config('kg.collections', :ids, true)"),
                     {"ids": ",".join(str(i) for i in enforce)})


def rls_available(conn: Connection) -> bool:
    """Whether the migration could make the role the policies are for (needs CREATEROLE)."""
    cached = conn.info.get("kg_rls")
    if cached is None:
        cached = bool(conn.execute(text(
            "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = :r"),
            {"r": ROLE}).scalar())
        conn.info["kg_rls"] = cached
    return bool(cached)


def valid(valid_from: Any, valid_to: Any, as_of: datetime | None = None) -> ColumnElement[bool]:
    """SQL: a row with these validity columns is live (or was valid at `as_of`)."""
    if as_of is None:
        return and_(valid_from.is_not(None), valid_to.is_(None))
    return and_(valid_from.is_not(None), valid_from <= as_of,
                or_(valid_to.is_(None), valid_to > as_of))


def parse_as_of(value: str, option: str = "--as-of") -> datetime:
    """A user's date or time (ISO 8601; a date means its end, UTC unless given) as the moment
    to view the graph at; not a date or in the future: a one-line error."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"{option} {value!r} is not a date; give e.g. 2026-12-01 or "
                         "2026-12-01T14:30") from None
    if len(value.strip()) == 10:  # a bare date: the graph at the end of that day
        when = when + timedelta(days=1) - timedelta(microseconds=1)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when > datetime.now(UTC) + timedelta(days=1) or (
            len(value.strip()) != 10 and when > datetime.now(UTC)):
        raise UsageError(f"{option} {value} is in the future; give a date up to today")
    return when


def view_as_of(session: Session, when: datetime | None) -> None:
    """Make the session's ORM reads show the graph as it was at `when` (None: as it is)."""
    session.info[AS_OF_KEY] = when


def with_history(session: Session) -> None:
    """Make the session's ORM reads see retracted and staged rows too."""
    session.info[HISTORY_KEY] = True


@event.listens_for(Session, "after_begin")
def _after_begin(session: Session, _transaction: Any, connection: Connection) -> None:
    collection_id = session.info.get(SESSION_KEY)
    if collection_id is not None:
        begin_scope(connection, collection_id, session.info.get(ENFORCE_KEY))


@event.listens_for(Session, "do_orm_execute")
def _only_this_collection(state: ORMExecuteState) -> None:
    collection_id = state.session.info.get(SESSION_KEY)
    if (collection_id is None or state.is_column_load or state.is_relationship_load
            or state.execution_options.get(ALL_COLLECTIONS)):
        return
    if state.is_select or state.is_update or state.is_delete:
        state.statement = state.statement.options(with_loader_criteria(
            InCollection, lambda cls: cls.collection_id == collection_id,
            include_aliases=True, track_closure_variables=True))


@event.listens_for(Session, "do_orm_execute")
def _only_valid_rows(state: ORMExecuteState) -> None:
    # Reads only: an update or delete (curation, removing a document) reaches history too.
    if (not state.is_select or state.is_column_load or state.is_relationship_load
            or state.session.info.get(HISTORY_KEY)):
        return
    as_of = state.session.info.get(AS_OF_KEY)
    if as_of is None:
        criteria = with_loader_criteria(
            Temporal, lambda cls: and_(cls.valid_from.is_not(None), cls.valid_to.is_(None)),
            include_aliases=True)
    else:
        criteria = with_loader_criteria(
            Temporal, lambda cls: and_(cls.valid_from.is_not(None), cls.valid_from <= as_of,
                                       or_(cls.valid_to.is_(None), cls.valid_to > as_of)),
            include_aliases=True, track_closure_variables=True)
    state.statement = state.statement.options(criteria)
