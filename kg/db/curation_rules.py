"""What curation decided, as later runs must respect it: deleted labels and relationships that
stay deleted, labels a person chose, retired spellings and the concept that holds them now,
pairs a person kept apart.

Read by the graph writer inside its lock and written by `kg.curation`; here, below both, so
the engine never imports the read side.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.orm import Session

from kg.db.models import Concept, ConceptAlias, CurationDecision, RelationshipType
from kg.db.scope import collection_of

CONCEPTS = cast(Table, Concept.__table__)
ALIASES = cast(Table, ConceptAlias.__table__)
TYPES = cast(Table, RelationshipType.__table__)
Row = dict[str, Any]
Reader = Session | Connection


class Action(StrEnum):
    """What a decision did (the strings are the database's, see ck_curation_action)."""

    MERGE = "merge"
    RENAME = "rename"
    DELETE_CONCEPT = "delete_concept"
    DELETE_RELATIONSHIP = "delete_relationship"
    KEEP_APART = "keep_apart"  # two concepts a person said are not one (no graph change)


Decision = tuple[int | None, list[str], Row]  # (concept id, retired norms, data) of one row


def _active(reader: Reader, *actions: Action) -> list[Decision]:
    return [decision for _a, decision in _active_rows(reader, *actions)]


def _active_rows(reader: Reader, *actions: Action) -> list[tuple[Action, Decision]]:
    """Decisions not undone, oldest first, with their action."""
    table = cast(Table, CurationDecision.__table__)
    rows = reader.execute(select(table.c.action, table.c.concept_id, table.c.norms,
                                 table.c.data).where(
        table.c.collection_id == collection_of(reader),
        table.c.action.in_([a.value for a in actions]), table.c.undone_at.is_(None))
        .order_by(table.c.id))
    return [(Action(r.action), (r.concept_id, list(r.norms or []), r.data or {})) for r in rows]


def suppressed_labels(reader: Reader) -> set[str]:
    """Normalised labels (and aliases) of deleted concepts that a run must not create again;
    a label that names a live concept now is not suppressed."""
    return _suppressed_labels(reader, _active(reader, Action.DELETE_CONCEPT))


def _suppressed_labels(reader: Reader, deleted: list[Decision]) -> set[str]:
    norms = {n for _c, ns, _d in deleted for n in ns}
    if not norms:
        return set()
    live = set(reader.scalars(select(CONCEPTS.c.norm_label).where(
        CONCEPTS.c.collection_id == collection_of(reader), CONCEPTS.c.norm_label.in_(norms))))
    return norms - live


def suppressed_edges(reader: Reader) -> set[tuple[int, int, int]]:
    """(source id, type id, target id) of deleted relationships a run must not add again,
    their ends followed through later merges (the text that gave the edge resolves to the
    survivor now, and the person's deletion still holds there)."""
    return _suppressed_edges(reader, _active_rows(
        reader, Action.DELETE_RELATIONSHIP, Action.MERGE))


def _suppressed_edges(reader: Reader,
                      decisions: list[tuple[Action, Decision]]) -> set[tuple[int, int, int]]:
    """From deletions and merges in the order they were made: a merge moves the ends of the
    deletions before it only (a merged-away id may name a new concept later)."""
    keys: list[tuple[int, int, int]] = []
    for action, (_c, _n, data) in decisions:
        if action is Action.DELETE_RELATIONSHIP:
            edge = data["edge"]
            keys.append((edge["source_id"], edge["type_id"], edge["target_id"]))
        elif action is Action.MERGE and keys:
            old, new = int(data["merged"]["id"]), int(data["survivor"])
            keys = [(new if s == old else s, t, new if g == old else g) for s, t, g in keys]
    types = {t for _s, t, _g in keys}
    symmetric = set(reader.scalars(select(TYPES.c.id).where(
        TYPES.c.id.in_(types), TYPES.c.direction == "symmetric"))) if types else set()
    # The writer's order of a symmetric edge's ends (an end that moved may break it).
    return {(g, t, s) if t in symmetric and s > g else (s, t, g) for s, t, g in keys}


def kept_apart(reader: Reader) -> set[frozenset[int]]:
    """Pairs of concept ids a person kept apart, their ids followed through later merges
    (the survivor holds what the person judged); a pair merged since by hand is gone."""
    return _kept_apart(_active_rows(reader, Action.KEEP_APART, Action.MERGE))


def _kept_apart(decisions: list[tuple[Action, Decision]]) -> set[frozenset[int]]:
    pairs: list[tuple[int, int]] = []
    for action, (_c, _n, data) in decisions:
        if action is Action.KEEP_APART:
            pairs.append((int(data["a"]), int(data["b"])))
        elif pairs:
            old, new = int(data["merged"]["id"]), int(data["survivor"])
            pairs = [(new if a == old else a, new if b == old else b) for a, b in pairs]
    return {frozenset(p) for p in pairs if p[0] != p[1]}


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
    # Concepts whose label a person chose (a rename, or the label a merge kept): no automatic
    # rule (the writer's fuller-spelling relabel) replaces it.
    renamed: frozenset[int] = frozenset()


def rules(reader: Reader) -> Rules:
    """The active decisions as the writer needs them (cheap: the table holds decisions, not
    graph rows; one indexed query reads them all, and an empty table costs only that)."""
    active = _active_rows(reader, *Action)
    if not active:
        return Rules()

    def of(*actions: Action) -> list[Decision]:
        return [decision for action, decision in active if action in actions]

    return Rules(
        frozenset(_suppressed_labels(reader, of(Action.DELETE_CONCEPT))),
        frozenset(_suppressed_edges(reader, [
            (a, d) for a, d in active if a in (Action.DELETE_RELATIONSHIP, Action.MERGE)])),
        frozenset(_chosen(of(Action.RENAME, Action.MERGE))))


def renamed_concepts(reader: Reader) -> set[int]:
    """Concepts a person renamed."""
    return _chosen(_active(reader, Action.RENAME))


def chosen_labels(reader: Reader) -> set[int]:
    """Concepts whose label a person chose: renamed, or kept by a merge (with `--into` or
    without). A run must not replace it with a spelling it prefers (store's relabel step)."""
    return _chosen(_active(reader, Action.RENAME, Action.MERGE))


def _chosen(decisions: list[Decision]) -> set[int]:
    # A rename's and a merge's concept_id is the concept that carries the chosen label.
    return {c for c, _n, _d in decisions if c is not None}
