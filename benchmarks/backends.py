"""Backends at scale, against test servers: endpoint pool, adaptive concurrency, fallback,
the dry-run estimate. `python -m benchmarks.backends` prints the figures (nothing asserted).
"""

from __future__ import annotations

import math
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.common import corpus_text, fake_server, point_at, temp_database
from kg.db import Database
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.estimate import estimate
from kg.extraction.ingest import IngestRequest, ingest
from kg.profiles import storage
from tests.fakes import FakeOllama, FakeVLLM, Reply, chunk_of, graph_reply

CHUNKING = ChunkingOptions(target_tokens=160, min_tokens=20, max_tokens=240, overlap_tokens=0)


def _answer(delay: float) -> Callable[[dict[str, Any]], Reply]:
    return lambda body: Reply(graph_reply(chunk_of(body)), delay=delay)


def _doc(tmp: str, name: str, chunks: int, seed: int = 0) -> Path:
    path = Path(tmp) / name
    text_ = corpus_text(chunks + seed)
    path.write_text("\n\n".join(text_.split("\n\n")[seed:]), encoding="utf-8")
    return path


def _run(db: Database, path: Path) -> Any:
    return ingest(db, IngestRequest(paths=[path], chunking=CHUNKING, backoff_s=0.2))


def _free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def pool(chunks: int = 64, delay: float = 0.05) -> dict[str, Any]:
    """Two equal endpoints: each one's share; then one killed mid-run: failed chunks."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, temp_database("sqlite") as db:
        with FakeVLLM(responder=_answer(delay)) as a, FakeVLLM(responder=_answer(delay)) as b:
            point_at(db, f"{a.base_url},{b.base_url}", "vllm", "Qwen/Qwen3-8B", max_parallel=4)
            summary = _run(db, _doc(tmp, "share.txt", chunks))
            sent = len(a.chat_bodies()), len(b.chat_bodies())
        out["share_a_pct"] = round(100 * sent[0] / sum(sent), 1)
        out["share_chunks"] = summary.chunks_total
        with FakeVLLM(responder=_answer(delay)) as survivor:
            victim = FakeVLLM()
            count = {"n": 0}

            def dying(body: dict[str, Any]) -> Reply:
                count["n"] += 1
                if count["n"] == chunks // 4:
                    threading.Timer(0.01, victim.kill).start()
                return Reply(graph_reply(chunk_of(body)), delay=delay)

            victim.responder = dying
            victim.__enter__()
            point_at(db, f"{victim.base_url},{survivor.base_url}", "vllm", "Qwen/Qwen3-8B",
                     max_parallel=4)
            killed = _run(db, _doc(tmp, "kill.txt", chunks, seed=chunks))
        out["killed_failed_chunks"] = killed.chunks_failed
        out["killed_status"] = str(killed.status)
        out["killed_chunks"] = killed.chunks_total
    return out


def capacity(chunks: int = 60, delay: float = 0.2, cap: int = 3,
             parallel: int = 8) -> dict[str, Any]:
    """A server serving `cap` at once, 503 above it; max_parallel 8 (the server runs in its
    own process, as in the scaling figure, so that it does not share the engine's GIL)."""
    with tempfile.TemporaryDirectory() as tmp, temp_database("sqlite") as db, fake_server(
            delay=delay, capacity=cap) as url:
        point_at(db, url, max_parallel=parallel)
        started = time.perf_counter()
        summary = _run(db, _doc(tmp, "cap.txt", chunks))
        wall = time.perf_counter() - started
        with db.engine.connect() as conn:
            busy = conn.execute(text("SELECT count(*) FROM calls WHERE error_kind = "
                                     "'ServerBusy'")).scalar()
            calls = conn.execute(text("SELECT started_at, latency_ms FROM calls")).all()
        ideal = math.ceil(summary.chunks_total / cap) * delay
    # Throughput while extracting: first request sent to last answer back (start-up and
    # planning are the engine-overhead figure's business, not this one's).
    first = min(_epoch(c.started_at) for c in calls)
    last = max(_epoch(c.started_at) + c.latency_ms / 1000 for c in calls)
    return {"chunks": summary.chunks_total, "failed": summary.chunks_failed,
            "busy_answers": busy, "wall_s": round(wall, 2), "serving_s": round(last - first, 2),
            "ideal_s": round(ideal, 2),
            "throughput_pct_of_ideal": round(100 * ideal / (last - first), 1)}


def _epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def fallback(chunks: int = 32) -> dict[str, Any]:
    """Primary down: who served each chunk, and how soon the first fallback decision came."""
    with tempfile.TemporaryDirectory() as tmp, temp_database("sqlite") as db:
        with FakeOllama(responder=_answer(0.0)) as local:
            with db.session() as session:
                storage.set_profile(session, {"provider": "ollama", "model": "qwen3:8b",
                                              "base_url": local.url},
                                    name="cloud", by="benchmark")
            point_at(db, f"{_free_url()}/v1", "vllm", "Qwen/Qwen3-8B", max_parallel=1,
                     fallback_profile="cloud")
            started = time.perf_counter()
            summary = _run(db, _doc(tmp, "fb.txt", chunks))
            wall = time.perf_counter() - started
        with db.engine.connect() as conn:
            served = conn.execute(text("SELECT count(DISTINCT chunk_id) FROM calls WHERE "
                                       "fallback = :t AND status = 'ok'"), {"t": True}).scalar()
            starts = dict(conn.execute(text(
                "SELECT fallback, min(started_at) FROM calls GROUP BY fallback")).all())
    # From the first request to the primary to the first request to the fallback.
    decided = _epoch(starts[True]) - _epoch(starts[False])
    return {"chunks": summary.chunks_total, "served_by_fallback": served,
            "failed": summary.chunks_failed, "first_decision_ms": round(decided * 1000, 1),
            "wall_s": round(wall, 2)}


def dry_run(chunks: int = 40) -> dict[str, Any]:
    """The estimate before a run vs that run, with and without earlier calls to calibrate."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, temp_database("sqlite") as db, FakeOllama(
            responder=_answer(0.0)) as server:
        point_at(db, server.url, max_parallel=4)
        for label in ("cold", "calibrated"):
            doc = _doc(tmp, f"{label}.txt", chunks, seed=0 if label == "cold" else chunks)
            found = estimate(db, [doc], chunking=CHUNKING)
            real = _run(db, doc)
            out[f"{label}_calls"] = (found.calls, real.calls)
            out[f"{label}_prompt_diff_pct"] = round(
                100 * (found.prompt_tokens - real.prompt_tokens) / real.prompt_tokens, 1)
    return out


def rows() -> list[tuple[str, str, str]]:
    p = pool()
    c = capacity()
    f = fallback()
    d = dry_run()
    return [
        ("two equal endpoints", f"{p['share_a_pct']}% / {100 - p['share_a_pct']:.1f}%",
         f"{p['share_chunks']} chunks, max_parallel 4, least outstanding (target 50% +- 5%)"),
        ("one endpoint killed mid-run", f"{p['killed_failed_chunks']} failed chunks",
         f"{p['killed_chunks']} chunks, run {p['killed_status']} (target 0)"),
        ("capacity 3, 503 above, max_parallel 8",
         f"{c['throughput_pct_of_ideal']}% of ideal, {c['failed']} failed",
         f"{c['chunks']} chunks x 0.2s: {c['serving_s']}s serving ({c['wall_s']}s with "
         f"start-up) vs {c['ideal_s']}s; "
         f"{c['busy_answers']} 503s (target within 15%, 0 failed)"),
        ("primary down, fallback serves",
         f"{f['served_by_fallback']}/{f['chunks']} chunks",
         f"{f['failed']} failed; first fallback decision after {f['first_decision_ms']} ms "
         "(target all, < 1 s)"),
        ("dry-run vs run: calls", f"{d['calibrated_calls'][0]} vs {d['calibrated_calls'][1]}",
         f"cold: {d['cold_calls'][0]} vs {d['cold_calls'][1]} (target exact)"),
        ("dry-run vs run: prompt tokens", f"{d['calibrated_prompt_diff_pct']:+}%",
         f"with earlier calls to calibrate; cold (local estimate only): "
         f"{d['cold_prompt_diff_pct']:+}% (target within 10%)"),
    ]


def main() -> None:
    table = rows()
    widths = [max(len(r[i]) for r in table) for i in range(2)]
    for name, value, note in table:
        print(f"{name.ljust(widths[0])}  {value.ljust(widths[1])}  {note}")


if __name__ == "__main__":
    main()
