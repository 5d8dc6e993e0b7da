"""Candidate pairs and their signals: kept in `kg.matching.candidates` (ingestion uses them
too); re-exported here for the resolution pass's callers."""

from kg.matching.candidates import (
    MAX_BLOCK,
    Entity,
    acronym,
    blocking_keys,
    candidate_pairs,
    compatible,
    distinct,
    entity,
    fold,
    kind,
    plausible,
    qualified,
    qualify,
    signals,
)

__all__ = ["MAX_BLOCK", "Entity", "acronym", "blocking_keys", "candidate_pairs", "compatible",
           "distinct", "entity", "fold", "kind", "plausible", "qualified", "qualify",
           "signals"]
