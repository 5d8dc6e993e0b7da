"""Curation: merge, rename and delete decisions, kept as rows that later runs apply.

Applying a decision changes the graph at once and stores what it changed, so that `undo` can
put it back. A merge or a rename leaves the old labels as aliases of the surviving concept, so
the resolution step (which looks labels and aliases up) sends them there on every later run.
A deleted concept stays deleted because the writer asks `kg.db.curation_rules` before it
creates a concept; its `redirects()` and `suppressed_edges()` serve the same purpose for a
resolver that keeps its own index.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import DateTime, Table, delete, func, insert, select, update
from sqlalchemy.orm import Session

from kg.db import attributes as concept_attributes
from kg.db.curation_rules import Action, kept_apart
from kg.db.locks import lock_for_rewrite
from kg.db.models import (
    Chunk,
    Concept,
    ConceptAlias,
    CurationDecision,
    Evidence,
    Relationship,
    RelationshipType,
    Run,
    utcnow,
)
from kg.errors import ConflictError, NotFoundError, UsageError
from kg.queries import find_concept
from kg.text import normalise_label

CONCEPTS = cast(Table, Concept.__table__)
ALIASES = cast(Table, ConceptAlias.__table__)
EDGES = cast(Table, Relationship.__table__)
EVIDENCE = cast(Table, Evidence.__table__)
Row = dict[str, Any]


# -- snapshots: rows as JSON-safe dicts, and back -------------------------------------------

def _jsonable(row: Row) -> Row:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _unjson(table: Table, row: Row) -> Row:
    """A snapshot back as column values: its times as datetimes again (every time column a
    table has, e.g. created_at and a row's validity, and only columns the table still has)."""
    values = {}
    for key, value in row.items():
        if key not in table.c:
            continue
        if isinstance(value, str) and isinstance(table.c[key].type, DateTime):
            value = datetime.fromisoformat(value)
        values[key] = value
    return values


def _concept_row(session: Session, concept_id: int) -> Row:
    row = session.execute(select(CONCEPTS).where(CONCEPTS.c.id == concept_id)).one()
    return _jsonable(dict(row._mapping))


def _rows(session: Session, table: Any, *where: Any) -> list[Row]:
    return [_jsonable(dict(r._mapping)) for r in session.execute(
        select(table).where(*where).order_by(table.c.id))]


def _restore_concept(session: Session, row: Row) -> int:
    """Insert a concept again, under its old id when that id is still free."""
    clash = session.scalar(select(Concept.id).where(Concept.norm_label == row["norm_label"]))
    if clash is not None:
        raise UsageError(
            f"cannot undo: a concept named {row['label']!r} exists again (id {clash}), "
            "probably created by a later ingest; merge the two with `kg concepts merge`")
    values = _unjson(CONCEPTS, row)
    if session.get(Concept, row["id"]) is not None:
        del values["id"]
    return int(session.execute(insert(CONCEPTS).values(values).returning(CONCEPTS.c.id))
               .scalar_one())


def _live_evidence(session: Session, rows: list[Row]) -> list[Row]:
    """Evidence rows whose chunk and run still exist (a document or run may be gone)."""
    chunks = {r["chunk_id"] for r in rows}
    runs = {r["run_id"] for r in rows}
    live_chunks = set(session.scalars(select(Chunk.id).where(Chunk.id.in_(chunks))))
    live_runs = set(session.scalars(select(Run.id).where(Run.id.in_(runs))))
    return [r for r in rows if r["chunk_id"] in live_chunks and r["run_id"] in live_runs]


def _restore_evidence(session: Session, rows: list[Row], **override: int) -> None:
    live = [{**{k: v for k, v in _unjson(EVIDENCE, r).items() if k != "id"}, **override}
            for r in _live_evidence(session, rows)]
    if live:
        session.execute(insert(EVIDENCE), live)


def _edge_key(session: Session, source: int, type_id: int, target: int) -> tuple[int, int, int]:
    direction = session.scalar(select(RelationshipType.direction).where(
        RelationshipType.id == type_id))
    if direction == "symmetric" and source > target:
        source, target = target, source
    return source, type_id, target


def _edge_at(session: Session, key: tuple[int, int, int]) -> Relationship | None:
    return session.scalar(select(Relationship).where(
        Relationship.source_id == key[0], Relationship.type_id == key[1],
        Relationship.target_id == key[2]))


def _restore_edge(session: Session, row: Row, evidence: list[Row],
                  ends: dict[int, int] | None = None) -> bool:
    """Insert an edge again (ends mapped through `ends`); when an equal edge exists now, its
    evidence joins that one. False when an end no longer exists."""
    ends = ends or {}
    source_id, target_id = int(row["source_id"]), int(row["target_id"])
    source, target = ends.get(source_id, source_id), ends.get(target_id, target_id)
    if session.get(Concept, source) is None or session.get(Concept, target) is None:
        return False
    key = _edge_key(session, source, row["type_id"], target)
    existing = _edge_at(session, key)
    if existing is not None:
        existing.confidence = max(existing.confidence, row["confidence"])
        edge_id = existing.id
    else:
        values = {"source_id": key[0], "type_id": key[1], "target_id": key[2],
                  "confidence": row["confidence"]}
        if session.get(Relationship, row["id"]) is None:
            values["id"] = row["id"]
        edge_id = int(session.execute(insert(EDGES).values(values).returning(EDGES.c.id))
                      .scalar_one())
    _restore_evidence(session, evidence, relationship_id=edge_id)
    return True


def _decide(session: Session, action: Action, summary: str, by: str, *,
            concept_id: int | None, norms: Iterable[str], data: Row) -> CurationDecision:
    decision = CurationDecision(action=action.value, summary=summary, concept_id=concept_id,
                                norms=sorted(set(norms)), data=data, created_by=by,
                                created_at=utcnow())
    session.add(decision)
    session.flush()
    return decision


def _view(d: CurationDecision) -> Row:
    return {"id": d.id, "action": d.action, "summary": d.summary, "by": d.created_by,
            "at": d.created_at, "undone_at": d.undone_at, "undone_by": d.undone_by}


# -- decisions ------------------------------------------------------------------------------

def merge(session: Session, a: str, b: str, *, into: str | None = None, by: str,
          note: Row | None = None) -> Row:
    """Merge two concepts: one survives (`into`, else the one with more evidence, else `a`);
    the other's labels become its aliases and its evidence and relationships move to it.
    `note` (JSON-safe, e.g. an automatic merge's score and signals) is kept in the decision."""
    lock_for_rewrite(session)
    first, second = find_concept(session, a), find_concept(session, b)
    if first.id == second.id:
        raise UsageError(f"{a!r} and {b!r} are already one concept ({first.label!r})")
    if into is not None:
        target = find_concept(session, into)
        if target.id not in (first.id, second.id):
            raise UsageError(f"--into {into!r} is neither {a!r} nor {b!r}")
        survivor = target
    else:
        counts = {c.id: session.scalar(select(func.count(Evidence.id)).where(
            Evidence.concept_id == c.id)) or 0 for c in (first, second)}
        survivor = second if counts[second.id] > counts[first.id] else first
    merged = second if survivor.id == first.id else first
    return _view(_merge_into(session, survivor, merged, by, note))


def _merge_into(session: Session, survivor: Concept, merged: Concept, by: str,
                note: Row | None = None) -> CurationDecision:
    concept = _concept_row(session, merged.id)
    aliases = _rows(session, ALIASES, ALIASES.c.concept_id == merged.id)
    have = set(session.scalars(select(ConceptAlias.alias).where(
        ConceptAlias.concept_id == survivor.id))) | {survivor.label}
    added: list[int] = []
    for alias, norm in [(merged.label, merged.norm_label),
                        *((r["alias"], r["norm_alias"]) for r in aliases)]:
        if alias not in have:
            have.add(alias)
            added.append(int(session.execute(insert(ALIASES).values(
                concept_id=survivor.id, alias=alias, norm_alias=norm)
                .returning(ALIASES.c.id)).scalar_one()))
    evidence = list(session.scalars(select(Evidence.id).where(Evidence.concept_id == merged.id)))
    session.execute(update(EVIDENCE).where(EVIDENCE.c.concept_id == merged.id)
                    .values(concept_id=survivor.id))
    moved, folded, dropped = _move_edges(session, merged.id, survivor.id)
    attributes = concept_attributes.move(session, merged.id, survivor.id)
    described = None
    if not survivor.description and merged.description:
        described = merged.description
        survivor.description = merged.description
    session.execute(delete(ALIASES).where(ALIASES.c.concept_id == merged.id))
    session.execute(delete(CONCEPTS).where(CONCEPTS.c.id == merged.id))
    data = {"survivor": survivor.id, "merged": concept, "aliases": aliases,
            "added_aliases": added, "evidence": evidence, "moved_edges": moved,
            "folded_edges": folded, "dropped_edges": dropped, "described": described,
            "attributes": attributes}
    if note is not None:
        data["note"] = note
    return _decide(session, Action.MERGE,
                   f"merged {merged.label!r} into {survivor.label!r}", by,
                   concept_id=survivor.id,
                   norms=[merged.norm_label, *(r["norm_alias"] for r in aliases)], data=data)


def _move_edges(session: Session, old: int, new: int) -> tuple[list[Row], list[Row], list[Row]]:
    """Re-point the edges of `old` at `new`: moved as they are, folded into an equal edge of
    `new` (evidence joins it), or dropped when they would link `new` to itself."""
    moved: list[Row] = []
    folded: list[Row] = []
    dropped: list[Row] = []
    edges = _rows(session, EDGES, (EDGES.c.source_id == old) | (EDGES.c.target_id == old))
    for row in edges:
        evidence = _rows(session, EVIDENCE, EVIDENCE.c.relationship_id == row["id"])
        source = new if row["source_id"] == old else row["source_id"]
        target = new if row["target_id"] == old else row["target_id"]
        if source == target:
            session.execute(delete(EVIDENCE).where(EVIDENCE.c.relationship_id == row["id"]))
            session.execute(delete(EDGES).where(EDGES.c.id == row["id"]))
            dropped.append({"edge": row, "evidence": evidence})
            continue
        key = _edge_key(session, source, row["type_id"], target)
        other = _edge_at(session, key)
        if other is None:
            session.execute(update(EDGES).where(EDGES.c.id == row["id"]).values(
                source_id=key[0], target_id=key[2]))
            moved.append(row)
            continue
        folded.append({"edge": row, "into": other.id, "into_confidence": other.confidence,
                       "evidence": [e["id"] for e in evidence]})
        other.confidence = max(other.confidence, row["confidence"])
        session.execute(update(EVIDENCE).where(EVIDENCE.c.relationship_id == row["id"])
                        .values(relationship_id=other.id))
        session.execute(delete(EDGES).where(EDGES.c.id == row["id"]))
        session.flush()
    return moved, folded, dropped


def rename(session: Session, old: str, new: str, *, by: str) -> Row:
    """Give a concept a new label; the old label stays as an alias, so text that writes it
    still resolves to this concept."""
    lock_for_rewrite(session)
    concept = find_concept(session, old)
    label = new.strip()
    norm = normalise_label(label)
    if not norm:
        raise UsageError(f"the new label {new!r} has no letters or digits")
    if len(label) > 200:
        raise UsageError(f"the new label is {len(label)} characters long; at most 200")
    if label == concept.label:
        raise UsageError(f"the concept is already called {label!r}")
    clash = session.scalar(select(Concept).where(Concept.norm_label == norm,
                                                 Concept.id != concept.id))
    if clash is not None:
        raise UsageError(f"a concept named {clash.label!r} exists (id {clash.id}); "
                         f"merge them with `kg concepts merge {old!r} {clash.label!r}`")
    before = {"label": concept.label, "norm_label": concept.norm_label}
    added = None
    exists = session.scalar(select(ConceptAlias.id).where(
        ConceptAlias.concept_id == concept.id, ConceptAlias.alias == concept.label))
    if exists is None:
        added = int(session.execute(insert(ALIASES).values(
            concept_id=concept.id, alias=concept.label, norm_alias=concept.norm_label)
            .returning(ALIASES.c.id)).scalar_one())
    # The new label is the canonical one now: an alias row spelling it exactly is redundant.
    removed = _rows(session, ALIASES, ALIASES.c.concept_id == concept.id, ALIASES.c.alias == label)
    session.execute(delete(ALIASES).where(ALIASES.c.concept_id == concept.id,
                                          ALIASES.c.alias == label))
    concept.label, concept.norm_label = label, norm
    session.flush()
    data = {"before": before, "after": {"label": label, "norm_label": norm},
            "added_alias": added, "removed_aliases": removed}
    return _view(_decide(session, Action.RENAME, f"renamed {before['label']!r} to {label!r}",
                         by, concept_id=concept.id, norms=[before["norm_label"]], data=data))


def delete_concept(session: Session, name: str, *, by: str) -> Row:
    """Delete a concept with its aliases, evidence and relationships; later runs do not
    create it again from the same text (they count it as suppressed)."""
    lock_for_rewrite(session)
    concept = find_concept(session, name)
    row = _concept_row(session, concept.id)
    aliases = _rows(session, ALIASES, ALIASES.c.concept_id == concept.id)
    evidence = _rows(session, EVIDENCE, EVIDENCE.c.concept_id == concept.id)
    edges = []
    for edge in _rows(session, EDGES, (EDGES.c.source_id == concept.id)
                      | (EDGES.c.target_id == concept.id)):
        edges.append({"edge": edge, "evidence": _rows(
            session, EVIDENCE, EVIDENCE.c.relationship_id == edge["id"])})
        session.execute(delete(EVIDENCE).where(EVIDENCE.c.relationship_id == edge["id"]))
        session.execute(delete(EDGES).where(EDGES.c.id == edge["id"]))
    session.execute(delete(EVIDENCE).where(EVIDENCE.c.concept_id == concept.id))
    attributes = concept_attributes.remove(session, concept.id)
    session.execute(delete(ALIASES).where(ALIASES.c.concept_id == concept.id))
    session.execute(delete(CONCEPTS).where(CONCEPTS.c.id == concept.id))
    data = {"concept": row, "aliases": aliases, "evidence": evidence, "edges": edges,
            "attributes": attributes}
    return _view(_decide(session, Action.DELETE_CONCEPT, f"deleted concept {concept.label!r}",
                         by, concept_id=None,
                         norms=[concept.norm_label, *(a["norm_alias"] for a in aliases)],
                         data=data))


def delete_relationship(session: Session, relationship_id: int, *, by: str) -> Row:
    """Delete one relationship and its evidence; later runs do not add it again."""
    lock_for_rewrite(session)
    edge = session.get(Relationship, relationship_id)
    if edge is None:
        raise NotFoundError(f"no relationship {relationship_id}; see `kg relationships list`")
    row = _rows(session, EDGES, EDGES.c.id == relationship_id)[0]
    evidence = _rows(session, EVIDENCE, EVIDENCE.c.relationship_id == relationship_id)
    source, target = session.get(Concept, edge.source_id), session.get(Concept, edge.target_id)
    type_name = session.scalar(select(RelationshipType.name).where(
        RelationshipType.id == edge.type_id))
    assert source is not None and target is not None
    session.execute(delete(EVIDENCE).where(EVIDENCE.c.relationship_id == relationship_id))
    session.execute(delete(EDGES).where(EDGES.c.id == relationship_id))
    data = {"edge": row, "evidence": evidence, "type": type_name,
            "source": source.norm_label, "target": target.norm_label}
    return _view(_decide(
        session, Action.DELETE_RELATIONSHIP,
        f"deleted relationship {relationship_id}: {source.label!r} -[{type_name}]-> "
        f"{target.label!r}", by, concept_id=None, norms=[], data=data))


def keep_apart(session: Session, a: str, b: str, *, by: str) -> Row:
    """Record that two concepts are not one: resolution passes neither merge nor propose
    the pair again (`undo` withdraws it). The graph itself does not change."""
    first, second = find_concept(session, a), find_concept(session, b)
    if first.id == second.id:
        raise UsageError(f"{a!r} and {b!r} are one concept ({first.label!r}); nothing to keep "
                         "apart")
    if frozenset((first.id, second.id)) in kept_apart(session):
        raise ConflictError(f"{first.label!r} and {second.label!r} are already kept apart "
                            "(see `kg curation list`)")
    data = {"a": first.id, "b": second.id, "a_label": first.label, "b_label": second.label}
    return _view(_decide(session, Action.KEEP_APART,
                         f"kept {first.label!r} and {second.label!r} apart", by,
                         concept_id=None, norms=[first.norm_label, second.norm_label],
                         data=data))


# -- reading and undoing ----------------------------------------------------------------------

def list_decisions(session: Session, *, limit: int = 50,
                   include_undone: bool = True) -> list[Row]:
    """Decisions, newest first."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    query = select(CurationDecision)
    if not include_undone:
        query = query.where(CurationDecision.undone_at.is_(None))
    query = query.order_by(CurationDecision.id.desc()).limit(limit)
    return [_view(d) for d in session.scalars(query)]


def undo(session: Session, decision_id: int, *, by: str, cascade: bool = False) -> Row:
    """Put back what a decision changed, as far as the graph still allows, and mark it undone.
    A merge that later merges built on is refused, naming them; `cascade` undoes those first
    (newest first), then it. `also_undone` lists them."""
    lock_for_rewrite(session)
    decision = session.get(CurationDecision, decision_id)
    if decision is None:
        raise NotFoundError(f"no curation decision {decision_id}; see `kg curation list`")
    if decision.undone_at is not None:
        raise UsageError(f"decision {decision_id} was already undone "
                         f"({decision.undone_at:%Y-%m-%d %H:%M} by {decision.undone_by})")
    later = dependents(session, decision)
    if later and not cascade:
        ids = ", ".join(str(d.id) for d in later)
        raise ConflictError(
            f"decision {decision_id} has later merges built on it: {ids}; undo them first, or "
            f"undo all together (newest first) with `kg curation undo {decision_id} --cascade`"
            " (API: cascade=true)")
    for dependent in sorted(later, key=lambda d: d.id, reverse=True):
        _undo_one(session, dependent, by)
    _undo_one(session, decision, by)
    return {**_view(decision), "also_undone": [d.id for d in later]}


def _undo_one(session: Session, decision: CurationDecision, by: str) -> None:
    undoers = {Action.MERGE: _undo_merge, Action.RENAME: _undo_rename,
               Action.DELETE_CONCEPT: _undo_delete_concept,
               Action.DELETE_RELATIONSHIP: _undo_delete_relationship,
               Action.KEEP_APART: _undo_keep_apart}
    undoers[Action(decision.action)](session, decision.data)
    decision.undone_at, decision.undone_by = utcnow(), by
    session.flush()


def dependents(session: Session, decision: CurationDecision) -> list[CurationDecision]:
    """Live merges made after a merge that built on it (their survivor or merged concept is
    its survivor), and those built on them in turn; oldest first. Empty for other actions."""
    if decision.action != Action.MERGE.value:
        return []
    later = list(session.scalars(select(CurationDecision).where(
        CurationDecision.action == Action.MERGE.value, CurationDecision.id > decision.id,
        CurationDecision.undone_at.is_(None)).order_by(CurationDecision.id)))
    found: list[CurationDecision] = []
    # Concepts that hold what this merge did: its survivor, then the survivors of merges
    # built on it (a merged-away id names nothing any more; SQLite may even reuse it).
    holders = {int(decision.data["survivor"])}
    for row in later:
        survivor = int(row.data["survivor"])
        if {survivor, int(row.data["merged"]["id"])} & holders:
            found.append(row)
            holders.add(survivor)
    return found


def _undo_merge(session: Session, data: Row) -> None:
    survivor = session.get(Concept, data["survivor"])
    if survivor is None:
        raise UsageError("cannot undo: the surviving concept was deleted since; undo that "
                         "decision first (`kg curation list`)")
    merged = _restore_concept(session, data["merged"])
    if data["added_aliases"]:
        session.execute(delete(ALIASES).where(ALIASES.c.id.in_(data["added_aliases"]),
                                              ALIASES.c.concept_id == survivor.id))
    if data["aliases"]:
        session.execute(insert(ALIASES), [
            {"concept_id": merged, "alias": a["alias"], "norm_alias": a["norm_alias"]}
            for a in data["aliases"]])
    if data["evidence"]:
        session.execute(update(EVIDENCE).where(EVIDENCE.c.id.in_(data["evidence"]),
                                               EVIDENCE.c.concept_id == survivor.id)
                        .values(concept_id=merged))
    ends = {data["merged"]["id"]: merged}
    for row in data["moved_edges"]:
        session.execute(update(EDGES).where(EDGES.c.id == row["id"]).values(
            source_id=ends.get(row["source_id"], row["source_id"]),
            target_id=ends.get(row["target_id"], row["target_id"])))
    for fold in data["folded_edges"]:
        row = fold["edge"]
        evidence = _rows(session, EVIDENCE, EVIDENCE.c.id.in_(fold["evidence"]),
                         EVIDENCE.c.relationship_id == fold["into"])
        session.execute(delete(EVIDENCE).where(EVIDENCE.c.id.in_([e["id"] for e in evidence])))
        _restore_edge(session, row, evidence, ends)
        session.execute(update(EDGES).where(EDGES.c.id == fold["into"]).values(
            confidence=fold["into_confidence"]))
    for drop in data["dropped_edges"]:
        _restore_edge(session, drop["edge"], drop["evidence"], ends)
    if "attributes" in data:  # decisions made before attributes have none
        concept_attributes.undo_move(session, data["attributes"], merged)
    if data["described"] is not None and survivor.description == data["described"]:
        survivor.description = ""


def _undo_keep_apart(_session: Session, _data: Row) -> None:
    """Nothing in the graph to put back: once undone, the pair may be proposed again."""


def _undo_rename(session: Session, data: Row) -> None:
    after, before = data["after"], data["before"]
    concept = session.scalar(select(Concept).where(Concept.norm_label == after["norm_label"]))
    if concept is None or concept.label != after["label"]:
        raise UsageError(f"cannot undo: no concept is called {after['label']!r} any more; "
                         "undo the later decisions first (`kg curation list`)")
    clash = session.scalar(select(Concept.id).where(Concept.norm_label == before["norm_label"],
                                                    Concept.id != concept.id))
    if clash is not None:
        raise UsageError(f"cannot undo: another concept (id {clash}) is called "
                         f"{before['label']!r} now; merge them with `kg concepts merge`")
    if data["added_alias"] is not None:
        session.execute(delete(ALIASES).where(ALIASES.c.id == data["added_alias"]))
    for alias in data["removed_aliases"]:
        session.execute(insert(ALIASES).values(concept_id=concept.id, alias=alias["alias"],
                                               norm_alias=alias["norm_alias"]))
    concept.label, concept.norm_label = before["label"], before["norm_label"]


def _undo_delete_concept(session: Session, data: Row) -> None:
    concept = _restore_concept(session, data["concept"])
    if data["aliases"]:
        session.execute(insert(ALIASES), [
            {"concept_id": concept, "alias": a["alias"], "norm_alias": a["norm_alias"]}
            for a in data["aliases"]])
    _restore_evidence(session, data["evidence"], concept_id=concept)
    ends = {data["concept"]["id"]: concept}
    for item in data["edges"]:
        _restore_edge(session, item["edge"], item["evidence"], ends)
    concept_attributes.restore(session, data.get("attributes", []), concept)


def _undo_delete_relationship(session: Session, data: Row) -> None:
    if not _restore_edge(session, data["edge"], data["evidence"]):
        raise UsageError("cannot undo: one end of the relationship no longer exists; undo "
                         "the decision that removed it first (`kg curation list`)")
