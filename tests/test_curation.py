"""Curation: merge, rename, delete, undo, and later runs that respect the decisions, on both
databases, through the CLI, on a graph made by a real `kg ingest` against the fake Ollama.

The fake model names every capitalised phrase of a chunk and links them in a chain: the story
gives Baker Street - Sherlock Holmes - London - Doctor Watson - ... and Enemies - Professor
Moriarty - London - Colonel Moran - Moriarty.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from kg.db import Database, curation_rules
from tests.graph_seed import SMALL_CHUNKS, fake_ollama, ingest_story, rows, use_server


@pytest.fixture
def server(kg, db) -> Iterator[Any]:
    with fake_ollama() as fake:
        use_server(kg, fake.url)
        yield fake


@pytest.fixture
def story(kg, server, tmp_path) -> Any:
    return ingest_story(kg, tmp_path)


def ok(result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else None


def state(db: Database) -> dict[str, Any]:
    """Everything curation may touch, in a form that survives new row ids."""
    concepts = {cid: label for cid, label in rows(db, "SELECT id, label FROM concepts")}
    edges = {rid: (concepts[s], t, concepts[g])
             for rid, s, t, g in rows(db, "SELECT r.id, r.source_id, y.name, r.target_id "
                                          "FROM relationships r JOIN relationship_types y "
                                          "ON y.id = r.type_id")}
    return {
        "concepts": sorted(rows(db, "SELECT id, label, norm_label, description FROM concepts")),
        "aliases": sorted((concepts[c], a, n) for c, a, n in rows(
            db, "SELECT concept_id, alias, norm_alias FROM concept_aliases")),
        "edges": sorted((*edge, round(c, 6)) for edge, (c,) in (
            (edges[rid], r) for rid, *r in rows(db, "SELECT id, confidence FROM relationships"))),
        "evidence": Counter(
            (run, chunk, concepts.get(c) if c else None, edges.get(r) if r else None, q, s, e)
            for run, chunk, c, r, q, s, e in rows(
                db, "SELECT run_id, chunk_id, concept_id, relationship_id, quote, char_start, "
                    "char_end FROM evidence")),
    }


def labels(db: Database) -> set[str]:
    return {r[0] for r in rows(db, "SELECT label FROM concepts")}


def aliases_of(db: Database, label: str) -> set[str]:
    return {r[0] for r in rows(db, "SELECT a.alias FROM concept_aliases a JOIN concepts c "
                                   "ON c.id = a.concept_id WHERE c.label = :l", l=label)}


def test_merge_moves_labels_evidence_and_edges_and_undo_restores_all(kg, db, story) -> None:
    before = state(db)
    (epoch,) = rows(db, "SELECT epoch FROM graph_epoch")[0]
    decision = ok(kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--into",
                     "professor moriarty", "--json"))
    # running ingest writers are told to reload what they cache about the graph
    assert rows(db, "SELECT epoch FROM graph_epoch") == [(epoch + 1,)]
    assert decision["action"] == "merge" and decision["by"] == "tester"
    assert "Moriarty" not in labels(db)
    assert "Moriarty" in aliases_of(db, "Professor Moriarty")
    shown = ok(kg("concepts", "show", "Moriarty", "--json"))
    assert shown["label"] == "Professor Moriarty"
    # Moran's edge to Moriarty moved over (its type is symmetric: ends in id order)
    assert "Colonel Moran" in {r["concept"] for r in shown["relationships"]}
    quotes = {e["quote"] for e in shown["evidence"]}
    assert {"Moriarty", "Professor Moriarty"} <= quotes
    listed = ok(kg("curation", "list", "--json"))
    assert listed[0]["id"] == decision["id"] and listed[0]["undone_at"] is None
    assert "merged 'Moriarty' into 'Professor Moriarty'" in listed[0]["summary"]

    undone = ok(kg("curation", "undo", str(decision["id"]), "--json"))
    assert undone["undone_by"] == "tester"
    assert state(db) == before
    again = kg("curation", "undo", str(decision["id"]))
    assert again.exit_code == 2 and "already undone" in again.stderr


@pytest.mark.parametrize("survivor", ["Professor Moriarty", "London"])
def test_merge_folds_equal_edges_and_drops_self_loops_and_undoes_both(kg, db, story,
                                                                      survivor) -> None:
    # Holmes -part_of-> London and Moriarty -part_of-> London: into Moriarty they fold into
    # one edge; into London, Holmes -part_of-> London would link London to itself.
    before = state(db)
    decision = ok(kg("concepts", "merge", "Sherlock Holmes", survivor, "--into", survivor,
                     "--json"))
    after = state(db)
    edges = [(s, t, g) for s, t, g, _c in after["edges"]]
    assert len(edges) == len(set(edges))
    assert all(s != g for s, _t, g in edges)
    assert all("Sherlock Holmes" not in (s, g) for s, _t, g in edges)
    assert len(after["edges"]) < len(before["edges"])
    assert sum(after["evidence"].values()) <= sum(before["evidence"].values())
    ok(kg("curation", "undo", str(decision["id"])))
    assert state(db) == before


def test_merge_picks_the_better_evidenced_survivor_and_refuses_nonsense(kg, db, story) -> None:
    # London has evidence in both chunks, Doctor Watson in one.
    decision = ok(kg("concepts", "merge", "Doctor Watson", "London", "--json"))
    assert decision["summary"] == "merged 'Doctor Watson' into 'London'"
    same = kg("concepts", "merge", "London", "Doctor Watson")  # an alias of London now
    assert same.exit_code == 2 and "already one concept" in same.stderr
    other = kg("concepts", "merge", "London", "Mrs Hudson", "--into", "Baker Street")
    assert other.exit_code == 2 and "is neither" in other.stderr
    missing = kg("concepts", "merge", "London", "Nobody")
    assert missing.exit_code == 2 and "no concept named 'Nobody'" in missing.stderr
    assert len(ok(kg("curation", "list", "--json"))) == 1


def test_rename_keeps_the_old_label_as_an_alias_and_undo_restores(kg, db, story) -> None:
    before = state(db)
    decision = ok(kg("concepts", "rename", "Doctor Watson", "John Watson", "--json"))
    assert "John Watson" in labels(db) and "Doctor Watson" not in labels(db)
    assert "Doctor Watson" in aliases_of(db, "John Watson")
    assert ok(kg("concepts", "show", "doctor watson", "--json"))["label"] == "John Watson"
    clash = kg("concepts", "rename", "John Watson", "london")
    assert clash.exit_code == 2 and "a concept named 'London' exists" in clash.stderr
    assert "kg concepts merge" in clash.stderr
    ok(kg("curation", "undo", str(decision["id"])))
    assert state(db) == before


def test_delete_concept_and_relationship_then_undo(kg, db, story) -> None:
    before = state(db)
    gone = ok(kg("concepts", "delete", "London", "--json"))
    assert "London" not in labels(db)
    assert all("London" not in (s, g) for s, _t, g, _c in state(db)["edges"])
    edge = ok(kg("relationships", "list", "--json"))[0]
    removed = ok(kg("relationships", "delete", str(edge["id"]), "--json"))
    assert removed["action"] == "delete_relationship"
    assert edge["id"] not in {r["id"] for r in ok(kg("relationships", "list", "--json"))}
    assert rows(db, "SELECT count(*) FROM evidence WHERE relationship_id = :r",
                r=edge["id"]) == [(0,)]
    missing = kg("relationships", "delete", "999999")
    assert missing.exit_code == 2 and "no relationship 999999" in missing.stderr
    # Undo in reverse order puts the graph back exactly.
    ok(kg("curation", "undo", str(removed["id"])))
    ok(kg("curation", "undo", str(gone["id"])))
    assert state(db) == before
    listed = ok(kg("curation", "list", "--json"))
    assert [d["undone_at"] is not None for d in listed] == [True, True]
    assert ok(kg("curation", "list", "--active", "--json")) == []


def test_what_later_runs_ask_curation(kg, db, story) -> None:
    ok(kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--into", "Professor Moriarty"))
    ok(kg("concepts", "rename", "Doctor Watson", "John Watson"))
    ok(kg("concepts", "delete", "Enemies"))
    edge = ok(kg("relationships", "list", "--concept", "Baker Street", "--json"))[0]
    ok(kg("relationships", "delete", str(edge["id"])))
    with db.session() as session:
        assert curation_rules.suppressed_labels(session) == {"enemies"}
        (pm,) = rows(db, "SELECT id FROM concepts WHERE label = 'Professor Moriarty'")[0]
        (jw,) = rows(db, "SELECT id FROM concepts WHERE label = 'John Watson'")[0]
        assert curation_rules.redirects(session) == {"moriarty": pm, "doctor watson": jw}
        assert curation_rules.renamed_concepts(session) == {jw}
        (key,) = curation_rules.suppressed_edges(session)
    (type_id,) = rows(db, "SELECT id FROM relationship_types WHERE name = :n",
                      n=edge["type"])[0]
    assert key == (edge["source_id"], type_id, edge["target_id"])
    with db.engine.connect() as conn:  # the writer reads through a Core connection
        assert curation_rules.suppressed_labels(conn) == {"enemies"}
    # A concept named like a deleted one again (re-created by hand) is not suppressed.
    ok(kg("concepts", "rename", "Mrs Hudson", "Enemies"))
    with db.session() as session:
        assert curation_rules.suppressed_labels(session) == set()


# -- later runs ------------------------------------------------------------------------------

def test_a_merge_survives_a_forced_reingest(kg, db, story) -> None:
    ok(kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--into", "Professor Moriarty"))
    concepts_before = labels(db)
    summary = ok(kg("ingest", str(story), *SMALL_CHUNKS, "--force", "--json"))
    assert summary["status"] == "completed" and summary["chunks_ok"] == 2
    assert labels(db) == concepts_before  # "Moriarty" not split off again, nothing new
    assert summary["concepts_new"] == 0
    quotes = {r[0] for r in rows(db, "SELECT e.quote FROM evidence e JOIN concepts c "
                                     "ON c.id = e.concept_id WHERE c.label = :l "
                                     "AND e.run_id = :r", l="Professor Moriarty",
                                 r=summary["run_id"])}
    assert quotes == {"Moriarty", "Professor Moriarty"}  # the new run's mentions went there


def test_deletes_and_renames_survive_a_forced_reingest(kg, db, story) -> None:
    ok(kg("concepts", "delete", "Enemies"))
    ok(kg("concepts", "rename", "Doctor Watson", "John Watson"))
    # "Sherlock Holmes" outranks this spelling: a run would otherwise change it back.
    ok(kg("concepts", "rename", "Sherlock Holmes", "sherlock holmes"))
    summary = ok(kg("ingest", str(story), *SMALL_CHUNKS, "--force", "--json"))
    assert summary["status"] == "completed"
    assert "Enemies" not in labels(db)
    assert {"John Watson", "sherlock holmes"} <= labels(db)
    assert not {"Doctor Watson", "Sherlock Holmes"} & labels(db)
    dropped = [json.loads(d) if isinstance(d, str) else d for (d,) in rows(
        db, "SELECT dropped FROM chunk_extractions WHERE run_id = :r", r=summary["run_id"])]
    assert sum(d.get("suppressed", 0) for d in dropped) == 1
