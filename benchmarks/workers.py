"""`kg worker` processes on one PostgreSQL: throughput with 1, 2 and 4 workers, a worker killed
mid-run, and the graph compared with a single-process `kg ingest` of the same files.

The test server (its own process) answers every request after a fixed 0.2 s; each worker sends
one request at a time (--concurrency 1), so the ideal speed-up is the number of workers. The
workers are started and registered before the run is queued: the clock runs from the queueing
to the run's end, without Python's start-up. `python -m benchmarks.workers` prints the figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.common import ROOT, fake_server, temp_database
from kg import queue
from kg.db import Database
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import IngestRequest
from tests.test_concurrency import configure, graph_of, ingest_at_once, write_corpus

DELAY_S = 0.2
CHUNKING = ChunkingOptions(target_tokens=60, min_tokens=20, max_tokens=120, overlap_tokens=0)
STALLED_AFTER_S = 3.0
WAIT_S = 300.0


def _url(db: Database) -> str:
    return db.url.render_as_string(hide_password=False)


@contextmanager
def workers(db: Database, count: int, home: Path,
            registered: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` idle workers, registered with the queue before this yields (`registered`: the
    total expected, with workers started before); stopped after."""
    env = {**os.environ, "KG_DATABASE_URL": _url(db), "KG_HOME": str(home)}
    home.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "kg.cli", "worker", "--concurrency", "1", "--stalled-after",
         str(STALLED_AFTER_S)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=(home / f"w{n}.err").open("wb"))
        for n in range(count)]
    try:
        _until(lambda: _scalar(db, "SELECT count(*) FROM procrastinate_workers")
               >= (registered or count))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait(60)


def _scalar(db: Database, sql: str, **params: Any) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _until(condition: Any, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not get there in time")
        time.sleep(0.02)


def _queue(db: Database, files: list[Path]) -> int:
    queued = queue.enqueue(db, IngestRequest(paths=files, chunking=CHUNKING))
    assert queued.run_id is not None
    return queued.run_id


def _doing(db: Database) -> dict[int, int]:
    """Jobs in hand: job id -> procrastinate worker id."""
    with db.engine.connect() as conn:
        return {int(r.id): int(r.worker_id) for r in conn.execute(text(
            "SELECT id, worker_id FROM procrastinate_jobs WHERE status = 'doing' "
            "AND worker_id IS NOT NULL"))}


def _done(db: Database, run_id: int) -> bool:
    return _scalar(db, "SELECT status FROM runs WHERE id = :r", r=run_id) != "running"


def _rows(db: Database, run_id: int) -> dict[str, int]:
    """Chunks without an ok outcome (lost) and rows stored twice (duplicated)."""
    lost = _scalar(db, """SELECT count(*) FROM chunks c WHERE NOT EXISTS (
        SELECT 1 FROM chunk_extractions e WHERE e.chunk_id = c.id AND e.run_id = :r
        AND e.status = 'ok')""", r=run_id)
    twice = _scalar(db, """SELECT count(*) FROM (SELECT chunk_id, concept_id, relationship_id,
        quote FROM evidence GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d""")
    calls = _scalar(db, "SELECT count(*) FROM calls WHERE run_id = :r", r=run_id)
    return {"lost": int(lost), "duplicated": int(twice), "calls": int(calls)}


def throughput(server: str, files: list[Path], reference: dict[str, Any], count: int,
               home: Path) -> dict[str, Any]:
    """Seconds for one run with `count` workers, and whether its graph is the reference."""
    with temp_database("postgresql") as db:
        configure(_url(db), server, max_parallel=1)
        with workers(db, count, home):
            started = time.perf_counter()
            run_id = _queue(db, files)
            _until(lambda: _done(db, run_id))
            wall = time.perf_counter() - started
        chunks = int(_scalar(db, "SELECT chunks_total FROM runs WHERE id = :r", r=run_id))
        return {"workers": count, "chunks": chunks, "wall_s": round(wall, 2),
                "chunks_per_s": round(chunks / wall, 2),
                "status": _scalar(db, "SELECT status FROM runs WHERE id = :r", r=run_id),
                "equal": graph_of(_url(db)) == reference, **_rows(db, run_id)}


def killed(server: str, files: list[Path], reference: dict[str, Any],
           home: Path) -> dict[str, Any]:
    """Two workers; one SIGKILLed with a job in hand after a third of the chunks: the
    other takes its jobs again once its heartbeat is STALLED_AFTER_S old."""
    with temp_database("postgresql") as db:
        configure(_url(db), server, max_parallel=1)
        with workers(db, 1, home / "victim") as procs, \
                workers(db, 1, home / "survivor", registered=2):
            victim_id = int(_scalar(db, "SELECT min(id) FROM procrastinate_workers"))
            run_id = _queue(db, files)
            total = int(_scalar(db, "SELECT chunks_total FROM runs WHERE id = :r", r=run_id))
            _until(lambda: _scalar(db, "SELECT chunks_ok FROM runs WHERE id = :r",
                                   r=run_id) >= total // 3
                   and victim_id in _doing(db).values())
            procs[0].send_signal(signal.SIGKILL)
            killed_at = time.perf_counter()
            procs[0].wait(10)
            held = [job for job, worker in _doing(db).items() if worker == victim_id]

            def retaken() -> bool:
                """None of the dead worker's jobs is still 'doing' under its id."""
                return not [job for job, worker in _doing(db).items()
                            if job in held and worker == victim_id]

            _until(retaken)
            retaken_s = round(time.perf_counter() - killed_at, 2)
            _until(lambda: _done(db, run_id))
        return {"chunks": total, "jobs_of_the_dead_worker": len(held),
                "retaken_after_s": retaken_s, "stalled_after_s": STALLED_AFTER_S,
                "status": _scalar(db, "SELECT status FROM runs WHERE id = :r", r=run_id),
                "equal": graph_of(_url(db)) == reference, **_rows(db, run_id)}


def measure(files_n: int = 8, paragraphs: int = 10) -> dict[str, Any]:
    """Every figure: throughput by worker count, the SIGKILL run, graph equality."""
    with tempfile.TemporaryDirectory() as tmp, fake_server("ollama", DELAY_S) as server:
        files = write_corpus(Path(tmp) / "docs", files_n, paragraphs)
        with temp_database("postgresql") as single:
            configure(_url(single), server, max_parallel=1)
            [serial] = ingest_at_once(_url(single), Path(tmp) / "single", [files])
            assert serial.exit_code == 0, serial.stderr
            reference = graph_of(_url(single))
        runs = [throughput(server, files, reference, n, Path(tmp) / f"w{n}") for n in (1, 2, 4)]
        base = runs[0]["wall_s"]
        for r in runs:
            r["speedup"] = round(base / r["wall_s"], 2)
        return {"throughput": runs, "killed": killed(server, files, reference,
                                                      Path(tmp) / "kill"),
                "reference_concepts": len(reference["concepts"])}


def rows() -> list[tuple[str, str, str]]:
    """Lines for `python -m benchmarks`."""
    m = measure()
    out = [(f"kg worker x{r['workers']}", f"{r['speedup']}x ({r['chunks_per_s']} chunks/s)",
            f"{r['chunks']} chunks, 0.2s server, 1 request per worker; graph equal to one "
            f"process: {r['equal']}; lost {r['lost']}, duplicated {r['duplicated']} "
            "(targets 1.8x at 2, 3.4x at 4)") for r in m["throughput"]]
    k = m["killed"]
    out.append(("kg worker SIGKILLed", f"{k['lost']} lost, {k['duplicated']} duplicated",
                f"{k['jobs_of_the_dead_worker']} job(s) taken again after "
                f"{k['retaken_after_s']}s (stalled after {k['stalled_after_s']}s); "
                f"graph equal: {k['equal']}"))
    return out


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
