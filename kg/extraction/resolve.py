"""Concept resolution: the same thing written differently becomes one concept with aliases."""

from __future__ import annotations

import re
import unicodedata

from rapidfuzz import fuzz, process
from sqlalchemy import select
from sqlalchemy.orm import Session

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


def _digits(text: str) -> list[str]:
    return re.findall(r"\d+", text)


class ConceptIndex:
    """In-memory lookup of normalised labels and aliases -> concept id, with fuzzy fallback.

    Only the single writer of a run touches it, so it stays consistent with what it commits.
    """

    def __init__(self, threshold: float = 92.0) -> None:
        self.threshold = threshold
        self.exact: dict[str, int] = {}
        self.labels: list[str] = []
        self.label_ids: list[int] = []
        # Surface forms already recorded per concept: the canonical label and every alias.
        self.surface: set[tuple[int, str]] = set()
        self.canonical: dict[int, tuple[str, str]] = {}  # id -> (label, normalised label)

    @classmethod
    def load(cls, session: Session, threshold: float = 92.0) -> ConceptIndex:
        index = cls(threshold)
        for cid, label, norm in session.execute(
            select(Concept.id, Concept.label, Concept.norm_label)
        ):
            index.add_label(norm, cid, label)
        for cid, alias, norm in session.execute(
            select(ConceptAlias.concept_id, ConceptAlias.alias, ConceptAlias.norm_alias)
        ):
            index.add_alias(norm, cid, alias)
        return index

    def add_label(self, norm: str, concept_id: int, label: str) -> None:
        self.exact[norm] = concept_id
        self.labels.append(norm)
        self.label_ids.append(concept_id)
        self.surface.add((concept_id, label))
        self.canonical[concept_id] = (label, norm)

    def add_alias(self, norm: str, concept_id: int, alias: str) -> None:
        self.exact.setdefault(norm, concept_id)
        self.surface.add((concept_id, alias))

    def find(self, norm: str) -> tuple[int, str] | None:
        """(concept id, how) for a normalised label: 'exact' or 'fuzzy'; None if new."""
        if norm in self.exact:
            return self.exact[norm], "exact"
        if len(norm) < 5 or not self.labels or self.threshold > 100:
            return None
        match = process.extractOne(norm, self.labels, scorer=fuzz.token_sort_ratio,
                                   score_cutoff=self.threshold)
        if match is None:
            return None
        # "Type 1 diabetes" and "Type 2 diabetes" are close strings but distinct concepts.
        if _digits(match[0]) != _digits(norm):
            return None
        return self.label_ids[match[2]], "fuzzy"
