"""Ontology type names as published ontologies write them (schema.org, DBpedia, Wikidata:
`Person`, `birthPlace`): kept as written everywhere (show, export, prompt, graph), met by any
case or separators (`person`, `birth_place`, `birth-place`), refused only on a real clash. Through
the CLI, on both databases, with the fake Ollama as the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes import FakeOllama, Reply, chunk_of
from tests.test_ingest import rows, use_server

# References written in another case than the declaration (`domain: person`) meet it too.
SCHEMA_ORG = """\
description: A slice of schema.org and DBpedia.
concept_types:
  - name: Person
  - name: City
  - name: Organization
relation_types:
  - name: birthPlace
    description: where the person was born
    domain: Person
    range: City
  - name: worksFor
    domain: person
    range: ORGANIZATION
  - name: foundingDate
    domain: Organization
    range: xsd:date
"""

TEXT = "Ada Lovelace was born in London. She worked for the Analytical Society.\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def imported(kg, tmp_path: Path, text: str = SCHEMA_ORG, name: str = "schema") -> dict:
    result = kg("ontology", "import", str(write(tmp_path, f"{name}.yaml", text)), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_names_are_kept_as_written_and_round_trip_through_export(kg, db, tmp_path) -> None:
    assert imported(kg, tmp_path)["relation_types"] == 3
    shown = json.loads(kg("ontology", "show", "schema", "--json").stdout)
    assert [c["name"] for c in shown["concept_types"]] == ["Person", "City", "Organization"]
    assert [(r["name"], r["domain"], r["range"]) for r in shown["relation_types"]] == [
        ("birthPlace", "Person", "City"),
        # a reference is the declared type, in the declaration's spelling
        ("worksFor", "Person", "Organization"),
        ("foundingDate", "Organization", "xsd:date")]
    table = kg("ontology", "show", "schema")
    assert table.exit_code == 0 and "birthPlace" in table.stdout and "Person" in table.stdout
    exported = kg("ontology", "export", "schema").stdout
    assert "name: birthPlace" in exported and "name: Person" in exported
    again = imported(kg, tmp_path, exported, name="again")
    assert again["concept_types"] == 3 and again["relation_types"] == 3
    shown_again = json.loads(kg("ontology", "show", "again", "--json").stdout)
    assert {k: v for k, v in shown_again.items() if k != "name"} == {
        k: v for k, v in shown.items() if k != "name"}


def test_a_clash_is_refused_in_one_line_naming_both(kg, db, tmp_path) -> None:
    for clash, first, line in (("birth-place", "birthPlace", 7), ("BirthPlace", "birthPlace", 7)):
        text = SCHEMA_ORG.replace("name: worksFor", f"name: {clash}")
        result = kg("ontology", "import", str(write(tmp_path, "bad.yaml", text)))
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert (f"bad.yaml:11: duplicate relation type {clash!r} (same as {first!r}, first at "
                f"line {line})") in result.stderr
    text = SCHEMA_ORG.replace("name: City", "name: PERSON")
    result = kg("ontology", "import", str(write(tmp_path, "bad.yaml", text)))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "duplicate concept type 'PERSON' (same as 'Person'" in result.stderr
    assert rows(db, "SELECT name FROM ontologies") == [("default",)]  # nothing imported


def spelling_responder(body: dict) -> Reply:
    """A model that writes the ontology's names in its own way."""
    chunk = chunk_of(body)
    concepts = [{"label": "Ada Lovelace", "search_terms": [], "type": "person",
                 "quote": "Ada Lovelace was born in London."},
                {"label": "London", "search_terms": [], "type": "CITY",
                 "quote": "Ada Lovelace was born in London."},
                {"label": "Analytical Society", "search_terms": [], "type": "organization",
                 "quote": "She worked for the Analytical Society."}]
    rels = [{"source": "Ada Lovelace", "type": "birth_place", "target": "London",
             "confidence": 0.9, "quote": "Ada Lovelace was born in London."},
            {"source": "Ada Lovelace", "type": "Works-For", "target": "Analytical Society",
             "confidence": 0.8, "quote": "She worked for the Analytical Society."}]
    return Reply(json.dumps({"concepts": [c for c in concepts if c["label"] in chunk],
                             "relationships": rels}))


def test_extraction_maps_a_models_spelling_to_the_name_as_written(kg, db, tmp_path) -> None:
    imported(kg, tmp_path)
    doc = write(tmp_path, "ada.md", TEXT)
    with FakeOllama(responder=spelling_responder) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--ontology", "schema")
        result = kg("ingest", str(doc), "--json")
        assert result.exit_code == 0, result.stderr
        body = server.chat_bodies()[0]
    schema = body["format"]
    concept = schema["properties"]["concepts"]["items"]["properties"]
    assert concept["type"]["enum"] == ["Person", "City", "Organization"]
    relation = schema["properties"]["relationships"]["items"]["properties"]
    assert {"birthPlace", "worksFor"} <= set(relation["type"]["enum"])
    assert "Person>City: birthPlace" in body["messages"][0]["content"]
    assert sorted(rows(db, "SELECT label, type FROM concepts")) == [
        ("Ada Lovelace", "Person"), ("Analytical Society", "Organization"),
        ("London", "City")]
    assert sorted(rows(db, "SELECT s.label, y.name, t.label FROM relationships r "
                           "JOIN relationship_types y ON y.id = r.type_id "
                           "JOIN concepts s ON s.id = r.source_id "
                           "JOIN concepts t ON t.id = r.target_id")) == [
        ("Ada Lovelace", "birthPlace", "London"),
        ("Ada Lovelace", "worksFor", "Analytical Society")]
    dropped = rows(db, "SELECT dropped FROM chunk_extractions")
    assert all(not (json.loads(d) if isinstance(d, str) else d) for (d,) in dropped)
    assert rows(db, "SELECT count(*) FROM relationship_type_proposals") == [(0,)]


def test_one_meaning_is_one_graph_type_whatever_each_ontology_writes(kg, db, tmp_path) -> None:
    """`part_of` (the default ontology) and `partOf` (another) meet in one relationship type
    of the graph, so the same fact found under either is one edge, not two."""
    imported(kg, tmp_path, "relation_types:\n  - name: partOf\n", name="parts")
    imported(kg, tmp_path, "relation_types:\n  - name: Part-Of\n", name="parts2")
    assert rows(db, "SELECT count(*) FROM relationship_types WHERE name IN "
                    "('part_of', 'partOf', 'Part-Of')") == [(1,)]
    shown = json.loads(kg("ontology", "show", "parts", "--json").stdout)
    assert [r["name"] for r in shown["relation_types"]] == ["partOf"]  # the ontology's spelling


def test_the_vocabulary_meets_camel_case_names_in_any_spelling() -> None:
    from kg.extraction.vocabulary import TypeInfo, Vocabulary

    vocabulary = Vocabulary([TypeInfo(1, "birthPlace", "general", "directed", "Person", "City"),
                             TypeInfo(2, "isPartOf", "general", "directed")],
                            concept_types=["Person", "City"], mode="strict")
    for written in ("birthPlace", "birth_place", "Birth-Place", "BIRTH PLACE", "birth_places",
                    "birthplaces"):
        found = vocabulary.normalise(written)
        assert found is not None and found.name == "birthPlace", written
    for written in ("part_of", "is part of", "partOf"):
        found = vocabulary.normalise(written)
        assert found is not None and found.name == "isPartOf", written
    assert vocabulary.normalise("deathPlace") is None
    assert vocabulary.normalise_concept_type("city") == "City"
