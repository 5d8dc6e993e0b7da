"""Bands and order-free grouping (with its conflict rule): kept in `kg.matching.decide`,
re-exported here."""

from kg.matching.decide import Band, Pair, Thresholds, group, unambiguous

__all__ = ["Band", "Pair", "Thresholds", "group", "unambiguous"]
