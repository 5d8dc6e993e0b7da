"""Keep-apart decisions and undo with dependents (issue #24), on both databases: a pair a
person kept apart is neither merged by `kg resolve` nor listed by `kg concepts duplicates`;
undoing a merge that later merges built on names them and needs `--cascade` (API:
`cascade=True`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from kg.api import Graph
from kg.db import Database
from kg.db import migrate as kg_migrate
from kg.db.models import Concept, CurationDecision
from kg.errors import ConflictError
from tests.graph_seed import add_concepts, concept_labels


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else None


def _pairs(kg: Any) -> set[tuple[str, str]]:
    return {(d["a_label"], d["b_label"]) for d in ok(kg("concepts", "duplicates", "--json"))}


def test_a_pair_kept_apart_is_never_proposed_or_merged_again(kg, db: Database) -> None:
    add_concepts(db, ("International Business Machines", "organization"), ("IBM", "organization"),
         ("Internatonal Business Machines", "organization"),
         ("Ludwig Boltzmann", "person"), ("Boltzmann", "person"))
    assert ("Ludwig Boltzmann", "Boltzmann") in _pairs(kg)

    kept = ok(kg("concepts", "keep-apart", "Ludwig Boltzmann", "Boltzmann", "--json"))
    assert kept["action"] == "keep_apart" and kept["by"] == "tester"
    assert ("Ludwig Boltzmann", "Boltzmann") not in _pairs(kg)
    with db.session() as s:
        row = s.get(CurationDecision, kept["id"])
        assert row is not None
        assert row.data["a_label"] == "Ludwig Boltzmann" and row.data["b_label"] == "Boltzmann"
        assert {row.data["a"], row.data["b"]} == {
            c.id for c in s.query(Concept).filter(Concept.label.in_(
                ["Ludwig Boltzmann", "Boltzmann"]))}
    again = kg("concepts", "keep-apart", "Boltzmann", "Ludwig Boltzmann")
    assert again.exit_code != 0 and "already kept apart" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    same = kg("concepts", "keep-apart", "IBM", "ibm")
    assert same.exit_code != 0 and "one concept" in same.stderr
    missing = kg("concepts", "keep-apart", "IBM", "Nobody Here")
    assert missing.exit_code != 0 and "Nobody Here" in missing.stderr

    # IBM is kept apart from the full name; the typo still joins the full name, and the pair
    # stays apart through that merge (the survivor holds what the person judged).
    ok(kg("concepts", "keep-apart", "IBM", "International Business Machines"))
    done = ok(kg("resolve", "--full", "--json"))
    assert [(m["survivor_label"], m["merged_label"]) for m in done["merged"]] == [
        ("International Business Machines", "Internatonal Business Machines")]
    assert {"IBM", "International Business Machines", "Ludwig Boltzmann",
            "Boltzmann"} <= concept_labels(db)
    assert ok(kg("resolve", "--full", "--json"))["merged"] == []
    assert not {p for p in _pairs(kg) if "IBM" in p}

    listed = ok(kg("curation", "list", "--json"))
    assert [r["action"] for r in listed].count("keep_apart") == 2
    table = kg("curation", "list")
    assert table.exit_code == 0 and "keep_apart" in table.stdout

    # Undoing the decision lets the pair be proposed again.
    undone = ok(kg("curation", "undo", str(kept["id"]), "--json"))
    assert undone["undone_by"] == "tester" and undone["also_undone"] == []
    assert ("Ludwig Boltzmann", "Boltzmann") in _pairs(kg)


def test_undo_names_the_merges_built_on_it_and_cascade_undoes_them(kg, db: Database) -> None:
    add_concepts(db, ("Marie Curie", "person"), ("M. Curie", "person"), ("Madame Curie", "person"),
         ("Maria Sklodowska-Curie", "person"), ("IBM", "organization"),
         ("International Business Machines", "organization"))
    before = concept_labels(db)
    first = ok(kg("concepts", "merge", "Marie Curie", "M. Curie", "--into", "Marie Curie",
                  "--json"))["id"]
    same_survivor = ok(kg("concepts", "merge", "Marie Curie", "Madame Curie", "--into",
                          "Marie Curie", "--json"))["id"]
    unrelated = ok(kg("concepts", "merge", "IBM", "International Business Machines",
                      "--into", "International Business Machines", "--json"))["id"]
    onward = ok(kg("concepts", "merge", "Marie Curie", "Maria Sklodowska-Curie", "--into",
                   "Maria Sklodowska-Curie", "--json"))["id"]
    merged = concept_labels(db)
    assert merged == {"Maria Sklodowska-Curie", "International Business Machines"}

    refused = kg("curation", "undo", str(first))
    assert refused.exit_code != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert f"later merges built on it: {same_survivor}, {onward}" in refused.stderr
    assert "--cascade" in refused.stderr
    assert concept_labels(db) == merged  # nothing undone
    assert not [r for r in ok(kg("curation", "list", "--json")) if r["undone_at"]]

    graph = Graph(db)
    with pytest.raises(ConflictError, match=f"built on it: {same_survivor}, {onward}"):
        graph.undo(first)
    cascaded = graph.undo(first, cascade=True)
    assert cascaded["id"] == first and cascaded["also_undone"] == [same_survivor, onward]
    assert concept_labels(db) == before - {"IBM"}
    undone = {r["id"] for r in ok(kg("curation", "list", "--json")) if r["undone_at"]}
    assert undone == {first, same_survivor, onward}

    # The CLI's --cascade, on a fresh chain.
    again = ok(kg("concepts", "merge", "Marie Curie", "M. Curie", "--json"))["id"]
    later = ok(kg("concepts", "merge", "Marie Curie", "Madame Curie", "--json"))["id"]
    shown = kg("curation", "undo", str(again), "--cascade")
    assert shown.exit_code == 0, shown.stderr
    assert f"also undone, newest first: {later}" in shown.stdout
    assert concept_labels(db) == before - {"IBM"}
    # A merge nothing built on undoes as before.
    assert ok(kg("curation", "undo", str(unrelated), "--json"))["also_undone"] == []
    assert concept_labels(db) == before


def test_migration_0022_widens_the_action_check_and_back(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    insert = text("INSERT INTO curation_decisions (collection_id, action, summary, norms, data,"
                  " created_by, created_at) VALUES (1, :a, 's', '[]', '{}', 't', "
                  "CURRENT_TIMESTAMP)")
    kg_migrate.upgrade(db, "0021")
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(insert, {"a": "keep_apart"})
    kg_migrate.upgrade(db, "0022")
    with db.engine.begin() as conn:
        conn.execute(insert, {"a": "keep_apart"})
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(insert, {"a": "split"})
    kg_migrate.downgrade(db, "0021")  # drops the rows the narrower CHECK refuses
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM curation_decisions")).scalar_one() == 0
        conn.execute(insert, {"a": "merge"})
    kg_migrate.upgrade(db)
    db.dispose()
