"""Concept resolution: the same thing written differently becomes one concept with aliases."""

from __future__ import annotations

import re
import unicodedata

from rapidfuzz import fuzz, process
from sqlalchemy import Connection, select

from kg.db.models import Concept, ConceptAlias

ARTICLES = ("the ", "a ", "an ")


def normalise_label(label: str) -> str:
    """Case, accents-preserving Unicode form, punctuation and 'Last, First' order folded away."""
    text = unicodedata.normalize("NFKC", label).strip()
    parts = [p.strip() for p in text.split(",")]
    # "Holmes, Sherlock" -> "Sherlock Holmes"; only for two short name-like parts.
    if len(parts) == 2 and all(1 <= len(p.split()) <= 3 for p in parts):
        text = f"{parts[1]} {parts[0]}"
    text = text.casefold()
    text = re.sub(r"[^\w]+", " ", text).strip()
    for article in ARTICLES:
        if text.startswith(article) and len(text) > len(article) + 2:
            text = text[len(article):]
            break
    return text[:200]


def label_rank(label: str) -> tuple[bool, int, str]:
    """Which of two spellings of the same concept to show: 'Sherlock Holmes' beats
    'sherlock holmes' and 'Holmes, Sherlock'. A total order, so the result never depends on
    which chunk committed first."""
    capitalised = sum(1 for word in label.split() if word[:1].isupper())
    return ("," not in label, capitalised, label)


MAX_BLOCK = 500


def _blocks(norm: str) -> set[str]:
    tokens = [t for t in norm.split() if len(t) >= 3]
    return {*tokens, *(f"^{t[:3]}" for t in tokens)}


def _token_sorted(norm: str) -> str:
    return " ".join(sorted(norm.split()))


def _digits(text: str) -> list[str]:
    return re.findall(r"\d+", text)


class ConceptIndex:
    """In-memory lookup of normalised labels and aliases -> concept id, with fuzzy fallback.

    Only the single writer of a run touches it, so it stays consistent with what it commits.
    """

    def __init__(self, threshold: float = 92.0) -> None:
        self.threshold = threshold
        self.exact: dict[str, int] = {}
        # Fuzzy candidates: labels stored token-sorted (ratio() on those equals
        # token_sort_ratio() without re-sorting each label per lookup), reached through
        # blocks keyed by token and by 3-letter token prefix, so a lookup compares a handful
        # of labels instead of all of them. A typo variant shares at least one such key.
        self.keys: list[str] = []
        self.key_ids: list[int] = []
        self.blocks: dict[str, list[int]] = {}
        # Surface forms already recorded per concept: the canonical label and every alias.
        self.surface: set[tuple[int, str]] = set()
        self.canonical: dict[int, tuple[str, str]] = {}  # id -> (label, normalised label)
        # What enrichment needs, kept here so that a commit does not re-read each concept.
        self.described: set[int] = set()
        self.terms: dict[int, list[str]] = {}

    @classmethod
    def load(cls, session: Connection, threshold: float = 92.0) -> ConceptIndex:
        index = cls(threshold)
        for cid, label, norm, description, terms in session.execute(
            select(Concept.id, Concept.label, Concept.norm_label, Concept.description,
                   Concept.search_terms)
        ):
            index.add_label(norm, cid, label)
            if description:
                index.described.add(cid)
            index.terms[cid] = list(terms or [])
        for cid, alias, norm in session.execute(
            select(ConceptAlias.concept_id, ConceptAlias.alias, ConceptAlias.norm_alias)
        ):
            index.add_alias(norm, cid, alias)
        return index

    def add_label(self, norm: str, concept_id: int, label: str) -> None:
        self.exact[norm] = concept_id
        position = len(self.keys)
        self.keys.append(_token_sorted(norm))
        self.key_ids.append(concept_id)
        for block in _blocks(norm):
            self.blocks.setdefault(block, []).append(position)
        self.surface.add((concept_id, label))
        self.canonical[concept_id] = (label, norm)

    def add_alias(self, norm: str, concept_id: int, alias: str) -> None:
        self.exact.setdefault(norm, concept_id)
        self.surface.add((concept_id, alias))

    def find(self, norm: str) -> tuple[int, str] | None:
        """(concept id, how) for a normalised label: 'exact' or 'fuzzy'; None if new."""
        if norm in self.exact:
            return self.exact[norm], "exact"
        if len(norm) < 5 or self.threshold > 100:
            return None
        query = _token_sorted(norm)
        lists = [self.blocks[b] for b in _blocks(norm) if b in self.blocks]
        if not lists:
            return None
        common = min(lists, key=len)
        # Blocks as common as a stopword ("agent", "the") add nothing but cost.
        positions = set().union(*(p for p in lists if len(p) <= MAX_BLOCK)) or set(common)
        candidates = sorted(positions)
        match = process.extractOne(query, [self.keys[i] for i in candidates], scorer=fuzz.ratio,
                                   score_cutoff=self.threshold)
        best = None if match is None else (match[0], match[1], self.key_ids[candidates[match[2]]])
        if best is None:
            return None
        # "Type 1 diabetes" and "Type 2 diabetes" are close strings but distinct concepts.
        if _digits(best[0]) != _digits(query):
            return None
        return best[2], "fuzzy"
