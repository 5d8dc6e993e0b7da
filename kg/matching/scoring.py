"""One score per candidate pair, from its signals (what both ingestion and `kg resolve` compare
with the bands)."""

from __future__ import annotations

# How much a rule-based match is worth on its own: an acronym or initials match is strong
# but not proof ("MIT" is also an acronym of "Massachusetts Institute of Toys").
ACRONYM = 0.93
INITIALS = 0.93
TYPO = 0.92  # one letter dropped, doubled or swapped in a long name
CONTAINED = 0.82  # one name inside the other: for the judge or a person to decide
TOKENS = 0.9  # the same words in another order or number ('law of demand' / 'demand law')
NEIGHBOUR_BONUS = 0.06  # at most, when both concepts have the same neighbours


def score(signals: dict[str, float]) -> float:
    """In [0, 1]: 0 for incompatible types (same-name concepts of different kinds stay
    apart), 1 for an equal folded name, else the best string evidence plus a little for
    shared neighbours."""
    if not signals["type_ok"]:
        return 0.0
    if signals["exact"]:
        return 1.0
    char = signals["char"]
    if signals["contained"]:
        # 'l boltzmann' / 'boltzmann' is close as characters, but a missing word is not a typo.
        char = min(char, CONTAINED)
    best = max(char, ACRONYM * signals["acronym"], INITIALS * signals["initials"],
               TYPO * signals["typo"], CONTAINED * signals["contained"])
    # Word-order and extra-word variants ('law of demand' / 'demand law') show in the tokens.
    best = max(best, TOKENS * signals["token"]) if signals["token"] >= 0.999 else best
    return round(min(1.0, best + NEIGHBOUR_BONUS * signals["neighbours"]), 4)
