"""Concept resolution: the same thing written differently becomes one concept with aliases.

Pure decisions, no statements: `ConceptIndex` finds a spelling's concept, `GroupPlan` decides
what a group of chunks adds (new concepts and edges, labels, aliases, confidences) in a way that
does not depend on the order chunks arrive in; `store.GraphWriter` writes the plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rapidfuzz import fuzz, process
from sqlalchemy import Connection, select

from kg.db.models import Concept, ConceptAlias, utcnow
from kg.db.scope import scope_of

MAX_TERMS = 10
EdgeKey = tuple[int, int, int]  # (source id, type id, target id)


def label_rank(label: str) -> tuple[bool, int, int, str]:
    """Which of two spellings of one concept to show: 'Sherlock Holmes' beats 'sherlock holmes',
    'Holmes, Sherlock' and the typo 'Sherlok Holmes'. A total order, so the label a concept ends
    with never depends on which chunk committed first."""
    capitalised = sum(1 for word in label.split() if word[:1].isupper())
    return ("," not in label, capitalised, len(label), label)


MAX_BLOCK = 500


def _blocks(norm: str) -> set[str]:
    tokens = [t for t in norm.split() if len(t) >= 3]
    return {*tokens, *(f"^{t[:3]}" for t in tokens)}


def _token_sorted(norm: str) -> str:
    return " ".join(sorted(norm.split()))


def _digits(text: str) -> list[str]:
    return re.findall(r"\d+", text)


class ConceptIndex:
    """In-memory lookup of normalised spellings -> concept id, with a fuzzy fallback.

    A cache of the database kept by one writer: `GraphWriter` brings it up to date inside the
    graph lock before each commit, so it holds what every writer has committed.
    """

    def __init__(self, threshold: float = 92.0) -> None:
        self.threshold = threshold
        self.exact: dict[str, int] = {}
        # Fuzzy candidates: every spelling of every concept (label and aliases, so that a
        # concept is found the same way whichever of its spellings became the label), stored
        # token-sorted (ratio() on those equals token_sort_ratio() without re-sorting each one
        # per lookup), reached through blocks keyed by token and by 3-letter token prefix, so a
        # lookup compares a handful of spellings instead of all. A typo variant shares a key.
        # Each block keeps its positions (ascending) and, alongside, their keys: a lookup hands
        # a block's keys to rapidfuzz as they are, with no list to build per lookup.
        self.keys: list[str] = []
        self.key_ids: list[int] = []
        self.blocks: dict[str, list[int]] = {}
        self.block_keys: dict[str, list[str]] = {}
        # Surface forms already recorded per concept: the canonical label and every alias.
        self.surface: set[tuple[int, str]] = set()
        self.canonical: dict[int, tuple[str, str]] = {}  # id -> (label, normalised label)

    @classmethod
    def load(cls, conn: Connection, threshold: float = 92.0) -> ConceptIndex:
        index = cls(threshold)
        collection = scope_of(conn)  # resolution stays inside the writer's collection
        for cid, label, norm in conn.execute(
            select(Concept.id, Concept.label, Concept.norm_label)
            .where(Concept.collection_id == collection).order_by(Concept.id)
        ):
            index.add_label(norm, cid, label)
        for cid, alias, norm in conn.execute(
            select(ConceptAlias.concept_id, ConceptAlias.alias, ConceptAlias.norm_alias)
            .where(ConceptAlias.collection_id == collection).order_by(ConceptAlias.id)
        ):
            index.add_alias(norm, cid, alias)
        return index

    def add_label(self, norm: str, concept_id: int, label: str) -> None:
        """Record (or change) a concept's canonical label."""
        self._add_key(norm, concept_id)
        self.exact[norm] = concept_id
        self.surface.add((concept_id, label))
        self.canonical[concept_id] = (label, norm)

    def add_alias(self, norm: str, concept_id: int, alias: str) -> None:
        self._add_key(norm, concept_id)
        self.exact.setdefault(norm, concept_id)
        self.surface.add((concept_id, alias))

    def _add_key(self, norm: str, concept_id: int) -> None:
        if self.exact.get(norm) == concept_id:
            return  # this spelling of this concept is a candidate already
        position = len(self.keys)
        key = _token_sorted(norm)
        self.keys.append(key)
        self.key_ids.append(concept_id)
        for block in _blocks(norm):
            self.blocks.setdefault(block, []).append(position)
            self.block_keys.setdefault(block, []).append(key)

    def find(self, norm: str) -> tuple[int, str] | None:
        """(concept id, how) for a normalised label: 'exact' or 'fuzzy'; None if new."""
        if norm in self.exact:
            return self.exact[norm], "exact"
        if len(norm) < 5 or self.threshold > 100:
            return None
        query = _token_sorted(norm)
        found = [b for b in _blocks(norm) if b in self.blocks]
        if not found:
            return None
        # Blocks as common as a stopword ("agent", "the") add nothing but cost.
        searched = [b for b in found if len(self.blocks[b]) <= MAX_BLOCK] or [
            min(found, key=lambda b: len(self.blocks[b]))]
        # The best score over the blocks' union, the earliest spelling among equals: each
        # block's best is its earliest, so this is the best of the union, block by block.
        best: tuple[float, int, str] | None = None  # (score, -position, key)
        for block in searched:
            match = process.extractOne(query, self.block_keys[block], scorer=fuzz.ratio,
                                       score_cutoff=self.threshold)
            if match is not None:
                hit = (match[1], -self.blocks[block][match[2]], match[0])
                if best is None or hit[:2] > best[:2]:
                    best = hit
        if best is None:
            return None
        # "Type 1 diabetes" and "Type 2 diabetes" are close strings but distinct concepts.
        if _digits(best[2]) != _digits(query):
            return None
        return self.key_ids[-best[1]], "fuzzy"


def merge_details(description: str, terms: list[str],
                  seen: Iterable[tuple[str, list[str]]]) -> tuple[str, list[str]]:
    """A concept's description and search terms after more sightings, the same in any order:
    the longest description, and the first MAX_TERMS of all terms in sorted order."""
    best = description
    pool = set(terms)
    for d, t in seen:
        if d and (len(d), d) > (len(best), best):
            best = d
        pool.update(t)
    return best, sorted(pool)[:MAX_TERMS]


@dataclass
class GroupPlan:
    """What a group of chunks adds to the graph, decided in memory before a row is written.

    Works on a writer's caches (the index and the edges), which it updates as it goes, so the
    group's later chunks see its earlier ones; the writer drops the caches if the group does
    not commit. New concepts and edges get ids from `next_concept` / `next_edge`.
    """

    index: ConceptIndex
    edges: dict[EdgeKey, tuple[int, float]]  # known edge -> (id, confidence)
    next_concept: int
    next_edge: int
    renamed: frozenset[int] = frozenset()  # concepts whose label a person chose
    new_concepts: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Existing concepts given a better label: id -> (label, its norm, the label before).
    relabels: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    aliases: dict[tuple[int, str], str] = field(default_factory=dict)  # (id, alias) -> norm
    unalias: set[tuple[int, str]] = field(default_factory=set)  # alias rows that became labels
    # Every (description, search terms) seen per concept, merged by merge_details.
    seen: dict[int, list[tuple[str, list[str]]]] = field(default_factory=dict)
    types: dict[int, str] = field(default_factory=dict)  # concept id -> first type seen
    new_edges: dict[EdgeKey, dict[str, Any]] = field(default_factory=dict)
    raises: dict[int, float] = field(default_factory=dict)  # known edge id -> confidence
    now: datetime = field(default_factory=utcnow)

    def concept(self, label: str, norm: str) -> int:
        """An existing concept's id (its spellings updated), or a new concept's."""
        index = self.index
        hit = index.find(norm)
        if hit is None:
            cid = self.next_concept
            self.next_concept += 1
            self.new_concepts[cid] = {"id": cid, "label": label, "norm_label": norm,
                                      "created_at": self.now}
            index.add_label(norm, cid, label)
            return cid
        cid = hit[0]
        current, current_norm = index.canonical[cid]
        if label == current:
            return cid
        # A label a person chose (`kg concepts rename`) stays, whatever spelling ranks higher.
        if label_rank(label) <= label_rank(current) or cid in self.renamed:
            if (cid, label) not in index.surface:
                self.aliases[(cid, label)] = norm
                index.add_alias(norm, cid, label)
            return cid
        # A better spelling (same normalised form, or a fuzzy variant): it becomes the label
        # and the old label an alias, whichever of the two was seen first.
        if self.aliases.pop((cid, label), None) is None and (cid, label) in index.surface:
            self.unalias.add((cid, label))
        if cid in self.new_concepts:
            self.new_concepts[cid].update(label=label, norm_label=norm)
        else:
            before = self.relabels.get(cid, (label, norm, current))[2]
            self.relabels[cid] = (label, norm, before)
        index.add_label(norm, cid, label)
        self.unalias.discard((cid, current))
        self.aliases[(cid, current)] = current_norm
        index.add_alias(current_norm, cid, current)
        return cid

    def edge(self, key: EdgeKey, confidence: float) -> int:
        """The id of an edge (new or known); its confidence becomes the highest seen."""
        known = self.edges.get(key)
        if known is None:
            rid = self.next_edge
            self.next_edge += 1
            self.new_edges[key] = {"id": rid, "source_id": key[0], "type_id": key[1],
                                   "target_id": key[2], "confidence": confidence}
            self.edges[key] = (rid, confidence)
            return rid
        rid, best = known
        if confidence > best:
            self.edges[key] = (rid, confidence)
            if key in self.new_edges:
                self.new_edges[key]["confidence"] = confidence
            else:
                self.raises[rid] = confidence
        return rid
