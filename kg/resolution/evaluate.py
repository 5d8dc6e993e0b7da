"""`kg eval resolve FILE`: cluster a benchmark's mentions and score them against the gold.

The file is JSON Lines, one mention a line: {"id": "m1", "text": "M. Curie", "type": "person",
"cluster": "marie-curie", "context": ["radium", "Sorbonne"]} (type and context optional).
Scores: pairwise precision/recall/F1 over pairs of mentions put together, and B-cubed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from itertools import combinations
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kg.errors import NotFoundError, UsageError
from kg.matching.candidates import Entity, entity
from kg.matching.decide import Band, Thresholds, group
from kg.resolution.passes import score_pairs
from kg.text import normalise_label

Judge = Callable[[Entity, Entity], bool | None]  # yes / no / unsure for a grey-zone pair
Clusters = list[frozenset[str]]


class Mention(BaseModel):
    id: str
    text: str
    cluster: str
    type: str | None = None
    context: list[str] = []


def load_mentions(path: Path) -> list[Mention]:
    if not path.is_file():
        raise NotFoundError(f"no benchmark file {str(path)!r}; build one with "
                            "`python benchmarks/resolution/build_set.py`")
    mentions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            mentions.append(Mention.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise UsageError(f"{path}:{number}: not a mention line ({first}); expected "
                             '{"id": ..., "text": ..., "cluster": ...}') from None
    if len({m.id for m in mentions}) != len(mentions):
        raise UsageError(f"{path}: mention ids repeat; give each line its own id")
    if not mentions:
        raise UsageError(f"{path}: no mentions")
    return mentions


def cluster(mentions: list[Mention], thresholds: Thresholds,
            judge: Judge | None = None) -> tuple[Clusters, dict[str, int]]:
    """Mentions grouped the way `kg resolve` groups concepts: each mention a concept of one
    spelling; its context words stand for its neighbours."""
    words: dict[str, int] = {}
    entities = {}
    ids = {}
    for number, m in enumerate(mentions, 1):
        context = [words.setdefault(normalise_label(w), -len(words) - 1) for w in m.context]
        entities[number] = entity(number, m.text, m.type, [normalise_label(m.text)], context)
        ids[number] = m.id
    pairs = score_pairs(entities)
    accepted = [p for p in pairs if thresholds.band(p.score) is Band.MERGE]
    grey = [p for p in pairs if thresholds.band(p.score) is Band.REVIEW]
    calls = 0
    if judge is not None:
        for p in grey:
            calls += 1
            if judge(p.a, p.b):
                accepted.append(p)
    grouped = group(entities, accepted)
    together = {i for c in grouped for i in c}
    clusters = [frozenset(ids[i] for i in c) for c in grouped]
    clusters += [frozenset({ids[i]}) for i in entities if i not in together]
    return clusters, {"candidates": len(pairs), "grey": len(grey), "judge_calls": calls}


def _pairs(clusters: Iterable[frozenset[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for c in clusters for p in combinations(sorted(c), 2)}


def _prf(p: float, r: float) -> dict[str, float]:
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


def pairwise(predicted: Clusters, gold: Clusters) -> dict[str, float]:
    pp, gp = _pairs(predicted), _pairs(gold)
    hit = len(pp & gp)
    return _prf(hit / len(pp) if pp else 1.0, hit / len(gp) if gp else 1.0)


def bcubed(predicted: Clusters, gold: Clusters) -> dict[str, float]:
    pred_of = {m: c for c in predicted for m in c}
    gold_of = {m: c for c in gold for m in c}
    mentions = list(gold_of)
    p = sum(len(pred_of[m] & gold_of[m]) / len(pred_of[m]) for m in mentions) / len(mentions)
    r = sum(len(pred_of[m] & gold_of[m]) / len(gold_of[m]) for m in mentions) / len(mentions)
    return _prf(p, r)


def gold_clusters(mentions: list[Mention]) -> Clusters:
    by: dict[str, set[str]] = {}
    for m in mentions:
        by.setdefault(m.cluster, set()).add(m.id)
    return [frozenset(c) for c in by.values()]


def score_clusters(mentions: list[Mention], predicted: Clusters) -> dict[str, Any]:
    gold = gold_clusters(mentions)
    return {"mentions": len(mentions), "gold_clusters": len(gold),
            "predicted_clusters": len(predicted),
            "pairwise": pairwise(predicted, gold), "bcubed": bcubed(predicted, gold)}


def evaluate(path: Path, thresholds: Thresholds, judge: Judge | None = None) -> dict[str, Any]:
    """Cluster a benchmark file's mentions and score them; grey-zone pairs stay apart unless a
    judge says yes."""
    mentions = load_mentions(path)
    predicted, stats = cluster(mentions, thresholds, judge)
    per_1000 = round(1000 * stats["grey"] / len(mentions), 1)
    return {**score_clusters(mentions, predicted), **stats,
            "grey_per_1000_mentions": per_1000,
            "thresholds": {"high": thresholds.high, "low": thresholds.low}}
