"""The vocabulary of one ontology: loading it and normalising the types a model writes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz import fuzz, process
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db.models import Ontology, OntologyConceptType, OntologyRelationType
from kg.errors import NotFoundError
from kg.text import datatype_of, label_key, snake

SUFFIXES = ("ing", "es", "ed", "s")
CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # a word boundary in camelCase


def stem_word(word: str) -> str:
    """One lower-case word without its plural or tense ending: located -> locat."""
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def stem(name: str) -> str:
    """Tense/plural-insensitive key: causes, caused, causing, cause -> caus."""
    words = snake(CAMEL.sub("_", name)).split("_")  # isPartOf -> is_part_of
    if words and words[0] in ("is", "are", "was", "be", "being") and len(words) > 1:
        words = words[1:]
    return "_".join(stem_word(w) for w in words)


@dataclass(frozen=True)
class TypeInfo:
    id: int  # relationship_types.id: the graph's registry row of this name
    name: str
    category: str
    direction: str
    domain: str | None = None
    range: str | None = None
    description: str = ""

    @property
    def literal(self) -> str | None:
        """The literal kind of the range (string, number, date, year), None for a concept."""
        return datatype_of(self.range)


class Vocabulary:
    """Maps whatever a model wrote to a type of the ontology, or None (a proposal)."""

    def __init__(self, types: list[TypeInfo], fuzzy_threshold: float = 88.0, *,
                 concept_types: list[str] | None = None, ontology: str = "default",
                 revision: int = 1, mode: str = "open") -> None:
        self.types = {t.name: t for t in types}
        # Names come back as the ontology spells them; a model's spelling meets them by key
        # (first one wins on a clash: `kg ontology import` refuses clashes, records may not).
        self.by_key: dict[str, TypeInfo] = {}
        for t in types:
            self.by_key.setdefault(label_key(t.name), t)
        self.by_stem = {stem(t.name): t for t in reversed(types)}
        self.fuzzy_threshold = fuzzy_threshold
        self._stems = list(self.by_stem)
        self.concept_types = list(concept_types or [])
        self._concept_keys: dict[str, str] = {}
        for name in self.concept_types:
            self._concept_keys.setdefault(label_key(name), name)
        self.ontology = ontology
        self.revision = revision
        self.mode = mode  # strict: unknown types are errors; open: they become proposals

    @property
    def strict(self) -> bool:
        return self.mode == "strict"

    @classmethod
    def load(cls, session: Session, ontology: str = "default") -> Vocabulary:
        """The named ontology's types, as extraction offers them to a model."""
        row = session.scalar(select(Ontology).where(Ontology.name == ontology))
        if row is None:
            raise NotFoundError(f"no ontology named {ontology!r}; see `kg ontology list` or "
                                "import one with `kg ontology import FILE`")
        relations = session.scalars(select(OntologyRelationType).where(
            OntologyRelationType.ontology_id == row.id).order_by(OntologyRelationType.id))
        concepts = session.scalars(select(OntologyConceptType.name).where(
            OntologyConceptType.ontology_id == row.id).order_by(OntologyConceptType.id))
        return cls([TypeInfo(r.type_id, r.name, r.category, r.direction, r.domain, r.range,
                             r.description) for r in relations],
                   concept_types=list(concepts), ontology=row.name, revision=row.revision,
                   mode=row.mode)

    def normalise_concept_type(self, raw: str) -> str | None:
        """The ontology's concept type a model meant (any case or separators), else None."""
        return self._concept_keys.get(label_key(raw))

    def concept_rank(self, name: str) -> int:
        """The type's place in the ontology (ties between types go to the earlier one)."""
        try:
            return self.concept_types.index(name)
        except ValueError:
            return len(self.concept_types)

    def normalise(self, raw: str) -> TypeInfo | None:
        found = self.by_key.get(label_key(raw))
        if found is not None:
            return found
        stemmed = stem(raw)
        if stemmed in self.by_stem:
            return self.by_stem[stemmed]
        if len(stemmed) >= 4:
            match = process.extractOne(stemmed, self._stems, scorer=fuzz.ratio,
                                       score_cutoff=self.fuzzy_threshold)
            if match:
                return self.by_stem[match[0]]
        return None

    def kinds(self) -> dict[str, str | None]:
        """Each relation's range kind: a literal's (string, number, date, year), `concept`
        for a concept type, None when open: what grounding needs to pair relations with ends.
        Empty when no relation has a range (the default ontology): nothing to pair by."""
        kinds = {t.name: t.literal or ("concept" if t.range else None)
                 for t in self.types.values()}
        return kinds if any(kinds.values()) else {}

    def by_category(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for t in self.types.values():
            grouped.setdefault(t.category, []).append(t.name)
        return grouped
