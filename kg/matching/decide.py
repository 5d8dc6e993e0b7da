"""Three bands and order-free grouping.

Conflict rule (`group`): two concepts known to be distinct (`candidates.distinct`: incompatible
types, other numbers, another given name before one surname) never end in one group, nor do two
a person split apart (an undone or kept-apart merge). Concretely:
1. an ambiguous link is dropped: when a concept's accepted partners include two that are
   distinct from each other ('J. Smith' ~ 'John Smith' and 'J. Smith' ~ 'Jane Smith'), its
   links to both go, and it stays alone (for review) rather than join the first one met;
2. the remaining links join components strongest first (score, then labels, then ids); a link
   whose two components hold a distinct or split-apart cross pair is dropped (the weaker
   link loses), so a chain 'Paris' (place) ~ 'paris' (unknown) ~ 'Paris' (person) never makes
   one concept.
The outcome depends only on the set of scored pairs, never on the order concepts arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kg.errors import UsageError
from kg.matching.candidates import Entity, distinct


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


def unambiguous(accepted: list[Pair]) -> list[Pair]:
    """The accepted pairs without ambiguous links (step 1 of the conflict rule)."""
    partners: dict[int, list[Entity]] = {}
    for p in accepted:
        partners.setdefault(p.a.id, []).append(p.b)
        partners.setdefault(p.b.id, []).append(p.a)
    torn: set[tuple[int, int]] = set()  # (concept, partner) links to drop
    for i, others in partners.items():
        for n, y in enumerate(others):
            for z in others[n + 1:]:
                if y.id != z.id and distinct(y, z):
                    torn.update({(i, y.id), (i, z.id)})
    return [p for p in accepted if (p.a.id, p.b.id) not in torn
            and (p.b.id, p.a.id) not in torn]


def group(entities: dict[int, Entity], accepted: list[Pair],
          apart: frozenset[frozenset[int]] = frozenset()) -> list[list[int]]:
    """Connected components over accepted pairs under the conflict rule (see above); each
    component of two or more ids, sorted, the components sorted by their first id."""
    linked = sorted({i for p in accepted for i in (p.a.id, p.b.id)})  # the rest stay alone
    parent = {i: i for i in linked}
    members: dict[int, list[int]] = {i: [i] for i in linked}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def clash(ra: int, rb: int) -> bool:
        return any(distinct(entities[x], entities[y]) or frozenset((x, y)) in apart
                   for x in members[ra] for y in members[rb])

    for pair in sorted(unambiguous(accepted),
                       key=lambda p: (-p.score, *sorted((p.a.label, p.b.label)),
                                      p.a.id, p.b.id)):
        ra, rb = root(pair.a.id), root(pair.b.id)
        if ra == rb or clash(ra, rb):
            continue  # the weaker link is dropped
        keep, gone = min(ra, rb), max(ra, rb)
        parent[gone] = keep
        members[keep] += members.pop(gone)
    components: dict[int, list[int]] = {}
    for i in linked:
        components.setdefault(root(i), []).append(i)
    return sorted((c for c in components.values() if len(c) > 1), key=lambda c: c[0])
