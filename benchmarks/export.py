"""Export of a large graph: time and peak memory of `kg export` per format.

The graph (default 100,000 concepts, 300,000 relationships, one alias per concept, one evidence
row per concept and per relationship) is written straight into the tables (COPY on
PostgreSQL), then each format is exported by `kg export` in its own process, whose peak RSS is
read from the kernel (getrusage of the child). `kg db current` gives the baseline: what an
interpreter with kg loaded costs before any export work.

With `--attributes N`, every concept also gets N literal attributes (issue #20: numbers and
years alternately, one evidence row each), written the same way.

python -m benchmarks.export [--dialect sqlite|postgresql|both] [--concepts N]
                            [--relationships N] [--attributes N] [--formats graphml,gexf,...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select, text

from benchmarks.common import ROOT, temp_database
from kg.db import Database
from kg.db.models import AttributeEvidence, Chunk, ConceptAttribute, utcnow
from tests.graph_seed import Bulk, _put, bulk_graph

FORMATS = ["graphml", "gexf", "jsonl", "csv", "cypher", "turtle"]
_CHILD = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "dt = time.perf_counter() - t\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
    "print(peak, dt, p.returncode, (p.stderr or '')[-300:].replace('\\n', ' '))\n"
)


def _run(args: list[str], url: str) -> tuple[float, float]:
    """(peak RSS MB, seconds) of one kg command in a fresh process."""
    env = {**os.environ, "KG_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _CHILD, sys.executable, "-m", "kg.cli", *args],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    peak, seconds, code, err = out.stdout.split(" ", 3)
    if code != "0":
        raise RuntimeError(f"kg {' '.join(args)} failed: {err.strip()}")
    return float(peak), float(seconds)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


def add_attributes(db: Database, bulk: Bulk, per_concept: int) -> int:
    """`per_concept` attributes on every concept of the bulk graph, one evidence row each."""
    now = utcnow()
    with db.engine.begin() as conn:
        chunk = conn.scalar(select(Chunk.id).where(Chunk.document_id == bulk.document_id)
                            .order_by(Chunk.id).limit(1))
        concept_ids = list(conn.scalars(text("SELECT id FROM concepts ORDER BY id")))
        rows: list[tuple[object, ...]] = []
        evidence: list[tuple[object, ...]] = []
        for cid in concept_ids:
            for k in range(per_concept):
                name, kind, value = ((f"count{k}", "number", str(cid * 10 + k)) if k % 2 == 0
                                     else (f"year{k}", "year", str(1900 + (cid + k) % 120)))
                rows.append((len(rows) + 1, cid, name, kind, value, value, now, now))
                evidence.append((len(rows), bulk.run_id, chunk, f"{name} {value}", 0, 10, 0, 4,
                                 now))
        _put(conn, ConceptAttribute, ["id", "concept_id", "name", "datatype", "value",
                                      "normalised", "created_at", "valid_from"], rows)
        _put(conn, AttributeEvidence, ["attribute_id", "run_id", "chunk_id", "quote",
                                       "char_start", "char_end", "value_start", "value_end",
                                       "valid_from"], evidence)
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('concept_attributes', "
                              "'id'), (SELECT max(id) FROM concept_attributes))"))
            conn.execute(text("ANALYZE"))
    return len(rows)


def measure(dialect: str = "sqlite", concepts: int = 100_000, relationships: int = 300_000,
            formats: list[str] | None = None, attributes: int = 0) -> dict[str, object]:
    """Build the graph, export it in every format; figures per format."""
    with temp_database(dialect) as db, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        bulk = bulk_graph(db, concepts, relationships, chunk_count=1000)
        attribute_rows = add_attributes(db, bulk, attributes) if attributes else 0
        build_s = time.perf_counter() - started
        url = db.url.render_as_string(hide_password=False)
        baseline, _ = _run(["db", "current"], url)
        results = []
        for fmt in formats or FORMATS:
            out = Path(tmp) / f"graph.{fmt}"
            peak, seconds = _run(["export", "--format", fmt, "-o", str(out)], url)
            results.append({"format": fmt, "seconds": round(seconds, 1),
                            "peak_rss_mb": round(peak), "size_mb": round(_size(out) / 1e6, 1)})
    return {"dialect": dialect, "concepts": bulk.concepts,
            "relationships": bulk.relationships, "evidence": bulk.evidence,
            "attributes": attribute_rows,
            "build_s": round(build_s, 1), "baseline_rss_mb": round(baseline),
            "exports": results}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export")
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--concepts", type=int, default=100_000)
    parser.add_argument("--relationships", type=int, default=300_000)
    parser.add_argument("--attributes", type=int, default=0,
                        help="literal attributes per concept (issue #20)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    args = parser.parse_args()
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    for dialect in dialects:
        m = measure(dialect, args.concepts, args.relationships, args.formats.split(","),
                    args.attributes)
        print(f"{dialect}: {m['concepts']:,} concepts, {m['relationships']:,} relationships, "
              f"{m['evidence']:,} evidence rows, {m['attributes']:,} attributes "
              f"(built in {m['build_s']}s); "
              f"`kg db current` alone: {m['baseline_rss_mb']} MB RSS")
        print(f"  {'format':8} {'seconds':>8} {'peak RSS MB':>12} {'output MB':>10}")
        for r in m["exports"]:  # type: ignore[attr-defined]
            print(f"  {r['format']:8} {r['seconds']:>8} {r['peak_rss_mb']:>12} "
                  f"{r['size_mb']:>10}")


if __name__ == "__main__":
    main()
