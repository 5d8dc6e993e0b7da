"""What curation decided, as later runs must respect it: deleted labels and relationships that
stay deleted, labels a person chose, retired spellings and the concept that holds them now.

Read by the graph writer inside its lock and written by `kg.curation`; here, below both, so
the engine never imports the read side.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.orm import Session

from kg.db.models import Concept, ConceptAlias, CurationDecision
from kg.db.scope import collection_of

CONCEPTS = cast(Table, Concept.__table__)
ALIASES = cast(Table, ConceptAlias.__table__)
Row = dict[str, Any]
Reader = Session | Connection


class Action(StrEnum):
    """What a decision did (the strings are the database's, see ck_curation_action)."""

    MERGE = "merge"
    RENAME = "rename"
    DELETE_CONCEPT = "delete_concept"
    DELETE_RELATIONSHIP = "delete_relationship"


def _active(reader: Reader, *actions: Action) -> list[tuple[int | None, list[str], Row]]:
    table = cast(Table, CurationDecision.__table__)
    rows = reader.execute(select(table.c.concept_id, table.c.norms, table.c.data).where(
        table.c.collection_id == collection_of(reader),
        table.c.action.in_([a.value for a in actions]), table.c.undone_at.is_(None))
        .order_by(table.c.id))
    return [(r.concept_id, list(r.norms or []), r.data or {}) for r in rows]


def suppressed_labels(reader: Reader) -> set[str]:
    """Normalised labels (and aliases) of deleted concepts that a run must not create again;
    a label that names a live concept now is not suppressed."""
    norms = {n for _c, ns, _d in _active(reader, Action.DELETE_CONCEPT) for n in ns}
    if not norms:
        return set()
    live = set(reader.scalars(select(CONCEPTS.c.norm_label).where(
        CONCEPTS.c.collection_id == collection_of(reader), CONCEPTS.c.norm_label.in_(norms))))
    return norms - live


def suppressed_edges(reader: Reader) -> set[tuple[int, int, int]]:
    """(source id, type id, target id) of deleted relationships a run must not add again."""
    return {(d["edge"]["source_id"], d["edge"]["type_id"], d["edge"]["target_id"])
            for _c, _n, d in _active(reader, Action.DELETE_RELATIONSHIP)}


def redirects(reader: Reader) -> dict[str, int]:
    """Normalised labels that merges and renames retired -> the concept that holds them now
    (following later merges), for a resolver that does not read aliases itself."""
    norms = {n for _c, ns, _d in _active(reader, Action.MERGE, Action.RENAME) for n in ns}
    if not norms:
        return {}
    found: dict[str, int] = {}
    collection = collection_of(reader)
    for norm, cid in reader.execute(select(CONCEPTS.c.norm_label, CONCEPTS.c.id).where(
            CONCEPTS.c.collection_id == collection, CONCEPTS.c.norm_label.in_(norms))):
        found[norm] = cid
    for norm, cid in reader.execute(select(ALIASES.c.norm_alias, ALIASES.c.concept_id).where(
            ALIASES.c.collection_id == collection,
            ALIASES.c.norm_alias.in_(norms)).order_by(ALIASES.c.id)):
        found.setdefault(norm, cid)
    return found


@dataclass(frozen=True)
class Rules:
    """What the graph writer must respect, read once per commit (inside its lock)."""

    suppressed_labels: frozenset[str] = frozenset()
    suppressed_edges: frozenset[tuple[int, int, int]] = frozenset()
    renamed: frozenset[int] = frozenset()


def rules(reader: Reader) -> Rules:
    """The active decisions as the writer needs them (cheap: the table holds decisions, not
    graph rows, and an empty table costs one indexed query)."""
    active = _active(reader, Action.DELETE_CONCEPT, Action.DELETE_RELATIONSHIP, Action.RENAME)
    if not active:
        return Rules()
    return Rules(frozenset(suppressed_labels(reader)), frozenset(suppressed_edges(reader)),
                 frozenset(renamed_concepts(reader)))


def renamed_concepts(reader: Reader) -> set[int]:
    """Concepts whose label a person chose: a run must not replace it with a spelling it
    prefers (store's relabel step)."""
    return {c for c, _n, _d in _active(reader, Action.RENAME) if c is not None}
