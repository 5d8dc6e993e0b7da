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

from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from kg.db.models import COLLECTION_KEY, DEFAULT_COLLECTION_ID, InCollection

SESSION_KEY = "kg_collection_id"
ENFORCE_KEY = "kg_enforce"  # a tuple of collection ids the database lets the session see
ROLE = "kg_scoped"
# An execution option for the few statements that look across collections (counting what a
# collection holds for `kg collections list`, a worker's queue bookkeeping).
ALL_COLLECTIONS = "kg_all_collections"


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
