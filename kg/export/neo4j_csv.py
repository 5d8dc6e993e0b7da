"""CSV in the header format of Neo4j's bulk importer (`neo4j-admin database import full`):
concepts.csv (`:ID(Concept)`, properties, `:LABEL`) and relationships.csv (`:START_ID`,
`:END_ID`, `:TYPE`, properties).

Import with:
    neo4j-admin database import full --nodes=Concept=concepts.csv \\
        --relationships=relationships.csv --multiline-fields=true neo4j
Arrays use the importer's default delimiter `;`; a `;` inside an alias becomes `,` (the
importer has no escape for its array delimiter). A concept's literal attributes (issue #20)
are columns after the fixed ones, named as the ontology spells the relation and typed `long`
or `double` where every value is such a number, else `string`; an array (`[]`) where some
concept has several values.

Text cells are written as they are by default: the importer would keep a formula guard (`'`)
as part of the label. `escape_formulas` (`kg export --format csv --escape-formulas`) guards
label, description, aliases and search terms for files that will be opened in a spreadsheet.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from kg.export.cells import escape_formula
from kg.export.source import TYPE_COLUMN, AttributeColumn, GraphSource

NODES_FILE = "concepts.csv"
EDGES_FILE = "relationships.csv"
NODE_HEADER = ["conceptId:ID(Concept)", "label", "description", "aliases:string[]",
               "searchTerms:string[]", "evidence:int", "documents:int", ":LABEL"]
EDGE_HEADER = [":START_ID(Concept)", ":END_ID(Concept)", ":TYPE", "kgId:long",
               "confidence:double", "evidence:int", "category", "direction"]
ARRAY_DELIMITER = ";"
# RFC 4180 line ends. They are also what makes the csv module quote a value holding a bare
# carriage return: with "\n" it would not, and a reader would split the row there.
LINE_END = "\r\n"


def _array(values: list[str]) -> str:
    return ARRAY_DELIMITER.join(v.replace(ARRAY_DELIMITER, ",") for v in values)


def _labels(kind: str | None) -> str:
    # Extra labels are identifiers in Cypher; the importer takes them as they are.
    return "Concept" if not kind else f"Concept;{kind.replace(';', ',')}"


def _same(value: str) -> str:
    return value


def _header(column: AttributeColumn) -> str:
    # `:` ends a header's name in the importer's format: none may stay in it.
    return f"{column.key.replace(':', '_')}:{column.numeric or 'string'}" + (
        "[]" if column.multi else "")


def _cell(column: AttributeColumn, values: list[object], text: Callable[[str], str]) -> str:
    if not values:
        return ""
    if column.numeric is not None:
        return ARRAY_DELIMITER.join(repr(v) for v in values)
    return text(_array([str(v) for v in values]))


def write_nodes(source: GraphSource, out: TextIO, *, escape_formulas: bool = False) -> int:
    writer = csv.writer(out, lineterminator=LINE_END)
    columns = source.attribute_columns({h.split(":")[0] for h in NODE_HEADER})
    writer.writerow(NODE_HEADER + [_header(c) for c in columns])
    text = escape_formula if escape_formulas else _same
    count = 0
    for n in source.nodes():
        writer.writerow([n.id, text(n.label), text(n.description or ""),
                         text(_array(n.aliases)), text(_array(n.search_terms)), n.evidence,
                         n.documents, _labels(n.type if TYPE_COLUMN is not None else None)]
                        + [_cell(c, c.values(n), text) for c in columns])
        count += 1
    return count


def write_edges(source: GraphSource, out: TextIO) -> int:
    writer = csv.writer(out, lineterminator=LINE_END)
    writer.writerow(EDGE_HEADER)
    count = 0
    for e in source.edges():
        writer.writerow([e.source_id, e.target_id, e.type, e.id, repr(e.confidence),
                         e.evidence, e.category, e.direction])
        count += 1
    return count


def files(directory: Path) -> tuple[Path, Path]:
    return directory / NODES_FILE, directory / EDGES_FILE
