"""Resolution figures: today's ingest-time resolver vs kg.resolution on the benchmark set.

    python -m benchmarks.resolution.measure [SET] [--misses N] [--scale N]

Rows: the ConceptIndex of kg/extraction/resolve.py (label, aliases, fuzzy 92, in arrival
order), the signals without a model (grey zone left apart), and the signals with a judge that
answers the gold (the ceiling a perfect model in the grey zone reaches). Then: equal clusters
for 3 arrival orders, and the time of an incremental pass (1,000 new concepts among N).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from benchmarks.resolution.build_set import OUT, build
from kg.extraction.resolve import ConceptIndex
from kg.resolution.candidates import Entity, entity
from kg.resolution.decide import Band, Thresholds, group
from kg.resolution.evaluate import Clusters, Mention, cluster, load_mentions, score_clusters
from kg.resolution.passes import score_pairs
from kg.text import normalise_label


def baseline(mentions: list[Mention]) -> Clusters:
    """What ingestion does today: each mention looked up (exact, then fuzzy >= 92) in
    arrival order; a hit adds the spelling as an alias, a miss makes a new concept."""
    index = ConceptIndex()
    members: dict[int, set[str]] = {}
    for number, m in enumerate(mentions):
        norm = normalise_label(m.text)
        if not norm:
            members[-number - 1] = {m.id}
            continue
        hit = index.find(norm)
        if hit is None:
            index.add_label(norm, number, m.text)
            members[number] = {m.id}
        else:
            index.add_alias(norm, hit[0], m.text)
            members[hit[0]].add(m.id)
    return [frozenset(c) for c in members.values()]


def _row(name: str, mentions: list[Mention], predicted: Clusters, calls: int) -> str:
    s = score_clusters(mentions, predicted)
    p, b = s["pairwise"], s["bcubed"]
    per_1000 = round(1000 * calls / len(mentions), 1)
    return (f"| {name} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | "
            f"{b['f1']:.3f} | {s['predicted_clusters']} | {per_1000} |")


def _scale(n: int, new: int, thresholds: Thresholds) -> str:
    """An incremental pass's in-memory work: n existing concepts, `new` changed ones."""
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ne", "su", "ra", "ti", "vo", "ze", "pa", "do", "gu"]
    names: set[str] = set()
    while len(names) < n:
        names.add(" ".join("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
                           for _ in range(rng.randint(1, 3))))
    entities: dict[int, Entity] = {i: entity(i, name, None, [name])
                                   for i, name in enumerate(sorted(names), 1)}
    started = time.perf_counter()
    fresh = set(range(n - new + 1, n + 1))
    pairs = score_pairs(entities, fresh)
    accepted = [p for p in pairs if thresholds.band(p.score) is Band.MERGE]
    group(entities, accepted)
    took = time.perf_counter() - started
    return (f"incremental pass, {new} new among {n} concepts: {took:.2f} s "
            f"({len(pairs)} candidate pairs; load from the database not included)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resolution.measure")
    parser.add_argument("set", nargs="?", type=Path, default=OUT)
    parser.add_argument("--misses", type=int, default=0, help="print N missed gold pairs")
    parser.add_argument("--scale", type=int, default=100_000)
    args = parser.parse_args()
    if args.set == OUT and not OUT.exists():
        OUT.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in build()),
                       encoding="utf-8")
    mentions = load_mentions(args.set)
    thresholds = Thresholds()
    gold_of = {m.text: m.cluster for m in mentions}

    def oracle(a: Entity, b: Entity) -> bool:
        return gold_of[a.label] == gold_of[b.label]

    print(f"{len(mentions)} mentions, {len({m.cluster for m in mentions})} gold clusters; "
          f"thresholds high {thresholds.high}, low {thresholds.low}\n")
    print("| resolver | pairwise P | pairwise R | pairwise F1 | B-cubed F1 | clusters "
          "| model calls / 1000 mentions |")
    print("|---|---|---|---|---|---|---|")
    print(_row("today: ConceptIndex (fuzzy 92)", mentions, baseline(mentions), 0))
    signals_only, stats = cluster(mentions, thresholds)
    print(_row("signals, no model (grey zone apart)", mentions, signals_only, 0))
    ceiling, stats = cluster(mentions, thresholds, judge=oracle)
    print(_row("signals + judge answering the gold (ceiling)", mentions, ceiling,
               stats["judge_calls"]))

    orders = []
    for seed in (1, 2, 3):
        shuffled = mentions[:]
        random.Random(seed).shuffle(shuffled)
        orders.append((set(cluster(shuffled, thresholds)[0]), set(baseline(shuffled))))
    print(f"\n3 arrival orders: kg.resolution equal clusters: "
          f"{all(o[0] == orders[0][0] for o in orders)}; today's resolver equal clusters: "
          f"{all(o[1] == orders[0][1] for o in orders)}")
    if args.misses:
        text = {m.id: m.text for m in mentions}
        found = {frozenset((x, y)) for c in signals_only for x in c for y in c if x != y}
        shown = 0
        for m in mentions:
            for n in mentions:
                if m.id < n.id and m.cluster == n.cluster and frozenset((m.id, n.id)) not in found:
                    print(f"missed: {text[m.id]!r} ~ {text[n.id]!r}")
                    shown += 1
                    if shown >= args.misses:
                        break
            if shown >= args.misses:
                break
        cluster_of = {m.id: m.cluster for m in mentions}
        wrong = sorted({tuple(sorted((text[x], text[y]))) for c in signals_only for x in c
                        for y in c if x < y and cluster_of[x] != cluster_of[y]})
        for x, y in wrong[:args.misses]:
            print(f"wrongly merged: {x!r} ~ {y!r}")
    print(_scale(args.scale, 1000, thresholds))


if __name__ == "__main__":
    main()
