"""Planning: which files become documents, who takes a document, what is pending, progress."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kg.db.runstate import RunStatus
from kg.extraction import loaders, plan, runs
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import IngestRequest, Planning, Progress, ingest
from tests.fakes import FakeOllama, Reply, chunk_of, graph_reply
from tests.test_ingest import STORY, paragraphs, rows, small_chunks, use_server, write

ROOT = Path(__file__).resolve().parent.parent
SMALL = ChunkingOptions(target_tokens=60, min_tokens=20, max_tokens=120, overlap_tokens=0)


@pytest.fixture
def server():
    with FakeOllama(responder=lambda b: Reply(graph_reply(chunk_of(b)))) as s:
        yield s


def test_a_symlink_loop_given_directly_says_so(kg, db, server, tmp_path) -> None:
    use_server(kg, server.url)
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    result = kg("ingest", str(loop))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "symlink loop" in result.stderr and "no such file" not in result.stderr
    broken = tmp_path / "broken.txt"
    broken.symlink_to(tmp_path / "gone.txt")
    result = kg("ingest", str(broken))
    assert result.exit_code == 2 and "broken symlink" in result.stderr
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)] and server.chat_count == 0


def test_nothing_readable_is_exit_2_with_one_line_and_nothing_written(kg, db, server,
                                                                     tmp_path) -> None:
    use_server(kg, server.url)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02 binary")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    result = kg("ingest", str(folder))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: nothing could")
    for name in ("empty.txt", "binary.txt", "broken.pdf"):
        assert name in result.stderr
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)]
    assert rows(db, "SELECT count(*) FROM documents") == [(0,)]
    assert server.chat_count == 0


def test_skipped_files_are_listed_and_the_others_ingested(kg, db, server, tmp_path) -> None:
    use_server(kg, server.url)
    write(tmp_path, "good.md", STORY)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    result = kg("ingest", str(tmp_path / "good.md"), str(empty), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["documents"] == 1
    assert f"skipped {empty}: empty file" in result.stderr


def test_a_document_a_live_run_has_is_not_taken_again(db, tmp_path) -> None:
    doc = loaders.load(write(tmp_path, "story.md", STORY))
    assert isinstance(doc, loaders.LoadedDocument)
    with db.session() as session:
        first = runs.start(session, profile_name="t", snapshot={}, options={})
        second = runs.start(session, profile_name="t", snapshot={}, options={})
    added = plan.add_document(db, first, doc, SMALL, force=False)
    assert added.decision == plan.Decision.ADDED and added.chunks == 2
    taken = plan.add_document(db, second, doc, SMALL, force=True)
    assert taken == plan.Added(plan.Decision.BUSY, owner=first)
    work = plan.pending(db, first)
    assert len(work.chunks) == 2 and len(plan.pending(db, second).chunks) == 0
    assert [d.path for d in work.documents.values()] == [str(doc.path.resolve())]
    runs.finish(db, first, RunStatus.INTERRUPTED)  # no longer live: the next run may
    assert plan.add_document(db, second, doc, SMALL, force=False).decision == \
        plan.Decision.ADDED
    assert rows(db, "SELECT count(*) FROM documents") == [(1,)]
    assert rows(db, "SELECT count(*) FROM chunks") == [(2,)]


def test_planning_and_extraction_report_progress(kg, db, server, tmp_path) -> None:
    use_server(kg, server.url, "ollama", "qwen3:8b", "--max-parallel", "1")
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, "a.txt", paragraphs(3))
    write(folder, "b.md", STORY)
    (folder / "c.txt").write_bytes(b"")
    planning: list[Planning] = []
    progress: list[Progress] = []
    summary = ingest(db, IngestRequest(paths=[folder], chunking=SMALL),
                     on_planning=planning.append, on_progress=progress.append)
    assert [(p.done, p.total, Path(p.path).name) for p in planning] == [
        (1, 3, "a.txt"), (2, 3, "b.md"), (3, 3, "c.txt")]
    assert summary.skipped == [(str(folder / "c.txt"), "empty file")]
    assert len(progress) == summary.chunks_total == server.chat_count
    last = progress[-1]
    assert (last.done, last.total, last.failed) == (summary.chunks_total,) * 2 + (0,)
    assert (last.concepts, last.relationships) == (summary.concepts_new,
                                                   summary.relationships_new)
    assert last.tokens > 0 and last.tokens_per_s > 0 and last.eta_s == 0
    finished = [p for p in progress if p.finished_document]
    assert [Path(p.document).name for p in finished] == ["a.txt", "b.md"]
    assert all(p.document_done == p.document_chunks for p in finished)
    assert [p.documents_done for p in finished] == [1, 2]
    first = progress[0]
    assert (first.document_done, first.document_chunks) == (1, finished[0].document_chunks)


def test_without_a_terminal_one_line_per_document(kg, db, server, tmp_path) -> None:
    use_server(kg, server.url)
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, "a.txt", paragraphs(3))
    write(folder, "b.md", STORY)
    result = kg("ingest", str(folder), *small_chunks())
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    # Documents finish in whatever order their chunks land (requests run in parallel).
    assert lines[0].endswith("[1/2 files]") and lines[1].endswith("[2/2 files]")
    by_name = {Path(line.split(":")[0]).name: line for line in lines}
    assert set(by_name) == {"a.txt", "b.md"}
    assert by_name["a.txt"].startswith(str((folder / "a.txt").resolve()))
    assert "b.md: 2 chunks, 0 failed [" in by_name["b.md"]


@pytest.mark.slow
def test_the_same_file_started_twice_at_once_is_extracted_once(db_url, db, tmp_path) -> None:
    doc = write(tmp_path, "long.txt", paragraphs(8))
    env = {**os.environ, "KG_DATABASE_URL": db_url, "KG_HOME": str(tmp_path / "home")}
    slow = lambda body: Reply(graph_reply(chunk_of(body)), delay=0.4)  # noqa: E731
    with FakeOllama(responder=slow) as server:
        setup = subprocess.run(
            [sys.executable, "-m", "kg.cli", "admin", "extraction", "set", "--profile", "t",
             "--provider", "ollama", "--model", "qwen3:8b", "--base-url", server.url,
             "--max-parallel", "1", "--activate"], cwd=ROOT, env=env, capture_output=True)
        assert setup.returncode == 0, setup.stderr
        command = [sys.executable, "-m", "kg.cli", "ingest", str(doc), *small_chunks(),
                   "--json"]
        procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(120), *p.communicate()) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
        assert "Traceback" not in err
    chunks = rows(db, "SELECT count(*) FROM chunks")[0][0]
    assert chunks >= 6
    assert server.chat_count == chunks  # no chunk paid for twice
    assert rows(db, "SELECT count(*) FROM calls") == [(chunks,)]
    assert rows(db, "SELECT count(*) FROM documents") == [(1,)]
    summaries = [json.loads(out) for _code, out, _err in results]
    did = [s for s in summaries if s["run_id"] is not None]
    assert len(did) == 1 and did[0]["status"] == "completed"
    other = next(s for s in summaries if s["run_id"] is None)
    busy = next(err for _c, _o, err in results if "being ingested" in err) if other["busy"] \
        else None
    assert other["unchanged"] or busy is not None
    if busy is not None:
        assert f"being ingested by run {did[0]['run_id']}" in busy


@pytest.mark.slow
def test_on_a_terminal_progress_shows_file_chunk_graph_speed_and_eta(kg, db, tmp_path) -> None:
    from tests.terminal import run_in_pty

    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder, "alpha.txt", paragraphs(4))
    write(folder, "beta.md", STORY)
    # Slower than the display's refresh (10 per second), so every chunk gets drawn.
    slow = lambda body: Reply(graph_reply(chunk_of(body)), delay=0.25)  # noqa: E731
    with FakeOllama(responder=slow) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--max-parallel", "1")
        code, screen = run_in_pty(["ingest", str(folder), *small_chunks()], dict(os.environ),
                                  columns=160)
    assert code == 0, screen
    assert "planning" in screen and "2/2 beta.md" in screen
    assert re.search(r"alpha\.txt chunk [1-4]/4", screen) and "beta.md chunk 2/2" in screen
    assert "concepts" in screen and "relationships" in screen
    assert "tok/s" in screen and "ETA" in screen
    assert "[1/2 files]" not in screen  # the plain lines are for pipes only
