"""`kg serve`: the HTTP API against a real uvicorn server on 127.0.0.1, on both databases.

The graph is seeded through a real `kg ingest` against the fake Ollama server; runs started
through the API go against it too. Errors must be one JSON line with the right status, and
nothing may be written when a request is refused.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import networkx as nx
import pytest
import uvicorn
from fastapi import FastAPI

from kg import tokens
from kg.db import Database
from kg.db.models import Call
from kg.server import ServerConfig, create_app
from tests.fakes import FakeOllama, Reply, chunk_of, graph_reply
from tests.graph_seed import ingest_story, rows, use_server
from tests.test_ingest import paragraphs

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"target_tokens": 60, "min_tokens": 20, "max_tokens": 120, "overlap_tokens": 0}


class ServerThread:
    """A real uvicorn server for `app` on 127.0.0.1 and a random port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def serve(db: Database, **options: Any) -> ServerThread:
    options.setdefault("health_ttl_s", 0.0)
    options.setdefault("token_ttl_s", 0.0)
    options.setdefault("poll_s", 0.1)
    options.setdefault("metrics_ttl_s", 0.0)
    # Open until a test creates a token (`kg serve` never is: it creates one at first start).
    options.setdefault("open_until_first_token", True)
    return ServerThread(create_app(db, ServerConfig(**options)))


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: int | None = None


@dataclass
class Stream:
    events: list[Event] = field(default_factory=list)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.event == kind]


def read_events(client: httpx.Client, run_id: int, headers: dict[str, str] | None = None,
                until: str = "finished", timeout: float = 60) -> Stream:
    """Read a run's SSE stream until `until` arrives (or the stream ends)."""
    stream = Stream()
    deadline = time.monotonic() + timeout
    with client.stream("GET", f"/runs/{run_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in response.iter_lines():
            assert time.monotonic() < deadline, "the event stream took too long"
            if line:
                key, _, value = line.partition(": ")
                block[key] = value
                continue
            if "event" in block:
                stream.events.append(Event(block["event"], json.loads(block["data"]),
                                           int(block["id"]) if "id" in block else None))
                if block["event"] == until:
                    break
            block = {}
    return stream


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """The response is `{"error": "one line"}` with this status (and these words)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert "\n" not in body["error"] and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return str(body["error"])


def slow_ollama(delay: float) -> FakeOllama:
    return FakeOllama(responder=lambda body: Reply(graph_reply(chunk_of(body)), delay=delay))


def counts(db: Database) -> dict[str, int]:
    tables = ["runs", "documents", "chunks", "concepts", "relationships", "evidence",
              "profile_changes", "api_tokens"]
    return {t: rows(db, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


# -- reading the graph ---------------------------------------------------------------------------

def test_graph_reads_match_the_database_and_evidence_is_verbatim(db, seeded, tmp_path) -> None:
    text = seeded.read_text(encoding="utf-8")
    with serve(db) as server, server.client() as client:
        found = client.get("/concepts", params={"search": "holmes"}).json()
        assert [c["label"] for c in found] == ["Sherlock Holmes"]
        holmes = client.get(f"/concepts/{found[0]['id']}").json()
        assert holmes["label"] == "Sherlock Holmes" and holmes["evidence"]
        for quote in holmes["evidence"]:
            assert Path(quote["document"]) == seeded.resolve()
            assert text[quote["char_start"]:quote["char_end"]] == quote["quote"]
        assert client.get("/concepts/sherlock holmes").json()["id"] == holmes["id"]

        view = client.get("/graph", params={"center": "Sherlock Holmes", "depth": 2}).json()
        labels = {n["label"]: n["distance"] for n in view["nodes"]}
        assert labels["Sherlock Holmes"] == 0 and labels["London"] == 1
        assert max(labels.values()) == 2 and not view["truncated"]
        ids = {n["id"] for n in view["nodes"]}
        assert view["edges"] and all(e["source"] in ids and e["target"] in ids
                                     for e in view["edges"])
        cut = client.get("/graph", params={"center": "Sherlock Holmes", "depth": 3,
                                           "limit": 2}).json()
        assert len(cut["nodes"]) == 3 and cut["truncated"]

        (edges,) = rows(db, "SELECT count(*) FROM relationships")[0]
        (concepts,) = rows(db, "SELECT count(*) FROM concepts")[0]
        assert len(client.get("/relationships", params={"limit": 5000}).json()) == edges
        london = client.get("/relationships", params={"concept": "London"}).json()
        assert london and all("London" in (r["source"], r["target"]) for r in london)
        assert client.get("/documents").json()[0]["path"] == str(seeded.resolve())
        runs = client.get("/runs").json()
        assert [r["status"] for r in runs] == ["completed"] and not runs[0]["cancellable"]
        detail = client.get(f"/runs/{runs[0]['id']}").json()
        assert detail["calls"] == rows(db, "SELECT count(*) FROM calls")[0][0]

        exported = client.get("/export", params={"format": "jsonl"})
        assert exported.status_code == 200
        assert 'filename="graph.jsonl"' in exported.headers["content-disposition"]
        lines = [json.loads(line) for line in exported.text.splitlines()]
        assert sum(1 for x in lines if x["kind"] == "concept") == concepts
        assert sum(1 for x in lines if x["kind"] == "relationship") == edges
        graphml = tmp_path / "out.graphml"
        graphml.write_bytes(client.get("/export", params={"format": "graphml"}).content)
        assert nx.read_graphml(graphml).number_of_edges() == edges
        scoped = client.get("/export", params={"format": "jsonl", "min_confidence": 0.9})
        kinds = {json.loads(line)["kind"] for line in scoped.text.splitlines()}
        assert scoped.status_code == 200 and "relationship" not in kinds  # all are 0.8
        cypher = client.get("/export", params={"format": "cypher"})
        assert cypher.headers["content-type"].startswith("text/plain") and "MERGE" in cypher.text


def test_every_refusal_is_one_json_line_with_its_status(db, seeded, tmp_path) -> None:
    before = counts(db)
    with serve(db, max_json_bytes=2000, max_upload_bytes=4000) as server, \
            server.client() as client:
        assert_error(client.get("/nothing/here"), 404, "no such endpoint")
        assert_error(client.delete("/concepts"), 405, "DELETE is not allowed")
        assert_error(client.get("/graph", params={"center": "Holmes", "depth": "deep"}), 422,
                     "query parameter depth")
        assert_error(client.get("/graph", params={"center": "Holmes", "depth": 99}), 422,
                     "depth")
        assert_error(client.get("/graph"), 422, "query parameter center is required")
        assert_error(client.get("/graph", params={"center": "Nobody At All"}), 404,
                     "no concept named 'Nobody At All'")
        assert_error(client.get("/concepts/424242"), 404, "no concept")
        assert_error(client.get("/runs/999"), 404, "no run 999")
        assert_error(client.get("/runs/999/events"), 404, "no run 999")
        assert_error(client.get("/runs/abc"), 422, "path parameter run_id")
        assert_error(client.post("/runs/999/resume"), 404, "no run 999")
        assert_error(client.post("/runs/999/cancel"), 404, "no run 999")
        assert_error(client.get("/export", params={"format": "csv"}), 400, "two files")
        assert_error(client.get("/export", params={"format": "xlsx"}), 400, "unknown export")
        assert_error(client.get("/export", params={"format": "jsonl", "run": 77}), 404,
                     "no run 77")
        assert_error(client.get("/export", params={"format": "jsonl", "min_confidence": 2}),
                     400, "between 0 and 1")

        # Profiles: malformed JSON, values out of range, unknown settings: nothing written.
        assert_error(client.put("/profiles/test", content=b'{"temperature": ',
                                headers={"content-type": "application/json"}), 400,
                     "malformed JSON")
        assert_error(client.put("/profiles/test", json={"temperature": 7}), 400,
                     "temperature must be between 0 and 2 (got 7)")
        assert_error(client.put("/profiles/test", json={"max_parallel": "many"}), 400,
                     "max_parallel must be a whole number")
        assert_error(client.put("/profiles/test", json={"colour": "red"}), 400, "colour")
        assert_error(client.put("/profiles/test", json={"model": None}), 400,
                     "model cannot be cleared")
        assert_error(client.put("/profiles/test", json=[1, 2]), 422, "body")
        assert_error(client.put("/profiles/new", json={"model": "x"}), 400,
                     "does not exist; to create it give --provider")
        assert_error(client.post("/profiles/ghost/activate"), 404, "no extraction profile")

        # Runs: paths need a root; uploads: unsupported types; sizes.
        assert_error(client.post("/runs", json={"paths": [str(seeded)]}), 403, "--root")
        assert_error(client.post("/runs", json={"paths": []}), 422, "paths")
        assert_error(client.post("/runs", json={"paths": ["a"], "colour": 1}), 422, "colour")
        assert_error(client.post("/runs", json={"paths": ["x"] * 5, "profile": "p" * 5000}),
                     413, "larger than this server accepts")
        assert_error(client.post("/runs", files={"files": ("x.exe", b"MZ")}), 400,
                     "unsupported file type '.exe'")
        assert_error(client.post("/runs", files={"files": ("big.txt", b"word " * 2000)}),
                     413, "--max-upload-mb")

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(20):
                yield b"x" * 500

        assert_error(client.post("/runs", content=chunked(),
                                 headers={"content-type": "application/json"}), 413)
        assert_error(client.post("/runs", data={"force": "true"},
                                 files={"other": ("a.txt", b"hello")}), 400, "`files` field")
    assert counts(db) == before
    uploads = tmp_path / "home" / "uploads"
    assert not uploads.exists() or not [p for p in uploads.iterdir()
                                         if not p.name.startswith(".")]


def test_paths_must_stay_inside_the_roots(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    root, outside = tmp_path / "docs", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (root / "a.md").write_text(paragraphs(2), encoding="utf-8")
    (outside / "b.md").write_text(paragraphs(2), encoding="utf-8")
    before = counts(db)
    with serve(db, roots=(root.resolve(),)) as server, server.client() as client:
        assert_error(client.post("/runs", json={"paths": [str(outside / "b.md")]}), 403,
                     "outside the folders")
        assert_error(client.post("/runs", json={"paths": [str(root / ".." / "secret")],
                                                "recursive": True}), 403, "outside")
        assert_error(client.post("/runs", json={"paths": [str(root / "missing.md")]}), 400,
                     "no such file")
        (root / "link.md").symlink_to(outside / "b.md")
        assert_error(client.post("/runs", json={"paths": [str(root)], "recursive": True}),
                     403, "link.md leads outside")
        assert_error(client.post("/runs", json={"paths": [str(root / "link.md")]}),
                     403, "outside the folders")
        assert counts(db) == before
        (root / "link.md").unlink()
        started = client.post("/runs", json={"paths": [str(root)], "recursive": True,
                                             "chunking": SMALL})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        assert read_events(client, run_id).of("finished")[0].data["status"] == "completed"
        again = client.post("/runs", json={"paths": ["a.md"]})  # relative: to the first root
        assert again.status_code == 200 and again.json()["status"] == "unchanged"
    assert rows(db, "SELECT path FROM documents") == [(str((root / "a.md").resolve()),)]


# -- runs and their events -----------------------------------------------------------------------

def test_an_uploaded_run_streams_every_chunk_then_finishes(kg, db, tmp_path) -> None:
    with slow_ollama(0.05) as ollama:
        use_server(kg, ollama.url)
        content = paragraphs(6).encode()
        with serve(db) as server, server.client() as client:
            started = client.post("/runs", files={"files": ("../../../etc/evil name.md",
                                                            content)},
                                  data={"chunking": json.dumps(SMALL)})
            assert started.status_code == 202, started.text
            run_id = started.json()["run_id"]
            stream = read_events(client, run_id)
            chunks = stream.of("chunk")
            (total,) = rows(db, "SELECT chunks_total FROM runs WHERE id = :r", r=run_id)[0]
            assert total >= 4 and len(chunks) == total
            assert [e.id for e in chunks] == sorted({e.id for e in chunks})
            assert all(e.data["concepts"] > 0 and e.data["status"] == "ok" for e in chunks)
            done = [e.data["chunks_ok"] for e in stream.of("progress")]
            assert done == sorted(done) and done[-1] == total
            final = stream.of("finished")[0].data
            assert final["status"] == "completed" and final["chunks_ok"] == total
            assert final["calls"] == ollama.chat_count

            # A late client gets the whole story from the database, a reconnecting one the rest.
            late = read_events(client, run_id)
            assert [e.id for e in late.of("chunk")] == [e.id for e in chunks]
            resumed = read_events(client, run_id, headers={"Last-Event-ID": str(chunks[1].id)})
            assert [e.id for e in resumed.of("chunk")] == [e.id for e in chunks[2:]]
    (path,) = rows(db, "SELECT path FROM documents")[0]
    stored = Path(path)
    # The server chose the name (the content's hash), never the client's.
    assert stored.parent == (tmp_path / "home" / "uploads").resolve()
    assert re.fullmatch(r"[0-9a-f]{64}\.md", stored.name) and stored.read_bytes() == content
    assert not list(tmp_path.rglob("evil*"))


def test_a_failed_chunk_is_an_event_with_its_reason(kg, db) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        chunk = chunk_of(body)
        if "Number2" in chunk:  # this chunk never gets valid JSON back
            return Reply("this is not JSON at all")
        return Reply(graph_reply(chunk))

    with FakeOllama(responder=responder) as ollama:
        use_server(kg, ollama.url)
        with serve(db) as server, server.client() as client:
            started = client.post("/runs", files={"files": ("mixed.md", paragraphs(5).encode())},
                                  data={"chunking": json.dumps(SMALL)})
            stream = read_events(client, started.json()["run_id"])
    (failed,) = stream.of("chunk_failed")
    assert "Number2" not in failed.data["error"] and "JSON" in failed.data["error"]
    assert failed.data["attempts"] == 3  # the first call and max_retries 2
    final = stream.of("finished")[0].data
    assert final["status"] == "partial" and final["chunks_failed"] == 1
    assert final["chunks_ok"] == len(stream.of("chunk")) == final["chunks_total"] - 1


def test_cancel_keeps_what_committed_and_resume_finishes(kg, db, tmp_path) -> None:
    with slow_ollama(0.3) as ollama:
        use_server(kg, ollama.url)
        with serve(db) as server, server.client() as client:
            started = client.post("/runs", files={"files": ("long.md", paragraphs(8).encode())},
                                  data={"chunking": json.dumps(SMALL)})
            run_id = started.json()["run_id"]
            first = read_events(client, run_id, until="chunk")
            assert first.of("chunk")
            assert client.get("/runs").json()[0]["cancellable"]
            cancelled = client.post(f"/runs/{run_id}/cancel")
            assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelling"
            final = read_events(client, run_id).of("finished")[0].data
            assert final["status"] == "interrupted"
            assert 0 < final["chunks_ok"] < final["chunks_total"]
            assert_error(client.post(f"/runs/{run_id}/cancel"), 409, "not running")

            resumed = client.post(f"/runs/{run_id}/resume")
            assert resumed.status_code == 202 and resumed.json()["run_id"] == run_id
            final = read_events(client, run_id).of("finished")[0].data
            assert final["status"] == "completed"
            assert final["chunks_ok"] == final["chunks_total"]
            finished = rows(db, "SELECT finished_at, pid FROM runs WHERE id = :r", r=run_id)
            # A completed run has nothing to resume: 409, and its row is left as it was.
            assert_error(client.post(f"/runs/{run_id}/resume"), 409, "nothing to resume")
            assert rows(db, "SELECT finished_at, pid FROM runs WHERE id = :r", r=run_id) == \
                finished
    (committed,) = rows(db, "SELECT count(*) FROM chunk_extractions WHERE run_id = :r "
                            "AND status = 'ok'", r=run_id)[0]
    assert committed == final["chunks_total"]


def test_events_follow_a_run_started_by_another_process(kg, db, db_url, tmp_path) -> None:
    with slow_ollama(0.15) as ollama:
        use_server(kg, ollama.url)
        doc = tmp_path / "other.md"
        doc.write_text(paragraphs(6), encoding="utf-8")
        env = {**os.environ, "KG_DATABASE_URL": db_url, "KG_HOME": str(tmp_path / "home"),
               "PYTHONPATH": str(ROOT)}
        with serve(db) as server, server.client() as client:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kg.cli", "ingest", str(doc), "--chunk-tokens", "60",
                 "--chunk-min", "20", "--chunk-max", "120", "--chunk-overlap", "0"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 60
                while not (listed := client.get("/runs").json()):
                    assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                    time.sleep(0.05)
                run_id = listed[0]["id"]
                assert_error(client.post(f"/runs/{run_id}/cancel"), 409, "another process")
                stream = read_events(client, run_id)
            finally:
                _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            final = stream.of("finished")[0].data
            assert final["status"] == "completed"
            assert len(stream.of("chunk")) == final["chunks_total"] >= 4


def test_a_run_whose_backend_is_down_is_refused_before_anything_is_written(kg, db,
                                                                             tmp_path) -> None:
    assert kg("admin", "extraction", "set", "--profile", "down", "--provider", "ollama",
              "--model", "qwen3:8b", "--base-url", "http://127.0.0.1:9", "--timeout", "2",
              "--activate").exit_code == 0
    before = counts(db)
    with serve(db) as server, server.client() as client:
        assert_error(client.post("/runs", files={"files": ("a.md", paragraphs(2).encode())}),
                     502, "127.0.0.1:9")
        health = client.get("/healthz")
        assert_error(health, 503, "backend:", "127.0.0.1:9")
        assert client.get("/readyz").json() == {"status": "ok", "database": "ok"}
    assert counts(db) == before


# -- profiles ------------------------------------------------------------------------------------

def test_profiles_change_with_the_cli_rules_and_audit_the_token(kg, db, ollama) -> None:
    use_server(kg, ollama.url)
    with db.session() as session:
        _row, admin = tokens.create(session, "ops", "admin", by="tester")
        _row, reader = tokens.create(session, "viewer", "read", by="tester")
    with serve(db) as server, server.client(admin) as client, \
            server.client(reader) as viewer:
        listed = viewer.get("/profiles").json()
        assert {p["name"]: p["active"] for p in listed} == {"default": False, "test": True}
        created = client.put("/profiles/gpu", json={
            "provider": "ollama", "model": "qwen3:14b", "base_url": "http://gpu:11434",
            "max_parallel": 4})
        assert created.status_code == 201, created.text
        assert created.json()["created"] and created.json()["revision"] == 1
        changed = client.put("/profiles/gpu", json={"temperature": 0.3, "keep_alive": "30m"})
        assert changed.status_code == 200
        assert {c["field"] for c in changed.json()["changes"]} == {"temperature", "keep_alive"}
        cleared = client.put("/profiles/gpu", json={"keep_alive": None}).json()
        assert cleared["changes"] == [{"field": "keep_alive", "old": "30m", "new": None}]
        assert viewer.get("/profiles/gpu").json()["temperature"] == 0.3
        assert_error(viewer.put("/profiles/gpu", json={"temperature": 0.5}), 403,
                     "token viewer has the read scope", "admin")
        assert client.post("/profiles/gpu/activate").json() == {
            "active": "gpu", "previous": "test", "changed": True}
        assert_error(client.delete("/profiles/gpu"), 400, "is active")
        assert client.post("/profiles/test/activate").json()["changed"]
        assert client.delete("/profiles/gpu").json() == {"deleted": "gpu"}
        history = viewer.get("/profiles/test/history").json()
        assert history[0]["by"] == "token:ops" and history[0]["field"] == "active"
    actors = {r[0] for r in rows(db, "SELECT DISTINCT changed_by FROM profile_changes "
                                     "WHERE profile_name = 'gpu'")}
    assert actors == {"token:ops"}


def test_a_profile_cannot_read_kg_variables_or_move_a_key_over_http(kg, db, ollama,
                                                                     monkeypatch) -> None:
    """Issue 19, finding 2: api_key_env named KG_DATABASE_URL sent the database URL away."""
    use_server(kg, ollama.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with db.session() as session:
        _row, admin = tokens.create(session, "ops", "admin", by="tester")
    with serve(db) as server, server.client(admin) as client:
        for name in ("KG_DATABASE_URL", "DATABASE_URL", "PGPASSWORD", "HOME"):
            assert_error(client.put("/profiles/x", json={
                "provider": "openai", "model": "m", "base_url": "http://203.0.113.9:9/v1",
                "api_key_env": name, "activate": True}), 400, name, "never an API key")
        assert_error(client.put("/profiles/x", json={
            "provider": "openai", "model": "m", "base_url": "http://203.0.113.9:9/v1",
            "api_key_env": "SOME_SECRET"}), 400, "not an allowed key variable")
        # Allowed name, but a key may be pointed at a host only from the command line.
        assert_error(client.put("/profiles/x", json={
            "provider": "openai", "model": "m", "base_url": "http://203.0.113.9:9/v1",
            "api_key_env": "OPENAI_API_KEY"}), 403, "only on the command line")
        assert rows(db, "SELECT count(*) FROM extraction_profiles WHERE name = 'x'") == [(0,)]
    made = kg("admin", "extraction", "set", "--profile", "x", "--provider", "openai",
              "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
              "--api-key-env", "OPENAI_API_KEY")
    assert made.exit_code == 0, made.stderr
    with serve(db) as server, server.client(admin) as client:
        assert_error(client.put("/profiles/x", json={"base_url": "http://203.0.113.9:9/v1"}),
                     403, "base_url")
        assert client.put("/profiles/x", json={"temperature": 0.3}).status_code == 200
        cleared = client.put("/profiles/x", json={"api_key_env": None})
        assert cleared.status_code == 200, cleared.text  # dropping the key is always allowed
        moved = client.put("/profiles/x", json={"base_url": "http://203.0.113.9:9/v1"})
        assert moved.status_code == 200, moved.text  # no key goes with it any more
    assert rows(db, "SELECT api_key_env FROM extraction_profiles WHERE name = 'x'") == [(None,)]


# -- tokens, health, metrics, headers ------------------------------------------------------------

def test_tokens_guard_the_api_once_one_exists(db, seeded) -> None:
    with serve(db) as server:
        with server.client() as anyone:
            assert anyone.get("/whoami").json() == {"name": "api", "scope": "admin",
                                                    "tokens_required": False}
            with db.session() as session:
                _row, secret = tokens.create(session, "reader", "read", by="tester")
            missing = anyone.get("/concepts")
            assert_error(missing, 401, "Bearer")
            assert missing.headers["www-authenticate"] == "Bearer"
            assert_error(anyone.get("/concepts", headers={"Authorization": "Basic abc"}), 401,
                         "Bearer TOKEN")
            assert_error(anyone.get("/concepts",
                                    headers={"Authorization": "Bearer kgt_wrong"}), 401,
                         "not valid")
            assert_error(anyone.get("/metrics"), 401)
            assert anyone.get("/healthz").status_code == 200  # probes need no token
            assert anyone.get("/readyz").status_code == 200
            assert anyone.get("/").status_code == 200  # the page asks for the token itself
        with server.client(secret) as reader:
            assert reader.get("/concepts").status_code == 200
            assert reader.get("/whoami").json()["scope"] == "read"
            assert_error(reader.post("/runs", json={"paths": ["x"]}), 403, "needs admin")
            with db.session() as session:
                tokens.revoke(session, "reader", by="tester")
            # Revoking the last token locks the API; it does not open it again.
            assert_error(reader.get("/concepts"), 401, "not valid")
        with server.client() as anyone:
            assert_error(anyone.get("/concepts"), 401, "needs a token")
    (used,) = rows(db, "SELECT last_used_at FROM api_tokens WHERE name = 'reader'")[0]
    assert used is not None


def test_a_non_loopback_server_never_runs_open(db, seeded) -> None:
    app = create_app(db, ServerConfig(host="0.0.0.0", token_ttl_s=0))
    with ServerThread(app) as server, server.client() as client:
        # No token exists at all: a server reachable from elsewhere still refuses everyone.
        assert_error(client.get("/concepts"), 401, "needs a token")


def test_metrics_come_from_the_database(kg, db, db_url, seeded, tmp_path) -> None:
    with serve(db) as server, server.client() as client:
        def metric(text: str, name: str, **labels: str) -> float:
            total = 0.0
            for line in text.splitlines():
                if line.startswith(name + "{") and all(f'{k}="{v}"' in line
                                                      for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
            return total

        first = client.get("/metrics")
        assert first.status_code == 200 and first.headers["content-type"].startswith(
            "text/plain")
        (calls,) = rows(db, "SELECT count(*) FROM calls")[0]
        assert metric(first.text, "kg_llm_calls_total", status="ok", model="qwen3:8b",
                      profile="test") == calls
        assert metric(first.text, "kg_llm_call_latency_seconds_count") == calls
        (prompt,) = rows(db, "SELECT sum(prompt_tokens) FROM calls")[0]
        assert metric(first.text, "kg_llm_tokens_total", kind="prompt") == prompt
        (chunks,) = rows(db, "SELECT count(*) FROM chunk_extractions")[0]
        assert metric(first.text, "kg_chunks_total", status="ok", model="qwen3:8b") == chunks
        assert metric(first.text, "kg_runs", status="completed") == 1
        if "fallback" in Call.__table__.c:  # arrives with fallback profiles
            (fallbacks,) = rows(db, "SELECT count(*) FROM calls WHERE fallback")[0]
            assert "kg_llm_fallback_calls_total{" in first.text
            assert metric(first.text, "kg_llm_fallback_calls_total") == fallbacks
        assert metric(first.text, "kg_runs_in_progress") == 0

        # Work done by another process shows up (after the short cache).
        ingest_story(kg, tmp_path, name="second.md",
                     content="Irene Adler sang in Warsaw with Godfrey Norton.\n")
        second = client.get("/metrics").text
        (calls_now,) = rows(db, "SELECT count(*) FROM calls")[0]
        assert calls_now > calls
        assert metric(second, "kg_llm_calls_total") == calls_now
        assert metric(second, "kg_runs", status="completed") == 2
        assert metric(second, "kg_http_requests_total", route="/metrics", status="200") >= 1


def test_cors_is_off_unless_asked_and_the_page_has_a_strict_policy(db, seeded) -> None:
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "GET"}
    with serve(db) as server, server.client() as client:
        answer = client.get("/concepts", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-origin" not in client.options("/concepts",
                                                                   headers=preflight).headers
        page = client.get("/")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "http" not in re.sub(r"https?://(127\.0\.0\.1|localhost)", "", page.text)
        assert client.get("/static/vendor/cytoscape.min.js").status_code == 200
        docs = client.get("/docs").text
        assert "/static/vendor/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
        assert client.get("/openapi.json").json()["info"]["title"] == "kg"
    with serve(db, cors_origins=("http://elsewhere.example",)) as server, \
            server.client() as client:
        allowed = client.options("/concepts", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "http://elsewhere.example"


# -- the command ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_kg_serve_refuses_to_listen_openly_and_serves_on_loopback(kg, kg_env, db,
                                                                   tmp_path) -> None:
    refused = kg("serve", "--host", "0.0.0.0")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: refusing to listen on 0.0.0.0 while no API token")
    assert kg("serve", "--root", str(tmp_path / "missing")).exit_code == 2

    env = {**os.environ, **kg_env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "kg.cli", "serve", "--port", "0",
                             "--root", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(1)]
        while not (match := re.search(r"http://127\.0\.0\.1:(\d+)/", lines[-1])):
            assert len(lines) < 5 and proc.poll() is None, lines
            lines.append(proc.stderr.readline())
        url = f"http://127.0.0.1:{match.group(1)}"
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert ready.json()["status"] == "ok"
        # No open mode: the first start created an admin token and printed a URL with it.
        first = re.search(r"Open (http://\S+)#token=(kgt_\S+) ", proc.stderr.readline())
        assert first and first.group(1) == f"{url}/", first
        assert_error(httpx.get(f"{url}/concepts"), 401, "needs a token")
        owner = {"Authorization": f"Bearer {first.group(2)}"}
        assert httpx.get(f"{url}/concepts", headers=owner).json() == []
        taken = kg("serve", "--port", match.group(1))
        assert taken.exit_code == 2 and "choose another --port" in taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode in (0, 143), proc.stderr.read() if proc.stderr else ""
