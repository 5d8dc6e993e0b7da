"""Resolution time on a large stored graph: an incremental pass over 1,000 new concepts.

    python -m benchmarks.resolution.scale [--dialect sqlite|postgresql|both] [--concepts N]

The graph (N concepts with made-up multi-word names, 3N relationships) is written straight
into the tables; then, as `kg resolve` does, the pass looks for same-name concepts of
incompatible types, loads every concept with its spellings, scores the candidate pairs
touching the last 1,000 concepts that could reach the review band (reading neighbours for
those only) and groups the accepted ones (a dry run: the
merges' own cost is curation's). Target: < 5 s, no model calls. CPU time is printed too: on
a shared machine the wall clock also counts other processes' turns.
"""

from __future__ import annotations

import argparse
import random
import time

from benchmarks.common import temp_database
from kg.matching.decide import Band, Thresholds, group
from kg.resolution.passes import load_entities, same_name_clashes, session_pairs
from tests.graph_seed import bulk_graph

SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ra", "ti", "vo", "ze", "pa", "do", "gu", "be",
             "fi", "ho", "ju"]


def names(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
                     .capitalize() for _ in range(rng.randint(1, 3)))] = None
    return list(out)


def measure(dialect: str, concepts: int, new: int = 1000) -> dict[str, object]:
    thresholds = Thresholds()
    with temp_database(dialect) as db:
        # No aliases: bulk_graph's are 'NAME alias 0', which no text writes.
        bulk_graph(db, concepts, 3 * concepts, labels=names(concepts), chunk_count=100,
                   aliases_per=0)
        with db.session() as session:
            started, cpu = time.perf_counter(), time.process_time()
            clashes = same_name_clashes(session)
            checked = time.perf_counter() - started
            entities = load_entities(session, neighbours=False)  # as `kg resolve`
            loaded = time.perf_counter() - started - checked
            fresh = set(sorted(entities)[-new:])
            pairs = session_pairs(session, entities, fresh, thresholds.low)
            accepted = [p for p in pairs if thresholds.band(p.score) is Band.MERGE]
            group(entities, accepted)
            total, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"dialect": dialect, "concepts": len(entities), "new": new,
            "same_name_s": round(checked, 2), "load_s": round(loaded, 2),
            "pass_s": round(total, 2), "cpu_s": round(cpu, 2),
            "pairs": len(pairs), "would_merge": len(accepted), "qualify": len(clashes)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resolution.scale")
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--concepts", type=int, default=100_000)
    args = parser.parse_args()
    for dialect in (["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]):
        r = measure(dialect, args.concepts)
        print(f"{r['dialect']}: incremental pass, {r['new']} new among {r['concepts']} "
              f"concepts: {r['pass_s']} s wall, {r['cpu_s']} s CPU (of which same-name check "
              f"{r['same_name_s']} s, loading {r['load_s']} s wall); {r['pairs']} pairs at or "
              "above the review band, "
              f"{r['would_merge']} above the high threshold, {r['qualify']} labels to qualify")


if __name__ == "__main__":
    main()
