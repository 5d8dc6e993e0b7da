"""Ontologies as rows: import/list/show/export/delete, bad files, accept, ingest with types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes import FakeOllama, Reply, chunk_of
from tests.test_ingest import rows, use_server

CLINICAL = """\
description: A small clinical ontology.
concept_types:
  - name: drug
    description: a medicine
  - name: condition
    description: a disease or symptom
relation_types:
  - name: treats
    description: the drug is used against the condition
    domain: drug
    range: condition
    example: Aspirin treats headache.
  - name: causes
    description: the drug brings about the condition
    domain: drug
    range: condition
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_default_ontology_holds_the_33_baseline_types(kg, db) -> None:
    listed = json.loads(kg("ontology", "list", "--json").stdout)
    assert [o["name"] for o in listed] == ["default"]
    assert listed[0]["relation_types"] == 33 and listed[0]["mode"] == "strict"
    shown = json.loads(kg("ontology", "show", "default", "--json").stdout)
    names = {r["name"] for r in shown["relation_types"]}
    assert {"causes", "part_of", "related_to"} <= names
    assert len(json.loads(kg("vocab", "list", "--json").stdout)) == 33


def test_import_show_export_round_trip_and_revision(kg, db, tmp_path: Path) -> None:
    path = write(tmp_path, "clinical.yaml", CLINICAL)
    result = kg("ontology", "import", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "clinical", "revision": 1, "mode": "strict",
                                         "concept_types": 2, "relation_types": 2}
    shown = json.loads(kg("ontology", "show", "clinical", "--json").stdout)
    assert shown["relation_types"][0]["domain"] == "drug"
    assert shown["relation_types"][0]["example"] == "Aspirin treats headache."
    exported = kg("ontology", "export", "clinical").stdout
    again = write(tmp_path, "again.yml", exported)
    second = json.loads(kg("ontology", "import", str(again), "--name", "clinical",
                           "--json").stdout)
    assert second["revision"] == 2
    assert json.loads(kg("ontology", "show", "clinical", "--json").stdout)[
        "relation_types"] == shown["relation_types"]
    # JSON works too
    as_json = write(tmp_path, "legal.json", json.dumps(
        {"relation_types": [{"name": "cites"}, {"name": "overrules"}]}))
    assert kg("ontology", "import", str(as_json)).exit_code == 0
    table = kg("ontology", "list").stdout
    assert "legal" in table and "clinical" in table


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("unknown.yaml", CLINICAL.replace("range: condition\n    example",
                                      "range: illness\n    example"),
     "unknown.yaml:11: relation 'treats' has range 'illness', which is not a concept type"),
    ("dup.yaml", CLINICAL.replace("name: causes", "name: treats"),
     "dup.yaml:13: duplicate relation type 'treats' (first at line 8)"),
    ("empty.yaml", "  \n", "empty.yaml: the file is empty"),
    ("syntax.yaml", "relation_types:\n  - name: a\n   bad: [\n", "syntax.yaml:3: YAML syntax"),
    ("syntax.json", '{"relation_types": [\n  {"name": "a"},\n]}', "syntax.json:3: JSON syntax"),
    ("badname.yaml", "relation_types:\n  - name: Has Part\n", "badname.yaml:2: relation_types"),
])
def test_bad_ontology_files_name_file_line_problem_and_import_nothing(
        kg, db, tmp_path: Path, name: str, text: str, needle: str) -> None:
    result = kg("ontology", "import", str(write(tmp_path, name, text)))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.count("\n") == 0 and "Traceback" not in result.stderr
    assert needle in line and line.endswith("nothing was imported")
    assert rows(db, "SELECT count(*) FROM ontologies") == [(1,)]
    assert rows(db, "SELECT count(*) FROM ontology_relation_types") == [(33,)]


def test_delete_refused_while_a_profile_or_a_run_uses_it(kg, db, tmp_path: Path) -> None:
    kg("ontology", "import", str(write(tmp_path, "clinical.yaml", CLINICAL)))
    kg("admin", "extraction", "set", "--profile", "med", "--provider", "ollama",
       "--model", "m", "--ontology", "clinical")
    refused = kg("ontology", "delete", "clinical")
    assert refused.exit_code == 2 and "profile(s) med" in refused.stderr
    kg("admin", "extraction", "set", "--profile", "med", "--ontology", "default")
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO runs (status, started_at, heartbeat_at, pid, host, profile_name, "
            "profiles_used, options, documents, chunks_total, chunks_ok, chunks_failed, "
            "ontology, ontology_revision) VALUES ('completed', CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP, 1, 'h', 'med', '[]', '{}', 0, 0, 0, 0, 'clinical', 1)")
    refused = kg("ontology", "delete", "clinical")
    assert refused.exit_code == 2 and "run(s) " in refused.stderr
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM runs")
    assert kg("ontology", "delete", "clinical").exit_code == 0
    assert rows(db, "SELECT name FROM ontologies") == [("default",)]
    assert kg("ontology", "show", "clinical").exit_code == 2


def typed_responder(body: dict) -> Reply:
    """A model that types its concepts and uses one relation inside and one against the
    domain/range, plus a type outside the ontology."""
    chunk = chunk_of(body)
    concepts = [{"label": "Aspirin", "search_terms": [], "quote": "Aspirin treats headache.",
                 "type": "drug"},
                {"label": "headache", "search_terms": [], "quote": "Aspirin treats headache.",
                 "type": "condition"},
                {"label": "Ibuprofen", "search_terms": [], "quote": "Ibuprofen",
                 "type": "drug"}]
    concepts = [c for c in concepts if c["label"] in chunk]
    rels = [{"source": "Aspirin", "type": "treats", "target": "headache", "confidence": 0.9,
             "quote": "Aspirin treats headache."},
            {"source": "headache", "type": "treats", "target": "Ibuprofen", "confidence": 0.5,
             "quote": "Aspirin treats headache."},
            {"source": "Aspirin", "type": "inhibits", "target": "Ibuprofen", "confidence": 0.5,
             "quote": "Aspirin treats headache."}]
    return Reply(json.dumps({"concepts": concepts, "relationships": rels}))


def test_ingest_with_an_ontology_types_concepts_and_checks_domain_range(
        kg, db, tmp_path: Path) -> None:
    kg("ontology", "import", str(write(tmp_path, "clinical.yaml", CLINICAL)))
    doc = write(tmp_path, "note.md", "Aspirin treats headache. Ibuprofen is another option.\n")
    with FakeOllama(responder=typed_responder) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--ontology", "clinical")
        result = kg("ingest", str(doc), "--json")
        assert result.exit_code == 0, result.stderr
        body = server.chat_bodies()[0]
    schema = body["format"]
    concept = schema["properties"]["concepts"]["items"]["properties"]
    assert concept["type"]["enum"] == ["drug", "condition"]
    relation = schema["properties"]["relationships"]["items"]["properties"]
    assert relation["type"]["enum"] == ["treats", "causes"]  # strict: an enum
    assert "Aspirin" in concept["label"]["enum"] and "headache" in relation["target"]["enum"]
    assert concept["quote"]["enum"] == ["Aspirin treats headache.",
                                        "Ibuprofen is another option."]
    assert "drug" in body["messages"][0]["content"] and "drug>condition: treats, causes" in body[
        "messages"][0]["content"]
    assert sorted(rows(db, "SELECT label, type FROM concepts")) == [
        ("Aspirin", "drug"), ("Ibuprofen", "drug"), ("headache", "condition")]
    assert rows(db, "SELECT count(*) FROM relationships") == [(1,)]
    dropped = rows(db, "SELECT dropped, ontology, ontology_revision FROM chunk_extractions")
    counts = json.loads(dropped[0][0]) if isinstance(dropped[0][0], str) else dropped[0][0]
    assert counts["domain_range"] == 1 and counts["unknown_type"] == 1
    assert dropped[0][1:] == ("clinical", 1)
    assert rows(db, "SELECT DISTINCT ontology, ontology_revision, grounding FROM calls") == [
        ("clinical", 1, "on")]
    assert rows(db, "SELECT ontology FROM runs") == [("clinical",)]
    kg("admin", "extraction", "set", "--profile", "test", "--ontology", "default")
    refused = kg("ontology", "delete", "clinical")
    assert refused.exit_code == 2 and "used by run(s) 1;" in refused.stderr
    # kept for review even in a strict ontology (whose schema offered only its own types)
    assert rows(db, "SELECT name FROM relationship_type_proposals") == [("inhibits",)]


def test_proposals_and_accept_promotes_one(kg, db, tmp_path: Path) -> None:
    doc = write(tmp_path, "note.md", "Aspirin treats headache. Ibuprofen is another option.\n")
    with FakeOllama(responder=typed_responder) as server:
        use_server(kg, server.url)
        assert kg("ingest", str(doc)).exit_code == 0
    proposals = json.loads(kg("vocab", "proposals", "--json").stdout)
    assert {p["name"] for p in proposals} == {"treats", "inhibits"}
    accepted = kg("vocab", "accept", "inhibits", "--json")
    assert accepted.exit_code == 0, accepted.stderr
    assert json.loads(accepted.stdout) == {"name": "inhibits", "ontology": "default",
                                           "revision": 2}
    shown = json.loads(kg("ontology", "show", "default", "--json").stdout)
    assert "inhibits" in {r["name"] for r in shown["relation_types"]}
    assert {p["name"] for p in json.loads(kg("vocab", "proposals", "--json").stdout)} == {
        "treats"}
    again = kg("vocab", "accept", "inhibits")
    assert again.exit_code == 2 and "no proposal named 'inhibits'" in again.stderr
    missing = kg("vocab", "accept", "treats", "--into", "nope")
    assert missing.exit_code == 2 and "no ontology named 'nope'" in missing.stderr


def test_ingest_ontology_option_serves_one_run_without_changing_the_profile(
        kg, db, tmp_path: Path) -> None:
    kg("ontology", "import", str(write(tmp_path, "clinical.yaml", CLINICAL)))
    doc = write(tmp_path, "note.md", "Aspirin treats headache. Ibuprofen is another option.\n")
    with FakeOllama(responder=typed_responder) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b")
        unknown = kg("ingest", str(doc), "--ontology", "nope")
        assert unknown.exit_code != 0 and unknown.stderr.count("\n") == 1
        assert "no ontology named 'nope'" in unknown.stderr
        assert rows(db, "SELECT count(*) FROM runs") == [(0,)]  # nothing written
        result = kg("ingest", str(doc), "--ontology", "clinical", "--json")
        assert result.exit_code == 0, result.stderr
        schema = server.chat_bodies()[0]["format"]
    relation = schema["properties"]["relationships"]["items"]["properties"]
    assert relation["type"]["enum"] == ["treats", "causes"]
    assert rows(db, "SELECT ontology, ontology_revision FROM runs") == [("clinical", 1)]
    assert rows(db, "SELECT DISTINCT ontology FROM calls") == [("clinical",)]
    shown = json.loads(kg("admin", "extraction", "show", "--json").stdout)
    assert shown["ontology"] == "default"  # the profile is unchanged


def test_a_profile_cannot_name_an_unknown_ontology(kg, db) -> None:
    before = rows(db, "SELECT revision, ontology FROM extraction_profiles")
    result = kg("admin", "extraction", "set", "--ontology", "nope")
    assert result.exit_code == 2
    assert result.stderr == ("error: no ontology named 'nope'; see `kg ontology list` or import "
                             "one with `kg ontology import FILE`\n")
    assert rows(db, "SELECT revision, ontology FROM extraction_profiles") == before


BIO_ONTOLOGY = """\
concept_types:
  - name: Person
  - name: City
relation_types:
  - name: birthPlace
    domain: Person
    range: City
  - name: birthYear
    domain: Person
    range: xsd:gYear
  - name: Work_For
    domain: Person
    range: string
"""


def test_import_keeps_names_as_written_and_accepts_datatype_ranges(
        kg, db, tmp_path: Path) -> None:
    result = kg("ontology", "import", str(write(tmp_path, "bio.yaml", BIO_ONTOLOGY)))
    assert result.exit_code == 0, result.stderr
    shown = json.loads(kg("ontology", "show", "bio", "--json").stdout)
    assert [c["name"] for c in shown["concept_types"]] == ["Person", "City"]
    assert [(r["name"], r["range"]) for r in shown["relation_types"]] == [
        ("birthPlace", "City"), ("birthYear", "xsd:gYear"), ("Work_For", "string")]


@pytest.mark.parametrize(("text", "needle"), [
    (BIO_ONTOLOGY.replace("xsd:gYear", "xsd:duration"),
     "bio.yaml:10: relation 'birthYear' has range 'xsd:duration', a datatype kg does not know "
     "(known: "),
    (BIO_ONTOLOGY.replace("name: Work_For", "name: birth_place"),
     "bio.yaml:11: duplicate relation type 'birth_place' (same as 'birthPlace', first at "
     "line 5)"),
    (BIO_ONTOLOGY.replace("name: City", "name: person"),
     "duplicate concept type 'person' (same as 'Person'"),
])
def test_import_refuses_unknown_datatypes_and_real_clashes(kg, db, tmp_path: Path, text: str,
                                                          needle: str) -> None:
    result = kg("ontology", "import", str(write(tmp_path, "bio.yaml", text)))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert needle in result.stderr, result.stderr
    assert "xsd:integer" in result.stderr or "duplicate" in needle
