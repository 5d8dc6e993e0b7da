"""Search and retrieval figures: latency without the LLM on a large graph, index build time, and
ingest throughput with the full-text indexes on and off.

The graph (default 100,000 concepts with pseudo-word names, 300,000 relationships, one alias
per concept, one evidence row per concept and per relationship: 400,000 quotes) is written
straight into the tables (tests.graph_seed.bulk_graph; COPY on PostgreSQL) with the indexes
live, so their triggers / generated columns are paid during the load. Then:

- search: `kg.search.search` for a concept's name (every kind, 20 hits), p50/p95 over the
  queries; retrieval: `kg.retrieval.retrieve` for "What is NAME related to?" (1 hop);
- broad: a word in 100,000 quotes ("quote"), the worst case for ranking;
- index build: migration 0018 run again on the loaded graph (downgrade to 0017, upgrade);
- ingest: `kg ingest` of the same document against a fake Ollama server in its own process,
  on a fresh database with the indexes, and one whose indexes were dropped by hand.

- ask: `kg eval ask` over benchmarks/ask_questions.jsonl (67 questions on corpus/), the corpus
  extracted by a fake Ollama server from the corpus' gold annotations (each concept and
  relationship quoted by its sentence), answered by the same fake server from the retrieved
  evidence: it cites the quotes sharing most words with the question (the retrieval ceiling,
  not a model's quality); retrieval recall@10 with full text only (0 hops) and + graph (1 hop).

python -m benchmarks.search [--dialect sqlite|postgresql|both] [--concepts N]
                            [--relationships N] [--queries N] [--ingest-chunks N] [--ask-only]
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.common import point_at, tag, temp_database
from benchmarks.engine import _run, _setup
from kg import retrieval, search
from kg.db import Database, migrate
from tests.graph_seed import bulk_graph

FTS = importlib.import_module("migrations.versions.0018_search")


def _name(i: int) -> str:
    return f"{tag(i)} {tag(i + 1_000_003)}"


def _percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[49], 1), round(cuts[94], 1)


def _timed(db: Database, func: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[float]:
    out = []
    for a in args:
        with db.session() as session:
            started = time.perf_counter()
            func(session, *a)
            out.append((time.perf_counter() - started) * 1000)
    return out


def latency(dialect: str, concepts: int, relationships: int, queries: int) -> dict[str, Any]:
    with temp_database(dialect) as db:
        started = time.perf_counter()
        bulk = bulk_graph(db, concepts, relationships, labels=[_name(i) for i in range(concepts)],
                          chunk_count=max(100, concepts // 20))
        load_s = time.perf_counter() - started
        rng = random.Random(7)
        picks = [_name(rng.randrange(concepts)) for _ in range(queries)]
        _timed(db, search.search, [(p,) for p in picks[:5]])  # warm caches
        found = _timed(db, search.search, [(p,) for p in picks])
        asked = _timed(db, retrieval.retrieve, [(f"What is {p} related to?",) for p in picks])
        broad = _timed(db, search.search, [("quote",)] * max(5, queries // 20))
        with db.session() as session:
            hit = search.search(session, picks[0])["hits"]
        migrate.downgrade(db, "0017")
        started = time.perf_counter()
        migrate.upgrade(db)
        build_s = time.perf_counter() - started
    return {"dialect": dialect, "concepts": bulk.concepts, "evidence": bulk.evidence,
            "load_s": round(load_s, 1), "search_ms": _percentiles(found),
            "retrieve_ms": _percentiles(asked), "broad_ms": _percentiles(broad),
            "index_build_s": round(build_s, 1), "first_hit": hit[0]["title"] if hit else None}


def _drop_indexes(db: Database) -> None:
    """The 0018 downgrade's statements, without moving the schema version (ingest needs it)."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            for table in FTS.PG_VECTORS:
                conn.execute(text(f"DROP INDEX IF EXISTS ix_{table}_search"))
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN IF EXISTS search_vector"))
            return
        for table in FTS.SOURCES:
            for suffix in ("ai", "ad", "au"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_fts_{suffix}"))
            conn.execute(text(f"DROP TABLE IF EXISTS {table}_fts"))


def ingest(dialect: str, chunks: int, repetitions: int = 2) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(repetitions):
        for mode in ("on", "off"):
            with _setup(dialect, chunks, 4) as (db, doc):
                if mode == "off":
                    _drop_indexes(db)
                started = time.perf_counter()
                summary = _run(db, doc)
                rates[mode].append(summary.chunks_ok / (time.perf_counter() - started))
    on, off = max(rates["on"]), max(rates["off"])
    return {"dialect": dialect, "chunks": chunks, "on_chunks_per_s": round(on, 1),
            "off_chunks_per_s": round(off, 1), "on_vs_off": f"{(on / off - 1) * 100:+.1f}%"}


ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "benchmarks" / "ask_questions.jsonl"
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def _gold_reply(chunk: str, gold: list[dict[str, Any]]) -> str:
    """An extraction of `chunk` from the gold annotations: every gold concept whose label or
    alias is in the chunk, quoted by the first sentence naming it; gold relationships between
    them, quoted by a sentence naming both ends (else the source's)."""
    sentences = [m.group().strip() for m in _SENTENCE.finditer(chunk) if m.group().strip()]
    concepts, quotes = [], {}
    for g in gold:
        for c in g["concepts"]:
            names = [c["label"], *c.get("aliases", [])]
            said = next((s for s in sentences for n in names if n.lower() in s.lower()), None)
            if said and c["label"] not in quotes:
                quotes[c["label"]] = (said, names)
                concepts.append({"label": c["label"], "description": "", "search_terms": [],
                                 "quote": said[:300]})
    relationships = []
    for g in gold:
        for r in g["relationships"]:
            if r["source"] in quotes and r["target"] in quotes:
                ends = quotes[r["source"]][1] + quotes[r["target"]][1]
                both = next((s for s in sentences if sum(n.lower() in s.lower()
                                                        for n in ends) >= 2), None)
                relationships.append({"source": r["source"], "type": r["type"],
                                      "target": r["target"], "confidence": 0.9,
                                      "quote": (both or quotes[r["source"]][0])[:300]})
    return json.dumps({"concepts": concepts, "relationships": relationships})


def _ceiling_answer(body: dict[str, Any], ids: list[int]) -> str:
    """Cite the (at most two) quotes sharing most words with the question; none: absent."""
    prompt = body["messages"][-1]["content"]
    question = set(search.terms(prompt.splitlines()[0].removeprefix("Question: "), "any"))
    scored = []
    for m in re.finditer(r"^\[(\d+)\] about (.*?): \"(.*)\" \(", prompt, re.M):
        words = set(search.terms(m.group(2) + " " + m.group(3), "any"))
        scored.append((len(question & words), int(m.group(1)), m.group(3)))
    scored.sort(key=lambda t: (-t[0], t[1]))
    best = [t for t in scored if t[0] >= max(2, scored[0][0] if scored else 0)][:2]
    if not best:
        return json.dumps({"found": False, "sentences": []})
    return json.dumps({"found": True, "sentences": [
        {"text": quote, "citations": [i]} for _n, i, quote in best if i in ids]})


def ask_figures(dialect: str, bundled: bool = False) -> dict[str, Any]:
    from kg import ask_eval
    from kg.extraction.ingest import IngestRequest
    from kg.extraction.ingest import ingest as run_ingest
    from tests.fakes import FakeModel, FakeOllama, Reply, chunk_of

    gold = [json.loads(p.read_text()) for p in sorted((ROOT / "corpus").rglob("*.gold.json"))]

    def respond(body: dict[str, Any]) -> Reply:
        fmt = body.get("format")
        if isinstance(fmt, dict) and "sentences" in fmt.get("properties", {}):
            ids = fmt["properties"]["sentences"]["items"]["properties"]["citations"]["items"]
            return Reply(_ceiling_answer(body, ids["enum"]))
        return Reply(_gold_reply(chunk_of(body), gold))

    questions = ask_eval.load(QUESTIONS)
    out: dict[str, Any] = {"dialect": dialect}
    with temp_database(dialect) as db, FakeOllama(
            models=[FakeModel("qwen3:8b", ["completion", "thinking"])],
            responder=respond) as fake:
        point_at(db, fake.url, max_parallel=2)
        docs = [ROOT / "corpus" / d for d in ("academic", "technical", "structured")]
        run_ingest(db, IngestRequest(paths=docs))
        for hops in (0, 1):
            plain = ask_eval.evaluate(db, questions, no_llm=True,
                                      options=retrieval.Options(hops=hops))
            out[f"recall@10 hops={hops}"] = plain["overall"]["recall@10"]
        out["ceiling"] = ask_eval.evaluate(db, questions, options=retrieval.Options(hops=1))
        if bundled:  # the same graph, answered by the bundled model (llama.cpp, CPU)
            from kg.profiles import storage
            from kg.settings import load_settings

            with db.session() as session:
                storage.use_profile(session, "default", by="benchmark")
            started = time.perf_counter()
            out["bundled"] = ask_eval.evaluate(db, questions, models_dir=load_settings().models_dir,
                                               options=retrieval.Options(hops=1))
            out["bundled_s"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search")
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--concepts", type=int, default=100_000)
    parser.add_argument("--relationships", type=int, default=300_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-chunks", type=int, default=200)
    parser.add_argument("--ask-only", action="store_true", help="only the question set")
    parser.add_argument("--no-ask", action="store_true", help="skip the question set")
    parser.add_argument("--bundled", action="store_true",
                        help="also answer the question set with the bundled model (slow)")
    args = parser.parse_args()
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    for d in ([] if args.no_ask else dialects):
        a = ask_figures(d, args.bundled)
        print(f"{d}: question set, retrieval recall@10: full text only "
              f"{a['recall@10 hops=0']}, + graph (1 hop) {a['recall@10 hops=1']}")
        for name in ("ceiling", "bundled"):
            if name in a:
                for scope, m in {"overall": a[name]["overall"], **a[name]["by_kind"]}.items():
                    print(f"  {name} {scope}: " + ", ".join(f"{k} {v}" for k, v in m.items()))
        if "bundled_s" in a:
            print(f"  bundled model: {a['bundled_s']} s for {len(a['bundled']['rows'])} questions")
    if args.ask_only:
        return
    for d in dialects:
        r = latency(d, args.concepts, args.relationships, args.queries)
        print(f"{d}: {r['concepts']} concepts, {r['evidence']} evidence (loaded in "
              f"{r['load_s']} s with the indexes live)")
        print(f"  search p50/p95 {r['search_ms'][0]}/{r['search_ms'][1]} ms; retrieval "
              f"p50/p95 {r['retrieve_ms'][0]}/{r['retrieve_ms'][1]} ms; broad query "
              f"p50/p95 {r['broad_ms'][0]}/{r['broad_ms'][1]} ms")
        print(f"  index build (migration 0018 on the loaded graph) {r['index_build_s']} s")
    for d in dialects:
        if args.ingest_chunks:
            r = ingest(d, args.ingest_chunks)
            print(f"{d}: ingest of {r['chunks']} chunks: {r['on_chunks_per_s']} chunks/s with "
                  f"the indexes, {r['off_chunks_per_s']} without ({r['on_vs_off']})")


if __name__ == "__main__":
    main()
