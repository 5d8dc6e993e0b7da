"""Engine figures against a test Ollama server: overhead, parallel scaling, re-ingest."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import corpus_text, fake_server, point_at, temp_database
from kg.db import Database
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import IngestRequest, ingest

CHUNKING = ChunkingOptions(target_tokens=160, min_tokens=20, max_tokens=240, overlap_tokens=0)


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
    for d in ("sqlite", "postgresql"):
        print(overhead(d))
    for row in scaling():
        print(row)
