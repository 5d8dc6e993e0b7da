"""Collections in the engine: ingest, resolution, the call cache, exports, curation and queued
runs each stay inside their collection, on both databases."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from kg import curation
from kg.api import IngestRequest, ingest
from kg.db import Database
from kg.db import collections as registry
from kg.export import export_graph
from kg.queue import enqueue
from tests.graph_seed import STORY
from tests.test_ingest import use_server
from tests.test_worker import Workers, run_status, until

# Every table a collection's rows live in, and its collection column.
TABLES = ("documents", "chunks", "concepts", "concept_aliases", "relationships", "evidence",
          "runs", "chunk_extractions", "calls")


def _rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def _labels(db: Database, collection_id: int) -> set[str]:
    return {r[0] for r in _rows(db, "SELECT label FROM concepts WHERE collection_id = :c",
                                c=collection_id)}


def _story(tmp_path: Path) -> Path:
    path = tmp_path / "story.md"
    path.write_text(STORY, encoding="utf-8")
    return path


@pytest.fixture
def slides(db: Database) -> Database:
    with db.session() as session:
        registry.create(session, "Presentation Slides", by="test")
    return registry.scope(db, "Presentation Slides")


def test_the_same_file_in_two_collections_makes_two_separate_graphs(kg, db, slides, ollama,
                                                                     tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = _story(tmp_path)
    first = ingest(db, IngestRequest(paths=[doc]))
    calls = ollama.chat_count
    second = ingest(slides, IngestRequest(paths=[doc]))
    assert first.status == second.status == "completed"
    # Not "unchanged", and no reply reused from the other collection's cache: its own calls.
    assert second.calls == first.calls and ollama.chat_count == 2 * calls
    assert _labels(db, 1) == _labels(db, slides.collection_id) and _labels(db, 1)
    for table in TABLES:  # every row is in the collection of the run that wrote it
        counts = dict(_rows(db, f"SELECT collection_id, count(*) FROM {table} "
                                "GROUP BY collection_id"))
        assert set(counts) <= {1, slides.collection_id}, table
        assert counts.get(1) == counts.get(slides.collection_id), table
    assert all(_rows(db, f"SELECT count(*) FROM {t} WHERE collection_id = :c",
                     c=slides.collection_id)[0][0] for t in TABLES if t != "concept_aliases")
    # Children carry their parent's collection.
    assert not _rows(db, """SELECT e.id FROM evidence e JOIN chunks c ON c.id = e.chunk_id
                            WHERE e.collection_id <> c.collection_id""")
    assert not _rows(db, """SELECT r.id FROM relationships r JOIN concepts c
                            ON c.id = r.source_id WHERE r.collection_id <> c.collection_id""")
    # Unchanged in its own collection: zero calls.
    again = ingest(slides, IngestRequest(paths=[doc]))
    assert again.status == "unchanged" and ollama.chat_count == 2 * calls


def test_reads_exports_and_curation_stay_inside_a_collection(kg, db, slides, ollama,
                                                              tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = _story(tmp_path)
    ingest(db, IngestRequest(paths=[doc]))
    ingest(slides, IngestRequest(paths=[doc]))
    mine = {r[0] for r in _rows(db, "SELECT id FROM concepts WHERE collection_id = :c",
                                c=slides.collection_id)}

    out = io.StringIO()
    export_graph(slides, "jsonl", None, stream=out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    nodes = {r["id"] for r in records if r["kind"] == "concept"}
    edges = [r for r in records if r["kind"] == "relationship"]
    assert nodes == mine  # all of this collection's concepts, none of the other's
    assert edges and all({e["source_id"], e["target_id"]} <= mine for e in edges)

    before = _labels(db, 1)
    with slides.session() as session:
        found = curation.delete_concept(session, "Sherlock Holmes", by="test")
    assert found["summary"]
    assert "Sherlock Holmes" not in _labels(db, slides.collection_id)
    assert _labels(db, 1) == before  # the other collection keeps its Sherlock Holmes
    with slides.session() as session:
        listed = curation.list_decisions(session, limit=10)
    with db.session() as session:
        assert curation.list_decisions(session, limit=10) == []
    assert len(listed) == 1
    # A later run in default is not bound by slides' decision (nothing suppressed there).
    forced = ingest(db, IngestRequest(paths=[doc], force=True))
    assert forced.status == "completed" and "Sherlock Holmes" in _labels(db, 1)


def test_a_pinned_profile_serves_its_collection(kg, db, slides, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    assert kg("admin", "extraction", "set", "--profile", "pinned", "--provider", "ollama",
              "--model", "qwen3:8b", "--base-url", ollama.url, "--max-retries", "2").exit_code == 0
    with db.session() as session:
        registry.pin(session, "Presentation Slides", profile="pinned")
    summary = ingest(slides, IngestRequest(paths=[_story(tmp_path)]))
    assert summary.status == "completed"
    used = _rows(db, "SELECT DISTINCT profile_name FROM calls WHERE collection_id = :c",
                 c=slides.collection_id)
    assert used == [("pinned",)]


def test_deleting_a_collection_removes_its_rows_only(kg, db, slides, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = _story(tmp_path)
    ingest(db, IngestRequest(paths=[doc]))
    ingest(slides, IngestRequest(paths=[doc]))
    kept = {t: _rows(db, f"SELECT count(*) FROM {t} WHERE collection_id = 1")[0][0]
            for t in TABLES}
    with db.session() as session:
        registry.delete(session, "Presentation Slides")
    for table in TABLES:
        assert _rows(db, f"SELECT count(*) FROM {table}")[0][0] == kept[table], table


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_workers_take_jobs_of_any_collection(db_url, db, tmp_path) -> None:
    from tests.fakes import FakeOllama, Reply, chunk_of, graph_reply
    from tests.test_concurrency import configure

    with db.session() as session:
        registry.create(session, "slides", by="test")
    slides = registry.scope(db, "slides")
    doc = _story(tmp_path)
    with FakeOllama(responder=lambda b: Reply(graph_reply(chunk_of(b)))) as server:
        configure(db_url, server.url, max_parallel=1)
        runs = [enqueue(target, IngestRequest(paths=[doc])).run_id for target in (db, slides)]
        pool = Workers(db_url, tmp_path / "home")
        try:
            pool.start()
            for run_id in runs:
                assert run_id is not None
                until(lambda r=run_id: run_status(db_url, r) != "running", "the runs to end")
        finally:
            pool.stop_all()
    assert [run_status(db_url, r) for r in runs if r is not None] == ["completed"] * 2
    assert _labels(db, 1) == _labels(db, slides.collection_id) and _labels(db, 1)
    for table in TABLES:
        assert not _rows(db, f"""SELECT t.id FROM {table} t WHERE t.collection_id NOT IN
                                 (SELECT id FROM collections)"""), table
    mixed = _rows(db, """SELECT e.id FROM evidence e JOIN runs r ON r.id = e.run_id
                         WHERE e.collection_id <> r.collection_id""")
    assert mixed == []
