"""`kg resolve` and `kg concepts duplicates`: resolution passes over the stored graph.

A pass first gives same-name concepts of incompatible types a qualified label ('Paris
(place)', 'Paris (person)'), as ingestion does, then merges. The merging is incremental: it
compares only concepts created or given new spellings since the last pass with the rest. The
watermark (highest concept and alias ids seen) rides in the decision rows of the pass's
merges, so a pass that merged nothing leaves it where it was and the next pass simply looks
at those concepts again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from kg import curation
from kg.db.curation_rules import renamed_concepts
from kg.db.locks import lock_for_rewrite
from kg.db.models import Call, Concept, ConceptAlias, CurationDecision, Evidence, Relationship
from kg.db.scope import collection_of
from kg.matching.candidates import (
    Entity,
    candidate_pairs,
    entity,
    may_reach,
    plausible,
    qualified,
    qualify,
    signals,
)
from kg.matching.decide import Band, Pair, Thresholds, group
from kg.matching.scoring import NEIGHBOUR_BONUS, score
from kg.resolution.judge import Judge
from kg.text import normalise_label

Row = dict[str, Any]
PASS = "resolve"  # the note's marker: a decision made by a resolution pass
RECENT = 1000  # decisions searched for the last watermark
QUOTES = 3  # evidence quotes per concept shown to the judge
BATCH = 500  # ids per IN list (SQLite allows 32,766 variables)


def load_entities(session: Session, *, neighbours: bool = True) -> dict[int, Entity]:
    """Every concept of the session's collection with its spellings, type and (unless told
    not to: `session_pairs` reads them for the few pairs that need them) neighbours."""
    collection = collection_of(session)
    norms: dict[int, list[str]] = {}
    for cid, norm in session.execute(select(ConceptAlias.concept_id, ConceptAlias.norm_alias)
                                     .where(ConceptAlias.collection_id == collection)):
        norms.setdefault(cid, []).append(norm)
    linked = _neighbours(session) if neighbours else {}
    return {cid: entity(cid, label, type_, [norm, *norms.get(cid, [])], linked.get(cid, ()))
            for cid, label, norm, type_ in session.execute(
                select(Concept.id, Concept.label, Concept.norm_label, Concept.type)
                .where(Concept.collection_id == collection).order_by(Concept.id))}


def _neighbours(session: Session, ids: list[int] | None = None) -> dict[int, set[int]]:
    """Each concept's neighbours (of every concept, or of those of `ids`)."""
    edges = select(Relationship.source_id, Relationship.target_id).where(
        Relationship.collection_id == collection_of(session))
    # Two indexed lookups per batch (an OR of the two would scan the table on SQLite).
    batches = [edges] if ids is None else [
        edges.where(Relationship.source_id.in_(batch)).union(
            edges.where(Relationship.target_id.in_(batch)))
        for batch in (ids[i:i + BATCH] for i in range(0, len(ids), BATCH))]
    out: dict[int, set[int]] = {}
    for query in batches:
        for source, target in session.execute(query):
            out.setdefault(source, set()).add(target)
            out.setdefault(target, set()).add(source)
    return out


def score_pairs(entities: dict[int, Entity], new: set[int] | None = None,
                floor: float = 0.0) -> list[Pair]:
    """Every candidate pair with its signals and score (pairs of score 0 left out); with a
    `floor`, only pairs scoring at least that (the rest are not scored at all)."""
    return _scored(_close(entities, new, floor), floor)


def session_pairs(session: Session, entities: dict[int, Entity], new: set[int] | None,
                  floor: float) -> list[Pair]:
    """`score_pairs` over entities loaded without neighbours: the neighbours are read only
    for the pairs that could reach `floor` (the bound assumes the largest neighbour bonus),
    and put in `entities`."""
    close = _close(entities, new, floor)
    ids = sorted({i for a, b in close for i in (a.id, b.id)})
    linked = _neighbours(session, ids) if ids else {}
    for i in ids:
        entities[i] = replace(entities[i], neighbours=frozenset(linked.get(i, ())))
    return _scored([(entities[a.id], entities[b.id]) for a, b in close], floor)


def _close(entities: dict[int, Entity], new: set[int] | None,
           floor: float) -> list[tuple[Entity, Entity]]:
    need = floor - NEIGHBOUR_BONUS
    return [(a, b) for a, b in candidate_pairs(entities.values(), new)
            if plausible(a, b) and (floor <= 0 or may_reach(a, b, need))]


def _scored(close: list[tuple[Entity, Entity]], floor: float) -> list[Pair]:
    pairs = []
    for a, b in close:
        found = signals(a, b)
        value = score(found)
        if value > 0 and value >= floor:
            pairs.append(Pair(a, b, value, found))
    return pairs


def _watermark(session: Session) -> dict[str, int]:
    for data in session.scalars(select(CurationDecision.data)
                                .where(CurationDecision.action == "merge")
                                .order_by(CurationDecision.id.desc()).limit(RECENT)):
        note = (data or {}).get("note") or {}
        if note.get("pass") == PASS:
            return {"concept": int(note["watermark"]["concept"]),
                    "alias": int(note["watermark"]["alias"])}
    return {"concept": 0, "alias": 0}


def _undone_pairs(session: Session) -> set[frozenset[int]]:
    """Pairs a person split: merges undone, and pairs kept apart (live decisions, followed
    through later merges). A pass neither proposes nor makes them again."""
    from kg.db.curation_rules import kept_apart

    undone = kept_apart(session)
    for data in session.scalars(select(CurationDecision.data).where(
            CurationDecision.collection_id == collection_of(session),
            CurationDecision.action == "merge", CurationDecision.undone_at.is_not(None))):
        if data and data.get("merged"):
            undone.add(frozenset((int(data["survivor"]), int(data["merged"]["id"]))))
    return undone


def _changed(session: Session, mark: dict[str, int]) -> set[int]:
    collection = collection_of(session)
    fresh = set(session.scalars(select(Concept.id).where(
        Concept.collection_id == collection, Concept.id > mark["concept"])))
    fresh.update(session.scalars(select(ConceptAlias.concept_id).where(
        ConceptAlias.collection_id == collection, ConceptAlias.id > mark["alias"])))
    return fresh


def _high_water(session: Session) -> dict[str, int]:
    collection = collection_of(session)
    return {"concept": int(session.scalar(select(func.max(Concept.id)).where(
                Concept.collection_id == collection)) or 0),
            "alias": int(session.scalar(select(func.max(ConceptAlias.id)).where(
                ConceptAlias.collection_id == collection)) or 0)}


def same_name_clashes(session: Session) -> list[Row]:
    """Concepts to qualify: a normalised name (label or alias) held by concepts of two or more
    known types makes each typed holder labelled by it 'Label (type)', the plain name kept as
    an alias, as ingestion does; not a label a person chose, nor one whose qualified form is
    taken. The database finds the shared names (one grouped query, no rows per concept)."""
    collection = collection_of(session)
    kind_sql = func.lower(func.trim(Concept.type))
    spellings = union_all(
        select(Concept.norm_label.label("norm"), kind_sql.label("kind"))
        .where(Concept.collection_id == collection, Concept.type.is_not(None)),
        select(ConceptAlias.norm_alias.label("norm"), kind_sql.label("kind"))
        .join(Concept, Concept.id == ConceptAlias.concept_id)
        .where(ConceptAlias.collection_id == collection, Concept.type.is_not(None))).subquery()
    shared = select(spellings.c.norm).group_by(spellings.c.norm).having(
        func.count(func.distinct(spellings.c.kind)) > 1)
    found = [(cid, label, str(type_)) for cid, label, type_ in session.execute(
        select(Concept.id, Concept.label, Concept.type)
        .where(Concept.collection_id == collection, Concept.type.is_not(None),
               Concept.norm_label.in_(shared)).order_by(Concept.norm_label, Concept.id))]
    if not found:
        return []
    renamed = renamed_concepts(session)
    wanted = {normalise_label(qualify(label, type_)) for _c, label, type_ in found}
    taken = set(session.scalars(select(Concept.norm_label).where(
        Concept.collection_id == collection, Concept.norm_label.in_(wanted))))
    out = []
    for cid, label, type_ in found:
        if cid in renamed or qualified(label, type_):
            continue
        new = qualify(label, type_)
        if normalise_label(new) not in taken:
            taken.add(normalise_label(new))
            out.append({"id": cid, "label": label, "type": type_, "qualified": new})
    return out


def _context(session: Session, ids: set[int]) -> dict[int, Row]:
    """What the judge sees of each concept: label, type, other names, description, quotes."""
    out: dict[int, Row] = {}
    for concept in session.scalars(select(Concept).where(Concept.id.in_(ids))):
        aliases = sorted(session.scalars(select(ConceptAlias.alias).where(
            ConceptAlias.concept_id == concept.id)))
        quotes = list(session.scalars(select(Evidence.quote).where(
            Evidence.concept_id == concept.id).order_by(Evidence.id).limit(QUOTES)))
        out[concept.id] = {"label": concept.label, "type": concept.type, "aliases": aliases,
                           "description": concept.description, "quotes": quotes}
    return out


def _pair_row(pair: Pair) -> Row:
    return {"a": pair.a.id, "a_label": pair.a.label, "a_type": pair.a.type,
            "b": pair.b.id, "b_label": pair.b.label, "b_type": pair.b.type,
            "score": pair.score, "signals": pair.signals}


def resolve(session: Session, *, thresholds: Thresholds, by: str, dry_run: bool = False,
            full: bool = False, judge: Judge | None = None) -> Row:
    """One pass: merge the pairs above the high threshold (grouped order-free), and the grey
    zone's pairs the `judge` says yes to; the rest of the grey zone is left for review. With
    `full`, every concept is looked at, not only the changed ones."""
    if not dry_run:
        lock_for_rewrite(session)
    qualified_labels = same_name_clashes(session)
    if not dry_run:
        for item in qualified_labels:
            item["decision"] = curation.rename(session, str(item["id"]), item["qualified"],
                                               by=by)["id"]
    mark = {"concept": 0, "alias": 0} if full else _watermark(session)
    entities = load_entities(session, neighbours=False)
    new = None if full else _changed(session, mark) & entities.keys()
    undone = _undone_pairs(session)
    # Pairs below the review band decide nothing: they are not scored.
    pairs = [p for p in session_pairs(session, entities, new, thresholds.low)
             if frozenset((p.a.id, p.b.id)) not in undone]
    accepted = [p for p in pairs if thresholds.band(p.score) is Band.MERGE]
    review = [p for p in pairs if thresholds.band(p.score) is Band.REVIEW]
    answers: dict[tuple[int, int], str] = {}
    if judge is not None and review:
        seen = _context(session, {i for p in review for i in (p.a.id, p.b.id)})
        for p in review:
            answers[(p.a.id, p.b.id)] = judge(seen[p.a.id], seen[p.b.id])
        session.add_all([Call(**row) for row in judge.calls])
        judge.calls.clear()
        accepted += [p for p in review if answers[(p.a.id, p.b.id)] == "yes"]
        review = [p for p in review if answers[(p.a.id, p.b.id)] != "yes"]
    components = group(entities, accepted, frozenset(undone))
    merges = []
    for component in components:
        survivor, members = component[0], set(component)
        for other in component[1:]:
            # The strongest accepted link of this member inside its component explains it.
            link = max((p for p in accepted if other in (p.a.id, p.b.id)
                        and {p.a.id, p.b.id} <= members), key=lambda p: (p.score, -p.a.id))
            merges.append({"survivor": survivor, "survivor_label": entities[survivor].label,
                           "merged": other, "merged_label": entities[other].label,
                           "score": link.score, "signals": link.signals,
                           "judge": answers.get((link.a.id, link.b.id))})
    if not dry_run and merges:
        after = _high_water(session)
        for merge in merges:
            note = {"pass": PASS, "score": merge["score"], "signals": merge["signals"],
                    "judge": merge["judge"],
                    "thresholds": {"high": thresholds.high, "low": thresholds.low},
                    "watermark": after}
            decision = curation.merge(session, str(merge["survivor"]), str(merge["merged"]),
                                      into=str(merge["survivor"]), by=by, note=note)
            merge["decision"] = decision["id"]
        # The merges themselves add aliases: the next pass need not look at those again.
        final = _high_water(session)
        for decision_id in [m["decision"] for m in merges]:
            row = session.get(CurationDecision, decision_id)
            assert row is not None
            row.data = {**row.data, "note": {**row.data["note"], "watermark": final}}
        session.flush()
    return {"dry_run": dry_run, "concepts": len(entities), "qualified": qualified_labels,
            "examined": len(entities) if new is None else len(new),
            "candidates": len(pairs), "merged": merges, "review": len(review),
            "judged": {a: sum(v == a for v in answers.values()) for a in ("yes", "no", "unsure")},
            "thresholds": {"high": thresholds.high, "low": thresholds.low}}


def duplicates(session: Session, *, thresholds: Thresholds) -> list[Row]:
    """The grey zone over the whole collection: pairs to review, strongest first."""
    entities = load_entities(session, neighbours=False)
    undone = _undone_pairs(session)
    pairs = [p for p in session_pairs(session, entities, None, thresholds.low)
             if thresholds.band(p.score) is Band.REVIEW
             and frozenset((p.a.id, p.b.id)) not in undone]
    pairs.sort(key=lambda p: (-p.score, p.a.id, p.b.id))
    return [_pair_row(p) for p in pairs]
