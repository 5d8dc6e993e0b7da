"""GraphML (networkx, Gephi, yEd, Cytoscape): one <node> per concept, one <edge> per
relationship, attributes declared once as <key>s. Lists (aliases, search terms) are JSON text,
since GraphML attribute values are scalars. A concept's literal attributes (issue #20) are node
data under the ontology relation's name: a number where every value is one, else text; a name
with several values on one concept holds them as a JSON list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from kg.export.source import TYPE_COLUMN, AttributeColumn, Edge, GraphSource, Node
from kg.export.xmltext import attr, text

HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns
    http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">
"""
NODE_KEYS = [("label", "string"), ("description", "string"), ("aliases", "string"),
             ("search_terms", "string"), ("evidence", "int"), ("documents", "int")]
EDGE_KEYS = [("label", "string"), ("type", "string"), ("category", "string"),
             ("direction", "string"), ("confidence", "double"), ("evidence", "int"),
             ("kg_id", "long")]


def _node_keys() -> list[tuple[str, str]]:
    return NODE_KEYS + ([("type", "string")] if TYPE_COLUMN is not None else [])


def _keys(columns: Sequence[AttributeColumn] = ()) -> str:
    lines = [f'  <key id="n_{name}" for="node" attr.name="{name}" attr.type="{kind}"/>'
             for name, kind in _node_keys()]
    lines += [f'  <key id="a{i}" for="node" attr.name={attr(c.key)} '
              f'attr.type="{c.xml_type}"/>' for i, c in enumerate(columns)]
    lines += [f'  <key id="e_{name}" for="edge" attr.name="{name}" attr.type="{kind}"/>'
              for name, kind in EDGE_KEYS]
    return "\n".join(lines) + "\n"


def _attributes(n: Node, columns: Sequence[AttributeColumn]) -> str:
    parts = []
    for i, column in enumerate(columns):
        values = column.values(n)
        if not values:
            continue
        value = json.dumps(values, ensure_ascii=False) if column.multi else str(values[0])
        parts.append(f'<data key="a{i}">{text(value)}</data>')
    return "".join(parts)


def node(n: Node, columns: Sequence[AttributeColumn] = ()) -> str:
    kind = (f'<data key="n_type">{text(n.type)}</data>'
            if TYPE_COLUMN is not None and n.type is not None else "")
    kind += _attributes(n, columns)
    return (f'    <node id="c{n.id}"><data key="n_label">{text(n.label)}</data>'
            f'<data key="n_description">{text(n.description)}</data>'
            f'<data key="n_aliases">{text(json.dumps(n.aliases, ensure_ascii=False))}</data>'
            f'<data key="n_search_terms">'
            f'{text(json.dumps(n.search_terms, ensure_ascii=False))}</data>'
            f'<data key="n_evidence">{n.evidence}</data>'
            f'<data key="n_documents">{n.documents}</data>{kind}</node>\n')


def edge(e: Edge) -> str:
    kind = text(e.type)
    return (f'    <edge id="r{e.id}" source="c{e.source_id}" target="c{e.target_id}">'
            f'<data key="e_label">{kind}</data><data key="e_type">{kind}</data>'
            f'<data key="e_category">{text(e.category)}</data>'
            f'<data key="e_direction">{e.direction}</data>'
            f'<data key="e_confidence">{e.confidence!r}</data>'
            f'<data key="e_evidence">{e.evidence}</data>'
            f'<data key="e_kg_id">{e.id}</data></edge>\n')


def write(source: GraphSource, out: TextIO) -> tuple[int, int]:
    """Write the whole document; returns (nodes, edges)."""
    out.write(HEADER)
    columns = source.attribute_columns({name for name, _kind in _node_keys()})
    out.write(_keys(columns))
    out.write('  <graph id="kg" edgedefault="directed">\n')
    nodes = edges = 0
    for n in source.nodes():
        out.write(node(n, columns))
        nodes += 1
    for e in source.edges():
        out.write(edge(e))
        edges += 1
    out.write("  </graph>\n</graphml>\n")
    return nodes, edges
