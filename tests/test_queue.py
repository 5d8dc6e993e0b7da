"""Queued ingestion: planning and deferring (procrastinate on a real PostgreSQL), the SQLite
refusal, the schema from kg's migration, a chunk stored once, a run finished once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from kg import queue
from kg.db import Database, migrate
from kg.db.models import ChunkExtraction, Run
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import IngestRequest
from kg.worker import ChunkJobs, WorkerOptions
from tests.fakes import FakeOllama
from tests.test_concurrency import Gate, configure, write_corpus

CHUNKING = ChunkingOptions(target_tokens=60, min_tokens=20, max_tokens=120, overlap_tokens=0)


def request(files: list[Path]) -> IngestRequest:
    return IngestRequest(paths=files, chunking=CHUNKING)


def jobs(db: Database, status: str | None = None) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM procrastinate_jobs WHERE CAST(:s AS text) IS NULL "
            "OR status::text = :s"),
            {"s": status}).scalar_one())


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_sqlite_refuses_the_queue_in_one_line(kg, db, tmp_path) -> None:
    (tmp_path / "a.md").write_text("Sherlock Holmes.\n", encoding="utf-8")
    for args in (["ingest", "--queue", str(tmp_path / "a.md")], ["worker"]):
        result = kg(*args)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: queued ingestion and `kg worker` need "
                                        "PostgreSQL")
        assert len(result.stderr.strip().splitlines()) == 1
    with db.session() as session:
        assert session.scalars(select(Run)).all() == []


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_migration_applies_and_removes_the_queue_schema(db) -> None:
    assert "procrastinate_jobs" in inspect(db.engine).get_table_names()
    migrate.downgrade(db, "0011")
    db.engine.dispose()
    assert not [t for t in inspect(db.engine).get_table_names() if t.startswith("procrast")]
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_proc WHERE proname LIKE "
                                 "'procrastinate%'")).scalar_one() == 0
    migrate.upgrade(db)
    db.engine.dispose()
    assert "procrastinate_jobs" in inspect(db.engine).get_table_names()


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_queue_plans_and_defers_one_job_per_chunk_without_calling_the_model(
        db, db_url, tmp_path) -> None:
    files = write_corpus(tmp_path / "docs", files=2, paragraphs=3)
    configure(db_url, "http://127.0.0.1:9")  # nothing listens: queueing must not call it
    queued = queue.enqueue(db, request(files))
    assert queued.run_id is not None and queued.documents == 2
    assert queued.jobs == queued.chunks_total == jobs(db, "todo") > 0
    with db.session() as session:
        run = session.get(Run, queued.run_id)
        assert run is not None
        assert (run.status, run.host, run.options["queued"]) == ("running", queue.QUEUE_HOST,
                                                                True)
    # The queueing lock: the same chunks are never waiting twice.
    assert queue.defer_pending(db, queued.run_id) == 0
    assert jobs(db) == queued.jobs
    assert queue.remaining(db, queued.run_id) == queued.jobs
    again = queue.enqueue(db, request(files))  # a live run has these files
    assert again.run_id is None and len(again.busy) == 2


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_cli_queue_prints_the_run_and_returns(kg, db_url, tmp_path) -> None:
    files = write_corpus(tmp_path / "docs", files=1, paragraphs=2)
    configure(db_url, "http://127.0.0.1:9")
    result = kg("ingest", "--queue", *map(str, files), "--json")
    assert result.exit_code == 0, result.stderr
    assert '"run_id": 1' in result.stdout
    result = kg("ingest", "--queue", "--resume", "1")
    assert result.exit_code == 2 and "--queue does not take --resume" in result.stderr
    result = kg("ingest", "--resume", "1")  # a local resume would race the workers
    assert result.exit_code == 2
    assert result.stderr == ("error: run 1 is queued; its chunks are done by `kg worker` "
                             "processes (start one: `kg worker`), not by `kg ingest --resume`\n")


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_chunk_is_stored_once_even_when_its_job_runs_twice(db, db_url, tmp_path) -> None:
    files = write_corpus(tmp_path / "docs", files=1, paragraphs=2)
    gate = Gate(width=2)  # both copies of the job extract at the same time
    with FakeOllama(responder=gate) as server:
        configure(db_url, server.url)
        queued = queue.enqueue(db, request(files))
        assert queued.run_id is not None
        with db.engine.connect() as conn:
            first = int(conn.execute(text(
                "SELECT min((args->>'chunk_id')::int) FROM procrastinate_jobs")).scalar_one())
        worker = ChunkJobs(db, WorkerOptions())
        outcomes: list[str] = []
        threads = [threading.Thread(target=lambda: outcomes.append(
            worker.process(queued.run_id, first))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes) == ["already stored", "ok"]
        assert gate.opened_full
        assert worker.process(queued.run_id, first) == "already stored"
        worker.close()
    with db.session() as session:
        rows = session.scalars(select(ChunkExtraction).where(
            ChunkExtraction.chunk_id == first)).all()
        assert len(rows) == 1 and rows[0].worker is not None
        run = session.get(Run, queued.run_id)
        assert run is not None and run.chunks_ok == 1 and run.status == "running"


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_the_last_chunk_finishes_the_run_exactly_once(db, db_url, tmp_path) -> None:
    files = write_corpus(tmp_path / "docs", files=1, paragraphs=3)
    configure(db_url, "http://127.0.0.1:9")
    queued = queue.enqueue(db, request(files))
    run_id = queued.run_id
    assert run_id is not None
    with db.engine.begin() as conn:  # every chunk has an outcome (as workers would record)
        conn.execute(text(
            "INSERT INTO chunk_extractions (run_id, chunk_id, status, attempts, "
            "profile_revision, concepts, relationships, dropped, error, finished_at) "
            "SELECT :r, id, 'failed', 1, 1, 0, 0, '{}', 'x', now() FROM chunks"), {"r": run_id})
        conn.execute(text("UPDATE runs SET chunks_failed = chunks_total WHERE id = :r"),
                     {"r": run_id})
    assert queue.remaining(db, run_id) == 0
    results: list[object] = []
    barrier = threading.Barrier(6)

    def finish() -> None:
        barrier.wait()
        results.append(queue.finish_if_done(db, run_id))

    threads = [threading.Thread(target=finish) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [r for r in results if r is not None] == ["failed"]
    assert queue.state(db, run_id).finished


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_profile_change_serves_the_next_job(db, db_url, tmp_path) -> None:
    from kg.profiles import storage

    files = write_corpus(tmp_path / "docs", files=1, paragraphs=2)
    with FakeOllama(responder=Gate()) as server:
        configure(db_url, server.url)
        queued = queue.enqueue(db, request(files))
        assert queued.run_id is not None
        with db.engine.connect() as conn:
            chunks = [int(c) for c in conn.execute(text(
                "SELECT (args->>'chunk_id')::int FROM procrastinate_jobs ORDER BY id")).scalars()]
        worker = ChunkJobs(db, WorkerOptions())
        assert worker.process(queued.run_id, chunks[0]) == "ok"
        with db.session() as session:  # an operator's change while the worker runs
            storage.set_profile(session, {"temperature": 0.3}, name="soak", by="operator")
        assert worker.process(queued.run_id, chunks[1]) == "ok"
        worker.close()
        bodies = server.chat_bodies()
    assert [b["options"]["temperature"] for b in bodies][-1] == 0.3
    assert bodies[0]["options"]["temperature"] != 0.3
    with db.engine.connect() as conn:
        revisions = conn.execute(text(
            "SELECT DISTINCT profile_revision FROM calls ORDER BY 1")).scalars().all()
    assert len(revisions) == 2
    with db.session() as session:
        run = session.get(Run, queued.run_id)
        assert run is not None and len(run.profiles_used) == 2
        assert run.status == "completed"  # the last chunk finished the run
