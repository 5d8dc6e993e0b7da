"""GraphWriter with several writers on one database: one row per concept, alias and relationship,
the graph a serial run builds, and a chunk that cannot be stored recorded as failed.

Each writer has its own Database (its own connections), as separate processes would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import insert, text

from kg.db import Database
from kg.db.locks import lock_graph
from kg.db.models import Chunk, Document, Run, utcnow
from kg.extraction.extract import Attempt, CallStatus, ChunkOutcome
from kg.extraction.schema import bounds_for_budget
from kg.extraction.store import MAX_ATTEMPTS, ChunkRef, GraphWriter
from kg.extraction.validate import validate_reply
from kg.extraction.vocabulary import Vocabulary
from kg.profiles.storage import get_active
from kg.profiles.views import provider_settings
from tests.test_ingest import rows

BOUNDS = bounds_for_budget(2048)
FILLER = " and the story went on for a while in the old house by the river"
Item = tuple[ChunkRef, ChunkOutcome]


class Graph:
    """One run over one document; `item` adds a chunk and the outcome a model gave for it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        with db.session() as session:
            self.settings = provider_settings(get_active(session))
            self.vocabulary = Vocabulary.load(session)
        now = utcnow()
        with db.engine.begin() as conn:
            self.run_id = conn.execute(insert(Run).returning(Run.id), {
                "status": "running", "started_at": now, "heartbeat_at": now, "pid": 1,
                "host": "test", "profile_name": "default", "profiles_used": [], "options": {},
                "documents": 1, "chunks_total": 0, "chunks_ok": 0,
                "chunks_failed": 0}).scalar_one()
            self.document_id = conn.execute(insert(Document).returning(Document.id), {
                "path": "/story.txt", "sha256": "0" * 64, "size_bytes": 1, "kind": "txt",
                "status": "pending", "chunk_count": 0, "created_at": now}).scalar_one()
        self.ordinal = 0

    def item(self, concepts: Sequence[str | tuple[str, str, list[str]]],
             edges: Sequence[tuple[str, str, str, float]] = ()) -> Item:
        """concepts: labels, or (label, description, search terms); edges: (a, type, b, conf)."""
        full = [c if isinstance(c, tuple) else (c, "", []) for c in concepts]
        body = ". ".join(label for label, _d, _t in full) + "." + FILLER
        with self.db.engine.begin() as conn:
            chunk_id = conn.execute(insert(Chunk).returning(Chunk.id), {
                "document_id": self.document_id, "ordinal": self.ordinal, "text": body,
                "char_start": 0, "char_end": len(body), "token_estimate": 30}).scalar_one()
        self.ordinal += 1
        reply = json.dumps({
            "concepts": [{"label": label, "description": d, "search_terms": t, "quote": label}
                         for label, d, t in full],
            "relationships": [{"source": a, "type": kind, "target": b, "confidence": conf,
                               "quote": a} for a, kind, b, conf in edges]})
        verdict = validate_reply(reply, body, self.vocabulary, BOUNDS)
        assert verdict.usable, verdict.errors
        assert len(verdict.concepts) == len(full) and len(verdict.relationships) == len(edges)
        attempt = Attempt(1, CallStatus.OK, utcnow(), "qwen3:8b", response=reply)
        return ChunkRef(chunk_id, self.document_id, 0), ChunkOutcome(
            chunk_id, self.settings, [attempt], verdict)


def snapshot(db: Database) -> dict[str, Any]:
    """The graph by labels only (ids differ between databases and interleavings)."""
    concepts = {label: (norm, description, json.loads(terms) if isinstance(terms, str) else terms)
                for label, norm, description, terms in rows(
                    db, "SELECT label, norm_label, description, search_terms FROM concepts")}
    aliases = sorted(rows(db, "SELECT c.label, a.alias, a.norm_alias FROM concept_aliases a "
                              "JOIN concepts c ON c.id = a.concept_id"))
    edges = sorted(rows(db, """SELECT a.label, t.name, b.label, r.confidence FROM relationships r
                               JOIN concepts a ON a.id = r.source_id
                               JOIN concepts b ON b.id = r.target_id
                               JOIN relationship_types t ON t.id = r.type_id"""))
    return {"concepts": concepts, "aliases": aliases, "edges": edges}


@pytest.fixture
def graph(db: Database) -> Graph:
    return Graph(db)


@pytest.fixture
def writers(db_url: str) -> Iterator[list[GraphWriter]]:
    """Three writers, each with its own connections."""
    databases = [Database(db_url) for _ in range(3)]
    yield [GraphWriter(d) for d in databases]
    for d in databases:
        d.dispose()


def run_at_once(calls: list[Any]) -> list[Any]:
    """Run the callables in threads released together; re-raise the first failure."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


HOLMES = ["Sherlock Holmes", "Holmes, Sherlock", "sherlock holmes"]
STATIONS = ["Station Alpha", "Station Bravo", "Station Kilo", "Station Oscar", "Station Tango",
            "Station Zulu"]


def test_writers_racing_on_the_same_names_make_one_row_each(graph, writers, db) -> None:
    # Each writer commits once first, so every one holds a cache the others then outdate.
    for k, w in enumerate(writers):
        assert w.commit(graph.run_id, [graph.item([f"Warmup Number{k}"])])[0].ok
    for station in STATIONS:
        items = [graph.item([HOLMES[k], station, "Baker Street"],
                            [(HOLMES[k], "located_in", "Baker Street", 0.5 + k / 10),
                             (station, "part_of", "Baker Street", 0.7)])
                 for k in range(len(writers))]
        done = run_at_once([lambda w=w, i=i: w.commit(graph.run_id, [i])
                            for w, i in zip(writers, items, strict=True)])
        assert all(result[0].ok for result in done)
    assert sum(w.retries for w in writers) == 0  # the lock orders them: nothing to redo
    shot = snapshot(db)
    assert sorted(shot["concepts"]) == sorted(
        ["Baker Street", "Sherlock Holmes", *STATIONS, "Warmup Number0", "Warmup Number1",
         "Warmup Number2"])
    assert shot["aliases"] == [("Sherlock Holmes", "Holmes, Sherlock", "sherlock holmes"),
                               ("Sherlock Holmes", "sherlock holmes", "sherlock holmes")]
    assert shot["edges"] == sorted(
        [("Sherlock Holmes", "located_in", "Baker Street", 0.7)]
        + [(s, "part_of", "Baker Street", 0.7) for s in STATIONS])
    assert rows(db, "SELECT chunks_ok, chunks_failed FROM runs") == [(3 + 3 * len(STATIONS), 0)]


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_two_writers_waiting_on_the_lock_both_commit_one_concept(graph, writers, db) -> None:
    first, second = writers[:2]
    a = graph.item(["Sherlock Holmes", "Baker Street"],
                   [("Sherlock Holmes", "located_in", "Baker Street", 0.6)])
    b = graph.item(["Holmes, Sherlock", "Baker Street"],
                   [("Holmes, Sherlock", "located_in", "Baker Street", 0.9)])
    holder = db.engine.connect()
    holder.begin()
    lock_graph(holder)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda w=w, i=i: results.append(w.commit(
        graph.run_id, [i]))) for w, i in ((first, a), (second, b))]
    for t in threads:
        t.start()
    try:
        waiting = 0
        for _ in range(200):  # until both writers are queued behind the lock
            waiting = rows(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND NOT granted AND database = (SELECT oid FROM pg_database "
                               "WHERE datname = current_database())")[0][0]
            if waiting == 2:
                break
            time.sleep(0.05)
        assert waiting == 2
    finally:
        holder.rollback()
        holder.close()
    for t in threads:
        t.join(30)
    assert [r[0].ok for r in results] == [True, True]
    shot = snapshot(db)
    assert sorted(shot["concepts"]) == ["Baker Street", "Sherlock Holmes"]
    assert shot["aliases"] == [("Sherlock Holmes", "Holmes, Sherlock", "sherlock holmes")]
    assert shot["edges"] == [("Sherlock Holmes", "located_in", "Baker Street", 0.9)]


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_sqlite_writer_waits_for_the_write_lock(graph, writers, db) -> None:
    holder = db.engine.raw_connection()
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release() -> None:
        time.sleep(0.5)
        holder.commit()
        released.set()

    threading.Thread(target=release).start()
    result = writers[0].commit(graph.run_id, [graph.item(["Sherlock Holmes"])])
    assert released.is_set() and result[0].ok
    holder.close()


def test_alias_and_label_changes_from_racing_writers(graph, writers, db) -> None:
    assert writers[0].commit(graph.run_id, [graph.item(["sherlock holmes"])])[0].ok
    for w in writers[1:]:
        w.commit(graph.run_id, [graph.item(["Warmup"])])
    # One writer brings a better spelling (a relabel), one an alias, one a typo (fuzzy alias).
    items = [graph.item([spelling]) for spelling in
             ("Sherlock Holmes", "Holmes, Sherlock", "Sherlok Holmes")]
    run_at_once([lambda w=w, i=i: w.commit(graph.run_id, [i])
                 for w, i in zip(writers, items, strict=True)])
    shot = snapshot(db)
    assert shot["concepts"]["Sherlock Holmes"][0] == "sherlock holmes"
    assert shot["aliases"] == [("Sherlock Holmes", "Holmes, Sherlock", "sherlock holmes"),
                               ("Sherlock Holmes", "Sherlok Holmes", "sherlok holmes"),
                               ("Sherlock Holmes", "sherlock holmes", "sherlock holmes")]
    # The same spellings again, from writers whose caches have all of that: nothing new.
    items = [graph.item(["Holmes, Sherlock", "Sherlok Holmes"]) for _ in writers]
    again = run_at_once([lambda w=w, i=i: w.commit(graph.run_id, [i])
                         for w, i in zip(writers, items, strict=True)])
    assert all(r[0].ok and r[0].new_concepts == 0 for r in again)
    assert snapshot(db) == shot


# Every spelling, description, term and confidence below reaches the same graph whatever
# order the chunks commit in and however they are grouped.
ORDERED = [
    [("Sherlok Holmes", "A detective.", ["detective"]), "Baker Street"],
    [("sherlock holmes", "The consulting detective of London.", ["sleuth", "london"]),
     "Doctor Watson"],
    [("Holmes, Sherlock", "", ["violin", "pipe", "cocaine"]),
     ("Doctor Watson", "His friend.", ["army", "doctor", "writer"])],
    [("Sherlock Holmes", "A detective.", ["baker", "bees", "chemistry"]), "Baker Street"],
    [("Sherlock Holmes", "", ["mystery", "zeal", "apiary"]),
     ("Doctor Watson", "His flatmate.", ["afghanistan"])],
]
EDGES = [
    [("Sherlok Holmes", "located_in", "Baker Street", 0.4)],
    [("sherlock holmes", "related_to", "Doctor Watson", 0.5)],
    [("Doctor Watson", "related_to", "Holmes, Sherlock", 0.8)],
    [("Sherlock Holmes", "located_in", "Baker Street", 0.9)],
    [],
]
EXPECTED = {
    "concepts": {  # the longest description; the first ten terms in sorted order
        "Sherlock Holmes": ("sherlock holmes", "The consulting detective of London.",
                            ["apiary", "baker", "bees", "chemistry", "cocaine", "detective",
                             "london", "mystery", "pipe", "sleuth"]),
        "Baker Street": ("baker street", "", []),
        "Doctor Watson": ("doctor watson", "His flatmate.",
                          ["afghanistan", "army", "doctor", "writer"]),
    },
    "aliases": [("Sherlock Holmes", "Holmes, Sherlock", "sherlock holmes"),
                ("Sherlock Holmes", "Sherlok Holmes", "sherlok holmes"),
                ("Sherlock Holmes", "sherlock holmes", "sherlock holmes")],
    "edges": [("Doctor Watson", "related_to", "Sherlock Holmes", 0.8),
              ("Sherlock Holmes", "located_in", "Baker Street", 0.9)],
}


@pytest.mark.parametrize(("order", "group"), [
    ([0, 1, 2, 3, 4], 1), ([4, 3, 2, 1, 0], 1), ([1, 3, 0, 4, 2], 1), ([2, 0, 4, 3, 1], 5),
    ([3, 4, 0, 1, 2], 2),
])
def test_the_graph_does_not_depend_on_commit_order(graph, db, order, group) -> None:
    items = [graph.item(ORDERED[i], EDGES[i]) for i in order]
    writer = GraphWriter(db)
    for start in range(0, len(items), group):
        assert all(r.ok for r in writer.commit(graph.run_id, items[start:start + group]))
    shot = snapshot(db)
    # related_to is symmetric: stored once, its ends in id order, so compared as a pair.
    assert shot["concepts"] == EXPECTED["concepts"]
    assert shot["aliases"] == EXPECTED["aliases"]
    assert {(frozenset((a, b)) if t == "related_to" else (a, b), t, c)
            for a, t, b, c in shot["edges"]} == {
        (frozenset((a, b)) if t == "related_to" else (a, b), t, c)
        for a, t, b, c in EXPECTED["edges"]}


def test_a_row_written_outside_the_lock_makes_the_commit_start_over(graph, db) -> None:
    writer = GraphWriter(db)
    assert writer.commit(graph.run_id, [graph.item(["Alpha Centauri", "Beta Pictoris",
                                                    "Gamma Draconis"])])[0].ok
    # Something that skips the lock replaces a concept under the writer's id watermark: the
    # writer's cache does not know the new name and plans it as a new concept.
    with db.engine.begin() as conn:
        beta = conn.execute(text("SELECT id FROM concepts WHERE label = 'Beta Pictoris'")).scalar()
        conn.execute(text("DELETE FROM concepts WHERE id = :id"), {"id": beta})
        conn.execute(text("INSERT INTO concepts (id, label, norm_label, description, "
                          "search_terms, created_at) VALUES (:id, 'Sherlock Holmes', "
                          "'sherlock holmes', '', '[]', :now)"), {"id": beta, "now": utcnow()})
    ref, outcome = graph.item(["sherlock holmes"])
    result = writer.commit(graph.run_id, [(ref, outcome)])
    assert result[0].ok and result[0].new_concepts == 0
    assert writer.retries == 1
    assert rows(db, "SELECT id, label FROM concepts WHERE norm_label = 'sherlock holmes'") == [
        (beta, "Sherlock Holmes")]
    assert rows(db, "SELECT concept_id FROM evidence WHERE chunk_id = :c", c=ref.id) == [(beta,)]


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_writer_whose_kept_connection_died_reconnects(graph, db) -> None:
    # The writer keeps its connection between commits (no ping per commit): when the server
    # drops it, the next commit takes a new one instead of failing.
    writer = GraphWriter(db)
    assert writer.commit(graph.run_id, [graph.item(["Sherlock Holmes"])])[0].ok
    with db.engine.begin() as conn:
        killed = conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
            "pg_backend_pid() AND datname = current_database()")).scalars().all()
    assert killed and all(killed)
    assert writer.commit(graph.run_id, [graph.item(["Doctor Watson"])])[0].ok
    assert writer.retries == 0
    assert sorted(r[0] for r in rows(db, "SELECT label FROM concepts")) == [
        "Doctor Watson", "Sherlock Holmes"]
    writer.close()


POISON = {
    "sqlite": ["CREATE TRIGGER poison BEFORE INSERT ON concepts WHEN NEW.label = 'Poison Ivy' "
               "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"],
    "postgresql": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.label = 'Poison Ivy' THEN RAISE unique_violation USING MESSAGE = 'poisoned row';"
        " END IF; RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON concepts FOR EACH ROW EXECUTE FUNCTION poison()"],
}


def test_a_chunk_whose_rows_keep_failing_is_recorded_failed(graph, db) -> None:
    with db.engine.begin() as conn:
        for statement in POISON[db.dialect]:
            conn.execute(text(statement))
    items = [graph.item(["Sherlock Holmes"]), graph.item(["Poison Ivy", "Gotham City"]),
             graph.item(["Doctor Watson"])]
    writer = GraphWriter(db)
    results = writer.commit(graph.run_id, items)
    assert [r.ok for r in results] == [True, False, True]
    assert writer.retries >= 2 * (MAX_ATTEMPTS - 1)  # the group, then the chunk alone
    assert sorted(r[0] for r in rows(db, "SELECT label FROM concepts")) == [
        "Doctor Watson", "Sherlock Holmes"]
    stored = rows(db, "SELECT chunk_id, status, error FROM chunk_extractions ORDER BY chunk_id")
    assert [s[1] for s in stored] == ["ok", "failed", "ok"]
    assert "could not be stored" in stored[1][2] and "poisoned row" in stored[1][2]
    assert rows(db, "SELECT count(*) FROM calls") == [(3,)]
    assert rows(db, "SELECT chunks_ok, chunks_failed FROM runs") == [(2, 1)]
    # The writer goes on with a sound cache.
    assert writer.commit(graph.run_id, [graph.item(["Gotham City", "Sherlock Holmes"])])[0].ok
    assert rows(db, "SELECT count(*) FROM concepts") == [(3,)]


def test_writers_reload_after_a_change_made_under_the_lock_with_rewrites(graph, db) -> None:
    writer = GraphWriter(db)
    assert writer.commit(graph.run_id, [graph.item(["Professor Moriarty", "Colonel Moran"])])
    [(moran,)] = rows(db, "SELECT id FROM concepts WHERE label = 'Colonel Moran'")
    [(moriarty,)] = rows(db, "SELECT id FROM concepts WHERE label = 'Professor Moriarty'")

    def curate(*statements: str) -> None:  # what a merge and its undo do, in one transaction
        with db.engine.begin() as conn:
            lock_graph(conn, rewrites=True)
            for statement in statements:
                conn.execute(text(statement), {"m": moran, "p": moriarty, "now": utcnow()})

    curate("INSERT INTO concept_aliases (concept_id, alias, norm_alias) "
           "VALUES (:p, 'Colonel Moran', 'colonel moran')",
           "DELETE FROM evidence WHERE concept_id = :m", "DELETE FROM concepts WHERE id = :m")
    merged = graph.item(["Colonel Moran"])
    assert writer.commit(graph.run_id, [merged])[0].ok
    curate("DELETE FROM concept_aliases WHERE alias = 'Colonel Moran'",
           "INSERT INTO concepts (id, label, norm_label, description, search_terms, created_at) "
           "VALUES (:m, 'Colonel Moran', 'colonel moran', '', '[]', :now)")
    undone = graph.item(["Colonel Moran"])
    assert writer.commit(graph.run_id, [undone])[0].ok
    assert writer.retries == 0  # reloaded because of the epoch, not after a failed attempt
    evidence = dict(rows(db, "SELECT chunk_id, concept_id FROM evidence"))
    assert (evidence[merged[0].id], evidence[undone[0].id]) == (moriarty, moran)
