"""The read side: `kg relationships list`, `kg graph neighbors|path`, `kg documents`, on a graph
made by a real `kg ingest` against the fake Ollama server, on both databases.

The fake model names every capitalised phrase of a chunk and links them in a chain, so the
story gives: Baker Street - Sherlock Holmes - London - Doctor Watson - ... (first chunk) and
Enemies - Professor Moriarty - London - Colonel Moran - Moriarty (second chunk).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.graph_seed import fake_ollama, ingest_story, rows, use_server


@pytest.fixture
def story(kg, db, tmp_path) -> Iterator[Any]:
    with fake_ollama() as server:
        use_server(kg, server.url)
        yield ingest_story(kg, tmp_path)


def as_json(result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_relationships_list_filters_by_type_and_concept(kg, db, story) -> None:
    everything = as_json(kg("relationships", "list", "--json"))
    (count,) = rows(db, "SELECT count(*) FROM relationships")[0]
    assert len(everything) == count > 8
    assert {"id", "source", "type", "target", "confidence", "evidence"} <= set(everything[0])
    assert all(r["evidence"] >= 1 for r in everything)
    london = as_json(kg("relationships", "list", "--concept", "london", "--json"))
    assert london and all("London" in (r["source"], r["target"]) for r in london)
    assert len(london) == sum("London" in (r["source"], r["target"]) for r in everything)
    part_of = as_json(kg("relationships", "list", "--type", "Part Of", "--json"))
    assert part_of and {r["type"] for r in part_of} == {"part_of"}
    limited = as_json(kg("relationships", "list", "--limit", "2", "--json"))
    assert [r["id"] for r in limited] == [r["id"] for r in everything[:2]]
    table = kg("relationships", "list", "--concept", "London")
    assert table.exit_code == 0 and "London" in table.stdout and "SOURCE" in table.stdout
    unknown = kg("relationships", "list", "--type", "frobnicates")
    assert unknown.exit_code == 2
    assert unknown.stderr == "error: no relationship type 'frobnicates'; see `kg vocab list`\n"


def test_neighbors_by_depth(kg, db, story) -> None:
    one = as_json(kg("graph", "neighbors", "Sherlock Holmes", "--json"))
    assert one["concept"]["label"] == "Sherlock Holmes"
    first = {n["label"] for n in one["neighbors"]}
    assert first == {"Baker Street", "London"}
    assert all(n["distance"] == 1 for n in one["neighbors"])
    assert all("Sherlock Holmes" in (r["source"], r["target"]) for r in one["relationships"])
    two = as_json(kg("graph", "neighbors", "sherlock holmes", "--depth", "2", "--json"))
    second = {n["label"] for n in two["neighbors"] if n["distance"] == 2}
    assert {"Doctor Watson", "Professor Moriarty", "Colonel Moran"} <= second
    assert first < {n["label"] for n in two["neighbors"]}
    cut = as_json(kg("graph", "neighbors", "Sherlock Holmes", "--depth", "3", "--limit", "3",
                     "--json"))
    assert cut["truncated"] and len(cut["neighbors"]) <= 3
    table = kg("graph", "neighbors", "London")
    assert table.exit_code == 0 and "London: " in table.stdout
    missing = kg("graph", "neighbors", "Nobody At All")
    assert missing.exit_code == 2 and missing.stderr.startswith("error: no concept named")


def test_path_finds_the_shortest_chain_either_direction(kg, db, story) -> None:
    found = as_json(kg("graph", "path", "Baker Street", "Moriarty", "--json"))
    steps = found["steps"]
    # Baker Street - Sherlock Holmes - London - Colonel Moran - Moriarty
    assert len(steps) == 4
    walked = ["Baker Street"]
    for step in steps:
        here, there = (step["from"], step["to"]) if step["direction"] == "->" else \
            (step["to"], step["from"])
        assert here == walked[-1]
        walked.append(there)
    assert walked[-1] == "Moriarty" and "London" in walked
    edges = {r["id"]: r for r in as_json(kg("relationships", "list", "--json"))}
    for step in steps:
        edge = edges[step["relationship_id"]]
        assert (edge["source"], edge["type"], edge["target"]) == (step["from"], step["type"],
                                                                 step["to"])
    backwards = as_json(kg("graph", "path", "Moriarty", "Baker Street", "--json"))
    assert len(backwards["steps"]) == 4
    short = kg("graph", "path", "Baker Street", "Moriarty", "--max-depth", "3")
    assert short.exit_code == 0 and "no path of at most 3" in short.stdout
    shown = kg("graph", "path", "Baker Street", "London")
    assert shown.stdout.splitlines()[-1].endswith("London")


def test_documents_list_and_show(kg, db, story) -> None:
    listed = as_json(kg("documents", "list", "--json"))
    assert [d["path"] for d in listed] == [str(story.resolve())]
    assert listed[0]["chunks"] == 2 and listed[0]["evidence"] > 0
    shown = as_json(kg("documents", "show", str(story), "--json"))
    assert shown["path"] == str(story.resolve()) and len(shown["versions"]) == 1
    assert shown["runs"] == [r[0] for r in rows(db, "SELECT id FROM runs")]
    assert "London" in {c["label"] for c in shown["top_concepts"]}
    by_id = as_json(kg("documents", "show", str(listed[0]["id"]), "--json"))
    assert by_id["path"] == shown["path"]
    missing = kg("documents", "show", "/no/such/file.txt")
    assert missing.exit_code == 2 and "see `kg documents list`" in missing.stderr


def test_deleting_a_document_removes_only_what_it_alone_supports(kg, db, story,
                                                                tmp_path) -> None:
    other = tmp_path / "adler.txt"
    other.write_text("Irene Adler visits London with Sherlock Holmes.", encoding="utf-8")
    assert kg("ingest", str(other)).exit_code == 0
    before = {
        "concepts": {r[0] for r in rows(db, "SELECT label FROM concepts")},
        "runs": rows(db, "SELECT count(*) FROM runs")[0][0],
        "calls": rows(db, "SELECT count(*) FROM calls")[0][0],
        "story evidence": rows(db, """SELECT count(*) FROM evidence e JOIN chunks c
                                      ON c.id = e.chunk_id JOIN documents d
                                      ON d.id = c.document_id WHERE d.path = :p""",
                               p=str(story.resolve()))[0][0],
    }
    assert "Irene Adler" in before["concepts"]
    refused = kg("documents", "delete", str(other), input="n\n")
    assert refused.exit_code != 0
    assert "Irene Adler" in {r[0] for r in rows(db, "SELECT label FROM concepts")}

    result = as_json(kg("documents", "delete", str(other), "--yes", "--json"))
    assert result["documents"] == 1 and result["chunks"] == 1 and result["concepts"] == 1
    after = {r[0] for r in rows(db, "SELECT label FROM concepts")}
    assert after == before["concepts"] - {"Irene Adler"}  # London and Holmes stay
    edges = {(s, t) for s, t in rows(db, """SELECT a.label, b.label FROM relationships r
        JOIN concepts a ON a.id = r.source_id JOIN concepts b ON b.id = r.target_id""")}
    assert not any("Irene Adler" in pair for pair in edges)
    assert ("London", "Sherlock Holmes") not in edges  # the link only adler.txt made
    assert rows(db, "SELECT count(*) FROM evidence e JOIN chunks c ON c.id = e.chunk_id "
                    "JOIN documents d ON d.id = c.document_id WHERE d.path = :p",
                p=str(story.resolve()))[0][0] == before["story evidence"]
    assert rows(db, "SELECT count(*) FROM relationships r WHERE NOT EXISTS "
                    "(SELECT 1 FROM evidence e WHERE e.relationship_id = r.id)") == [(0,)]
    assert rows(db, "SELECT count(*) FROM runs")[0][0] == before["runs"]
    assert rows(db, "SELECT count(*) FROM calls")[0][0] == before["calls"]
    assert rows(db, "SELECT count(*) FROM calls WHERE chunk_id IS NULL")[0][0] >= 1
    assert [d["path"] for d in as_json(kg("documents", "list", "--json"))] == \
        [str(story.resolve())]
    again = kg("documents", "delete", str(other), "--yes")
    assert again.exit_code == 2 and "no document" in again.stderr
