"""A Cypher script for `cypher-shell -f`: idempotent `MERGE` statements, batched with UNWIND.

Applying it twice leaves the same graph (nodes are matched on `kg_id`, relationships on their
own `kg_id`). A concept's literal attributes (issue #20) are node properties named as the
ontology spells the relation (numbers as numbers; several values as a list). Every value is
a literal built here: strings are single-quoted with `\\`, `'`, newline, carriage return and
tab escaped, the rest of Unicode written as is, so no label can end a string or a statement;
relationship types and property names are backtick-quoted identifiers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from typing import TextIO, TypeVar

from kg.export.source import TYPE_COLUMN, AttributeColumn, Edge, GraphSource, Node

BATCH = 500
T = TypeVar("T")
_ESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                          "\b": "\\b", "\f": "\\f", "\x00": ""})

CONSTRAINT = ("CREATE CONSTRAINT kg_concept_id IF NOT EXISTS "
              "FOR (n:Concept) REQUIRE n.kg_id IS UNIQUE;\n")
NODE_STATEMENT = ("UNWIND {rows} AS row MERGE (n:Concept {{kg_id: row.id}}) "
                  "SET n.label = row.label, n.description = row.description, "
                  "n.aliases = row.aliases, n.search_terms = row.search_terms, "
                  "n.evidence = row.evidence, n.documents = row.documents{extra}, "
                  "n += row.attributes;\n")
EDGE_STATEMENT = ("UNWIND {rows} AS row MATCH (a:Concept {{kg_id: row.source}}) "
                  "MATCH (b:Concept {{kg_id: row.target}}) "
                  "MERGE (a)-[r:{type} {{kg_id: row.id}}]->(b) "
                  "SET r.confidence = row.confidence, r.evidence = row.evidence, "
                  "r.category = row.category, r.direction = row.direction;\n")


def string(value: str) -> str:
    """A Cypher string literal that means exactly `value`."""
    return "'" + value.translate(_ESCAPES) + "'"


def identifier(name: str) -> str:
    """A backtick-quoted identifier (a backtick inside is doubled)."""
    return "`" + name.replace("`", "``").replace("\x00", "") + "`"


def _value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{identifier(str(k))}: {_value(v)}"
                               for k, v in value.items()) + "}"
    return string(str(value))


def _map(values: dict[str, object]) -> str:
    return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in values.items()) + "}"


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def node_row(n: Node, columns: Sequence[AttributeColumn] = ()) -> dict[str, object]:
    row: dict[str, object] = {
        "id": n.id, "label": n.label, "description": n.description, "aliases": n.aliases,
        "search_terms": n.search_terms, "evidence": n.evidence, "documents": n.documents}
    if TYPE_COLUMN is not None:
        row["type"] = n.type
    attributes: dict[str, object] = {}
    for column in columns:
        values = column.values(n)
        if values:
            attributes[column.key] = values if column.multi else values[0]
    row["attributes"] = attributes
    return row


def edge_row(e: Edge) -> dict[str, object]:
    return {"id": e.id, "source": e.source_id, "target": e.target_id,
            "confidence": e.confidence, "evidence": e.evidence, "category": e.category,
            "direction": e.direction}


def write(source: GraphSource, out: TextIO, batch: int = BATCH) -> tuple[int, int]:
    """Write the script; returns (nodes, edges)."""
    out.write("// kg export: concepts and relationships; safe to apply more than once\n")
    out.write(CONSTRAINT)
    extra = ", n.type = row.type" if TYPE_COLUMN is not None else ""
    nodes = edges = 0
    columns = source.attribute_columns(set(node_row(Node(0, "", "", [])))
                                       | {"kg_id", "type"})
    for node_batch in _batches(source.nodes(), batch):
        literal = "[" + ", ".join(_map(node_row(n, columns)) for n in node_batch) + "]"
        out.write(NODE_STATEMENT.format(rows=literal, extra=extra))
        nodes += len(node_batch)
    for edge_batch in _batches(source.edges(), batch):
        # A relationship type cannot be a parameter: one statement per type in the batch.
        for type_name, group in groupby(sorted(edge_batch, key=lambda e: (e.type, e.id)),
                                        key=lambda e: e.type):
            members = list(group)
            literal = "[" + ", ".join(_map(edge_row(e)) for e in members) + "]"
            out.write(EDGE_STATEMENT.format(rows=literal, type=identifier(type_name)))
            edges += len(members)
    return nodes, edges
