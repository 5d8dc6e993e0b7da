"""Candidate pairs and their signals: which concepts might be one, and why.

Blocking keeps it cheap: two concepts are compared only when they share a key (a folded name,
a token, a token's 3-letter prefix, a last name, an acronym), never all against all.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

from rapidfuzz import fuzz
from rapidfuzz.distance import DamerauLevenshtein, Indel

from kg.matching.scoring import ACRONYM, CONTAINED, INITIALS, TOKENS, TYPO

MAX_BLOCK = 200  # a key shared by more concepts than this is a stopword: it blocks nothing
SLACK = 1e-3  # signals are rounded to 4 places: bounds keep what rounding could lift
TITLES = frozenset({"dr", "prof", "professor", "doctor", "mr", "mrs", "ms", "sir", "lady",
                    "lord", "saint", "st", "rev", "president", "king", "queen"})
# Words for a person that are not a given name ('Madame Curie' is Marie Curie).
HONORIFICS = frozenset({*TITLES, "madame", "mme", "mademoiselle", "monsieur", "herr", "frau",
                        "miss", "mister", "general", "captain", "uncle", "aunt"})
UNLIKE = 60  # two words less alike than this (rapidfuzz ratio) are two names
FILLERS = frozenset({"of", "and", "the", "for", "de", "du", "la", "le", "von", "van", "der", "&"})
# Spellings a transliteration writes two ways; folded to one before comparing.
NON_WORD = re.compile(r"[^\w]+")
TRANSLITERATIONS = (("ae", "a"), ("oe", "o"), ("ue", "u"), ("ph", "f"), ("kh", "h"),
                    ("tch", "ch"), ("y", "i"))


@lru_cache(maxsize=1 << 18)
def fold(norm: str) -> str:
    """A normalised label without accents, and without titles before a full name: 'dr marie
    curie' -> 'marie curie'. Before one word a title stays ('st louis', 'professor moriarty'):
    often part of the name, else left for the grey zone to judge."""
    if norm.isascii():  # most names: nothing to decompose (and no combining marks)
        text = norm
    else:
        text = "".join(c for c in unicodedata.normalize("NFKD", norm)
                       if not unicodedata.combining(c)).replace("ß", "ss")
    # What normalise_label writes (letters, digits, spaces) needs no pattern.
    tokens = (text if text.replace(" ", "").isalnum() else NON_WORD.sub(" ", text)).split()
    if TITLES.isdisjoint(tokens):
        return " ".join(tokens)
    kept = [t for t in tokens if t not in TITLES]
    return " ".join(kept if len(kept) >= 2 else tokens)


# Per-name helpers are cached: a pass meets each name in many pairs.
@lru_cache(maxsize=1 << 18)
def _translit(name: str) -> str:
    for a, b in TRANSLITERATIONS:
        name = name.replace(a, b)
    return name


@lru_cache(maxsize=1 << 18)
def acronym(name: str) -> str | None:
    """'international business machines' -> 'ibm'; None for a name of one word."""
    if " " not in name:
        return None
    tokens = [t for t in name.split() if t not in FILLERS]
    return "".join(t[0] for t in tokens) if len(tokens) >= 2 else None


@dataclass(frozen=True)
class Entity:
    """One concept as resolution sees it: its folded names, type and neighbours."""

    id: int
    label: str
    type: str | None
    names: frozenset[str]  # folded label and aliases
    neighbours: frozenset[int] = field(default_factory=frozenset)


def entity(id: int, label: str, type: str | None, norms: Iterable[str],
           neighbours: Iterable[int] = ()) -> Entity:
    names = frozenset(f for f in (fold(n) for n in norms) if f)
    return Entity(id, label, kind(type), names,
                  frozenset(neighbours))


def kind(type_: str | None) -> str | None:
    """A type as compared: trimmed and case-folded; None for none."""
    return (type_ or "").strip().casefold() or None


def qualified(label: str, type_: str | None) -> str | None:
    """The type in a disambiguated label's brackets ('Paris (place)' of a place), else None."""
    k = kind(type_)
    if k is None or not label.casefold().endswith(f" ({k})"):
        return None
    return label[-len(k) - 1:-1]


def qualify(label: str, type_: str) -> str:
    """'Paris', 'place' -> 'Paris (place)': a same-name concept's label (labels are unique)."""
    return f"{label} ({type_.strip()})"[:200]


def compatible(a: str | None, b: str | None) -> bool:
    """Types allow one concept: equal, or one of them unknown (made before ontologies)."""
    return a is None or b is None or a == b


@lru_cache(maxsize=1 << 18)
def blocking_keys(name: str) -> frozenset[str]:
    tokens = name.split()
    keys = {"=" + name, "=t:" + _translit(name)}
    for t in tokens:
        if len(t) >= 3 and t not in FILLERS:
            keys.add("w:" + t)
            keys.add("p:" + t[:3])
        if len(t) >= 6:  # a typo early in a word ('enntropy') keeps its ending
            keys.add("s:" + t[-4:])
    if len(tokens) >= 2:
        keys.add("l:" + tokens[-1])
    short = acronym(name)
    if short is not None and len(short) >= 2:
        keys.add("a:" + short)
    if len(tokens) == 1 and 2 <= len(name) <= 6:
        keys.add("a:" + name)
    return frozenset(keys)


def candidate_pairs(entities: Iterable[Entity],
                    new: set[int] | None = None) -> list[tuple[Entity, Entity]]:
    """Pairs sharing a blocking key, lower id first, sorted; with `new`, only pairs that touch
    a new entity (an incremental pass)."""
    entities = list(entities)
    # An incremental pass needs only the blocks a new entity is in.
    wanted = None if new is None else {
        k for e in entities if e.id in new for name in e.names for k in blocking_keys(name)}
    blocks: dict[str, list[Entity]] = {}
    for e in entities:
        keys = (blocking_keys(next(iter(e.names))) if len(e.names) == 1
                else {k for name in e.names for k in blocking_keys(name)})
        for key in keys if wanted is None else keys & wanted:
            blocks.setdefault(key, []).append(e)
    seen: set[tuple[int, int]] = set()
    for key, members in blocks.items():
        exact = key.startswith(("=", "a:"))
        if len(members) < 2 or (len(members) > MAX_BLOCK and not exact):
            continue
        if new is not None:
            fresh = [m for m in members if m.id in new]
            if not fresh:
                continue
            for f in fresh:
                fid = f.id
                seen.update((fid, m.id) if fid < m.id else (m.id, fid)
                            for m in members if m.id != fid)
        else:
            seen.update((a.id, b.id) if a.id < b.id else (b.id, a.id)
                        for a, b in combinations(members, 2))
    by_id = {e.id: e for e in entities}
    return [(by_id[a], by_id[b]) for a, b in sorted(seen)]


@lru_cache(maxsize=1 << 18)
def _digits(name: str) -> tuple[str, ...]:
    return tuple(re.findall(r"\d+", name))


@lru_cache(maxsize=1 << 18)
def _sorted(name: str) -> str:
    return " ".join(sorted(name.split()))


def block_name(name: str) -> tuple[str, str]:
    """A name's words sorted, and that transliterated: the two forms character similarity
    compares (what ingestion's prefilter hands to rapidfuzz)."""
    ordered = _sorted(name)
    return ordered, _translit(ordered)


def _char(x: str, y: str) -> float:
    """Character similarity in [0, 1]: the best of edit-distance ratios, on token-sorted
    spellings; 0 when the numbers differ ('type 1 diabetes' vs 'type 2 diabetes')."""
    if _digits(x) != _digits(y):
        return 0.0
    sx, sy = _sorted(x), _sorted(y)
    best = fuzz.ratio(sx, sy) / 100
    if best >= 0.6:  # far below that, the edit distances cannot reach the review band
        best = max(best, DamerauLevenshtein.normalized_similarity(sx, sy),
                   DamerauLevenshtein.normalized_similarity(_translit(sx), _translit(sy)))
    # A short name is one or two letters from another word: not evidence of much.
    if min(len(x), len(y)) < 5:
        best = min(best, 0.8)
    return best


def is_initials(x: str, y: str) -> bool:
    """'m curie' ~ 'marie curie', 'j r r tolkien' ~ 'john ronald reuel tolkien'."""
    a, b = x.split(), y.split()
    if len(a) != len(b) or len(a) < 2 or a[-1] != b[-1]:
        return False
    initial = False
    for s, t in zip(a[:-1], b[:-1], strict=True):
        if s == t:
            continue
        if (len(s) == 1 and t.startswith(s)) or (len(t) == 1 and s.startswith(t)):
            initial = True
            continue
        return False
    return initial


def _slip(x: str, y: str) -> bool:
    """One letter dropped, doubled or two swapped in a name of 6 letters or more: a typo.
    A changed letter is not one ('Iceland' / 'Ireland')."""
    if min(len(x), len(y)) < 6 or _digits(x) != _digits(y):
        return False
    if DamerauLevenshtein.distance(x, y) != 1:
        return False
    return len(x) != len(y) or sorted(x) == sorted(y)


def _contained(x: str, y: str) -> bool:
    """One name's words end or begin the other's: 'boltzmann' / 'ludwig boltzmann',
    'second law' / 'second law of thermodynamics'. Often the same thing, often not ('coral' /
    'coral reef'): grey-zone evidence."""
    a, b = x.split(), y.split()
    if len(a) > len(b):
        a, b = b, a
    if len(a) == len(b) or not a or all(t in FILLERS for t in a):
        return False
    return b[-len(a):] == a or b[:len(a)] == a


def is_acronym(x: str, y: str) -> bool:
    if " " in x or len(x) < 2:
        return False
    return acronym(y) == x


@lru_cache(maxsize=1 << 16)
def _honorific(word: str) -> bool:
    """A title, or one with a typo ('maadame')."""
    return word in HONORIFICS or (len(word) >= 5 and any(
        DamerauLevenshtein.distance(word, h, score_cutoff=1) <= 1 for h in HONORIFICS))


def _other_given_name(x: str, y: str) -> bool:
    """'john smith' / 'jane smith', 'first law of thermodynamics' / 'second law of ...': as
    many words, the same last one, and before it a full word each side (no initial, prefix or
    title) unlike the other (not a typo or another transliteration of one name)."""
    a, b = x.split(), y.split()
    if len(a) != len(b) or len(a) < 2 or a[-1] != b[-1]:
        return False
    for s, t in zip(a[:-1], b[:-1], strict=True):
        if s == t or min(len(s), len(t)) < 2 or s.startswith(t) or t.startswith(s):
            continue
        if _honorific(s) or _honorific(t):
            continue
        # Spellings of one name ('fyodor' / 'fedor', two typos of 'sherlock') stay alike.
        if (fuzz.ratio(_translit(s), _translit(t)) < UNLIKE
                and DamerauLevenshtein.distance(s, t) > 1):
            return True
    return False


def distinct(a: Entity, b: Entity) -> bool:
    """Known to be two things, whatever a score says: incompatible types, other numbers
    ('type 1 diabetes' / 'type 2 diabetes'), or another given name before one surname ('john
    smith' / 'jane smith'), for any of their names."""
    if not compatible(a.type, b.type):
        return True
    for x in a.names:
        for y in b.names:
            dx, dy = _digits(x), _digits(y)
            if dx and dy and dx != dy:
                return True
            if _other_given_name(x, y):
                return True
    return False


def plausible(a: Entity, b: Entity) -> bool:
    """A cheap first look (one C call per pair of names): could any signal reach the review
    band? Most pairs that share only a prefix or a suffix cannot."""
    if not compatible(a.type, b.type):
        return False
    for x in a.names:
        for y in b.names:
            if fuzz.ratio(x, y, score_cutoff=55) or acronym(x) == y or acronym(y) == x:
                return True
            if fuzz.token_set_ratio(x, y, score_cutoff=99):
                return True  # one name's words are all in the other's
    return False


def may_reach(a: Entity, b: Entity, need: float) -> bool:
    """Could this pair's string evidence (its score before any bonus for shared neighbours)
    reach `need`? An upper bound from edit distances counted in C and the rules' fixed
    worths: a pair it rules out scores below `need` for certain, so a pass skips its signals."""
    for x in a.names:
        for y in b.names:
            ox, oy = _sorted(x), _sorted(y)
            # A ratio and a Damerau-Levenshtein similarity are both at most 1 - d / 2n, with
            # d the insertions and deletions between the two and n the longer length (one
            # edit is at most two of those). Equal names pass here too.
            for p, q in ((ox, oy), (_translit(ox), _translit(oy))):
                longer = max(len(p), len(q))
                if not longer or 1 - Indel.distance(p, q) / (2 * longer) >= need - SLACK:
                    return True
            if _translit(x) == _translit(y):
                return True
            if need <= CONTAINED + SLACK and _contained(x, y):
                return True
            if need <= TYPO + SLACK and _slip(x, y):
                return True
            if need <= max(ACRONYM, INITIALS) + SLACK and (
                    is_acronym(x, y) or is_acronym(y, x) or is_initials(x, y)):
                return True
            if need <= TOKENS + SLACK and set(x.split()) == set(y.split()):
                return True
    return False


def signals(a: Entity, b: Entity) -> dict[str, float]:
    """Every signal for one pair, each in [0, 1] (the best over both concepts' names)."""
    exact = char = token = acro = init = slip = inside = 0.0
    for x in a.names:
        for y in b.names:
            if x == y or _translit(x) == _translit(y):
                exact = 1.0
            char = max(char, _char(x, y))
            tx, ty = set(x.split()), set(y.split())
            token = max(token, len(tx & ty) / len(tx | ty))
            if is_acronym(x, y) or is_acronym(y, x):
                acro = 1.0
            if is_initials(x, y):
                init = 1.0
            if _slip(x, y):
                slip = 1.0
            if _contained(x, y):
                inside = 1.0
    union = a.neighbours | b.neighbours
    shared = len(a.neighbours & b.neighbours) / len(union) if union else 0.0
    return {"exact": exact, "char": round(char, 4), "token": round(token, 4),
            "acronym": acro, "initials": init, "typo": slip, "contained": inside,
            "neighbours": round(shared, 4),
            "type_ok": 1.0 if compatible(a.type, b.type) else 0.0}
