"""Document versions (issue #22): a changed file is a new version, unchanged chunks cost no
call, what only the old text supported is retracted (history, not deletion), the graph as of
a date, moves, `--sync`, and pruning; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kg.db import Database
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import IngestRequest
from kg.extraction.ingest import ingest as ingest_api
from tests.fakes import FakeOllama, Reply, chunk_of, graph_reply
from tests.graph_seed import SMALL_CHUNKS, fake_ollama, rows, use_server
from tests.test_concurrency import configure

CHUNKING = ChunkingOptions(target_tokens=60, min_tokens=20, max_tokens=120, overlap_tokens=0)


def story(*names: str) -> str:
    """One paragraph (one chunk) per name, each naming two people of its own."""
    filler = " ".join(["the", "report", "was", "filed", "quickly"] * 8)
    return "\n\n".join(f"Agent {n} met Director {n}son in City {n}ville. {filler}."
                       for n in names)


def ingest(kg: Any, *paths: Path | str, extra: tuple[str, ...] = ()) -> Any:
    result = kg("ingest", *map(str, paths), *SMALL_CHUNKS, *extra)
    assert result.exit_code == 0, result.stderr
    return result


def live_labels(db: Database) -> set[str]:
    return {r[0] for r in rows(db, "SELECT label FROM concepts WHERE valid_to IS NULL "
                                   "AND valid_from IS NOT NULL")}


def chats(server: FakeOllama) -> int:
    return len(server.chat_bodies())


def graph_of(db: Database) -> tuple[set[str], set[tuple[str, str]], int]:
    """Live concepts, live relationships (as label pairs) and live evidence count."""
    edges = {(a, b) for a, b in rows(
        db, "SELECT s.label, t.label FROM relationships r JOIN concepts s ON s.id = r.source_id "
            "JOIN concepts t ON t.id = r.target_id WHERE r.valid_to IS NULL "
            "AND r.valid_from IS NOT NULL")}
    evidence = rows(db, "SELECT count(*) FROM evidence WHERE valid_to IS NULL "
                        "AND valid_from IS NOT NULL")[0][0]
    return live_labels(db), edges, evidence


def test_changed_file_is_a_new_version_and_only_new_text_is_extracted(
        kg: Any, ollama: FakeOllama, tmp_path: Path, db_url: str) -> None:
    use_server(kg, ollama.url)
    doc = tmp_path / "a.md"
    doc.write_text(story("Alpha", "Bravo", "Charlie"), encoding="utf-8")
    ingest(kg, doc, extra=("--no-cache",))
    first_calls = chats(ollama)
    assert first_calls == 3
    db = Database(db_url)
    assert {"Agent Bravo", "Director Bravoson"} <= live_labels(db)

    doc.write_text(story("Alpha", "Delta", "Charlie"), encoding="utf-8")
    ingest(kg, doc, extra=("--no-cache",))
    assert chats(ollama) - first_calls == 1  # only the changed paragraph
    # One live version of the path (today's code kept both `ingested` and live).
    live = rows(db, "SELECT version FROM documents WHERE valid_to IS NULL")
    assert live == [(2,)]
    assert rows(db, "SELECT count(*) FROM documents")[0][0] == 2
    labels = live_labels(db)
    assert "Agent Bravo" not in labels and "Agent Delta" in labels
    assert {"Agent Alpha", "Agent Charlie"} <= labels
    # History, not deletion: the retracted concept is still there, with valid_to.
    assert rows(db, "SELECT count(*) FROM concepts WHERE label = 'Agent Bravo' "
                    "AND valid_to IS NOT NULL")[0][0] == 1
    # Reads show the live graph only.
    listed = kg("concepts", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    shown = {c["label"] for c in json.loads(listed.stdout)}
    assert "Agent Bravo" not in shown and "Agent Delta" in shown


def _exported(kg: Any, *extra: str) -> tuple[set[tuple[str, Any]], set[tuple[str, ...]]]:
    """Concepts and relationships of `kg export --format jsonl`, with evidence counts."""
    result = kg("export", "--format", "jsonl", *extra)
    assert result.exit_code == 0, result.stderr
    nodes: set[tuple[str, Any]] = set()
    edges: set[tuple[str, ...]] = set()
    for line in result.stdout.splitlines():
        item = json.loads(line)
        if item["kind"] == "concept":
            nodes.add((item["label"], item["evidence_count"]))
        else:
            edges.add((item["source"], item["type"], item["target"], str(item["evidence_count"])))
    return nodes, edges


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "")


def test_as_of_shows_the_graph_before_the_edit_and_history_lists_versions(
        kg: Any, ollama: FakeOllama, tmp_path: Path) -> None:
    use_server(kg, ollama.url)
    doc = tmp_path / "a.md"
    doc.write_text(story("Alpha", "Bravo"), encoding="utf-8")
    ingest(kg, doc)
    before = _exported(kg)
    moment = _now()
    time.sleep(0.01)
    doc.write_text(story("Alpha", "Delta"), encoding="utf-8")
    ingest(kg, doc)
    assert _exported(kg) != before
    assert _exported(kg, "--as-of", moment) == before
    near = kg("graph", "neighbors", "Agent Bravo", "--as-of", moment, "--json")
    assert near.exit_code == 0, near.stderr
    assert {n["label"] for n in json.loads(near.stdout)["neighbors"]} == {"Director Bravoson"}
    assert kg("graph", "neighbors", "Agent Bravo").exit_code != 0  # retracted now
    for bad, why in (("yesterday", "not a date"), ("2999-01-01", "in the future")):
        result = kg("export", "--format", "jsonl", "--as-of", bad)
        assert result.exit_code != 0 and why in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    history = kg("documents", "history", str(doc), "--json")
    assert history.exit_code == 0, history.stderr
    versions = json.loads(history.stdout)["versions"]
    assert [(v["version"], v["live"]) for v in versions] == [(1, False), (2, True)]
    assert versions[0]["concepts_added"] == 6 and versions[0]["concepts_removed"] == 0
    assert versions[1]["concepts_added"] == 3 and versions[1]["concepts_removed"] == 3
    unknown = kg("documents", "history", str(tmp_path / "b.md"))
    assert unknown.exit_code != 0 and "a.md" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_a_crash_before_the_cutover_leaves_the_old_version_and_resume_finishes(
        kg: Any, tmp_path: Path, db_url: str) -> None:
    broken = {"on": True}

    def responder(body: dict[str, Any]) -> Reply:
        text = chunk_of(body)
        if broken["on"] and "Delta" in text:
            return Reply(status=500, error="model crashed")
        return Reply(graph_reply(text))

    with fake_ollama(responder) as server:
        use_server(kg, server.url)
        doc = tmp_path / "a.md"
        doc.write_text(story("Alpha", "Bravo"), encoding="utf-8")
        ingest(kg, doc)
        doc.write_text(story("Alpha", "Delta"), encoding="utf-8")
        failed = kg("ingest", str(doc), *SMALL_CHUNKS, "--json")
        assert failed.exit_code != 0
        run_id = json.loads(failed.stdout)["run_id"]
        db = Database(db_url)
        labels = live_labels(db)
        # Old version intact, nothing of the new one visible (not even its copied evidence).
        assert "Agent Bravo" in labels and "Agent Delta" not in labels
        listed = {c["label"] for c in json.loads(kg("concepts", "list", "--json").stdout)}
        assert "Agent Bravo" in listed
        assert rows(db, "SELECT count(*) FROM evidence WHERE valid_to IS NULL AND "
                        "valid_from IS NOT NULL")[0][0] == 2 * (3 + 2)  # v1: 3 names, 2 links each
        broken["on"] = False
        resumed = kg("ingest", "--resume", str(run_id))
        assert resumed.exit_code == 0, resumed.stderr
        labels = live_labels(db)
        assert "Agent Bravo" not in labels and "Agent Delta" in labels
        db.dispose()


def test_reverted_content_costs_no_call_and_brings_retracted_concepts_back(
        kg: Any, ollama: FakeOllama, tmp_path: Path, db_url: str) -> None:
    use_server(kg, ollama.url)
    doc = tmp_path / "a.md"
    doc.write_text(story("Alpha", "Bravo"), encoding="utf-8")
    ingest(kg, doc, extra=("--no-cache",))
    db = Database(db_url)
    original = graph_of(db)
    doc.write_text(story("Alpha", "Delta"), encoding="utf-8")
    ingest(kg, doc, extra=("--no-cache",))
    calls = chats(ollama)
    doc.write_text(story("Alpha", "Bravo"), encoding="utf-8")
    ingest(kg, doc, extra=("--no-cache",))
    assert chats(ollama) == calls
    assert graph_of(db) == original
    # One concept row per label: Agent Bravo came back, no duplicate was made.
    assert rows(db, "SELECT count(*) FROM concepts WHERE label = 'Agent Bravo'")[0][0] == 1
    assert rows(db, "SELECT version FROM documents WHERE valid_to IS NULL") == [(3,)]
    db.dispose()


def test_a_moved_file_keeps_its_facts_for_no_call_and_sync_retracts_gone_files(
        kg: Any, ollama: FakeOllama, tmp_path: Path, db_url: str) -> None:
    use_server(kg, ollama.url)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text(story("Alpha", "Bravo"), encoding="utf-8")
    (folder / "b.md").write_text(story("Charlie"), encoding="utf-8")
    ingest(kg, folder, extra=("--no-cache",))
    db = Database(db_url)
    before = graph_of(db)
    calls = chats(ollama)
    (folder / "a.md").rename(folder / "renamed.md")
    (folder / "b.md").unlink()
    dry = kg("ingest", str(folder), "--sync", "--dry-run", *SMALL_CHUNKS)
    assert dry.exit_code == 0, dry.stderr
    assert "would retract" in dry.stdout and "a.md" in dry.stdout and "b.md" in dry.stdout
    assert graph_of(db) == before  # a dry run changes nothing
    ingest(kg, folder, extra=("--sync", "--no-cache"))
    assert chats(ollama) == calls  # the move cost no call
    labels, _edges, _n = graph_of(db)
    assert {"Agent Alpha", "Agent Bravo"} <= labels and "Agent Charlie" not in labels
    live = rows(db, "SELECT path FROM documents WHERE valid_to IS NULL")
    assert [Path(p).name for (p,) in live] == ["renamed.md"]
    assert graph_of(db)[2] == before[2] - 5  # b.md's five evidence rows went, a.md's moved
    db.dispose()


def test_sync_on_an_unreadable_folder_retracts_nothing(
        kg: Any, ollama: FakeOllama, tmp_path: Path, db_url: str) -> None:
    use_server(kg, ollama.url)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text(story("Alpha"), encoding="utf-8")
    ingest(kg, folder)
    gone = tmp_path / "missing"
    result = kg("ingest", str(gone), "--sync", *SMALL_CHUNKS)
    assert result.exit_code != 0 and "nothing was retracted" in result.stderr
    db = Database(db_url)
    assert rows(db, "SELECT count(*) FROM documents WHERE valid_to IS NULL")[0][0] == 1
    db.dispose()


def test_prune_deletes_history_before_a_date_and_keeps_live_rows(
        kg: Any, ollama: FakeOllama, tmp_path: Path, db_url: str) -> None:
    use_server(kg, ollama.url)
    doc = tmp_path / "a.md"
    doc.write_text(story("Alpha", "Bravo"), encoding="utf-8")
    ingest(kg, doc)
    doc.write_text(story("Alpha", "Delta"), encoding="utf-8")
    ingest(kg, doc)
    db = Database(db_url)
    live = graph_of(db)
    time.sleep(0.01)
    result = kg("db", "prune", "--before", _now(), "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    counts = json.loads(result.stdout)
    # v1's evidence (v2 has its own copies of the unchanged paragraph's), Bravo's paragraph.
    assert counts == {"evidence": 10, "relationships": 2, "concepts": 3, "documents": 1,
                      "attributes": 0}
    assert graph_of(db) == live
    assert rows(db, "SELECT count(*) FROM concepts WHERE valid_to IS NOT NULL")[0][0] == 0
    assert rows(db, "SELECT count(*) FROM documents")[0][0] == 1
    db.dispose()


def test_graph_route_takes_as_of(kg: Any, ollama: FakeOllama, tmp_path: Path,
                                 db_url: str) -> None:
    from tests.test_server import serve

    use_server(kg, ollama.url)
    doc = tmp_path / "a.md"
    doc.write_text(story("Alpha", "Bravo"), encoding="utf-8")
    ingest(kg, doc)
    moment = _now()
    time.sleep(0.01)
    doc.write_text(story("Alpha", "Delta"), encoding="utf-8")
    ingest(kg, doc)
    db = Database(db_url)
    with serve(db) as server, server.client() as client:
        then = client.get("/graph", params={"center": "Agent Bravo", "as_of": moment})
        assert then.status_code == 200, then.text
        assert {n["label"] for n in then.json()["nodes"]} == {"Agent Bravo", "Director Bravoson"}
        assert client.get("/graph", params={"center": "Agent Bravo"}).status_code == 404
        for bad in ("soon", "2999-01-01"):
            refused = client.get("/graph", params={"center": "Agent Alpha", "as_of": bad})
            assert refused.status_code == 400, refused.text
    db.dispose()


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_queued_update_whose_text_is_all_known_cuts_over_without_a_worker(
        kg: Any, ollama: FakeOllama, tmp_path: Path, db_url: str) -> None:
    use_server(kg, ollama.url)
    doc = tmp_path / "a.md"
    doc.write_text(story("Alpha", "Bravo"), encoding="utf-8")
    ingest(kg, doc)
    doc.write_text(story("Bravo", "Alpha"), encoding="utf-8")  # paragraphs swapped
    queued = kg("ingest", "--queue", str(doc), *SMALL_CHUNKS, "--json")
    assert queued.exit_code == 0, queued.stderr
    assert json.loads(queued.stdout)["jobs"] == 0  # every chunk's text was known
    db = Database(db_url)
    assert rows(db, "SELECT version FROM documents WHERE valid_to IS NULL") == [(2,)]
    assert {"Agent Alpha", "Agent Bravo"} <= live_labels(db)
    assert rows(db, "SELECT count(*) FROM evidence WHERE valid_to IS NULL")[0][0] == 10
    db.dispose()


def test_two_updates_of_one_document_at_once_make_one_version(
        db_url: str, tmp_path: Path) -> None:
    release = threading.Event()

    def responder(body: dict[str, Any]) -> Reply:
        text = chunk_of(body)
        if "Delta" in text:
            release.wait(30)  # the first update holds its new chunk until the second planned
        return Reply(graph_reply(text))

    doc = tmp_path / "a.md"
    doc.write_text(story("Alpha", "Bravo"), encoding="utf-8")
    request = IngestRequest(paths=[doc], chunking=CHUNKING, cache=False)
    with fake_ollama(responder) as server:
        configure(db_url, server.url)
        db = Database(db_url)
        ingest_api(db, request)
        doc.write_text(story("Alpha", "Delta"), encoding="utf-8")
        first: list[Any] = []
        worker = threading.Thread(target=lambda: first.append(ingest_api(db, request)))
        worker.start()
        deadline = time.monotonic() + 30
        while not rows(db, "SELECT id FROM documents WHERE version = 2"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = ingest_api(db, request)  # planned while the first is extracting
        release.set()
        worker.join(30)
        assert [b.path for b in second.busy] == [str(doc)] and second.run_id is None
        assert first[0].chunks_failed == 0
        assert rows(db, "SELECT version FROM documents ORDER BY version") == [(1,), (2,)]
        assert rows(db, "SELECT version FROM documents WHERE valid_to IS NULL") == [(2,)]
        db.dispose()
