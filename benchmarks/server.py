"""`kg serve` under load: `/graph` latency in a large graph, and a run watched by many clients.

1. `/graph` p50/p95 around a hub of a 100k-concept graph (300k relationships plus 1,000 edges
   on the hub), on SQLite and PostgreSQL: depth 2 as the page asks (limit 200: the hub's first
   level already fills it), depth 2 with limit 2000, and depth 2 around an ordinary concept.
2. A run while 50 clients follow its Server-Sent Events and 200 clients send GETs (concepts,
   graph, run detail; each waits --think seconds between requests, 0 = back to back), against
   the same run with no clients: errors and chunks/s. The fake model takes --delay seconds
   per chunk (0.5 s by default: a small model on a GPU; real ones take longer, which only
   makes the run's share of the CPU smaller). The run is started through `POST /runs` (it
   runs inside the server process, sharing it with the load) or, with `--run-in process`, by
   a separate `kg ingest`.

The server is a real `kg serve` process; the load comes from this process (asyncio + httpx);
the model is the fake Ollama server in its own process.

python -m benchmarks.server [--part graph|load|both] [--dialect sqlite|postgresql|both]
                            [--concepts N] [--relationships N] [--requests N]
                            [--chunks N] [--delay S] [--sse 50] [--getters 200] [--think S]
                            [--run-in server|process]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select, text

from benchmarks.common import ROLES, ROOT, fake_server, point_at, tag, temp_database
from kg.db import Database
from kg.db.models import Concept, Relationship, RelationshipType, Run
from tests.graph_seed import bulk_graph

HUB_EDGES = 1000


@contextmanager
def kg_serve(db: Database, home: Path, *extra: str) -> Iterator[str]:
    """A `kg serve` process on a free port of 127.0.0.1; yields its base URL."""
    env = {**os.environ, "KG_DATABASE_URL": db.url.render_as_string(hide_password=False),
           "KG_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "kg.cli", "serve", "--port", "0", *extra],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        match = None
        for _ in range(10):
            line = proc.stderr.readline()
            if not line:
                break
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if match:
                break
        if match is None:
            raise RuntimeError("kg serve did not start")
        url = f"http://127.0.0.1:{match.group(1)}"
        for _ in range(200):
            try:
                httpx.get(f"{url}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- 1. /graph in a large graph ----------------------------------------------------------------

def add_hub(db: Database, hub: int, edges: int) -> None:
    """`edges` more relationships from concept `hub` to others (so it has ~1,000 neighbours)."""
    with db.engine.begin() as conn:
        types = list(conn.scalars(select(RelationshipType.id).where(
            RelationshipType.direction == "directed").order_by(RelationshipType.id)))
        top = conn.scalar(select(Concept.id).order_by(Concept.id.desc()).limit(1)) or 0
        taken = {(s, t, g) for s, t, g in conn.execute(
            select(Relationship.source_id, Relationship.type_id, Relationship.target_id)
            .where(Relationship.source_id == hub))}
        rows = []
        step = max(1, (top - hub) // edges)
        for k in range(edges):
            target = hub + 1 + k * step
            key = (hub, types[k % len(types)], target)
            if target <= top and key not in taken:
                rows.append({"source_id": hub, "type_id": key[1], "target_id": target,
                             "confidence": 0.9})
        conn.execute(insert(Relationship.__table__), rows)
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE relationships"))


def graph_latency(dialect: str, concepts: int, relationships: int,
                  requests: int) -> dict[str, Any]:
    with temp_database(dialect) as db, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        bulk = bulk_graph(db, concepts, relationships, chunk_count=1000)
        with db.engine.connect() as conn:
            hub, hub_label = conn.execute(select(Concept.id, Concept.label)
                                          .order_by(Concept.id).limit(1)).one()
            plain = conn.scalar(select(Concept.label).where(Concept.id == hub + concepts // 2))
        add_hub(db, hub, HUB_EDGES)
        build_s = time.perf_counter() - started
        cases = [("hub, depth 2, limit 200", hub_label, 2, 200),
                 ("hub, depth 2, limit 2000", hub_label, 2, 2000),
                 ("ordinary, depth 2, limit 200", plain, 2, 200)]
        results = []
        with kg_serve(db, Path(tmp)) as url, httpx.Client(base_url=url, timeout=60) as client:
            for name, center, depth, limit in cases:
                params = {"center": center, "depth": depth, "limit": limit}
                first = client.get("/graph", params=params)  # warms caches, checks the answer
                first.raise_for_status()
                times = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    client.get("/graph", params=params).raise_for_status()
                    times.append((time.perf_counter() - t0) * 1000)
                body = first.json()
                results.append({"case": name, "nodes": len(body["nodes"]),
                                "edges": len(body["edges"]), "truncated": body["truncated"],
                                "p50_ms": round(statistics.median(times), 1),
                                "p95_ms": round(percentile(times, 95), 1)})
    return {"dialect": dialect, "concepts": bulk.concepts,
            "relationships": bulk.relationships + HUB_EDGES, "build_s": round(build_s, 1),
            "cases": results}


# -- 2. a run under load -------------------------------------------------------------------------

@dataclass
class Load:
    sse_clients: int
    getters: int
    think_s: float  # each GET client waits this long between its requests (0: back to back)
    events: int = 0
    sse_errors: list[str] = field(default_factory=list)
    gets: int = 0
    get_errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


async def follow(client: httpx.AsyncClient, run_id: int, load: Load) -> None:
    try:
        async with client.stream("GET", f"/runs/{run_id}/events") as response:
            if response.status_code != 200:
                load.sse_errors.append(f"status {response.status_code}")
                return
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    load.events += 1
                    if line == "event: finished":
                        return
    except Exception as exc:
        load.sse_errors.append(f"{type(exc).__name__}: {exc}")


async def getter(client: httpx.AsyncClient, k: int, paths: list[str], load: Load,
                 stop: asyncio.Event) -> None:
    i = k
    await asyncio.sleep(load.think_s * k / max(load.getters, 1))  # spread the clients out
    while not stop.is_set():
        path = paths[i % len(paths)]
        i += 1
        t0 = time.perf_counter()
        try:
            response = await client.get(path)
            if response.status_code != 200:
                load.get_errors.append(f"{path}: {response.status_code}")
            load.gets += 1
            load.latencies.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:
            load.get_errors.append(f"{path}: {type(exc).__name__}")
        if load.think_s:
            await asyncio.sleep(load.think_s)


def document(folder: Path, name: str, chunks: int, offset: int) -> Path:
    """`chunks` paragraphs of about one chunk each (as in corpus_text), naming people no
    other document names."""
    filler = " ".join(["the", "meeting", "went", "on", "for", "hours"] * 18)
    paragraphs = [", ".join(f"{role} {tag(i)}" for role in ROLES) + f" met in the hall. {filler}."
                  for i in range(offset, offset + chunks)]
    path = folder / name
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


def chunks_per_s(db: Database, run_id: int) -> tuple[int, float]:
    with db.engine.connect() as conn:
        run = conn.execute(select(Run.started_at, Run.finished_at, Run.chunks_ok,
                                  Run.chunks_failed, Run.status).where(Run.id == run_id)).one()
    seconds = (run.finished_at - run.started_at).total_seconds()
    done = run.chunks_ok + run.chunks_failed
    if run.status != "completed":
        raise RuntimeError(f"run {run_id} ended {run.status}")
    return done, done / seconds


async def one_run(url: str, db: Database, doc: Path, load: Load | None, run_in: str,
                  env: dict[str, str]) -> tuple[int, float]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        proc = None
        if run_in == "server":
            files = {"files": (doc.name, doc.read_bytes())}
            started = await client.post("/runs", files=files,
                                        data={"chunking": '{"target_tokens": 200, '
                                              '"min_tokens": 50, "max_tokens": 260, '
                                              '"overlap_tokens": 0}'})
            started.raise_for_status()
            run_id = started.json()["run_id"]
        else:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kg.cli", "ingest", str(doc), "--chunk-tokens", "200",
                 "--chunk-min", "50", "--chunk-max", "260", "--chunk-overlap", "0"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            while True:
                listed = (await client.get("/runs", params={"limit": 1})).json()
                if listed and listed[0]["status"] == "running":
                    run_id = listed[0]["id"]
                    break
                await asyncio.sleep(0.02)
        stop = asyncio.Event()
        tasks = []
        if load is not None:
            paths = ["/concepts?search=agent&limit=20", f"/runs/{run_id}",
                     f"/graph?center=Agent%20{tag(1)}&depth=1", "/runs?limit=5"]
            tasks = [asyncio.create_task(follow(client, run_id, load))
                     for _ in range(load.sse_clients)]
            tasks += [asyncio.create_task(getter(client, k, paths, load, stop))
                      for k in range(load.getters)]
        while True:  # the run's end, read from the database like any client would
            status = (await client.get(f"/runs/{run_id}")).json()["status"]
            if status != "running":
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)
        if proc is not None:
            proc.wait(60)
    return chunks_per_s(db, run_id)


def run_under_load(dialect: str, chunks: int, delay: float, sse: int, getters: int,
                   think_s: float, run_in: str) -> dict[str, Any]:
    with temp_database(dialect) as db, tempfile.TemporaryDirectory() as tmp, \
            fake_server("ollama", delay=delay) as model_url:
        point_at(db, model_url, max_parallel=8)
        folder = Path(tmp)
        env = {**os.environ, "KG_DATABASE_URL": db.url.render_as_string(hide_password=False),
               "KG_HOME": str(folder / "home"), "PYTHONPATH": str(ROOT)}
        # A seed document so that the GETs have a graph to read.
        seed = document(folder, "seed.md", 20, 0)
        with kg_serve(db, folder / "home") as url:
            asyncio.run(one_run(url, db, seed, None, run_in, env))
            quiet = asyncio.run(one_run(url, db, document(folder, "quiet.md", chunks, 100),
                                        None, run_in, env))
            load = Load(sse, getters, think_s)
            busy = asyncio.run(one_run(url, db, document(folder, "busy.md", chunks, 100000),
                                       load, run_in, env))
    return {"dialect": dialect, "run_in": run_in, "chunks": quiet[0],
            "quiet_chunks_per_s": round(quiet[1], 1), "busy_chunks_per_s": round(busy[1], 1),
            "change_pct": round((busy[1] / quiet[1] - 1) * 100, 1),
            "sse_clients": sse, "sse_events": load.events, "sse_errors": load.sse_errors[:3],
            "getters": getters, "gets": load.gets, "get_errors": load.get_errors[:3],
            "get_error_count": len(load.get_errors),
            "get_p50_ms": round(statistics.median(load.latencies), 1) if load.latencies else None,
            "get_p95_ms": round(percentile(load.latencies, 95), 1) if load.latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server")
    parser.add_argument("--part", choices=["graph", "load", "both"], default="both")
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--concepts", type=int, default=100_000)
    parser.add_argument("--relationships", type=int, default=300_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=160)
    parser.add_argument("--delay", type=float, default=0.5,
                        help="seconds the fake model takes per chunk")
    parser.add_argument("--sse", type=int, default=50)
    parser.add_argument("--getters", type=int, default=200)
    parser.add_argument("--think", type=float, default=1.0,
                        help="seconds each GET client waits between requests (0: none)")
    parser.add_argument("--run-in", choices=["server", "process"], default="server")
    args = parser.parse_args()
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    if args.part in ("graph", "both"):
        for dialect in dialects:
            g = graph_latency(dialect, args.concepts, args.relationships, args.requests)
            print(f"/graph on {dialect}: {g['concepts']:,} concepts, {g['relationships']:,} "
                  f"relationships (built in {g['build_s']}s), {args.requests} requests each")
            for c in g["cases"]:
                print(f"  {c['case']:30} {c['nodes']:>5} nodes {c['edges']:>5} edges"
                      f"{' (truncated)' if c['truncated'] else ''}: p50 {c['p50_ms']} ms, "
                      f"p95 {c['p95_ms']} ms")
    if args.part in ("load", "both"):
        for dialect in dialects:
            r = run_under_load(dialect, args.chunks, args.delay, args.sse, args.getters,
                               args.think, args.run_in)
            print(f"run under load on {dialect} (run in the {r['run_in']}): {r['chunks']} "
                  f"chunks x {args.delay}s, max_parallel 8")
            print(f"  no clients: {r['quiet_chunks_per_s']} chunks/s; with {r['sse_clients']} "
                  f"SSE clients + {r['getters']} GET clients ({args.think}s between GETs): "
                  f"{r['busy_chunks_per_s']} chunks/s ({r['change_pct']:+}%)")
            print(f"  SSE: {r['sse_events']} events, errors {r['sse_errors'] or 'none'}; "
                  f"GETs: {r['gets']} answered, p50 {r['get_p50_ms']} ms, p95 "
                  f"{r['get_p95_ms']} ms, errors {r['get_error_count']} "
                  f"{r['get_errors'] or ''}")


if __name__ == "__main__":
    main()
