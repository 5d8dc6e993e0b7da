"""Collections over HTTP (issue 21): `/c/{collection}/...`, tokens limited to collections, the
database's row-level security behind them (PostgreSQL), and metrics by collection.

Two collections are filled through the server itself (`POST /c/NAME/runs`) with stories that
share most of their concepts, so a leak would show up as an id or a label of the other one.
Every GET route of a collection is called with a token of `alpha` only: nothing of `beta`
may come back; `beta`'s routes answer that token 403, an unknown collection 404.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from kg import tokens
from kg.db import Database
from kg.db import collections as kg_collections
from kg.db.scope import rls_available
from kg.server import ServerConfig, create_app
from tests.graph_seed import STORY, rows, use_server
from tests.test_ingest import paragraphs
from tests.test_ocr import SLIDE, slide
from tests.test_server import (
    SMALL,
    ServerThread,
    assert_error,
    counts,
    read_events,
    slow_ollama,
)

A, B = "alpha", "beta"
STORY_B = STORY + "\nIrene Adler sang in Warsaw with Godfrey Norton.\n"
ONLY_B = ("Irene Adler", "Warsaw", "Godfrey Norton")
KINDS = ("concept", "relationship", "document", "run", "path")
Found = dict[str, set[Any]]


def _found(**kinds: Iterator[Any]) -> Found:
    return {kind: set(values) for kind, values in kinds.items()}


def _concepts(body: Any) -> Found:
    return _found(concept=(c["id"] for c in body))


def _concept(body: Any) -> Found:
    return _found(concept=iter([body["id"]]),
                  relationship=(r["id"] for r in body["relationships"]),
                  run=(e["run_id"] for e in body["evidence"]),
                  path=(e["document"] for e in body["evidence"]))


def _relationships(body: Any) -> Found:
    return _found(relationship=(r["id"] for r in body),
                  concept=(c for r in body for c in (r["source_id"], r["target_id"])))


def _graph(body: Any) -> Found:
    return _found(concept=(n["id"] for n in body["nodes"]),
                  relationship=(e["id"] for e in body["edges"]))


def _documents(body: Any) -> Found:
    return _found(document=(d["id"] for d in body), path=(d["path"] for d in body))


def _jsonl(body: str) -> Found:
    lines = [json.loads(line) for line in body.splitlines()]
    evidence = [e for x in lines for e in x["evidence"]]
    return _found(concept=(c for x in lines for c in (
                      [x["id"]] if x["kind"] == "concept" else [x["source_id"], x["target_id"]])),
                  relationship=(x["id"] for x in lines if x["kind"] == "relationship"),
                  run=(e["run_id"] for e in evidence), path=(e["document"] for e in evidence))


def _runs(body: Any) -> Found:
    return _found(run=(r["id"] for r in body))


def _run(body: Any) -> Found:
    return _found(run=iter([body["id"]]))


def _events(body: str) -> Found:
    data = [json.loads(line[len("data: "):]) for line in body.splitlines()
            if line.startswith("data: ")]
    return _found(run=(d["run_id"] for d in data),
                  path=(d["document"] for d in data if "document" in d))


def _search(body: Any) -> Found:
    return _found(concept=(h["id"] for h in body["hits"] if h["kind"] == "concept"),
                  path=(h["document"] for h in body["hits"] if h["document"]))


def _evidence(body: Any) -> Found:
    return _found(path=iter([body["document"]]))


def _duplicates(body: Any) -> Found:
    return _found(concept=(p[end] for p in body for end in ("a", "b")))


def _text(_body: str) -> Found:
    return {}


def _picture(_body: str) -> Found:
    return {}  # a PNG: whose it is, the path's {image} (alpha's own) says


# Every GET route of a collection, as (route in the OpenAPI schema, path, query, how to read
# what came back). `{concept}` and `{run}` are filled with alpha's own; the leak test fails if a GET
# route of the app under /c/{collection} is missing here.
GETS: list[tuple[str, str, dict[str, str], Callable[[Any], Found]]] = [
    ("/concepts", "/concepts", {"limit": "1000"}, _concepts),
    ("/concepts", "/concepts", {"search": "holmes"}, _concepts),
    ("/concepts/{ref}", "/concepts/Sherlock Holmes", {}, _concept),
    ("/concepts/{ref}", "/concepts/{concept}", {}, _concept),
    ("/relationships", "/relationships", {"limit": "5000"}, _relationships),
    ("/relationships", "/relationships", {"concept": "Sherlock Holmes"}, _relationships),
    ("/graph", "/graph", {"center": "Sherlock Holmes", "depth": "5", "limit": "5000"}, _graph),
    ("/documents", "/documents", {}, _documents),
    ("/export", "/export", {"format": "jsonl"}, _jsonl),
    ("/export", "/export", {"format": "graphml"}, _text),
    ("/export", "/export", {"format": "gexf"}, _text),
    ("/export", "/export", {"format": "cypher"}, _text),
    ("/export", "/export", {"format": "turtle"}, _text),
    ("/runs", "/runs", {}, _runs),
    ("/runs/{run_id}", "/runs/{run}", {}, _run),
    ("/runs/{run_id}/events", "/runs/{run}/events", {}, _events),
    ("/search", "/search", {"q": "Sherlock Holmes"}, _search),
    ("/search", "/search", {"q": "holmes baker street london"}, _search),
    ("/evidence/{evidence_id}", "/evidence/{evidence}", {}, _evidence),
    ("/documents/{document_id}/page/{number}", "/documents/{image}/page/1", {}, _picture),
    ("/duplicates", "/duplicates", {"low": "0", "high": "1"}, _duplicates),
    ("/curation", "/curation", {}, _text),  # beta's decision names Irene Adler: never shown
]
# Routes at the root that answer about collections: checked for beta's name and figures.
ROOT_GETS = ["/collections", "/whoami", "/metrics"]


@dataclass
class World:
    app: FastAPI
    server: ServerThread
    secrets: dict[str, str]  # token name -> secret
    ids: dict[str, Found] = field(default_factory=dict)  # collection -> kind -> ids
    runs: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)  # collection -> a document's id

    def client(self, token: str, collection: str | None = None) -> httpx.Client:
        base = self.server.url + (f"/c/{collection}" if collection else "")
        return httpx.Client(base_url=base, timeout=60,
                            headers={"Authorization": f"Bearer {self.secrets[token]}"})


def app_for(db: Database, **options: Any) -> FastAPI:
    return create_app(db, ServerConfig(token_ttl_s=0, collection_ttl_s=0, metrics_ttl_s=0,
                                       health_ttl_s=0, poll_s=0.1, **options))


def _ids(db: Database, collection_id: int) -> Found:
    def of(sql: str) -> set[Any]:
        return {r[0] for r in rows(db, sql, c=collection_id)}

    return {"concept": of("SELECT id FROM concepts WHERE collection_id = :c"),
            "relationship": of("SELECT id FROM relationships WHERE collection_id = :c"),
            "document": of("SELECT id FROM documents WHERE collection_id = :c"),
            "run": of("SELECT id FROM runs WHERE collection_id = :c"),
            "path": of("SELECT path FROM documents WHERE collection_id = :c"),
            "evidence": of("SELECT id FROM evidence WHERE collection_id = :c")}


def _ingest(client: httpx.Client, collection: str, name: str, content: str,
            *more: tuple[str, bytes]) -> int:
    started = client.post("/runs", files=[("files", (name, content.encode())),
                                          *(("files", item) for item in more)],
                          data={"chunking": json.dumps(SMALL)})
    assert started.status_code == 202, started.text
    body = started.json()
    run_id = int(body["run_id"])
    assert body["events"] == f"/c/{collection}/runs/{run_id}/events"
    final = read_events(client, run_id).of("finished")[0].data
    assert final["status"] == "completed", final
    return run_id


@pytest.fixture
def world(kg, db: Database, ollama) -> Iterator[World]:
    """alpha and beta filled through the server; tokens: alpha-only (read and admin), and
    ops (admin, every collection)."""
    use_server(kg, ollama.url)
    with db.session() as session:
        for name in (A, B):
            kg_collections.create(session, name, by="tester")
        secrets = {
            "ops": tokens.create(session, "ops", "admin", by="tester")[1],
            "alpha-reader": tokens.create(session, "alpha-reader", "read", by="tester",
                                          collections=[A])[1],
            "alpha-admin": tokens.create(session, "alpha-admin", "admin", by="tester",
                                         collections=[A])[1]}
    app = app_for(db)
    with ServerThread(app) as server:
        world = World(app, server, secrets)
        with world.client("alpha-admin", A) as alpha, world.client("ops", B) as beta:
            picture = io.BytesIO()  # alpha has a page image to show, too
            slide(SLIDE).save(picture, format="PNG")
            world.runs[A] = _ingest(alpha, A, "story.md", STORY,
                                    ("slide.png", picture.getvalue()))
            world.runs[B] = _ingest(beta, B, "story-b.md", STORY_B)
            pair = {c["label"]: c["id"] for c in beta.get("/concepts").json()
                    if c["label"] in ("Irene Adler", "Warsaw")}
            kept = beta.post("/duplicates/reject", json={"a": pair["Irene Adler"],
                                                         "b": pair["Warsaw"]})
            assert kept.status_code == 200, kept.text  # a curation decision in beta only
        with db.session() as session:
            ids = {row["name"]: row["id"] for row in kg_collections.list_all(session)}
        world.ids = {name: _ids(db, ids[name]) for name in (A, B)}
        world.images = {name: min(i for i, kind in rows(
            db, "SELECT id, kind FROM documents WHERE collection_id = :c", c=ids[name])
            if kind == "image" or name == B) for name in (A, B)}
        yield world


def _call(client: httpx.Client, path: str, params: dict[str, str]) -> httpx.Response:
    if path.endswith("/events"):
        with client.stream("GET", path, params=params) as response:
            response.read()
            return response
    return client.get(path, params=params)


def _fill(path: str, world: World, collection: str) -> str:
    mine = world.ids[collection]
    return path.replace("{concept}", str(min(mine["concept"]))).replace(
        "{run}", str(world.runs[collection])).replace(
        "{evidence}", str(min(mine["evidence"]))).replace("{image}",
                                                        str(world.images[collection]))


# -- the leak test -------------------------------------------------------------------------------

def test_a_token_of_one_collection_sees_nothing_of_another(world: World, db: Database) -> None:
    app_routes = {path.removeprefix("/c/{collection}")
                  for path, methods in world.app.openapi()["paths"].items()
                  if path.startswith("/c/{collection}/") and "get" in methods}
    assert app_routes == {template for template, *_rest in GETS}, "a GET route is not covered"

    mine, theirs = world.ids[A], world.ids[B]
    assert all(mine[k] and theirs[k] for k in KINDS)
    assert not any(mine[k] & theirs[k] for k in KINDS)  # ids are global: disjoint
    shared = rows(db, "SELECT a.label FROM concepts a JOIN concepts b ON a.label = b.label "
                      "AND a.collection_id < b.collection_id")
    assert ("Sherlock Holmes",) in shared  # the same names in both: only ids tell them apart
    seen: dict[str, set[Any]] = {k: set() for k in KINDS}
    with world.client("alpha-reader", A) as alpha, world.client("alpha-reader", B) as beta:
        for template, path, params, read in GETS:
            answer = _call(alpha, _fill(path, world, A), params)
            assert answer.status_code == 200, (path, params, answer.text[:300])
            for label in ONLY_B:
                assert label not in answer.text, (path, params, label)
            for other in theirs["path"]:
                assert other not in answer.text, (path, params)
            body = answer.text if read in (_jsonl, _events, _text, _picture) else answer.json()
            for kind, values in read(body).items():
                assert values <= mine[kind], (template, params, kind, values - mine[kind])
                seen[kind] |= values
            # beta's routes refuse this token, whatever they would show.
            refused = _call(beta, _fill(path, world, B), params)
            assert_error(refused, 403, "token alpha-reader may use only alpha", "'beta'")
        assert {k for k, v in seen.items() if v} == set(KINDS)
        assert seen["concept"] == mine["concept"] and seen["run"] == mine["run"]
        assert alpha.get("/curation").json() == []

        # beta's rows by id, through alpha's routes: as if they did not exist.
        assert_error(alpha.get(f"/concepts/{min(theirs['concept'])}"), 404, "no concept")
        assert_error(alpha.get("/concepts/Irene Adler"), 404, "no concept")
        assert_error(alpha.get(f"/runs/{world.runs[B]}"), 404, f"no run {world.runs[B]}")
        assert_error(alpha.get(f"/runs/{world.runs[B]}/events"), 404, "no run")
        assert_error(alpha.get("/graph", params={"center": "Warsaw"}), 404)
        assert_error(alpha.get("/export", params={"format": "jsonl", "run": world.runs[B]}),
                     404, f"no run {world.runs[B]}")
        with world.client("ops", B) as beta_ops, world.client("alpha-admin", A) as admin:
            (decision,) = beta_ops.get("/curation").json()
            assert_error(admin.post(f"/curation/{decision['id']}/undo"), 404,
                         f"no curation decision {decision['id']}")
            assert beta_ops.get("/curation").json() == [decision]  # still not undone
        # The root routes are default's: not this token's either.
        with world.client("alpha-reader") as root:
            assert_error(root.get("/concepts"), 403, "may use only alpha", "'default'")
            whoami = root.get("/whoami").json()
            assert whoami["name"] == "alpha-reader" and whoami["collections"] == [A]
            (listed,) = root.get("/collections").json()
            assert listed["name"] == A and listed["concepts"] == len(mine["concept"])
            assert listed["documents"] == len(mine["document"]) and listed["runs"] == 1
            metrics = root.get("/metrics").text
            assert 'collection="alpha"' in metrics and 'collection="beta"' not in metrics
            assert 'collection="default"' not in metrics
            for path in ROOT_GETS:
                answer = root.get(path)
                assert answer.status_code == 200 and B not in re.findall(r"\w+", answer.text)


def test_unknown_collections_are_404_and_refusals_write_nothing(world: World,
                                                                db: Database) -> None:
    before = counts(db)
    with world.client("ops", "nope") as ops, world.client("alpha-admin", "nope") as alpha:
        message = assert_error(ops.get("/concepts"), 404, "no collection 'nope'",
                               "existing: default, alpha, beta")
        assert "kg collections create nope" in message
        # A limited token learns only the names it may use.
        assert_error(alpha.get("/runs"), 404, "no collection 'nope'; existing: alpha ")
        assert_error(ops.post("/runs", files={"files": ("x.md", b"Sherlock Holmes")}), 404,
                     "no collection 'nope'")
    with world.client("alpha-admin", B) as alpha_on_b:
        assert_error(alpha_on_b.post("/runs", files={"files": ("x.md", b"Sherlock Holmes")}),
                     403, "token alpha-admin may use only alpha")
        assert_error(alpha_on_b.post(f"/runs/{world.runs[B]}/resume"), 403)
        assert_error(alpha_on_b.post(f"/runs/{world.runs[B]}/cancel"), 403)
    with world.client("alpha-admin", A) as alpha:
        # beta's run through alpha's routes: not there.
        assert_error(alpha.post(f"/runs/{world.runs[B]}/resume"), 404, "no run")
        assert_error(alpha.post(f"/runs/{world.runs[B]}/cancel"), 404, "no run")
    with world.client("alpha-reader", A) as reader:
        assert_error(reader.post("/runs", files={"files": ("x.md", b"Sherlock Holmes")}),
                     403, "needs admin")
    assert counts(db) == before


def test_runs_land_in_their_collection_and_default_stays_at_the_root(world: World,
                                                                     db: Database) -> None:
    by_name = {name: i for i, name in rows(db, "SELECT id, name FROM collections")}
    for name in (A, B):
        run = world.runs[name]
        assert rows(db, "SELECT collection_id FROM runs WHERE id = :r", r=run) == [
            (by_name[name],)]
        for table in ("documents", "concepts", "relationships", "evidence", "calls",
                      "chunk_extractions"):
            assert rows(db, f"SELECT count(*) FROM {table} WHERE collection_id = :c",
                        c=by_name[name])[0][0] > 0, (name, table)
    assert rows(db, "SELECT count(*) FROM concepts WHERE collection_id = 1") == [(0,)]
    with world.client("ops") as root, world.client("ops", "default") as default:
        assert root.get("/concepts").json() == default.get("/concepts").json() == []
        assert root.get("/runs").json() == []
        assert sorted(c["name"] for c in root.get("/collections").json()) == [A, B, "default"]
        assert "collections" not in root.get("/whoami").json()  # every collection
    with world.client("ops", B) as beta:
        labels = {c["label"] for c in beta.get("/concepts", params={"limit": 1000}).json()}
        assert set(ONLY_B) <= labels and "Sherlock Holmes" in labels
        detail = beta.get(f"/runs/{world.runs[B]}").json()
        assert detail["calls"] == rows(db, "SELECT count(*) FROM calls WHERE run_id = :r",
                                       r=world.runs[B])[0][0] > 0


def test_a_renamed_collection_answers_under_its_new_name(world: World, db: Database) -> None:
    with world.client("ops", "gamma") as gamma, world.client("ops", B) as beta:
        before = beta.get("/concepts").json()
        with db.session() as session:
            kg_collections.rename(session, B, "gamma")
        assert gamma.get("/concepts").json() == before
        assert_error(beta.get("/concepts"), 404, "no collection 'beta'", "gamma")


def test_metrics_are_labelled_by_collection(world: World, db: Database) -> None:
    def metric(body: str, name: str, **labels: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(name + "{")
                   and all(f'{k}="{v}"' in line for k, v in labels.items()))

    with world.client("ops") as ops:
        body = ops.get("/metrics").text
    by_name = {name: i for i, name in rows(db, "SELECT id, name FROM collections")}
    for name in (A, B, "default"):
        c = by_name[name]
        for gauge, table in (("kg_concepts", "concepts"), ("kg_relationships", "relationships"),
                             ("kg_documents", "documents"), ("kg_evidence", "evidence")):
            (expected,) = rows(db, f"SELECT count(*) FROM {table} WHERE collection_id = :c",
                               c=c)[0]
            assert metric(body, gauge, collection=name) == expected, (gauge, name)
        (calls,) = rows(db, "SELECT count(*) FROM calls WHERE collection_id = :c", c=c)[0]
        assert metric(body, "kg_llm_calls_total", collection=name) == calls
        (chunks,) = rows(db, "SELECT count(*) FROM chunk_extractions WHERE collection_id = :c",
                         c=c)[0]
        assert metric(body, "kg_chunks_total", collection=name) == chunks
        assert metric(body, "kg_runs", collection=name, status="completed") == (
            0 if name == "default" else 1)
    assert 'kg_runs{collection="default",status="failed"} 0.0' in body


def test_a_live_run_is_watched_and_cancelled_only_through_its_collection(kg, db) -> None:
    with db.session() as session:
        for name in (A, B):
            kg_collections.create(session, name, by="tester")
    with slow_ollama(0.3) as ollama:
        use_server(kg, ollama.url)
        app = app_for(db, open_until_first_token=True)
        with ServerThread(app) as server, \
                httpx.Client(base_url=f"{server.url}/c/{A}", timeout=60) as alpha, \
                httpx.Client(base_url=f"{server.url}/c/{B}", timeout=60) as beta:
            started = beta.post("/runs", files={"files": ("long.md", paragraphs(8).encode())},
                                data={"chunking": json.dumps(SMALL)})
            assert started.status_code == 202, started.text
            run_id = started.json()["run_id"]
            with beta.stream("GET", f"/runs/{run_id}/events") as watching:
                lines = watching.iter_lines()
                while next(lines) != "event: chunk":
                    pass
                # beta's feed is live (watched): alpha's routes neither join nor stop it.
                assert_error(alpha.get(f"/runs/{run_id}/events"), 404, f"no run {run_id}")
                assert_error(alpha.post(f"/runs/{run_id}/cancel"), 404, f"no run {run_id}")
                assert alpha.get("/runs").json() == []
                assert beta.get(f"/runs/{run_id}").json()["cancellable"]
                cancelled = beta.post(f"/runs/{run_id}/cancel")
                assert cancelled.status_code == 202, cancelled.text
            final = read_events(beta, run_id).of("finished")[0].data
            assert final["status"] == "interrupted"
            assert_error(alpha.post(f"/runs/{run_id}/resume"), 404, f"no run {run_id}")
            resumed = beta.post(f"/runs/{run_id}/resume")
            assert resumed.status_code == 202, resumed.text
            assert resumed.json()["events"] == f"/c/{B}/runs/{run_id}/events"
            done = read_events(beta, run_id).of("finished")[0].data
            assert done["status"] == "completed" and done["calls"] > 0
    (beta_id,) = rows(db, "SELECT id FROM collections WHERE name = :n", n=B)[0]
    assert rows(db, "SELECT DISTINCT collection_id FROM chunk_extractions") == [(beta_id,)]
    assert rows(db, "SELECT DISTINCT collection_id FROM calls") == [(beta_id,)]


# -- the database's own guard (PostgreSQL) -------------------------------------------------------

@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_an_enforced_session_sees_nothing_of_another_collection_even_in_raw_sql(
        world: World, db: Database) -> None:
    by_name = {name: i for i, name in rows(db, "SELECT id, name FROM collections")}
    index = world.app.state.kg.collections
    handle = index.database(by_name[A], A)  # what the server's requests of alpha work with
    assert handle.enforce == (by_name[A],)
    tables = ("documents", "chunks", "concepts", "concept_aliases", "relationships",
              "evidence", "runs", "chunk_extractions", "calls")
    with handle.transaction() as conn:
        assert rls_available(conn)
        assert conn.execute(text("SELECT current_user")).scalar() == "kg_scoped"
        for table in tables:
            assert conn.execute(text(f"SELECT count(*) FROM {table} WHERE collection_id = :b"),
                                {"b": by_name[B]}).scalar() == 0, table
            seen = conn.execute(text(f"SELECT DISTINCT collection_id FROM {table}")).all()
            # (The fake model names no aliases: that table is empty in both.)
            assert seen == ([] if table == "concept_aliases" else [(by_name[A],)]), table
        assert conn.execute(text("SELECT count(*) FROM concepts WHERE label = 'Irene Adler'")
                            ).scalar() == 0
    # Through an ORM session of the handle, with the collection filter switched off: still
    # only alpha's rows (the database holds the line, not only kg's filter).
    with handle.session() as session:
        everything = session.execute(text("SELECT collection_id FROM concepts")).all()
        assert {r[0] for r in everything} == {by_name[A]}
    # Changing beta from alpha's handle: its rows are not there to update, and a new row of
    # beta is refused by the policy.
    with handle.transaction() as conn:
        assert conn.execute(text("UPDATE runs SET error = 'x' WHERE collection_id = :b "
                                 "RETURNING id"), {"b": by_name[B]}).all() == []
    with pytest.raises(DBAPIError, match="row-level security"), handle.transaction() as conn:
        conn.execute(text("INSERT INTO concepts (label, norm_label, description, search_terms, "
                          "created_at, collection_id) VALUES ('x', 'x', '', '[]', now(), :b)"),
                     {"b": by_name[B]})
    assert rows(db, "SELECT count(*) FROM runs WHERE error = 'x'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM concepts WHERE label = 'x'") == [(0,)]


# -- tokens on the command line ------------------------------------------------------------------

def test_tokens_limited_to_collections_on_the_command_line(kg, db: Database) -> None:
    with db.session() as session:
        for name in (A, B):
            kg_collections.create(session, name, by="tester")
    made = kg("admin", "tokens", "create", "team", "--collection", A, "--collection", B,
              "--scope", "read", "--json")
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout)["collections"] == [A, B]
    assert kg("admin", "tokens", "create", "everyone").exit_code == 0
    stored = dict(rows(db, "SELECT name, collections FROM api_tokens"))
    ids = sorted(i for i, n in rows(db, "SELECT id, name FROM collections") if n in (A, B))
    team = stored["team"]
    assert (json.loads(team) if isinstance(team, str) else team) == ids
    assert stored["everyone"] in (None, "null")

    missing = kg("admin", "tokens", "create", "x", "--collection", "nope")
    assert missing.exit_code != 0
    assert missing.stderr.count("\n") == 1 and "no collection 'nope'" in missing.stderr
    assert "existing: default, alpha, beta" in missing.stderr
    assert rows(db, "SELECT count(*) FROM api_tokens WHERE name = 'x'") == [(0,)]

    listed = {t["name"]: t["collections"]
              for t in json.loads(kg("admin", "tokens", "list", "--json").stdout)}
    assert listed == {"team": [A, B], "everyone": None}
    table = kg("admin", "tokens", "list").stdout
    assert re.search(r"team\s+read\s+alpha, beta", table) and re.search(
        r"everyone\s+read\s+all", table), table

    with db.session() as session:  # what deleting beta must do (SQLite may reuse its id)
        assert tokens.forget_collection(session, ids[1]) == 1
    listed = {t["name"]: t["collections"]
              for t in json.loads(kg("admin", "tokens", "list", "--json").stdout)}
    assert listed["team"] == [A]
