"""Collections as rows: look one up by name, create, rename, delete, and count what each holds."""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kg.db.models import (
    DEFAULT_COLLECTION_ID,
    ApiToken,
    Collection,
    Concept,
    Document,
    Evidence,
    Relationship,
    Run,
)
from kg.db.runstate import RunStatus, effective_status
from kg.db.scope import ALL_COLLECTIONS
from kg.db.session import Database
from kg.errors import ConflictError, NotFoundError, UsageError

DEFAULT = "default"
MAX_NAME = 64


def check_name(name: str) -> str:
    """A collection name as stored: trimmed, 1-64 printable characters, no '/' (URLs)."""
    cleaned = name.strip()
    if not cleaned:
        raise UsageError("a collection needs a name, e.g. `kg collections create slides`")
    if len(cleaned) > MAX_NAME:
        raise UsageError(f"collection name {cleaned[:20]!r}... is longer than {MAX_NAME} "
                         "characters; choose a shorter one")
    if "/" in cleaned or any(unicodedata.category(c).startswith("C") for c in cleaned):
        raise UsageError(f"collection name {cleaned!r} may not hold '/' or control characters "
                         "(it is part of URLs: /c/NAME/...)")
    return cleaned


def names(session: Session) -> list[str]:
    return list(session.scalars(select(Collection.name).order_by(Collection.id)))


def find(session: Session, name: str) -> Collection:
    """The collection called `name`, or a NotFoundError listing the ones that exist."""
    row = session.scalar(select(Collection).where(Collection.name == name.strip()))
    if row is None:
        raise NotFoundError(
            f"no collection {name.strip()!r}; existing: {', '.join(names(session))} "
            f"(create it with `kg collections create {name.strip()}`)")
    return row


def scope(database: Database, name: str | None, *,
          enforce: tuple[int, ...] | None = None) -> Database:
    """`database` working in the collection called `name` (None: default)."""
    if name is None or name.strip() == database.collection:
        if enforce is None:
            return database
        return database.scoped(database.collection_id, database.collection, enforce=enforce)
    with database.session() as session:
        row = find(session, name)
        return database.scoped(row.id, row.name, enforce=enforce)


def by_id(session: Session) -> dict[int, str]:
    return {row.id: row.name for row in session.execute(select(Collection.id, Collection.name))}


def create(session: Session, name: str, *, by: str, description: str = "",
           profile: str | None = None, ontology: str | None = None) -> dict[str, Any]:
    name = check_name(name)
    if session.scalar(select(Collection.id).where(Collection.name == name)) is not None:
        raise ConflictError(f"collection {name!r} exists already (`kg collections show {name}`)")
    row = Collection(name=name, description=description, profile=profile, ontology=ontology,
                     created_by=by)
    session.add(row)
    session.flush()
    return describe(session, row)


def rename(session: Session, old: str, new: str) -> dict[str, Any]:
    row = find(session, old)
    new = check_name(new)
    if row.id == DEFAULT_COLLECTION_ID:
        raise UsageError("the default collection keeps its name (it is where data without a "
                         "collection goes); create another one instead")
    if session.scalar(select(Collection.id).where(Collection.name == new,
                                                  Collection.id != row.id)) is not None:
        raise ConflictError(f"collection {new!r} exists already; choose another name")
    row.name = new
    session.flush()
    return describe(session, row)


def pin(session: Session, name: str, *, profile: str | None = None,
        ontology: str | None = None, clear: bool = False) -> dict[str, Any]:
    """Set (or, with `clear`, drop) the profile and ontology a collection's runs use."""
    row = find(session, name)
    if clear:
        row.profile = row.ontology = None
    if profile is not None:
        row.profile = profile or None
    if ontology is not None:
        row.ontology = ontology or None
    session.flush()
    return describe(session, row)


def pins(database: Database) -> tuple[str | None, str | None]:
    """The profile and ontology the handle's collection pins (None: the active ones)."""
    with database.session() as session:
        row = session.get(Collection, database.collection_id)
        return (row.profile, row.ontology) if row is not None else (None, None)


def running_run(session: Session, collection_id: int) -> int | None:
    """The id of a run of this collection that is still going, if any (a run whose process
    died does not count: `kg runs list` shows it as interrupted)."""
    rows = session.scalars(
        select(Run).where(Run.collection_id == collection_id, Run.status == "running")
        .execution_options(**{ALL_COLLECTIONS: True}))
    return next((r.id for r in rows if effective_status(r) == RunStatus.RUNNING), None)


def delete(session: Session, name: str) -> dict[str, Any]:
    """Remove a collection and everything in it (its rows cascade)."""
    row = find(session, name)
    if row.id == DEFAULT_COLLECTION_ID:
        raise UsageError("the default collection cannot be deleted; delete its documents "
                         "instead (`kg documents delete PATH`)")
    running = running_run(session, row.id)
    if running is not None:
        raise ConflictError(f"collection {row.name!r} has run {running} still going; wait "
                            "for it to end or stop its process (Ctrl-C, or cancel it in "
                            "`kg serve`), then delete")
    summary = describe(session, row)
    # SQLite may give a deleted id to the next collection made: a token limited to this one
    # must not reach that one.
    for token in session.scalars(select(ApiToken).where(ApiToken.collections.is_not(None))):
        if row.id in (token.collections or []):
            token.collections = [c for c in token.collections or [] if c != row.id]
    session.delete(row)
    session.flush()
    return summary


def describe(session: Session, row: Collection) -> dict[str, Any]:
    """A collection with the counts of what it holds."""

    def count(model: Any) -> int:
        return int(session.scalar(
            select(func.count()).select_from(model).where(model.collection_id == row.id)
            .execution_options(**{ALL_COLLECTIONS: True})) or 0)

    return {"id": row.id, "name": row.name, "description": row.description,
            "profile": row.profile, "ontology": row.ontology, "created_at": row.created_at,
            "created_by": row.created_by, "documents": count(Document),
            "concepts": count(Concept), "relationships": count(Relationship),
            "evidence": count(Evidence), "runs": count(Run)}


def list_all(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(Collection).order_by(Collection.id)).all()
    return [describe(session, row) for row in rows]
