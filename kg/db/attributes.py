"""Concept attributes (literal values, issue #20) under curation and document removal: moved
to a merge's survivor, removed with a concept, dropped once no evidence is left; each change
returns JSON-safe data that undoes it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import DateTime, Table, delete, exists, insert, select, update
from sqlalchemy.orm import Session

from kg.db.models import AttributeEvidence, Chunk, ConceptAttribute, Run

ATTRIBUTES = cast(Table, ConceptAttribute.__table__)
ATTRIBUTE_EVIDENCE = cast(Table, AttributeEvidence.__table__)
Row = dict[str, Any]


def _rows(session: Session, table: Table, *where: Any) -> list[Row]:
    return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()}
            for r in session.execute(select(table).where(*where).order_by(table.c.id))
            .mappings()]


def _values(table: Table, row: Row) -> Row:
    return {k: datetime.fromisoformat(v) if isinstance(v, str) and isinstance(
        table.c[k].type, DateTime) else v for k, v in row.items() if k in table.c}


def move(session: Session, old: int, new: int) -> Row:
    """Give `old`'s attributes to `new` (a merge): moved as they are, or folded into `new`'s
    equal attribute (same name and normalised value: the evidence joins it)."""
    moved: list[int] = []
    folded: list[Row] = []
    for row in _rows(session, ATTRIBUTES, ATTRIBUTES.c.concept_id == old):
        into = session.scalar(select(ATTRIBUTES.c.id).where(
            ATTRIBUTES.c.concept_id == new, ATTRIBUTES.c.name == row["name"],
            ATTRIBUTES.c.normalised == row["normalised"]))
        if into is None:
            session.execute(update(ATTRIBUTES).where(ATTRIBUTES.c.id == row["id"])
                            .values(concept_id=new))
            moved.append(row["id"])
            continue
        evidence = list(session.scalars(select(ATTRIBUTE_EVIDENCE.c.id).where(
            ATTRIBUTE_EVIDENCE.c.attribute_id == row["id"])))
        session.execute(update(ATTRIBUTE_EVIDENCE).where(ATTRIBUTE_EVIDENCE.c.id.in_(evidence))
                        .values(attribute_id=into))
        if row["valid_to"] is None and row["valid_from"] is not None:
            # What was live under the merged concept stays live under the survivor.
            before = session.execute(select(ATTRIBUTES.c.valid_from, ATTRIBUTES.c.valid_to)
                                     .where(ATTRIBUTES.c.id == into)).one()
            if before.valid_to is not None or before.valid_from is None:
                session.execute(update(ATTRIBUTES).where(ATTRIBUTES.c.id == into).values(
                    valid_to=None, valid_from=before.valid_from or _stamp(row["valid_from"])))
        session.execute(delete(ATTRIBUTES).where(ATTRIBUTES.c.id == row["id"]))
        folded.append({"attribute": row, "into": into, "evidence": evidence})
    return {"moved": moved, "folded": folded}


def undo_move(session: Session, data: Row, old: int) -> None:
    """Give the attributes `move` moved back to the restored concept `old`."""
    if data["moved"]:
        session.execute(update(ATTRIBUTES).where(ATTRIBUTES.c.id.in_(data["moved"]))
                        .values(concept_id=old))
    for fold in data["folded"]:
        restored = session.execute(insert(ATTRIBUTES).values(
            {**_values(ATTRIBUTES, fold["attribute"]), "concept_id": old})
            .returning(ATTRIBUTES.c.id)).scalar_one()
        session.execute(update(ATTRIBUTE_EVIDENCE).where(
            ATTRIBUTE_EVIDENCE.c.id.in_(fold["evidence"]),
            ATTRIBUTE_EVIDENCE.c.attribute_id == fold["into"]).values(attribute_id=restored))


def remove(session: Session, concept_id: int) -> list[Row]:
    """Delete a concept's attributes with their evidence; returns them, for `restore`."""
    attributes = _rows(session, ATTRIBUTES, ATTRIBUTES.c.concept_id == concept_id)
    ids = [a["id"] for a in attributes]
    evidence = _rows(session, ATTRIBUTE_EVIDENCE, ATTRIBUTE_EVIDENCE.c.attribute_id.in_(ids))
    session.execute(delete(ATTRIBUTE_EVIDENCE).where(ATTRIBUTE_EVIDENCE.c.attribute_id.in_(ids)))
    session.execute(delete(ATTRIBUTES).where(ATTRIBUTES.c.id.in_(ids)))
    return [{"attribute": a, "evidence": [e for e in evidence if e["attribute_id"] == a["id"]]}
            for a in attributes]


def restore(session: Session, removed: list[Row], concept_id: int) -> None:
    """Put back what `remove` deleted, under the (restored) concept `concept_id`; evidence
    whose chunk or run is gone since stays gone."""
    chunks = {e["chunk_id"] for item in removed for e in item["evidence"]}
    runs = {e["run_id"] for item in removed for e in item["evidence"]}
    live_chunks = set(session.scalars(select(Chunk.id).where(Chunk.id.in_(chunks))))
    live_runs = set(session.scalars(select(Run.id).where(Run.id.in_(runs))))
    for item in removed:
        values = {k: v for k, v in _values(ATTRIBUTES, item["attribute"]).items() if k != "id"}
        attribute = session.execute(insert(ATTRIBUTES).values(
            {**values, "concept_id": concept_id}).returning(ATTRIBUTES.c.id)).scalar_one()
        evidence = [{**{k: v for k, v in _values(ATTRIBUTE_EVIDENCE, e).items() if k != "id"},
                     "attribute_id": attribute} for e in item["evidence"]
                    if e["chunk_id"] in live_chunks and e["run_id"] in live_runs]
        if evidence:
            session.execute(insert(ATTRIBUTE_EVIDENCE), evidence)


def drop_unsupported(session: Session, chunk_ids: list[int]) -> int:
    """Before these chunks are deleted (a document removed): delete their attribute evidence,
    then the attributes it touched that have no evidence left. Returns the evidence count."""
    touched = set(session.scalars(select(ATTRIBUTE_EVIDENCE.c.attribute_id).where(
        ATTRIBUTE_EVIDENCE.c.chunk_id.in_(chunk_ids))))
    gone = len(session.execute(delete(ATTRIBUTE_EVIDENCE).where(
        ATTRIBUTE_EVIDENCE.c.chunk_id.in_(chunk_ids)).returning(ATTRIBUTE_EVIDENCE.c.id)).all())
    if touched:
        session.execute(delete(ATTRIBUTES).where(
            ATTRIBUTES.c.id.in_(touched),
            ~exists().where(ATTRIBUTE_EVIDENCE.c.attribute_id == ATTRIBUTES.c.id)))
    return gone


def _stamp(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value
