"""One score per candidate pair: kept in `kg.matching.scoring`, re-exported here."""

from kg.matching.scoring import score

__all__ = ["score"]
