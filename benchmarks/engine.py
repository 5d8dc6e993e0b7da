"""Engine figures against a test Ollama server: overhead, parallel scaling, re-ingest.

`compare()` is the guard for the database overhead: SQLite and PostgreSQL back to back in one
process, several times, so that the ratio PostgreSQL / SQLite comes from the same machine state
(this machine is shared; absolute figures move between runs, a ratio much less).
`python -m benchmarks.engine` prints it; benchmarks/HISTORY.md keeps the figures over time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import corpus_text, fake_server, point_at, temp_database
from kg.db import Database
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import IngestRequest, ingest

CHUNKING = ChunkingOptions(target_tokens=160, min_tokens=20, max_tokens=240, overlap_tokens=0)
DIALECTS = ("sqlite", "postgresql")


def _run(db, path: Path, force: bool = False):
    return ingest(db, IngestRequest(paths=[path], chunking=CHUNKING, force=force))


@contextmanager
def _setup(dialect: str, chunks: int, parallel: int, delay: float = 0.0,
           slots: int = 64) -> Iterator[tuple[Database, Path]]:
    """A fresh database pointed at a test server in its own process, and a document."""
    with tempfile.TemporaryDirectory() as tmp, temp_database(dialect) as db, fake_server(
        delay=delay, slots=slots
    ) as url:
        doc = Path(tmp) / "doc.txt"
        doc.write_text(corpus_text(chunks), encoding="utf-8")
        point_at(db, url, max_parallel=parallel)
        yield db, doc


def overhead(dialect: str, chunks: int = 400, parallel: int = 4) -> dict[str, object]:
    """Chunks/s end to end with a server that answers at once (10 concepts, 10 relationships)."""
    with _setup(dialect, chunks, parallel) as (db, doc):
        started = time.perf_counter()
        summary = _run(db, doc)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = _run(db, doc)
        reingest_s = time.perf_counter() - started
        return {
            "dialect": dialect, "chunks": summary.chunks_ok, "seconds": round(seconds, 2),
            "chunks_per_s": round(summary.chunks_ok / seconds, 1),
            "concepts": summary.concepts_new, "relationships": summary.relationships_new,
            "reingest_calls": again.calls,
            "reingest_status": again.status, "reingest_s": round(reingest_s, 3),
        }


def warm_up() -> None:
    """Pay the process's one-time costs (the provider client's imports, first connections)
    before anything is timed: otherwise whichever database runs first pays them."""
    for dialect in DIALECTS:
        overhead(dialect, chunks=8)


def compare(repetitions: int = 3, chunks: int = 400, parallel: int = 4) -> dict[str, Any]:
    """Engine overhead on both databases, `repetitions` times each, alternating which goes
    first; the ratio is median PostgreSQL / median SQLite (and its range over the pairs)."""
    warm_up()
    runs: dict[str, list[dict[str, object]]] = {d: [] for d in DIALECTS}
    for i in range(repetitions):
        for dialect in DIALECTS if i % 2 == 0 else DIALECTS[::-1]:
            runs[dialect].append(overhead(dialect, chunks, parallel))
    rates = {d: [float(str(r["chunks_per_s"])) for r in runs[d]] for d in DIALECTS}
    pairs = [pg / lite for lite, pg in zip(rates["sqlite"], rates["postgresql"], strict=True)]
    out: dict[str, Any] = {"repetitions": repetitions, "chunks": chunks, "runs": runs}
    for dialect in DIALECTS:
        out[dialect] = {"median": round(statistics.median(rates[dialect]), 1),
                        "min": min(rates[dialect]), "max": max(rates[dialect]),
                        "chunks_per_s": rates[dialect]}
    out["ratio"] = round(out["postgresql"]["median"] / out["sqlite"]["median"], 2)
    out["ratio_range"] = (round(min(pairs), 2), round(max(pairs), 2))
    return out


def describe(c: dict[str, Any]) -> list[str]:
    """The comparison as printed lines."""
    lines = [f"engine overhead, {c['chunks']} chunks, {c['repetitions']} runs per database:"]
    for dialect in DIALECTS:
        d = c[dialect]
        lines.append(f"  {dialect:<10} median {d['median']} chunks/s, range {d['min']}-"
                     f"{d['max']} ({', '.join(str(r) for r in d['chunks_per_s'])})")
    low, high = c["ratio_range"]
    lines.append(f"  PostgreSQL / SQLite: {c['ratio']} (per pair {low}-{high}; target >= 0.9)")
    return lines


def scaling(dialect: str = "sqlite", chunks: int = 64, latency: float = 0.2,
            slots: int = 8) -> list[dict[str, object]]:
    """Wall time against the ideal chunks x latency / parallelism."""
    rows = []
    for parallel in (1, 2, 4, 8):
        with _setup(dialect, chunks, parallel, delay=latency, slots=slots) as (db, doc):
            started = time.perf_counter()
            summary = _run(db, doc)
            wall = time.perf_counter() - started
            ideal = summary.chunks_ok * latency / parallel
            rows.append({"max_parallel": parallel, "chunks": summary.chunks_ok,
                         "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
                         "over_ideal_pct": round((wall / ideal - 1) * 100, 1)})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per database")
    print("\n".join(describe(compare(parser.parse_args().repetitions))))
