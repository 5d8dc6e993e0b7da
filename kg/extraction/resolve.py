"""Concept resolution: the same thing written differently becomes one concept with aliases.

Pure decisions, no statements: `ConceptIndex` finds a spelling's concept with the signals and
score `kg resolve` uses (kg.matching), `GroupPlan` decides what a group of chunks adds (new
concepts and edges, labels, aliases, confidences) in a way that does not depend on the order
chunks arrive in; `store.GraphWriter` writes the plan. One limit: a lookup decides against what
is stored so far, so a short form two distinct concepts share ('J. Smith': John or Jane) joins
the one stored first if the other comes later; `kg resolve` never joins such a pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import Indel
from sqlalchemy import Connection, select

from kg.db.models import Concept, ConceptAlias, utcnow
from kg.db.scope import scope_of
from kg.matching.candidates import (
    MAX_BLOCK,
    SLACK,
    Entity,
    acronym,
    block_name,
    blocking_keys,
    compatible,
    distinct,
    entity,
    fold,
    is_acronym,
    is_initials,
    kind,
    plausible,
    qualified,
    qualify,
    signals,
)
from kg.matching.scoring import ACRONYM, CONTAINED, INITIALS, TOKENS, TYPO, score
from kg.text import normalise_label

MAX_TERMS = 10
EdgeKey = tuple[int, int, int]  # (source id, type id, target id)


def label_rank(label: str) -> tuple[bool, int, int, str]:
    """Which of two spellings of one concept to show: 'Sherlock Holmes' beats 'sherlock holmes',
    'Holmes, Sherlock' and the typo 'Sherlok Holmes'. A total order, so the label a concept ends
    with never depends on which chunk committed first."""
    capitalised = sum(1 for word in label.split() if word[:1].isupper())
    return ("," not in label, capitalised, len(label), label)


@dataclass
class Pool:
    """A block's names in the forms the score compares, beside their concepts: what rapidfuzz
    scans in C before any Python looks at a candidate."""

    raw: list[str] = field(default_factory=list)  # folded name
    ordered: list[str] = field(default_factory=list)  # its words sorted
    ids: list[int] = field(default_factory=list)
    # Sorted, then transliterated, only where that changes it (most names: 'ph', 'y', 'ae'
    # and the like are rare), with their concepts.
    translit: list[str] = field(default_factory=list)
    translit_ids: list[int] = field(default_factory=list)

    def add(self, name: str, concept_id: int) -> None:
        ordered, translit = block_name(name)
        self.raw.append(name)
        self.ordered.append(ordered)
        self.ids.append(concept_id)
        if translit != ordered:
            self.translit.append(translit)
            self.translit_ids.append(concept_id)


class ConceptIndex:
    """In-memory lookup of a mention's spelling -> concept id: the same signals and score as
    `kg resolve` (kg.matching), merging only in the automatic band; the grey zone is left to
    `kg resolve --judge` and review.

    A cache of the database kept by one writer: `GraphWriter` brings it up to date inside the
    graph lock before each commit, so it holds what every writer has committed.
    """

    def __init__(self, threshold: float = 92.0, *, prefilter: bool = True) -> None:
        # The automatic-merge bar, as a percentage of the score (the ingest option's scale);
        # above 100 only equal spellings join.
        self.threshold = threshold
        # Off, every concept of a mention's blocks goes through `signals`: the reference the
        # C prefilter must agree with (tests, benchmarks.resolution.lookup).
        self.prefilter = prefilter
        self.exact: dict[str, int] = {}  # normalised spelling -> its first concept
        self.holders: dict[str, set[int]] = {}  # normalised spelling -> every concept with it
        self.names: dict[int, set[str]] = {}  # concept -> folded spellings
        self.blocks: dict[str, set[int]] = {}  # blocking key -> concepts
        self.pools: dict[str, Pool] = {}  # blocking key -> its names, for the C prefilter
        # last word -> (name, concept) of names written with an initial ('m curie')
        self.initialled: dict[str, list[tuple[str, int]]] = {}
        self.types: dict[int, str] = {}  # concept -> its type (the first one given)
        self._entities: dict[int, Entity] = {}  # built on demand, dropped when names change
        # Surface forms already recorded per concept: the canonical label and every alias.
        self.surface: set[tuple[int, str]] = set()
        self.canonical: dict[int, tuple[str, str]] = {}  # id -> (label, normalised label)

    @classmethod
    def load(cls, conn: Connection, threshold: float = 92.0) -> ConceptIndex:
        index = cls(threshold)
        collection = scope_of(conn)  # resolution stays inside the writer's collection
        for cid, label, norm, type_ in conn.execute(
            select(Concept.id, Concept.label, Concept.norm_label, Concept.type)
            .where(Concept.collection_id == collection).order_by(Concept.id)
        ):
            index.add_label(norm, cid, label, type_)
        for cid, alias, norm in conn.execute(
            select(ConceptAlias.concept_id, ConceptAlias.alias, ConceptAlias.norm_alias)
            .where(ConceptAlias.collection_id == collection).order_by(ConceptAlias.id)
        ):
            index.add_alias(norm, cid, alias)
        return index

    def add_label(self, norm: str, concept_id: int, label: str,
                  type_: str | None = None) -> None:
        """Record (or change) a concept's canonical label (and its type, if it had none)."""
        self._add_key(norm, concept_id)
        self.exact[norm] = concept_id
        self.surface.add((concept_id, label))
        self.canonical[concept_id] = (label, norm)
        self._entities.pop(concept_id, None)
        self.set_type(concept_id, type_)

    def add_alias(self, norm: str, concept_id: int, alias: str) -> None:
        self._add_key(norm, concept_id)
        self.exact.setdefault(norm, concept_id)
        self.surface.add((concept_id, alias))

    def set_type(self, concept_id: int, type_: str | None) -> None:
        """A concept keeps the first type it is given (as the writer stores it)."""
        if type_ and concept_id not in self.types:
            self.types[concept_id] = type_
            self._entities.pop(concept_id, None)

    def _add_key(self, norm: str, concept_id: int) -> None:
        self.holders.setdefault(norm, set()).add(concept_id)
        folded = fold(norm)
        names = self.names.setdefault(concept_id, set())
        if not folded or folded in names:
            return
        old = sorted(names)
        names.add(folded)
        self._entities.pop(concept_id, None)
        words = folded.split()
        if len(words) >= 2 and any(len(w) == 1 for w in words[:-1]):
            self.initialled.setdefault(words[-1], []).append((folded, concept_id))
        keys = blocking_keys(folded)
        for key in keys:
            self.blocks.setdefault(key, set()).add(concept_id)
        # A pool holds every name of each concept in the block (the score is the best over all
        # names, whichever shares the key); pools are built when first asked for, then kept.
        old_keys = set().union(*(blocking_keys(n) for n in old))
        for key in keys | old_keys:
            pool = self.pools.get(key)
            if pool is not None:
                pool.add(folded, concept_id)
        for key in keys - old_keys:
            pool = self.pools.get(key)
            if pool is not None:
                for name in old:
                    pool.add(name, concept_id)

    def _pool(self, key: str) -> Pool:
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool()
            for cid in sorted(self.blocks[key]):
                for name in sorted(self.names[cid]):
                    pool.add(name, cid)
        return pool

    def entity(self, concept_id: int) -> Entity:
        known = self._entities.get(concept_id)
        if known is None:
            label = self.canonical.get(concept_id, ("", ""))[0]
            known = Entity(concept_id, label, kind(self.types.get(concept_id)),
                           frozenset(self.names.get(concept_id, ())))
            self._entities[concept_id] = known
        return known

    def clashes(self, norm: str, type_: str | None) -> list[int]:
        """Concepts spelled `norm` (label or alias), all of a kind other than `type_`; empty
        when one of them fits (or `norm` is new, or the mention has no type)."""
        holders = sorted(self.holders.get(norm, ()))
        wanted = kind(type_)
        if wanted is None or any(compatible(kind(self.types.get(c)), wanted) for c in holders):
            return []
        return holders

    def find(self, norm: str, type_: str | None = None) -> tuple[int, str] | None:
        """(concept id, how) for a normalised spelling and the type the mention states:
        'exact' (the same spelling, of a compatible type) or 'fuzzy' (a score in the automatic
        band, no known-distinct name, not ambiguous between two distinct concepts); None if
        new."""
        wanted = kind(type_)
        holders = self.holders.get(norm)
        if holders:
            fits = [c for c in holders if compatible(kind(self.types.get(c)), wanted)]
            if fits:  # the same type, the concept this spelling labels, the first label
                return min(fits, key=lambda c: (kind(self.types.get(c)) != wanted,
                                                self.canonical[c][1] != norm,
                                                self.canonical[c][0], c)), "exact"
            return None  # each concept of this spelling is another kind of thing: clashes()
        if self.threshold > 100:
            return None
        query = entity(0, norm, type_, [norm])
        keys = []
        for name in query.names:
            for key in blocking_keys(name):
                block = self.blocks.get(key)
                if block and (len(block) <= MAX_BLOCK or key.startswith(("=", "a:"))):
                    keys.append(key)
        bar = self.threshold / 100
        found = self._reachable(query, keys, bar)
        above: list[tuple[float, int]] = []
        for cid in sorted(found):
            other = self.entity(cid)
            if not plausible(query, other):
                continue
            # distinct() only for what scores above the bar: the rest is left out either way.
            value = score(signals(query, other))
            if value >= bar and not distinct(query, other):
                above.append((value, cid))
        # Two distinct concepts both fit ('J. Smith': John and Jane Smith): join neither.
        for n, (_v, x) in enumerate(above):
            if any(distinct(self.entity(x), self.entity(y)) for _w, y in above[n + 1:]):
                return None
        if not above:
            return None
        return min(above, key=lambda hit: (-hit[0], hit[1]))[1], "fuzzy"

    def _reachable(self, query: Entity, keys: list[str], bar: float) -> set[int]:
        """The concepts of these blocks whose score could reach `bar` (a superset), found in C.
        With no neighbours at ingest a score is an equal name, a character similarity or a
        rule's fixed worth (acronym, initials, typo, contained); each is tested here at least
        as loosely as the score takes it, so `find` decides exactly as over the whole blocks."""
        every: set[int] = set().union(*(self.blocks[k] for k in keys))
        if not self.prefilter or bar <= max(CONTAINED, TOKENS) + SLACK:
            # (at such a bar, rules no C scan finds could reach it)
            return every
        pools = [self._pool(k) for k in keys]
        raw = list(chain.from_iterable(p.raw for p in pools))
        ordered = list(chain.from_iterable(p.ordered for p in pools))
        ids = list(chain.from_iterable(p.ids for p in pools))
        translit = list(chain.from_iterable(p.translit for p in pools))
        translit_ids = list(chain.from_iterable(p.translit_ids for p in pools))
        out: set[int] = set()
        for k in keys:
            if k.startswith("="):  # the same name, or the same transliteration
                out |= self.blocks[k]
        cutoff = bar - SLACK
        for x in query.names:
            ox, tx = block_name(x)
            # One bit-parallel scan per form stands for the slower ones: a ratio >= c allows
            # at most 2(1 - c)len/c insertions and deletions (the other name is at most that
            # much longer), and so does a Damerau-Levenshtein similarity >= c, as one edit of
            # it is at most two insertions or deletions.
            # A name transliteration leaves alone is its own transliterated form: the query's
            # form is compared with those in the ordered list, the others in their own.
            scans = [(ox, ordered, ids), (tx, translit, translit_ids)]
            if tx != ox:
                scans.append((tx, ordered, ids))
            for q, choices, owners in scans:
                out.update(owners[i] for _c, _s, i in process.extract(
                    q, choices, scorer=Indel.distance,
                    score_cutoff=int(2 * (1 - cutoff) * len(q) / cutoff), limit=None))
            if bar <= TYPO + SLACK:  # one letter dropped, doubled or swapped: <= 2 indels
                out.update(ids[i] for _c, _s, i in process.extract(
                    x, raw, scorer=Indel.distance, score_cutoff=2, limit=None))
            if bar <= max(ACRONYM, INITIALS) + SLACK:
                out.update(self._rules(x))
        return out & every

    def _rules(self, x: str) -> set[int]:
        """Concepts an acronym or initials rule joins to the name `x`, from the only pools
        such a name can be in: 'ibm' holds 'a:ibm', an acronym's own name is '=ibm', and
        initials share the last word with one side written with an initial."""
        out: set[int] = set()
        short = acronym(x)
        for key in ("a:" + x, "=" + short if short else ""):
            out.update(c for y, c in self._named(key) if is_acronym(x, y) or is_acronym(y, x))
        words = x.split()
        if len(words) >= 2:
            pairs: Iterable[tuple[str, int]] = (
                self._named("l:" + words[-1]) if any(len(w) == 1 for w in words[:-1])
                else self.initialled.get(words[-1], ()))
            out.update(c for y, c in pairs if is_initials(x, y))
        return out

    def _named(self, key: str) -> Iterable[tuple[str, int]]:
        """(name, concept) for every name of the concepts holding `key`."""
        for cid in self.blocks.get(key, ()):
            for name in self.names[cid]:
                yield name, cid


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

    def concept(self, label: str, norm: str, type_: str | None = None) -> int:
        """An existing concept's id (its spellings updated), or a new concept's. A spelling
        whose every concept is of another type than the mention's makes a new concept with a
        qualified label ('Paris (person)'), and the concepts it labelled get theirs ('Paris
        (place)'): the same two labels whichever arrived first."""
        index = self.index
        hit = index.find(norm, type_)
        spelling: tuple[str, str] | None = None
        if hit is None and type_ and index.clashes(norm, type_):
            self._qualify(norm)
            spelling = (label, norm)
            label = qualify(label, type_)
            norm = normalise_label(label)
            hit = index.find(norm, type_)
        if hit is None:
            cid = self.next_concept
            self.next_concept += 1
            self.new_concepts[cid] = {"id": cid, "label": label, "norm_label": norm,
                                      "created_at": self.now}
            index.add_label(norm, cid, label, type_)
            if spelling is not None:  # 'Paris' stays findable
                self._alias(cid, *spelling)
            return cid
        cid = hit[0]
        index.set_type(cid, type_)
        if spelling is not None:
            self._alias(cid, *spelling)
        current, _current_norm = index.canonical[cid]
        suffix = qualified(current, index.types.get(cid))
        if suffix is not None and qualified(label, index.types.get(cid)) is None:
            # A qualified label keeps its qualifier: the spelling is an alias, and with the
            # qualifier it may still make a better label ('paris (place)' -> 'Paris (place)').
            self._alias(cid, label, norm)
            label = qualify(label, suffix)
            norm = normalise_label(label)
        if label == current:
            return cid
        # A label a person chose (`kg concepts rename`) stays, whatever spelling ranks higher.
        if label_rank(label) <= label_rank(current) or cid in self.renamed:
            if suffix is None:
                self._alias(cid, label, norm)
            return cid
        # A better spelling (same normalised form, or a fuzzy variant): it becomes the label
        # and the old label an alias (unless it was a made-up qualified one), whichever of the
        # two was seen first.
        self._relabel(cid, label, norm, keep_old=suffix is None)
        return cid

    def _alias(self, cid: int, label: str, norm: str) -> None:
        if (cid, label) not in self.index.surface:
            self.aliases[(cid, label)] = norm
            self.index.add_alias(norm, cid, label)

    def _qualify(self, norm: str) -> None:
        """The concepts labelled `norm` get their type in brackets, the plain label kept as an
        alias; not one whose label a person chose, nor where that label is taken."""
        index = self.index
        for cid in sorted(index.holders.get(norm, ())):
            label, own = index.canonical[cid]
            type_ = index.types.get(cid)
            if own != norm or not type_ or cid in self.renamed or qualified(label, type_):
                continue
            new = qualify(label, type_)
            if normalise_label(new) in index.holders:
                continue
            self._relabel(cid, new, normalise_label(new), keep_old=True)

    def _relabel(self, cid: int, label: str, norm: str, *, keep_old: bool) -> None:
        index = self.index
        current, current_norm = index.canonical[cid]
        if self.aliases.pop((cid, label), None) is None and (cid, label) in index.surface:
            self.unalias.add((cid, label))
        if cid in self.new_concepts:
            self.new_concepts[cid].update(label=label, norm_label=norm)
        else:
            before = self.relabels.get(cid, (label, norm, current))[2]
            self.relabels[cid] = (label, norm, before)
        index.add_label(norm, cid, label)
        self.unalias.discard((cid, current))
        if keep_old:
            self.aliases[(cid, current)] = current_norm
            index.add_alias(current_norm, cid, current)

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
