"""Document versions (issue #22): what re-ingesting edited files costs, and whether it is exact.

A generated set of documents (default 100, 10 paragraphs each, one chunk per paragraph) whose
every paragraph names three people of its own, linked in a chain by the fake model (so the
facts of each paragraph are known: 3 concepts, 2 relationships). 10% of the paragraphs of 20
documents are rewritten with new names, and the folder is ingested again. Printed:

- LLM calls of the update vs chunks whose text changed (target: equal);
- concepts and relationships retracted vs those whose only evidence was in removed text;
- the live graph after the update vs a fresh ingest of the new files into an empty
  database (concepts, relationships, evidence counts: equal yes/no);
- wall time of the update vs the fresh full ingest;
- `kg export --as-of` (a moment before the edit) vs the graph exported before the edit.

The model is the protocol-exact fake Ollama server of tests/fakes.py in its own process,
answering from the paragraph's text. Both databases when PostgreSQL answers.

With --big-mb N: also one N MB document (default chunking) with one paragraph rewritten:
LLM calls, wall time and peak Python memory (tracemalloc) of the update.

python -m benchmarks.versions [--documents N] [--paragraphs N] [--edited N]
                              [--dialect sqlite|postgresql|both] [--big-mb N]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.common import fake_server, point_at, temp_database
from kg.db import Database
from kg.export import ExportFilter, export_graph
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import IngestRequest, ingest

SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70
CHUNKING = ChunkingOptions(target_tokens=60, min_tokens=20, max_tokens=120, overlap_tokens=0)
FILLER = " ".join(["the", "report", "was", "filed", "quickly"] * 8)


def word(i: int) -> str:
    """A distinct capitalised word per index (letters only: the fake model's names), six
    pseudo-random syllables: far apart enough that fuzzy matching merges none of them (it
    would by arrival order, which differs between an update and a fresh ingest)."""
    digest = hashlib.blake2b(str(i).encode(), digest_size=8).digest()
    return "".join(SYLLABLES[b % 70] for b in digest[:6]).title()


def paragraph(key: int) -> str:
    return (f"Agent {word(3 * key)} met Director {word(3 * key + 1)} in City "
            f"{word(3 * key + 2)}. {FILLER}.")


def write_set(folder: Path, documents: int, paragraphs: int,
              edits: dict[int, set[int]] | None = None) -> None:
    """The documents; `edits` (document -> paragraphs) rewrites those paragraphs."""
    folder.mkdir(parents=True, exist_ok=True)
    fresh = documents * paragraphs  # keys past every original paragraph's
    for d in range(documents):
        body = []
        for p in range(paragraphs):
            key = d * paragraphs + p
            if edits and p in edits.get(d, set()):
                key = fresh + key
            body.append(paragraph(key))
        (folder / f"doc{d:03}.md").write_text("\n\n".join(body) + "\n", encoding="utf-8")


def run(db: Database, folder: Path) -> tuple[Any, float]:
    started = time.perf_counter()
    summary = ingest(db, IngestRequest(paths=[folder], recursive=True, chunking=CHUNKING,
                                       cache=False))
    return summary, time.perf_counter() - started


def exported(db: Database, as_of: datetime | None = None) -> tuple[set[Any], set[Any]]:
    """The live graph (or the graph at `as_of`): concepts and relationships by label, with
    evidence counts."""
    out = io.StringIO()
    export_graph(db, "jsonl", scope=ExportFilter(as_of=as_of), stream=out)
    nodes, edges = set(), set()
    for line in out.getvalue().splitlines():
        item = json.loads(line)
        if item["kind"] == "concept":
            nodes.add((item["label"], item["evidence_count"]))
        else:
            edges.add((item["source"], item["type"], item["target"], item["evidence_count"]))
    return nodes, edges


def scalar(db: Database, sql: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar() or 0)


def measure(dialect: str, url: str, documents: int, paragraphs: int,
            edited: int) -> list[tuple[str, str]]:
    per_doc = max(1, paragraphs // 10)  # 10% of the paragraphs of each edited document
    edits = {d: set(range(1, 1 + per_doc)) for d in range(edited)}
    changed = edited * per_doc
    with tempfile.TemporaryDirectory() as tmp, temp_database(dialect) as db, \
            temp_database(dialect) as fresh_db:
        folder = Path(tmp) / "set"
        write_set(folder, documents, paragraphs)
        point_at(db, url)
        point_at(fresh_db, url)
        first, first_s = run(db, folder)
        before = exported(db)
        moment = datetime.now(UTC)
        time.sleep(0.01)
        write_set(folder, documents, paragraphs, edits)
        update, update_s = run(db, folder)
        after = exported(db)
        retracted_concepts = scalar(db, "SELECT count(*) FROM concepts WHERE valid_to "
                                        "IS NOT NULL")
        retracted_edges = scalar(db, "SELECT count(*) FROM relationships WHERE valid_to "
                                     "IS NOT NULL")
        fresh, fresh_s = run(fresh_db, folder)
        fresh_graph = exported(fresh_db)
        as_of = exported(db, moment)
    return [
        ("documents / chunks", f"{documents} / {first.chunks_total}"),
        ("first ingest", f"{first.calls} calls, {first_s:.1f} s"),
        ("update: chunks changed", str(changed)),
        ("update: LLM calls", f"{update.calls} (target {changed})"),
        ("retracted concepts", f"{retracted_concepts} (expected {3 * changed})"),
        ("retracted relationships", f"{retracted_edges} (expected {2 * changed})"),
        ("graph equal to a fresh ingest (concepts, relationships, evidence counts)",
         "yes" if after == fresh_graph else "no"),
        ("update wall time", f"{update_s:.2f} s"),
        ("fresh full ingest wall time", f"{fresh_s:.2f} s ({fresh.calls} calls)"),
        ("--as-of before the edit equals the graph then", "yes" if as_of == before else "no"),
    ]


def measure_big(dialect: str, url: str, megabytes: float) -> list[tuple[str, str]]:
    """One document of `megabytes`, default chunking; one paragraph in the middle rewritten."""
    count = int(megabytes * 1_000_000 / len(paragraph(10**6)))
    options = ChunkingOptions()
    with tempfile.TemporaryDirectory() as tmp, temp_database(dialect) as db:
        doc = Path(tmp) / "big.md"
        body = [paragraph(k) for k in range(count)]
        doc.write_text("\n\n".join(body) + "\n", encoding="utf-8")
        point_at(db, url)
        started = time.perf_counter()
        first = ingest(db, IngestRequest(paths=[doc], chunking=options, cache=False))
        first_s = time.perf_counter() - started
        body[count // 2] = paragraph(count + 1)
        doc.write_text("\n\n".join(body) + "\n", encoding="utf-8")
        tracemalloc.start()
        started = time.perf_counter()
        update = ingest(db, IngestRequest(paths=[doc], chunking=options, cache=False))
        update_s = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return [
        (f"{megabytes:g} MB document: chunks", str(first.chunks_total)),
        ("first ingest", f"{first.calls} calls, {first_s:.1f} s"),
        ("one paragraph changed: LLM calls", str(update.calls)),
        ("update wall time", f"{update_s:.2f} s"),
        ("update peak Python memory (tracemalloc)", f"{peak / 1e6:.0f} MB"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versions")
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--paragraphs", type=int, default=10)
    parser.add_argument("--edited", type=int, default=20)
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--big-mb", type=float, default=0.0,
                        help="also one document of this size with one paragraph changed")
    args = parser.parse_args()
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    with fake_server("ollama") as url:
        for dialect in dialects:
            try:
                rows = measure(dialect, url, args.documents, args.paragraphs, args.edited)
            except Exception as exc:  # PostgreSQL not answering: say so, go on
                print(f"{dialect}: not measured ({str(exc).splitlines()[0]})")
                continue
            if args.big_mb:
                rows += measure_big(dialect, url, args.big_mb)
            print(f"\n{dialect}")
            width = max(len(k) for k, _ in rows)
            for key, value in rows:
                print(f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    main()
