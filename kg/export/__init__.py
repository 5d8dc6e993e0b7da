"""The graph out: GraphML, GEXF, JSON Lines, Neo4j bulk-import CSV, Cypher and Turtle.

Every format streams from `GraphSource` (bounded memory at any graph size) inside one read
snapshot. A file is written under a temporary name and renamed when complete, so a failed
export leaves nothing half-written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from kg.db import Database
from kg.errors import UsageError
from kg.export import cypher, gexf, graphml, jsonl, neo4j_csv, turtle
from kg.export.source import ExportFilter, GraphSource, snapshot

__all__ = ["FORMATS", "ExportFilter", "ExportResult", "export_graph"]

Writer = Callable[[GraphSource, TextIO], tuple[int, int]]
FORMATS: dict[str, str] = {
    "graphml": "GraphML for networkx, Gephi, yEd, Cytoscape",
    "gexf": "GEXF 1.2 for Gephi and networkx",
    "jsonl": "one JSON object per concept and relationship, with evidence",
    "csv": "Neo4j bulk-import CSV (a folder: concepts.csv, relationships.csv)",
    "cypher": "idempotent MERGE statements for cypher-shell",
    "turtle": "RDF Turtle (rdflib, Jena, GraphDB)",
}


@dataclass
class ExportResult:
    format: str
    paths: list[str] = field(default_factory=list)
    concepts: int = 0
    relationships: int = 0
    seconds: float = 0.0


@contextmanager
def _atomic(path: Path) -> Iterator[TextIO]:
    """A text file that appears at `path` only once it is complete."""
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder; give a file name")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _writer(fmt: str, base_iri: str) -> Writer:
    if fmt == "turtle":
        turtle.check_base(base_iri)
        return lambda source, out: turtle.write(source, out, base_iri)
    writers: dict[str, Writer] = {"graphml": graphml.write, "gexf": gexf.write,
                                  "jsonl": jsonl.write, "cypher": cypher.write}
    return writers[fmt]


def export_graph(db: Database, fmt: str, path: Path | None = None, *,
                 scope: ExportFilter | None = None, base_iri: str = turtle.DEFAULT_BASE,
                 stream: TextIO | None = None, escape_formulas: bool = False) -> ExportResult:
    """Export the graph (or the scope's part of it) to `path`, or to `stream` when no path is
    given; `csv` needs a folder path and writes two files there. `escape_formulas` guards
    the csv text cells that a spreadsheet would run as formulas (off: the neo4j-admin
    importer would keep the guard as part of the value)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "csv" and path is None:
        raise UsageError("the csv export writes two files: give a folder with -o PATH")
    started = time.perf_counter()
    result = ExportResult(fmt)
    with db.engine.connect() as conn:
        snapshot(conn, db)
        source = GraphSource(conn, scope, quotes=fmt == "jsonl")
        if fmt == "csv":
            assert path is not None
            if path.exists() and not path.is_dir():
                raise UsageError(f"cannot write the csv export to {path}: it is a file; "
                                 "give a folder")
            path.mkdir(parents=True, exist_ok=True)
            nodes_path, edges_path = neo4j_csv.files(path)
            with _atomic(nodes_path) as out:
                result.concepts = neo4j_csv.write_nodes(source, out,
                                                        escape_formulas=escape_formulas)
            with _atomic(edges_path) as out:
                result.relationships = neo4j_csv.write_edges(source, out)
            result.paths = [str(nodes_path), str(edges_path)]
        else:
            write = _writer(fmt, base_iri)
            if path is None:
                if stream is None:
                    raise UsageError("give a path or a stream to export to")
                result.concepts, result.relationships = write(source, stream)
            else:
                with _atomic(path) as out:
                    result.concepts, result.relationships = write(source, out)
                result.paths = [str(path)]
        conn.rollback()  # a read-only snapshot: nothing to commit
    result.seconds = round(time.perf_counter() - started, 3)
    return result
