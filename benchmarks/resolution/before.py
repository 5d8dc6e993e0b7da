"""The ingest-time resolver as it was before issue #24 (kg/extraction/resolve.py at the commit
that opened it): normalised label and aliases, then one rapidfuzz threshold. Kept only to
measure against; nothing in kg uses it."""

from __future__ import annotations

import re

from rapidfuzz import fuzz, process

MAX_BLOCK = 500


def _blocks(norm: str) -> set[str]:
    tokens = [t for t in norm.split() if len(t) >= 3]
    return {*tokens, *(f"^{t[:3]}" for t in tokens)}


def _token_sorted(norm: str) -> str:
    return " ".join(sorted(norm.split()))


def _digits(text: str) -> list[str]:
    return re.findall(r"\d+", text)


class OldConceptIndex:
    """In-memory lookup of normalised spellings -> concept id, with a fuzzy fallback.

    A cache of the database kept by one writer: `GraphWriter` brings it up to date inside the
    graph lock before each commit, so it holds what every writer has committed.
    """

    def __init__(self, threshold: float = 92.0) -> None:
        self.threshold = threshold
        self.exact: dict[str, int] = {}
        # Fuzzy candidates: every spelling of every concept (label and aliases, so that a
        # concept is found the same way whichever of its spellings became the label), stored
        # token-sorted (ratio() on those equals token_sort_ratio() without re-sorting each one
        # per lookup), reached through blocks keyed by token and by 3-letter token prefix, so a
        # lookup compares a handful of spellings instead of all. A typo variant shares a key.
        # Each block keeps its positions (ascending) and, alongside, their keys: a lookup hands
        # a block's keys to rapidfuzz as they are, with no list to build per lookup.
        self.keys: list[str] = []
        self.key_ids: list[int] = []
        self.blocks: dict[str, list[int]] = {}
        self.block_keys: dict[str, list[str]] = {}
        # Surface forms already recorded per concept: the canonical label and every alias.
        self.surface: set[tuple[int, str]] = set()
        self.canonical: dict[int, tuple[str, str]] = {}  # id -> (label, normalised label)


    def add_label(self, norm: str, concept_id: int, label: str) -> None:
        """Record (or change) a concept's canonical label."""
        self._add_key(norm, concept_id)
        self.exact[norm] = concept_id
        self.surface.add((concept_id, label))
        self.canonical[concept_id] = (label, norm)

    def add_alias(self, norm: str, concept_id: int, alias: str) -> None:
        self._add_key(norm, concept_id)
        self.exact.setdefault(norm, concept_id)
        self.surface.add((concept_id, alias))

    def _add_key(self, norm: str, concept_id: int) -> None:
        if self.exact.get(norm) == concept_id:
            return  # this spelling of this concept is a candidate already
        position = len(self.keys)
        key = _token_sorted(norm)
        self.keys.append(key)
        self.key_ids.append(concept_id)
        for block in _blocks(norm):
            self.blocks.setdefault(block, []).append(position)
            self.block_keys.setdefault(block, []).append(key)

    def find(self, norm: str) -> tuple[int, str] | None:
        """(concept id, how) for a normalised label: 'exact' or 'fuzzy'; None if new."""
        if norm in self.exact:
            return self.exact[norm], "exact"
        if len(norm) < 5 or self.threshold > 100:
            return None
        query = _token_sorted(norm)
        found = [b for b in _blocks(norm) if b in self.blocks]
        if not found:
            return None
        # Blocks as common as a stopword ("agent", "the") add nothing but cost.
        searched = [b for b in found if len(self.blocks[b]) <= MAX_BLOCK] or [
            min(found, key=lambda b: len(self.blocks[b]))]
        # The best score over the blocks' union, the earliest spelling among equals: each
        # block's best is its earliest, so this is the best of the union, block by block.
        best: tuple[float, int, str] | None = None  # (score, -position, key)
        for block in searched:
            match = process.extractOne(query, self.block_keys[block], scorer=fuzz.ratio,
                                       score_cutoff=self.threshold)
            if match is not None:
                hit = (match[1], -self.blocks[block][match[2]], match[0])
                if best is None or hit[:2] > best[:2]:
                    best = hit
        if best is None:
            return None
        # "Type 1 diabetes" and "Type 2 diabetes" are close strings but distinct concepts.
        if _digits(best[2]) != _digits(query):
            return None
        return self.key_ids[-best[1]], "fuzzy"

