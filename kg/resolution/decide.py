"""Three bands and order-free grouping.

Conflict rule: accepted pairs join components strongest first (score, then ids); a pair whose
two components hold concepts of incompatible types, or two concepts a person split apart
(an undone merge), is dropped, so a chain 'Paris' (place) ~ 'paris' (unknown) ~ 'Paris'
(person) never makes one concept. The outcome depends only on the
set of scored pairs, never on the order concepts arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kg.errors import UsageError
from kg.resolution.candidates import Entity, compatible


class Band(StrEnum):
    MERGE = "merge"
    REVIEW = "review"
    APART = "apart"


@dataclass(frozen=True)
class Thresholds:
    high: float = 0.9
    low: float = 0.8

    def __post_init__(self) -> None:
        for name, value in (("high", self.high), ("low", self.low)):
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"--{name} must be between 0 and 1 (got {value})")
        if self.low > self.high:
            raise UsageError(f"--low ({self.low}) is above --high ({self.high}); "
                             "give a low threshold at most the high one")

    def band(self, score: float) -> Band:
        if score >= self.high:
            return Band.MERGE
        if score >= self.low:
            return Band.REVIEW
        return Band.APART


@dataclass(frozen=True)
class Pair:
    a: Entity
    b: Entity
    score: float
    signals: dict[str, float]


def group(entities: dict[int, Entity], accepted: list[Pair],
          apart: frozenset[frozenset[int]] = frozenset()) -> list[list[int]]:
    """Connected components over accepted pairs (see the conflict rule above); each component
    of two or more ids, sorted, the components sorted by their first id."""
    parent = {i: i for i in entities}
    types: dict[int, set[str]] = {i: {e.type} if e.type else set() for i, e in entities.items()}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in sorted(accepted, key=lambda p: (-p.score, p.a.id, p.b.id)):
        ra, rb = root(pair.a.id), root(pair.b.id)
        if ra == rb:
            continue
        if not all(compatible(x, y) for x in types[ra] for y in types[rb]):
            continue  # the conflict rule: the weaker link is dropped
        if any({root(x) for x in split if x in parent} == {ra, rb} for split in apart):
            continue
        keep, gone = min(ra, rb), max(ra, rb)
        parent[gone] = keep
        types[keep] |= types.pop(gone)
    components: dict[int, list[int]] = {}
    for i in sorted(entities):
        components.setdefault(root(i), []).append(i)
    return sorted((c for c in components.values() if len(c) > 1), key=lambda c: c[0])
