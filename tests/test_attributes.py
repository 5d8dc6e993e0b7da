"""Literal values as concept attributes (issue #20), end to end on both databases: ingested
through a fake Ollama with an ontology whose relations have datatype ranges, shown by
`kg concepts show`, exported in every format and read back by each format's own library,
retracted with a document's old version, moved by curation, kept to their collection."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
import rdflib
from sqlalchemy import text

from kg.ask import messages_for
from kg.db import Database
from kg.db import migrate as kg_migrate
from kg.db.scope import begin_scope
from kg.export import ExportFilter, export_graph
from kg.export.source import Attribute
from kg.export.turtle import prefixes, typed_literal
from tests.fakes import FakeOllama, Reply, chunk_of
from tests.test_ingest import rows, use_server
from tests.test_server import serve

UNIVERSITIES = """\
concept_types:
  - name: University
  - name: City
relation_types:
  - name: location
    domain: University
    range: City
  - name: established
    domain: University
    range: year
  - name: numberOfStudents
    domain: University
    range: number
  - name: nickname
    domain: University
    range: string
"""
TEXT = ("Mendrisio Academy was established in 1996 in Mendrisio. "
        "Mendrisio Academy has 5,000 students.\n")
TEXT_V2 = "Mendrisio Academy is in Mendrisio. Mendrisio Academy has 6,000 students.\n"
OTHER = ("Accademia di Architettura was established in 1996 in Mendrisio. "
         "Accademia di Architettura has 700 students.\n")
BASE = "urn:kg:"


def responder(body: dict[str, Any]) -> Reply:
    """A model that names every university, its city, and the literal facts the chunk has;
    for TEXT one invented year, which kg must drop (the others' replies are clean, so the
    call cache keeps them)."""
    chunk = chunk_of(body)
    concepts: list[dict[str, Any]] = []
    rels: list[dict[str, Any]] = []
    for name in ("Mendrisio Academy", "Accademia di Architettura"):
        if name not in chunk:
            continue
        sentence = next(s.strip() + "." for s in chunk.split(".") if name in s)
        concepts.append({"label": name, "type": "University", "search_terms": [],
                         "quote": sentence})
        rels.append({"source": name, "type": "location", "target": "Mendrisio",
                     "confidence": 0.9, "quote": sentence})
        if "5,000" in chunk:
            rels.append({"source": name, "type": "established", "target": "1823",
                         "confidence": 0.5, "quote": sentence})  # not in the text
        for value, relation in (("1996", "established"), ("5,000", "numberOfStudents"),
                                ("6,000", "numberOfStudents"), ("700", "numberOfStudents")):
            if value in chunk:
                quote = next(s.strip() + "." for s in chunk.split(".") if value in s)
                rels.append({"source": name, "type": relation, "target": value,
                             "confidence": 0.9, "quote": quote})
    concepts.append({"label": "Mendrisio", "type": "City", "search_terms": [],
                     "quote": "Mendrisio"})
    return Reply(json.dumps({"concepts": concepts, "relationships": rels}))


def attributes(db: Database, live: bool = True) -> list[tuple[Any, ...]]:
    where = "WHERE a.valid_from IS NOT NULL AND a.valid_to IS NULL" if live else ""
    return sorted(rows(db, "SELECT c.label, a.name, a.datatype, a.value, a.normalised FROM "
                           f"concept_attributes a JOIN concepts c ON c.id = a.concept_id {where}"))


ACADEMY = [("Mendrisio Academy", "established", "year", "1996", "1996"),
           ("Mendrisio Academy", "numberOfStudents", "number", "5,000", "5000")]


@pytest.fixture
def uni(kg: Any, db: Database, tmp_path: Path) -> Any:
    """The ontology imported and a fake server answering; yields the server."""
    ontology = tmp_path / "uni.yaml"
    ontology.write_text(UNIVERSITIES)
    assert kg("ontology", "import", str(ontology)).exit_code == 0
    with FakeOllama(responder=responder) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--ontology", "uni")
        yield server


def ingest(kg: Any, path: Path, text: str, *extra: str) -> None:
    path.write_text(text, encoding="utf-8")
    result = kg("ingest", str(path), *extra)
    assert result.exit_code == 0, result.stderr


def test_literals_are_stored_shown_and_not_written_twice(kg, db, uni, tmp_path: Path) -> None:
    doc = tmp_path / "academy.md"
    ingest(kg, doc, TEXT)
    assert attributes(db) == ACADEMY
    assert rows(db, "SELECT count(*) FROM attribute_evidence") == [(2,)]
    evidence = rows(db, "SELECT e.quote, e.char_start, e.char_end, e.value_start, e.value_end "
                        "FROM attribute_evidence e JOIN concept_attributes a ON "
                        "a.id = e.attribute_id WHERE a.name = 'numberOfStudents'")
    quote, start, end, value_start, value_end = evidence[0]
    assert TEXT[start:end] == quote and TEXT[value_start:value_end] == "5,000"
    dropped = rows(db, "SELECT dropped FROM chunk_extractions")[0][0]
    counts = json.loads(dropped) if isinstance(dropped, str) else dropped
    assert counts["literal_not_in_text"] == 1  # the invented 1823: dropped and counted

    shown = json.loads(kg("concepts", "show", "Mendrisio Academy", "--json").stdout)
    assert [(a["name"], a["value"], a["normalised"], a["evidence"]) for a in
            shown["attributes"]] == [("established", "1996", "1996", 1),
                                     ("numberOfStudents", "5,000", "5000", 1)]
    table = kg("concepts", "show", "Mendrisio Academy").stdout
    assert "attributes:" in table and "numberOfStudents" in table and "5000" in table

    # Again, unchanged: nothing new.
    ingest(kg, doc, TEXT)
    assert rows(db, "SELECT count(*) FROM attribute_evidence") == [(2,)]
    assert attributes(db, live=False) == ACADEMY
    # The same bytes under another path: the evidence is reused (copied, no call), the
    # values are the same two attributes, each seen twice now.
    ingest(kg, tmp_path / "copy.md", TEXT)
    assert rows(db, "SELECT count(*) FROM calls") == [(1,)]
    assert attributes(db, live=False) == ACADEMY
    assert rows(db, "SELECT count(*) FROM attribute_evidence") == [(4,)]


def _jsonl(db: Database, **scope: Any) -> dict[str, Any]:
    out = io.StringIO()
    export_graph(db, "jsonl", stream=out, scope=ExportFilter(**scope) if scope else None)
    return {r["label"]: r for r in map(json.loads, out.getvalue().splitlines())
            if r["kind"] == "concept"}


def test_every_export_format_carries_the_attributes(kg, db, uni, tmp_path: Path) -> None:
    ingest(kg, tmp_path / "academy.md", TEXT)
    [academy_id] = [r[0] for r in rows(db, "SELECT id FROM concepts WHERE label = "
                                           "'Mendrisio Academy'")]

    concept = _jsonl(db)["Mendrisio Academy"]
    by_name = {a["name"]: a for a in concept["attributes"]}
    assert by_name["numberOfStudents"]["normalised"] == "5000"
    assert by_name["numberOfStudents"]["value"] == "5,000"
    [quote] = by_name["established"]["evidence"]
    assert quote["document"].endswith("academy.md") and "1996" in quote["quote"]
    assert set(quote) >= {"page", "box", "char_start", "char_end", "run_id"}
    assert _jsonl(db)["Mendrisio"]["attributes"] == []

    readers: dict[str, Any] = {"graphml": nx.read_graphml, "gexf": nx.read_gexf}
    for fmt, read in readers.items():
        path = tmp_path / f"graph.{fmt}"
        export_graph(db, fmt, path)
        node = read(path).nodes[f"c{academy_id}"]
        assert node["numberOfStudents"] == 5000 and node["established"] == 1996, fmt
        assert node["label"] == "Mendrisio Academy"

    folder = tmp_path / "csv"
    export_graph(db, "csv", folder)
    with (folder / "concepts.csv").open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        found = {r[0]: dict(zip(header, r, strict=True)) for r in reader}
    assert "numberOfStudents:long" in header and "established:long" in header
    assert found[str(academy_id)]["numberOfStudents:long"] == "5000"

    script = tmp_path / "graph.cypher"
    export_graph(db, "cypher", script)
    text = script.read_text()
    assert "n += row.attributes" in text
    assert "`numberOfStudents`: 5000" in text and "`established`: 1996" in text

    turtle = tmp_path / "graph.ttl"
    export_graph(db, "turtle", turtle)
    graph = rdflib.Graph().parse(turtle, format="turtle")
    subject = rdflib.URIRef(f"{BASE}concept/{academy_id}")
    students = graph.value(subject, rdflib.URIRef(f"{BASE}type/numberOfStudents"))
    year = graph.value(subject, rdflib.URIRef(f"{BASE}type/established"))
    assert isinstance(students, rdflib.Literal) and isinstance(year, rdflib.Literal)
    xsd = "http://www.w3.org/2001/XMLSchema#"
    assert students.datatype == rdflib.URIRef(f"{xsd}integer") and students.toPython() == 5000
    assert year.datatype == rdflib.URIRef(f"{xsd}gYear") and str(year) == "1996"


def test_a_changed_document_retracts_its_old_values_and_as_of_sees_them(
        kg, db, uni, tmp_path: Path) -> None:
    doc = tmp_path / "academy.md"
    ingest(kg, doc, TEXT)
    time.sleep(0.01)  # a moment strictly between the versions (not a speed assumption)
    between = datetime.now(UTC)
    time.sleep(0.01)
    ingest(kg, doc, TEXT_V2)
    assert attributes(db) == [
        ("Mendrisio Academy", "numberOfStudents", "number", "6,000", "6000")]
    assert len(attributes(db, live=False)) == 3  # history keeps the retracted ones
    shown = json.loads(kg("concepts", "show", "Mendrisio Academy", "--json").stdout)
    assert [a["normalised"] for a in shown["attributes"]] == ["6000"]
    now = {a["normalised"] for a in _jsonl(db)["Mendrisio Academy"]["attributes"]}
    then = {a["normalised"] for a in _jsonl(db, as_of=between)["Mendrisio Academy"][
        "attributes"]}
    assert (now, then) == ({"6000"}, {"1996", "5000"})

    # The first content back: its values come back (its evidence reused, no new rows).
    ingest(kg, doc, TEXT)
    assert attributes(db) == ACADEMY


def test_prune_deletes_retracted_values_and_keeps_live_ones(kg, db, uni,
                                                           tmp_path: Path) -> None:
    doc = tmp_path / "academy.md"
    ingest(kg, doc, TEXT)
    ingest(kg, doc, TEXT_V2)
    live = attributes(db)
    time.sleep(0.01)  # a moment strictly after the retraction (not a speed assumption)
    moment = datetime.now(UTC).isoformat()
    result = kg("db", "prune", "--before", moment, "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["attributes"] == 2  # 1996 and 5,000
    assert attributes(db) == live and attributes(db, live=False) == live
    assert rows(db, "SELECT count(*) FROM attribute_evidence WHERE valid_to IS NOT NULL") == [
        (0,)]
    shown = kg("db", "prune", "--before", moment, "--yes")
    assert shown.exit_code == 0 and "0 literal value(s)" in shown.stdout


def test_curation_moves_attributes_and_undo_gives_them_back(kg, db, uni,
                                                            tmp_path: Path) -> None:
    ingest(kg, tmp_path / "academy.md", TEXT)
    ingest(kg, tmp_path / "other.md", OTHER)
    merged = kg("concepts", "merge", "Accademia di Architettura", "Mendrisio Academy",
                "--into", "Mendrisio Academy", "--json")
    assert merged.exit_code == 0, merged.stderr
    shown = json.loads(kg("concepts", "show", "Mendrisio Academy", "--json").stdout)
    assert [(a["name"], a["normalised"], a["evidence"]) for a in shown["attributes"]] == [
        ("established", "1996", 2), ("numberOfStudents", "5000", 1),
        ("numberOfStudents", "700", 1)]
    decision = json.loads(merged.stdout)["id"]
    assert kg("curation", "undo", str(decision)).exit_code == 0
    assert sorted(attributes(db)) == sorted([
        *ACADEMY, ("Accademia di Architettura", "established", "year", "1996", "1996"),
        ("Accademia di Architettura", "numberOfStudents", "number", "700", "700")])
    assert rows(db, "SELECT count(*) FROM attribute_evidence") == [(4,)]

    deleted = kg("concepts", "delete", "Mendrisio Academy", "--json")
    assert deleted.exit_code == 0, deleted.stderr
    assert [r[0] for r in attributes(db)] == ["Accademia di Architettura"] * 2
    assert kg("curation", "undo", str(json.loads(deleted.stdout)["id"])).exit_code == 0
    assert len(attributes(db)) == 4

    removed = json.loads(kg("documents", "delete", str(tmp_path / "other.md"), "--yes",
                            "--json").stdout)
    assert removed["attribute_evidence"] == 2
    assert attributes(db) == ACADEMY


def test_a_collection_sees_only_its_own_attributes(kg, db, uni, tmp_path: Path) -> None:
    ingest(kg, tmp_path / "academy.md", TEXT)
    assert kg("collections", "create", "other").exit_code == 0
    ingest(kg, tmp_path / "v2.md", TEXT_V2, "--collection", "other")
    mine = json.loads(kg("concepts", "show", "Mendrisio Academy", "--json").stdout)
    theirs = json.loads(kg("concepts", "show", "Mendrisio Academy", "--collection", "other",
                           "--json").stdout)
    assert [a["normalised"] for a in mine["attributes"]] == ["1996", "5000"]
    assert [a["normalised"] for a in theirs["attributes"]] == ["6000"]
    assert "6000" not in kg("export", "--format", "jsonl").stdout
    with serve(db) as server, server.client() as client:  # the server's concept JSON
        served = {prefix: client.get(f"{prefix}/concepts/Mendrisio Academy").json()
                  for prefix in ("", "/c/other")}
    assert [a["normalised"] for a in served[""]["attributes"]] == ["1996", "5000"]
    assert [a["normalised"] for a in served["/c/other"]["attributes"]] == ["6000"]
    exported = kg("export", "--format", "jsonl", "--collection", "other").stdout
    assert "6000" in exported and "5000" not in exported

    if db.dialect == "postgresql":  # the database holds it too: row-level security
        [(other,)] = rows(db, "SELECT id FROM collections WHERE name = 'other'")
        with db.engine.begin() as conn:
            begin_scope(conn, other, (other,))
            for table in ("concept_attributes", "attribute_evidence"):
                assert conn.execute(text(f"SELECT DISTINCT collection_id FROM {table}")) \
                    .all() == [(other,)]

    # The same sentences in another file of that collection: the call cache answers (no
    # request); the values are the same attribute row, seen twice.
    ingest(kg, tmp_path / "v2-copy.md", TEXT_V2 + "\n", "--collection", "other")
    assert rows(db, "SELECT count(*) FROM calls WHERE cached = :t", t=True) == [(1,)]
    assert rows(db, "SELECT collection_id, count(*) FROM concept_attributes GROUP BY "
                    "collection_id ORDER BY collection_id") == [(1, 2), (2, 1)]
    theirs = json.loads(kg("concepts", "show", "Mendrisio Academy", "--collection", "other",
                           "--json").stdout)
    assert [(a["normalised"], a["evidence"]) for a in theirs["attributes"]] == [("6000", 2)]


@pytest.mark.parametrize(("datatype", "normalised", "xsd", "python"), [
    ("number", "5000", "integer", 5000),
    ("number", "-12.5", "decimal", None),
    ("number", "1e-05", "double", 1e-05),
    ("year", "800", "gYear", None),
    ("date", "2001-05-03", "date", None),
    ("date", "2001-05", "gYearMonth", None),
    ("date", "about spring", None, "about spring"),  # its normal form unknown: plain text
    ("number", "many", None, "many"),
    ("string", 'Al "Zed"\nII', None, 'Al "Zed"\nII'),
])
def test_turtle_types_each_value_by_its_normal_form(datatype: str, normalised: str,
                                                     xsd: str | None, python: object) -> None:
    term = typed_literal(Attribute("p", datatype, normalised, normalised))
    doc = prefixes(BASE) + f"<urn:s> <urn:p> {term} .\n"
    [(_s, _p, value)] = list(rdflib.Graph().parse(data=doc, format="turtle"))
    assert isinstance(value, rdflib.Literal)
    expected = rdflib.URIRef(f"http://www.w3.org/2001/XMLSchema#{xsd}") if xsd else None
    assert value.datatype == expected
    if python is not None:
        assert value.toPython() == python
    if datatype == "year":
        assert str(value) == "0800"


def test_ask_sees_the_values_of_the_concepts_it_finds(kg, db, uni, tmp_path: Path) -> None:
    # "When was it established" is answered by an attribute, not an edge: retrieval lists the
    # live values of the concepts it found, and the model's prompt carries them.
    ingest(kg, tmp_path / "academy.md", TEXT)
    result = kg("ask", "When was Mendrisio Academy established?", "--no-llm", "--json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)["retrieval"]
    values = [(a["concept"], a["name"], a["value"], a["normalised"], a["evidence"])
              for a in found["attributes"]]
    assert values == [("Mendrisio Academy", "established", "1996", "1996", 1),
                      ("Mendrisio Academy", "numberOfStudents", "5,000", "5000", 1)]
    prompt = messages_for("When was Mendrisio Academy established?", found)[1]["content"]
    assert "Values in the graph:\nMendrisio Academy established = 1996\n" in prompt
    table = kg("ask", "When was Mendrisio Academy established?", "--no-llm").stdout
    assert "values:" in table and "numberOfStudents" in table

    # A changed document retracts its old value: ask no longer offers it.
    ingest(kg, tmp_path / "academy.md", TEXT_V2)
    again = json.loads(kg("ask", "How many students does Mendrisio Academy have?",
                          "--no-llm", "--json").stdout)["retrieval"]
    assert [(a["name"], a["value"]) for a in again["attributes"]] == [
        ("numberOfStudents", "6,000")]


def test_search_finds_a_concept_by_the_quote_of_its_value(kg, db, uni, db_url: str,
                                                          tmp_path: Path) -> None:
    # Migration 0023: "1996" is only in the quote of `established`; the concept holding the
    # value is the hit, with that quote as its snippet; a backfill after a downgrade finds it
    # again, and a retracted value is no longer found.
    ingest(kg, tmp_path / "academy.md", TEXT)

    def concepts(query: str) -> list[tuple[str, str]]:
        result = kg("search", query, "--kind", "concept", "--json")
        assert result.exit_code == 0, result.stderr
        return [(h["title"], h["snippet"]) for h in json.loads(result.stdout)["hits"]]

    ((title, snippet),) = concepts("1996")
    assert title == "Mendrisio Academy" and "was established in [1996]" in snippet
    assert [t for t, _s in concepts("students")] == ["Mendrisio Academy"]
    kg_migrate.downgrade(db, "0022")
    kg_migrate.upgrade(db)
    assert [t for t, _s in concepts("1996")] == ["Mendrisio Academy"]
    ingest(kg, tmp_path / "academy.md", TEXT_V2)
    assert concepts("1996") == []
    assert [t for t, _s in concepts("6,000 students")] == ["Mendrisio Academy"]
