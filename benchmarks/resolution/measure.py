"""Resolution figures: the ingest-time resolver before and after issue #24, and kg.resolution
with no model, the bundled model and a gold-answering judge in the grey zone.

    python -m benchmarks.resolution.measure [SET] [--bundled [--sample N]] [--misses N]
                                            [--scale N]

Rows: the ConceptIndex from before issue #24 (label, aliases, fuzzy 92, in arrival order;
kept in before.py), today's ConceptIndex through GroupPlan (the code ingestion runs per chunk:
kg.matching's signals and score, the automatic band only, type-qualified labels), the signals
without a model (grey zone apart), with the bundled SmolLM2 as the judge (`--bundled`: seconds
per call on a CPU, so an hour or more for the whole grey zone; `--sample N` asks it about N
grey pairs drawn at random and prints its answers against the gold instead), and with a judge
that answers the gold (the ceiling a perfect model reaches). Then:
equal clusters for 3 arrival orders, and the in-memory time of an incremental pass.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchmarks.common  # noqa: F401  (puts the repository on sys.path)
from benchmarks.resolution.before import OldConceptIndex
from benchmarks.resolution.build_set import OUT, build
from kg.extraction.resolve import ConceptIndex, GroupPlan
from kg.matching.candidates import Entity, entity
from kg.matching.decide import Band, Thresholds, group
from kg.resolution.evaluate import Clusters, Mention, cluster, load_mentions, score_clusters
from kg.resolution.passes import score_pairs
from kg.text import normalise_label

Resolver = Callable[[list[Mention]], Clusters]


def before(mentions: list[Mention]) -> Clusters:
    """Ingestion before issue #24: each mention looked up (exact, then fuzzy >= 92) in
    arrival order; a hit adds the spelling as an alias, a miss makes a new concept."""
    index = OldConceptIndex()
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


def _arrive(mentions: list[Mention],
            threshold: float) -> tuple[GroupPlan, dict[int, list[Mention]]]:
    """Every mention through GroupPlan.concept (as store.py's _plan_chunk calls it, with the
    mention's type) in arrival order: the concepts ingestion made, each with its mentions."""
    plan = GroupPlan(ConceptIndex(threshold), {}, 1, 1)
    members: dict[int, list[Mention]] = {}
    for m in mentions:
        norm = normalise_label(m.text)
        cid = plan.concept(m.text, norm, m.type) if norm else -len(members) - 1
        members.setdefault(cid, []).append(m)
    return plan, members


def ingest(threshold: float) -> Resolver:
    """Ingestion now: the concepts `_arrive` makes."""
    def run(mentions: list[Mention]) -> Clusters:
        return [frozenset(m.id for m in ms) for ms in _arrive(mentions, threshold)[1].values()]
    return run


def ingest_then_resolve(thresholds: Thresholds, threshold: float = 92.0) -> Resolver:
    """What a graph holds after ingestion (`--fuzzy-threshold`, 101: equal spellings only) and
    one `kg resolve` pass without a model: the concepts ingestion made (each with its
    spellings and type), grouped by the pass."""
    def run(mentions: list[Mention]) -> Clusters:
        plan, members = _arrive(mentions, threshold)
        entities = {cid: entity(cid, ms[0].text, plan.index.types.get(cid),
                                [normalise_label(m.text) for m in ms])
                    for cid, ms in members.items()}
        accepted = [p for p in score_pairs(entities) if thresholds.band(p.score) is Band.MERGE]
        grouped = group(entities, accepted)
        together = {i for c in grouped for i in c}
        clusters = [frozenset(m.id for i in c for m in members[i]) for c in grouped]
        return clusters + [frozenset(m.id for m in ms) for cid, ms in members.items()
                           if cid not in together]
    return run


def bundled_judge(mentions: list[Mention], threads: int) -> tuple[Callable[..., str], Any]:
    """The grey zone's judge of `kg resolve --judge` (kg/resolution/judge.py) on the embedded
    llama.cpp provider with the bundled SmolLM2: its answer (yes, no or unsure) for a pair."""
    from kg.profiles.settings import ProviderSettings
    from kg.resolution.judge import Judge

    settings = ProviderSettings(
        profile_name="bench", revision=1, provider="llamacpp", model="smollm2", base_url=None,
        api_key_env=None, temperature=0.0, top_p=0.9, thinking_mode="off", gpu_layers=0,
        num_threads=threads, context_window=2048, max_output_tokens=64,
        max_parallel=1, max_retries=0, timeout_s=600, keep_alive=None)
    judge = Judge(settings)

    def seen(e: Entity, order: list[Mention]) -> dict[str, object]:
        m = order[e.id - 1]  # cluster() numbers the mentions from 1
        return {"label": m.text, "type": m.type,
                "quotes": [", ".join(m.context)] if m.context else []}

    def ask(a: Entity, b: Entity) -> str:
        return judge(seen(a, mentions), seen(b, mentions))
    return ask, judge


def _sample(mentions: list[Mention], thresholds: Thresholds, n: int, threads: int,
            oracle: Callable[[Entity, Entity], bool]) -> None:
    """The bundled judge on n grey pairs drawn at random (seed 24): its answers against the
    gold, and its time per call."""
    grey: list[tuple[Entity, Entity]] = []
    cluster(mentions, thresholds, judge=lambda a, b: bool(grey.append((a, b))))
    picked = random.Random(24).sample(grey, min(n, len(grey)))
    ask, judge = bundled_judge(mentions, threads)
    table: dict[tuple[bool, str], int] = {}
    started = time.perf_counter()
    for a, b in picked:
        key = (oracle(a, b), ask(a, b))
        table[key] = table.get(key, 0) + 1
    took = time.perf_counter() - started
    calls = len(judge.calls)
    judge.close()
    same = {a: table.get((True, a), 0) for a in ("yes", "no", "unsure")}
    other = {a: table.get((False, a), 0) for a in ("yes", "no", "unsure")}
    print(f"| kg resolve: signals + bundled SmolLM2 judge | (sample) | | | | | "
          f"{round(1000 * len(grey) / len(mentions), 1)} |")
    print(f"\nbundled SmolLM2 on {len(picked)} of {len(grey)} grey pairs: answers for pairs "
          f"of one gold cluster {same}, for pairs of two {other}; "
          f"{calls} model calls, {took / max(1, calls):.1f} s each (wall)\n")


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
    started, cpu = time.perf_counter(), time.process_time()
    fresh = set(range(n - new + 1, n + 1))
    pairs = score_pairs(entities, fresh)
    accepted = [p for p in pairs if thresholds.band(p.score) is Band.MERGE]
    group(entities, accepted)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    # CPU time too: on a shared machine the wall clock also counts other processes' turns.
    return (f"incremental pass, {new} new among {n} concepts: {took:.2f} s wall, {cpu:.2f} s "
            f"CPU ({len(pairs)} candidate pairs; load from the database not included)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resolution.measure")
    parser.add_argument("set", nargs="?", type=Path, default=OUT)
    parser.add_argument("--bundled", action="store_true",
                        help="also judge the grey zone with the bundled SmolLM2 (slow on CPU)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (--bundled)")
    parser.add_argument("--sample", type=int, default=0,
                        help="with --bundled: judge only N random grey pairs (0: all of them)")
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
    print(_row("ingest before #24: ConceptIndex (fuzzy 92)", mentions, before(mentions), 0))
    print(_row("ingest now: ConceptIndex, kg.matching score >= 0.92 (ingest default)",
               mentions, ingest(92.0)(mentions), 0))
    print(_row("ingest now, score >= 0.90 (kg resolve's high band)", mentions,
               ingest(90.0)(mentions), 0))
    print(_row("ingest now, then a `kg resolve` pass (no model)", mentions,
               ingest_then_resolve(thresholds)(mentions), 0))
    print(_row("ingest of equal spellings only (--fuzzy-threshold 101), then a pass", mentions,
               ingest_then_resolve(thresholds, 101.0)(mentions), 0))
    signals_only, stats = cluster(mentions, thresholds)
    print(_row("kg resolve: signals, no model (grey zone apart)", mentions, signals_only, 0))
    if args.bundled and args.sample:
        _sample(mentions, thresholds, args.sample, args.threads, oracle)
    if args.bundled and not args.sample:
        ask, judge = bundled_judge(mentions, args.threads)
        started = time.perf_counter()
        judged, stats = cluster(mentions, thresholds, judge=lambda a, b: ask(a, b) == "yes")
        took = time.perf_counter() - started
        asked = len(judge.calls)
        print(_row(f"kg resolve: signals + bundled SmolLM2 judge ({took:.0f} s)", mentions,
                   judged, asked))
        answers = [c["status"] for c in judge.calls]
        judge.close()
    merged_all, stats = cluster(mentions, thresholds, judge=lambda a, b: True)
    print(_row("kg resolve: signals + a judge that always says yes (grey zone merged)",
               mentions, merged_all, stats["judge_calls"]))
    ceiling, stats = cluster(mentions, thresholds, judge=oracle)
    print(_row("kg resolve: signals + judge answering the gold (ceiling)", mentions, ceiling,
               stats["judge_calls"]))
    if args.bundled and not args.sample:
        print(f"\nbundled judge: {asked} model calls for {stats['grey']} grey pairs; "
              f"statuses {dict((s, answers.count(s)) for s in sorted(set(answers)))}")

    resolvers: dict[str, Resolver] = {
        "ingest before #24": before, "ingest now": ingest(92.0),
        "ingest now + kg resolve": ingest_then_resolve(thresholds),
        "ingest --fuzzy-threshold 101 + kg resolve": ingest_then_resolve(thresholds, 101.0),
        "kg resolve, no model": lambda ms: cluster(ms, thresholds)[0],
        "kg resolve, gold judge": lambda ms: cluster(
            ms, thresholds, judge=lambda a, b: gold_of[a.label] == gold_of[b.label])[0]}
    equal = {}
    for name, resolver in resolvers.items():
        results = []
        for seed in (1, 2, 3):
            shuffled = mentions[:]
            random.Random(seed).shuffle(shuffled)
            results.append(set(resolver(shuffled)))
        f1s = sorted(score_clusters(mentions, list(r))["pairwise"]["f1"] for r in results)
        equal[name] = (f"{all(r == results[0] for r in results)} "
                       f"(pairwise F1 {f1s[0]:.3f}..{f1s[-1]:.3f})")
    print("\nequal clusters for 3 arrival orders: "
          + "; ".join(f"{name}: {same}" for name, same in equal.items()))
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
