"""What grounded decoding costs: schema size, grammar compile time, tokens per chunk.

Offline part (no model run): every chunk of the corpus gets its grounded schema; we time
llama.cpp's JSON-Schema-to-grammar compilation for it and for today's free schema, and count
the enum values and the schema's size in tokens. Online part (optional): the calls of two `kg
eval corpus` runs stored in a database (grounding on, then off) give tokens and seconds per chunk.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from kg.extraction import loaders
from kg.extraction.chunking import ChunkingOptions, chunk_text
from kg.extraction.grounding import grounded_schema
from kg.extraction.schema import bounds_for_budget, output_schema
from kg.providers.base import estimate_tokens

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
DEFAULT_TYPES = 33


def corpus_chunks() -> list[str]:
    texts = []
    for gold in sorted(CORPUS.rglob("*.gold.json")):
        document = gold.parent / json.loads(gold.read_text())["document"]
        loaded = loaders.load(document)
        if isinstance(loaded, loaders.Skipped):
            continue
        texts += [c.text for c in chunk_text(loaded.text, ChunkingOptions(), loaded.boundaries)]
    return texts


def _compile_ms(schema: dict) -> float | None:
    try:
        from llama_cpp import LlamaGrammar
    except ImportError:
        return None
    started = time.perf_counter()
    LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    return (time.perf_counter() - started) * 1000


def offline() -> dict[str, object]:
    bounds = bounds_for_budget(1024)  # the embedded default's output budget
    types = tuple(f"type_{i}" for i in range(DEFAULT_TYPES))
    free = output_schema(bounds, "evidence", ("person", "organization", "place", "event",
                                              "thing", "idea"), types)
    chunks = corpus_chunks()
    grounded = [grounded_schema(free, text) for text in chunks]
    on = [g for g in grounded if g.grounded]
    free_ms = [ms for ms in (_compile_ms(free) for _ in range(5)) if ms is not None]
    on_ms = [ms for ms in (_compile_ms(g.schema) for g in on) if ms is not None]
    return {
        "chunks": len(chunks),
        "grounded": len(on),
        "fallback": len(chunks) - len(on),
        "labels_per_chunk": round(statistics.mean(g.labels for g in on), 1) if on else None,
        "quotes_per_chunk": round(statistics.mean(g.quotes for g in on), 1) if on else None,
        "schema_tokens_free": estimate_tokens(json.dumps(free)),
        "schema_tokens_grounded_median": statistics.median(
            estimate_tokens(json.dumps(g.schema)) for g in on) if on else None,
        "grammar_ms_free": round(statistics.median(free_ms), 2) if free_ms else None,
        "grammar_ms_grounded_median": round(statistics.median(on_ms), 2) if on_ms else None,
        "grammar_ms_grounded_max": round(max(on_ms), 2) if on_ms else None,
    }


def online(database: str) -> dict[str, object]:
    """Per-chunk figures from the `calls` of evaluations stored in an SQLite database."""
    import sqlite3

    conn = sqlite3.connect(database)
    out: dict[str, object] = {}
    for mode in ("on", "off"):
        row = conn.execute(
            "SELECT count(*), avg(prompt_tokens), avg(completion_tokens), sum(latency_ms) "
            "FROM calls WHERE grounding = ? OR (? = 'on' AND grounding = 'fallback')",
            (mode, mode)).fetchone()
        out[f"calls_{mode}"] = row[0]
        out[f"prompt_tokens_per_call_{mode}"] = round(row[1] or 0, 1)
        out[f"completion_tokens_per_call_{mode}"] = round(row[2] or 0, 1)
        out[f"llm_seconds_{mode}"] = round((row[3] or 0) / 1000, 1)
    return out


if __name__ == "__main__":
    print(offline())
    if len(sys.argv) > 1:
        print(online(sys.argv[1]))
