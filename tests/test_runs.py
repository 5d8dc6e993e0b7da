"""Run bookkeeping: statuses as the database stores them, liveness, totals, honest verdicts."""

from __future__ import annotations

import itertools
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import CheckConstraint

from kg.db import runstate
from kg.db.models import ChunkExtraction, Document, Run, utcnow
from kg.db.runstate import ChunkStatus, DocumentStatus, RunStatus
from kg.errors import UsageError
from kg.extraction import runs
from tests.fakes import FakeOllama, Reply, chunk_of, graph_reply
from tests.test_ingest import paragraphs, rows, small_chunks, use_server, write


def _check_values(model: type, name: str) -> set[str]:
    for constraint in model.__table__.constraints:
        if isinstance(constraint, CheckConstraint) and constraint.name == name:
            return set(re.findall(r"'([a-z]+)'", str(constraint.sqltext)))
    raise AssertionError(f"no CHECK {name}")


def test_status_enums_are_exactly_the_strings_the_database_accepts() -> None:
    assert {s.value for s in RunStatus} == _check_values(Run, "ck_run_status")
    assert {s.value for s in DocumentStatus} == _check_values(Document, "ck_document_status")
    assert {s.value for s in ChunkStatus} == _check_values(ChunkExtraction,
                                                           "ck_chunk_extraction_status")
    assert RunStatus.COMPLETED == "completed" and json.dumps(RunStatus.FAILED) == '"failed"'


def _run(db, **values) -> int:
    with db.session() as session:
        run_id = runs.start(session, profile_name="default", snapshot={}, options={})
        run = session.get(Run, run_id)
        for key, value in values.items():
            setattr(run, key, value)
    return run_id


def test_a_silent_or_dead_run_is_interrupted_a_live_one_running(db) -> None:
    live = _run(db)
    stale = _run(db, heartbeat_at=utcnow() - timedelta(minutes=5))
    dead = _run(db, pid=2 ** 22 + 12345)  # same host, no such process
    with db.session() as session:
        assert runstate.effective_status(session.get(Run, live)) == RunStatus.RUNNING
        assert runstate.effective_status(session.get(Run, stale)) == RunStatus.INTERRUPTED
        assert runstate.effective_status(session.get(Run, dead)) == RunStatus.INTERRUPTED
        with pytest.raises(UsageError, match="still running"):
            runs.stopped(session, live)


def test_two_resumes_of_one_run_at_once_one_wins(db) -> None:
    run_id = _run(db, status=RunStatus.INTERRUPTED)
    with db.session() as session:
        first_seen = runs.stopped(session, run_id)
    with db.session() as session:
        second_seen = runs.stopped(session, run_id)
    with db.session() as session:
        runs.reopen(session, first_seen)
    with pytest.raises(UsageError, match="just resumed by another process"), \
            db.session() as session:
        runs.reopen(session, second_seen)
    with db.session() as session:
        assert session.get(Run, run_id).status == RunStatus.RUNNING


def test_call_totals_are_named(kg, db, tmp_path) -> None:
    with FakeOllama(responder=lambda b: Reply(graph_reply(chunk_of(b)))) as server:
        use_server(kg, server.url)
        summary = json.loads(kg("ingest", str(write(tmp_path, "a.txt", paragraphs(2))),
                                "--json").stdout)
    with db.session() as session:
        totals = runstate.call_totals(session, summary["run_id"])
    assert totals.calls == summary["calls"] == server.chat_count
    assert totals.prompt_tokens == summary["prompt_tokens"] > 0
    assert totals.latency_ms > 0


def test_a_forced_run_whose_chunks_all_fail_is_failed_not_completed(kg, db, tmp_path) -> None:
    with FakeOllama(responder=lambda b: Reply(graph_reply(chunk_of(b)))) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--max-retries", "0")
        doc = write(tmp_path, "many.txt", paragraphs(4))
        first = json.loads(kg("ingest", str(doc), *small_chunks(), "--json").stdout)
        assert first["status"] == "completed"
        server.responder = lambda b: Reply("this is not JSON")
        result = kg("ingest", str(doc), *small_chunks(), "--force", "--json")
        assert result.exit_code == 1
        forced = json.loads(result.stdout)
        assert forced["status"] == "failed"
        assert forced["chunks_ok"] == 0 and forced["chunks_failed"] == forced["chunks_total"]
        assert "chunk(s) failed" in result.stderr

        # One chunk good, the rest bad: partial, also exit 1.
        count = itertools.count()
        server.responder = lambda b: (Reply(graph_reply(chunk_of(b))) if next(count) == 0
                                      else Reply("nope"))
        again = kg("ingest", str(doc), *small_chunks(), "--force", "--json")
        assert again.exit_code == 1
        assert json.loads(again.stdout)["status"] == "partial"
    statuses = [r[0] for r in rows(db, "SELECT status FROM runs ORDER BY id")]
    assert statuses == ["completed", "failed", "partial"]
    # The graph still holds the first run's extraction of every chunk: the document is whole.
    assert rows(db, "SELECT status FROM documents") == [("ingested",)]


def test_the_read_side_does_not_import_the_engine() -> None:
    import subprocess
    import sys

    code = ("import sys, kg.queries, kg.graph, kg.curation, kg.call_logs, kg.analytics, "
            "kg.export; print(sorted(m for m in sys.modules if m.startswith('kg.extraction')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert loaded.strip() == "[]"
