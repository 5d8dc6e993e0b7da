"""Ingest-time lookups against a large index: what one writer pays per mention.

    python -m benchmarks.resolution.lookup [--concepts 100000] [--lookups 2000]

Builds a `ConceptIndex` of N made-up names (as `ConceptIndex.load` does from the tables), then
looks up spellings: half known names with one letter changed, dropped or swapped, half new
names. Prints CPU time for building and per lookup, with the C prefilter and without it
(every concept of the shared blocks scored in Python, as before the prefilter), and checks
both answer alike. CPU time, not wall clock: the machine is shared.
"""

from __future__ import annotations

import argparse
import random
import time

from benchmarks.resolution.scale import names
from kg.extraction.resolve import ConceptIndex
from kg.text import normalise_label


def queries(labels: list[str], count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        label = rng.choice(labels).lower()
        if n % 2:
            label = rng.choice(names(count, seed=seed + 1)).lower() + " x"
        else:
            i = rng.randrange(len(label))
            label = rng.choice([label[:i] + "q" + label[i + 1:], label[:i] + label[i + 1:],
                                label[:i] + label[i + 1:i + 2] + label[i:i + 1] + label[i + 2:]])
        out.append(normalise_label(label))
    return [q for q in out if q]


def measure(concepts: int, lookups: int) -> dict[str, object]:
    labels = names(concepts)
    asked = queries(labels, lookups)
    out: dict[str, object] = {"concepts": concepts, "lookups": len(asked)}
    answers = {}
    for name, prefilter in (("prefilter", True), ("whole_blocks", False)):
        started = time.process_time()
        index = ConceptIndex(prefilter=prefilter)
        for cid, label in enumerate(labels, 1):
            index.add_label(normalise_label(label), cid, label)
        built = time.process_time() - started
        started = time.process_time()
        answers[name] = [index.find(q) for q in asked]
        per = (time.process_time() - started) / len(asked)
        out[name] = {"build_cpu_s": round(built, 2), "lookup_cpu_ms": round(per * 1000, 3),
                     "found": sum(a is not None for a in answers[name])}
    out["agree"] = answers["prefilter"] == answers["whole_blocks"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resolution.lookup")
    parser.add_argument("--concepts", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    r = measure(args.concepts, args.lookups)
    print(f"ingest-time lookup, {r['lookups']} spellings against {r['concepts']} concepts "
          f"(CPU time; answers equal: {r['agree']}):")
    for name in ("prefilter", "whole_blocks"):
        d = r[name]
        assert isinstance(d, dict)
        print(f"  {name:<13} build {d['build_cpu_s']} s, {d['lookup_cpu_ms']} ms per lookup, "
              f"{d['found']} found")


if __name__ == "__main__":
    main()
