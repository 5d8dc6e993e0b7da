"""`kg ingest` end to end through the CLI against the protocol-exact servers, on both databases."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from kg.db import Database
from tests.fakes import FakeModel, FakeOllama, FakeVLLM, Reply, chunk_of, graph_reply

STORY = """# Baker Street

Sherlock Holmes lives at Baker Street in London with Doctor Watson. Mrs Hudson keeps the house
and Inspector Lestrade of Scotland Yard often calls for help with a difficult case.

# Enemies

Professor Moriarty runs a criminal network across London. Colonel Moran serves Moriarty.
"""


def paragraphs(n: int, words: int = 60) -> str:
    """n distinct paragraphs of prose, each naming its own people and places."""
    out = []
    for i in range(n):
        body = " ".join(["the", "report", "was", "filed", "quickly"] * (words // 5))
        out.append(f"Agent Number{i} met Director Alpha{i} in City Beta{i}. {body}.")
    return "\n\n".join(out)


def small_chunks() -> list[str]:
    return ["--chunk-tokens", "60", "--chunk-min", "20", "--chunk-max", "120",
            "--chunk-overlap", "0"]


@pytest.fixture
def ollama():
    models = [FakeModel("qwen3:8b", ["completion", "thinking"]),
              FakeModel("llama3.2:3b", ["completion"], family="llama")]
    with FakeOllama(models=models, responder=lambda b: Reply(graph_reply(chunk_of(b)))) as s:
        yield s


def use_server(kg, url: str, provider: str = "ollama", model: str = "qwen3:8b",
               *extra: str) -> None:
    result = kg("admin", "extraction", "set", "--profile", "test", "--provider", provider,
                "--model", model, "--base-url", url, "--max-retries", "2", "--timeout", "5",
                "--activate", *extra)
    assert result.exit_code == 0, result.stderr


def rows(db: Database, sql: str, **params: object) -> list[tuple]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


# -- the happy path ------------------------------------------------------------------------

def test_ingest_builds_graph_with_verbatim_evidence(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = write(tmp_path, "story.md", STORY)
    result = kg("ingest", str(doc), *small_chunks(), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["chunks_failed"] == 0
    assert summary["chunks_total"] == 2  # cut at the second heading
    assert summary["calls"] == summary["chunks_total"]  # one call per chunk when valid
    labels = {r[0] for r in rows(db, "SELECT label FROM concepts")}
    assert {"Sherlock Holmes", "Baker Street", "Professor Moriarty"} <= labels
    content = doc.read_text(encoding="utf-8")
    evidence = rows(db, "SELECT quote, char_start, char_end FROM evidence")
    assert evidence and all(content[s:e] == q for q, s, e in evidence)
    edges = rows(db, """SELECT a.label, t.name, b.label FROM relationships r
                        JOIN concepts a ON a.id = r.source_id JOIN concepts b ON b.id = r.target_id
                        JOIN relationship_types t ON t.id = r.type_id""")
    assert edges
    calls = rows(db, "SELECT provider, model, profile_name, profile_revision, status, "
                     "prompt_tokens, completion_tokens FROM calls")
    assert all(c[:5] == ("ollama", "qwen3:8b", "test", 1, "ok") for c in calls)
    assert all(c[5] > 0 and c[6] > 0 for c in calls)
    shown = json.loads(kg("concepts", "show", "sherlock holmes", "--json").stdout)
    assert shown["evidence"][0]["document"] == str(doc.resolve())
    listed = json.loads(kg("runs", "list", "--json").stdout)
    assert listed[0]["status"] == "completed" and {"id", "started_at"} <= set(listed[0])
    bodies = ollama.chat_bodies()
    assert len(bodies) == summary["calls"]
    for body in bodies:  # every request as the server received it
        assert body["options"]["num_ctx"] == 8192 and body["stream"] is False
        assert body["think"] is False  # thinking-capable model, thinking_mode off
        schema = body["format"]
        assert schema["properties"]["concepts"]["maxItems"] >= 1
        label = schema["properties"]["concepts"]["items"]["properties"]["label"]
        # Bounded: a length limit, or (grounded decoding) an enum of the chunk's own text.
        assert label.get("maxLength") or label.get("enum")


def test_reingesting_unchanged_file_makes_no_calls_unless_forced(kg, db, ollama,
                                                                 tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = write(tmp_path, "story.md", STORY)
    assert kg("ingest", str(doc)).exit_code == 0
    calls = ollama.chat_count
    again = kg("ingest", str(doc))
    assert again.exit_code == 0 and "unchanged" in again.stdout
    assert ollama.chat_count == calls
    forced = kg("ingest", str(doc), "--force", "--json")
    assert json.loads(forced.stdout)["calls"] >= 1
    assert ollama.chat_count > calls
    doc.write_text(STORY + "\nIrene Adler outwits Holmes.\n", encoding="utf-8")
    changed = json.loads(kg("ingest", str(doc), "--json").stdout)
    assert changed["documents"] == 1


def test_bad_files_are_reported_and_the_run_goes_on(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    write(tmp_path, "good.txt", STORY)
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02 binary")
    (tmp_path / "empty.md").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    result = kg("ingest", str(tmp_path), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["documents"] == 1
    for needle in ("binary.txt: binary content", "empty.md: empty file",
                   "latin1.txt: not UTF-8", "notes.docx: unsupported file type"):
        assert needle in result.stderr


def test_missing_path_is_one_line_and_writes_nothing(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    result = kg("ingest", str(tmp_path / "nope.txt"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no such file or directory" in result.stderr
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)]
    assert ollama.chat_count == 0


def test_a_fifo_is_refused_in_one_line_instead_of_blocking(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)

    def unblock() -> None:  # if kg opened the FIFO, a writer ends the wait (with no bytes)
        time.sleep(5)
        with contextlib.suppress(OSError):  # ENXIO: nobody reads it, as it should be
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=unblock, daemon=True).start()
    started = time.monotonic()
    result = kg("ingest", str(fifo))
    assert time.monotonic() - started < 4, "kg opened the FIFO and waited for a writer"
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "pipe.md: not a regular file (a FIFO)" in result.stderr
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)]
    assert ollama.chat_count == 0


# -- bad replies -------------------------------------------------------------------------

def test_malformed_json_is_repaired_with_the_exact_error(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = write(tmp_path, "story.txt", STORY)
    ollama.queue.append(Reply('{"concepts": [{"label": "Sherlock Holmes",'))
    result = kg("ingest", str(doc), "--chunk-tokens", "2000", "--chunk-max", "3000", "--json")
    assert json.loads(result.stdout)["status"] == "completed"
    calls = rows(db, "SELECT attempt, status, error_kind FROM calls ORDER BY id")
    assert calls == [(1, "invalid", "not_json"), (2, "ok", None)]
    repair = ollama.chat_bodies()[1]["messages"]
    assert repair[2]["role"] == "assistant"
    assert "not valid JSON" in repair[3]["content"]


def test_truncated_output_fails_the_chunk_after_retries_then_resumes(kg, db, ollama,
                                                                      tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = write(tmp_path, "story.txt", STORY)
    cut = Reply('{"concepts": [{"label": "Sher', done_reason="length")
    ollama.queue.extend([cut, cut, cut])
    result = kg("ingest", str(doc), "--chunk-tokens", "2000", "--chunk-max", "3000", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    # Its only chunk failed: nothing of this run is in the graph (partial = some chunks ok).
    assert summary["status"] == "failed" and summary["chunks_failed"] == 1
    assert "cut off at the output limit" in rows(
        db, "SELECT error FROM chunk_extractions")[0][0]
    assert rows(db, "SELECT count(*) FROM concepts") == [(0,)]  # never an empty "success"
    assert [r[0] for r in rows(db, "SELECT finish_reason FROM calls")] == ["length"] * 3
    resumed = kg("ingest", "--resume", str(summary["run_id"]), "--json")
    assert resumed.exit_code == 0, resumed.stderr
    after = json.loads(resumed.stdout)
    assert after["status"] == "completed" and after["chunks_ok"] == 1
    assert after["chunks_failed"] == 0


def test_thinking_only_reply_is_a_failure_that_says_so(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url, "ollama", "qwen3:8b", "--thinking-mode", "low",
               "--max-retries", "0")
    doc = write(tmp_path, "story.txt", STORY)
    ollama.queue.append(Reply("", thinking="Let me consider the text... " * 50,
                              done_reason="length"))
    result = kg("ingest", str(doc), "--chunk-tokens", "2000", "--chunk-max", "3000", "--json")
    assert json.loads(result.stdout)["chunks_failed"] == 1
    error = rows(db, "SELECT error FROM chunk_extractions")[0][0]
    assert "thinking and no answer" in error and "--thinking-mode" in error
    assert rows(db, "SELECT thinking_tokens > 0 FROM calls")[0][0]


def test_types_are_normalised_and_unknown_ones_become_proposals(kg, db, ollama,
                                                                tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = write(tmp_path, "story.txt", STORY)
    concepts = [{"label": n, "description": "", "search_terms": [], "quote": n}
                for n in ("Sherlock Holmes", "Baker Street", "Professor Moriarty", "London")]
    rels = [
        {"source": "Sherlock Holmes", "type": "Located In", "target": "Baker Street",
         "confidence": 0.9, "quote": "Sherlock Holmes lives at Baker Street"},
        {"source": "Professor Moriarty", "type": "caused", "target": "London",
         "confidence": 0.5, "quote": "Professor Moriarty"},
        {"source": "Sherlock Holmes", "type": "frobnicates", "target": "London",
         "confidence": 0.5, "quote": "Sherlock Holmes"},
    ]
    ollama.queue.append(Reply(json.dumps({"concepts": concepts, "relationships": rels})))
    kg("ingest", str(doc), "--chunk-tokens", "2000", "--chunk-max", "3000")
    types = sorted(r[0] for r in rows(db, "SELECT t.name FROM relationships r JOIN "
                                          "relationship_types t ON t.id = r.type_id"))
    assert types == ["causes", "located_in"]
    proposals = json.loads(kg("vocab", "proposals", "--json").stdout)
    assert [(p["name"], p["occurrences"]) for p in proposals] == [("frobnicates", 1)]
    dropped = json.loads(rows(db, "SELECT dropped FROM chunk_extractions")[0][0]) \
        if isinstance(rows(db, "SELECT dropped FROM chunk_extractions")[0][0], str) \
        else rows(db, "SELECT dropped FROM chunk_extractions")[0][0]
    assert dropped == {"unknown_type": 1}


def test_hallucinated_quotes_and_dangling_ends_are_dropped_and_counted(kg, db, ollama,
                                                                       tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = write(tmp_path, "story.txt", STORY)
    concepts = [
        {"label": "Sherlock Holmes", "description": "", "search_terms": [],
         "quote": "Sherlock  Holmes\nlives at"},  # whitespace differs: still verbatim
        {"label": "Baker Street", "description": "", "search_terms": [], "quote": "Baker Street"},
        {"label": "Dracula", "description": "", "search_terms": [],
         "quote": "Count Dracula lives in Transylvania"},
    ]
    rels = [
        {"source": "Sherlock Holmes", "type": "located_in", "target": "Baker Street",
         "confidence": 0.9, "quote": "lives at Baker Street"},
        {"source": "Sherlock Holmes", "type": "uses", "target": "Violin", "confidence": 0.9,
         "quote": "Sherlock Holmes"},
    ]
    ollama.queue.append(Reply(json.dumps({"concepts": concepts, "relationships": rels})))
    kg("ingest", str(doc), "--chunk-tokens", "2000", "--chunk-max", "3000")
    labels = sorted(r[0] for r in rows(db, "SELECT label FROM concepts"))
    assert labels == ["Baker Street", "Sherlock Holmes"]
    raw = rows(db, "SELECT dropped FROM chunk_extractions")[0][0]
    dropped = json.loads(raw) if isinstance(raw, str) else raw
    assert dropped == {"label_not_in_text": 1, "unknown_end": 1}
    quote = rows(db, "SELECT quote FROM evidence WHERE concept_id IS NOT NULL ORDER BY id")[0][0]
    assert quote == "Sherlock Holmes lives at"  # stored as it stands in the text


def test_busy_server_and_timeouts_are_retried_with_backoff(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url, "ollama", "qwen3:8b", "--timeout", "0.5")
    doc = write(tmp_path, "story.txt", STORY)
    ollama.queue.extend([Reply(status=503, error="server busy, please try again.  maximum "
                                                 "pending requests exceeded"),
                         Reply(delay=1.5)])
    result = kg("ingest", str(doc), "--chunk-tokens", "2000", "--chunk-max", "3000",
                "--retry-backoff", "0.05", "--json")
    assert json.loads(result.stdout)["status"] == "completed"
    calls = rows(db, "SELECT attempt, status, error_kind FROM calls ORDER BY id")
    assert calls == [(1, "error", "ServerBusy"), (2, "error", "ProviderTimeout"), (3, "ok", None)]


# -- errors no retry can fix ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("model", "extra", "needle"),
    [
        ("missing:7b", [], "run `ollama pull missing:7b`"),
        ("llama3.2:3b", ["--thinking-mode", "high"], "--thinking-mode off"),
    ],
)
def test_fatal_provider_errors_stop_before_the_first_chunk(kg, db, ollama, tmp_path, model,
                                                           extra, needle) -> None:
    use_server(kg, ollama.url, "ollama", model, *extra)
    doc = write(tmp_path, "story.txt", STORY)
    result = kg("ingest", str(doc))
    assert result.exit_code == 4
    assert needle in result.stderr and result.stderr.count("\n") == 1
    assert ollama.chat_count == 0
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)]
    assert rows(db, "SELECT count(*) FROM documents") == [(0,)]


def test_unreachable_server_stops_before_the_first_chunk(kg, db, tmp_path) -> None:
    from tests.test_providers import free_port

    use_server(kg, f"http://127.0.0.1:{free_port()}")
    result = kg("ingest", str(write(tmp_path, "story.txt", STORY)))
    assert result.exit_code == 4 and "no Ollama at" in result.stderr
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)]


def test_vllm_end_to_end_with_reasoning(kg, db, tmp_path) -> None:
    with FakeVLLM(responder=lambda b: Reply(graph_reply(chunk_of(b)), thinking="ok so")) as s:
        use_server(kg, s.base_url, "vllm", "Qwen/Qwen3-8B", "--thinking-mode", "low")
        result = kg("ingest", str(write(tmp_path, "story.txt", STORY)), "--json")
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["thinking_tokens"] > 0
    assert rows(db, "SELECT count(*) FROM concepts")[0][0] >= 5


# -- parallelism, hot reload --------------------------------------------------------------

def test_never_more_than_max_parallel_in_flight(kg, db, tmp_path) -> None:
    with FakeOllama(slots=16, responder=lambda b: Reply(graph_reply(chunk_of(b)),
                                                        delay=0.1)) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--max-parallel", "3")
        doc = write(tmp_path, "many.txt", paragraphs(12))
        result = kg("ingest", str(doc), *small_chunks(), "--json")
        summary = json.loads(result.stdout)
    assert summary["chunks_ok"] == summary["chunks_total"] >= 10
    assert server.max_in_flight == 3


def test_hot_reload_switches_model_mid_run_without_losing_chunks(kg, db, tmp_path) -> None:
    models = [FakeModel("qwen3:8b"), FakeModel("llama3.2:3b", family="llama")]
    with FakeOllama(models=models, responder=lambda b: Reply(graph_reply(chunk_of(b)),
                                                             delay=0.15)) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--max-parallel", "1")
        doc = write(tmp_path, "many.txt", paragraphs(10))
        outcome: dict = {}
        worker = threading.Thread(
            target=lambda: outcome.update(r=kg("ingest", str(doc), *small_chunks(), "--json")))
        worker.start()
        deadline = time.monotonic() + 20
        while server.chat_count < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        changed = kg("admin", "extraction", "set", "--model", "llama3.2:3b",
                     "--temperature", "0.5")
        assert changed.exit_code == 0
        worker.join(30)
    summary = json.loads(outcome["r"].stdout)
    assert summary["status"] == "completed"
    served = [b["model"] for b in server.chat_bodies()]
    assert served[0] == "qwen3:8b" and served[-1] == "llama3.2:3b"
    assert server.chat_bodies()[-1]["options"]["temperature"] == 0.5
    per_chunk = rows(db, "SELECT chunk_id, count(*) FROM chunk_extractions GROUP BY chunk_id")
    assert len(per_chunk) == summary["chunks_total"] and all(n == 1 for _c, n in per_chunk)
    revisions = rows(db, "SELECT DISTINCT profile_revision, model FROM calls "
                         "ORDER BY profile_revision")
    assert revisions == [(1, "qwen3:8b"), (2, "llama3.2:3b")]
    run = json.loads(kg("runs", "show", str(summary["run_id"]), "--json").stdout)
    assert [p["model"] for p in run["profiles_used"]] == ["qwen3:8b", "llama3.2:3b"]


def test_a_profile_for_one_run_without_activating_it(kg, db, ollama, tmp_path,
                                                     monkeypatch) -> None:
    use_server(kg, ollama.url)  # "test" (qwen3:8b) is the active profile
    kg("admin", "extraction", "set", "--profile", "small", "--provider", "ollama", "--model",
       "llama3.2:3b", "--base-url", ollama.url)
    first = kg("ingest", str(write(tmp_path, "a.txt", STORY)), "--profile", "small", "--json")
    assert first.exit_code == 0, first.stderr
    monkeypatch.setenv("KG_PROFILE", "small")
    second = kg("ingest", str(write(tmp_path, "b.txt", STORY + "\nIrene Adler.\n")), "--json")
    assert second.exit_code == 0, second.stderr
    assert {b["model"] for b in ollama.chat_bodies()} == {"llama3.2:3b"}
    assert rows(db, "SELECT DISTINCT profile_name FROM runs") == [("small",)]
    assert json.loads(kg("admin", "extraction", "show", "--json").stdout)["name"] == "test"
    empty = kg("ingest", str(tmp_path / "a.txt"), "--profile", "")
    assert empty.exit_code == 2 and "--profile needs a profile name" in empty.stderr
    unknown = kg("ingest", str(write(tmp_path, "c.txt", STORY + "\nMycroft.\n")),
                 "--profile", "nope")
    assert unknown.exit_code == 2 and "no extraction profile named 'nope'" in unknown.stderr
    assert rows(db, "SELECT count(*) FROM runs") == [(2,)]


def test_a_replaced_provider_is_closed_once_its_requests_are_back(kg, db, tmp_path) -> None:
    from kg.providers import ProviderSpec, register, registry
    from kg.providers.ollama import SPEC as OLLAMA
    from kg.providers.ollama import OllamaProvider

    closed: list[tuple[int, int, int]] = []  # (revision, requests sent, in flight at close)

    class Tracked(OllamaProvider):
        sent = busy = 0

        def complete(self, messages, json_schema):
            self.sent += 1
            self.busy += 1
            try:
                return super().complete(messages, json_schema)
            finally:
                self.busy -= 1

        def close(self) -> None:
            closed.append((self.settings.revision, self.sent, self.busy))
            super().close()

    register(ProviderSpec(name="tracked", factory=lambda s, _m: Tracked(s),
                          summary="Ollama that records when it is closed",
                          thinking=OLLAMA.thinking, needs_base_url=False), replace=True)
    try:
        with FakeOllama(responder=lambda b: Reply(graph_reply(chunk_of(b)), delay=0.15)) as server:
            use_server(kg, server.url, "tracked", "qwen3:8b", "--max-parallel", "2")
            doc = write(tmp_path, "many.txt", paragraphs(10))
            outcome: dict = {}
            worker = threading.Thread(
                target=lambda: outcome.update(r=kg("ingest", str(doc), *small_chunks(),
                                                   "--json")))
            worker.start()
            deadline = time.monotonic() + 20
            while server.chat_count < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert kg("admin", "extraction", "set", "--temperature", "0.4").exit_code == 0
            worker.join(30)
    finally:
        registry.unregister("tracked")
    summary = json.loads(outcome["r"].stdout)
    assert summary["status"] == "completed"
    # The replaced provider was closed after its last request came back, the new one at the
    # end of the run; both had served requests, none was closed twice or left open.
    assert [(revision, busy) for revision, _sent, busy in closed] == [(1, 0), (2, 0)]
    assert all(sent > 0 for _r, sent, _b in closed)
    revisions = [r[0] for r in rows(db, "SELECT profile_revision FROM calls ORDER BY id")]
    assert revisions[0] == 1 and revisions[-1] == 2
