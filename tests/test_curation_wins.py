"""A decision by a person beats every automatic rule of the writer, on every later run: the
label a merge kept, a merged-away spelling, a deleted relationship whose end was merged since.
Through the CLI, on both databases, on a graph made by a real `kg ingest` against the fake
Ollama (see tests/test_curation.py for the story and what the fake model names in it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from kg.db import Database, curation_rules
from tests.graph_seed import SMALL_CHUNKS, fake_ollama, ingest_story, rows, use_server


@pytest.fixture
def story(kg, db, tmp_path) -> Iterator[Any]:
    with fake_ollama() as fake:
        use_server(kg, fake.url)
        yield ingest_story(kg, tmp_path)


def ok(result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else None


def labels(db: Database) -> set[str]:
    return {r[0] for r in rows(db, "SELECT label FROM concepts")}


def reingest(kg, story) -> Any:
    summary = ok(kg("ingest", str(story), *SMALL_CHUNKS, "--force", "--json"))
    assert summary["status"] == "completed", summary
    return summary


def test_the_label_a_merge_kept_survives_every_later_run(kg, db, story) -> None:
    # "Professor Moriarty" outranks "Moriarty" (the writer's fuller-spelling rule); the person
    # chose the short one.
    ok(kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--into", "Moriarty"))
    before = labels(db)
    for _ in range(2):
        summary = reingest(kg, story)
        assert labels(db) == before
        assert summary["concepts_new"] == 0  # the merged-away spelling is not split off again
    (cid,) = rows(db, "SELECT id FROM concepts WHERE label = 'Moriarty'")[0]
    assert rows(db, "SELECT alias FROM concept_aliases WHERE concept_id = :c", c=cid) == [
        ("Professor Moriarty",)]
    assert ok(kg("concepts", "show", "Professor Moriarty", "--json"))["label"] == "Moriarty"


def test_a_merge_without_into_keeps_its_survivor_label_too(kg, db, story) -> None:
    # Equal evidence: the first named survives; a run must not relabel it either.
    decision = ok(kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--json"))
    assert decision["summary"] == "merged 'Professor Moriarty' into 'Moriarty'"
    reingest(kg, story)
    assert "Moriarty" in labels(db) and "Professor Moriarty" not in labels(db)


def test_an_undone_merge_gives_the_label_back_to_the_rules(kg, db, story) -> None:
    decision = ok(kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--into",
                     "Moriarty", "--json"))
    ok(kg("curation", "undo", str(decision["id"])))
    with db.session() as session:
        assert curation_rules.rules(session).renamed == frozenset()
    reingest(kg, story)
    assert {"Moriarty", "Professor Moriarty"} <= labels(db)


def test_a_rename_after_a_merge_and_a_merge_after_a_rename_both_hold(kg, db, story) -> None:
    ok(kg("concepts", "rename", "Colonel Moran", "moran"))
    ok(kg("concepts", "merge", "moran", "Moriarty", "--into", "moran"))
    ok(kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--into", "moran"))
    reingest(kg, story)
    assert "moran" in labels(db)
    assert not {"Colonel Moran", "Moriarty", "Professor Moriarty"} & labels(db)


def test_a_deleted_relationship_stays_deleted_after_one_end_is_merged(kg, db, story) -> None:
    """The deletion names the edge by its ends' ids; a later merge moves an end to another
    concept, and the same text must not bring the edge back between the new ends."""
    edges = ok(kg("relationships", "list", "--concept", "Colonel Moran", "--json"))
    edge = next(e for e in edges if {e["source"], e["target"]} == {"Colonel Moran", "Moriarty"})
    ok(kg("relationships", "delete", str(edge["id"])))
    ok(kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--into", "Professor Moriarty"))
    reingest(kg, story)
    after = ok(kg("relationships", "list", "--concept", "Colonel Moran", "--json"))
    assert not [e for e in after if "Professor Moriarty" in (e["source"], e["target"])]
