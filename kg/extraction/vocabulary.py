"""The relationship vocabulary: loading it and normalising the types a model writes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz import fuzz, process
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db.models import RelationshipType

SUFFIXES = ("ing", "es", "ed", "s")


def snake(raw: str) -> str:
    """'Is Part Of' / 'is-part-of' -> 'is_part_of'."""
    return re.sub(r"[^a-z0-9]+", "_", raw.casefold()).strip("_")[:64]


def _stem_word(word: str) -> str:
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def stem(name: str) -> str:
    """Tense/plural-insensitive key: causes, caused, causing, cause -> caus."""
    words = snake(name).split("_")
    if words and words[0] in ("is", "are", "was", "be", "being") and len(words) > 1:
        words = words[1:]
    return "_".join(_stem_word(w) for w in words)


@dataclass(frozen=True)
class TypeInfo:
    id: int
    name: str
    category: str
    direction: str


class Vocabulary:
    """Maps whatever a model wrote to a vocabulary type, or None (a proposal)."""

    def __init__(self, types: list[TypeInfo], fuzzy_threshold: float = 88.0) -> None:
        self.types = {t.name: t for t in types}
        self.by_stem = {stem(t.name): t for t in types}
        self.fuzzy_threshold = fuzzy_threshold
        self._stems = list(self.by_stem)

    @classmethod
    def load(cls, session: Session) -> Vocabulary:
        rows = session.scalars(select(RelationshipType).order_by(RelationshipType.id))
        return cls([TypeInfo(r.id, r.name, r.category, r.direction) for r in rows])

    def normalise(self, raw: str) -> TypeInfo | None:
        key = snake(raw)
        if key in self.types:
            return self.types[key]
        stemmed = stem(key)
        if stemmed in self.by_stem:
            return self.by_stem[stemmed]
        if len(stemmed) >= 4:
            match = process.extractOne(stemmed, self._stems, scorer=fuzz.ratio,
                                       score_cutoff=self.fuzzy_threshold)
            if match:
                return self.by_stem[match[0]]
        return None

    def by_category(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for t in self.types.values():
            grouped.setdefault(t.category, []).append(t.name)
        return grouped
