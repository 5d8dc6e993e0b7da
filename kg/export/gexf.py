"""GEXF 1.2 (Gephi's own format, read by networkx): nodes with `label`, edges with the
relationship type as `label` and the confidence as `weight`, the rest as declared attributes;
a concept's literal attributes (issue #20) too, under the ontology relation's name (a number
where every value is one, else text; several values on one concept as a JSON list)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from kg.export.source import TYPE_COLUMN, AttributeColumn, Edge, GraphSource, Node
from kg.export.xmltext import attr

HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<gexf xmlns="http://www.gexf.net/1.2draft"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="http://www.gexf.net/1.2draft http://www.gexf.net/1.2draft/gexf.xsd"
    version="1.2">
  <meta><creator>kg</creator><description>concepts and relationships</description></meta>
  <graph mode="static" defaultedgetype="directed">
"""
NODE_ATTRIBUTES = [("description", "string"), ("aliases", "string"),
                   ("search_terms", "string"), ("evidence", "integer"),
                   ("documents", "integer")]
EDGE_ATTRIBUTES = [("type", "string"), ("category", "string"), ("direction", "string"),
                   ("confidence", "double"), ("evidence", "integer"), ("kg_id", "long")]


def _node_attributes() -> list[tuple[str, str]]:
    return NODE_ATTRIBUTES + ([("type", "string")] if TYPE_COLUMN is not None else [])


def _declarations(columns: Sequence[AttributeColumn] = ()) -> str:
    parts = ['    <attributes class="node">\n']
    parts += [f'      <attribute id="n_{name}" title="{name}" type="{kind}"/>\n'
              for name, kind in _node_attributes()]
    parts += [f'      <attribute id="a{i}" title={attr(c.key)} type="{c.xml_type}"/>\n'
              for i, c in enumerate(columns)]
    parts.append('    </attributes>\n    <attributes class="edge">\n')
    parts += [f'      <attribute id="e_{name}" title="{name}" type="{kind}"/>\n'
              for name, kind in EDGE_ATTRIBUTES]
    parts.append("    </attributes>\n")
    return "".join(parts)


def _attributes(n: Node, columns: Sequence[AttributeColumn]) -> str:
    parts = []
    for i, column in enumerate(columns):
        values = column.values(n)
        if values:
            value = json.dumps(values, ensure_ascii=False) if column.multi else str(values[0])
            parts.append(f'<attvalue for="a{i}" value={attr(value)}/>')
    return "".join(parts)


def node(n: Node, columns: Sequence[AttributeColumn] = ()) -> str:
    kind = (f'<attvalue for="n_type" value={attr(n.type)}/>'
            if TYPE_COLUMN is not None and n.type is not None else "")
    kind += _attributes(n, columns)
    return (f'      <node id="c{n.id}" label={attr(n.label)}><attvalues>'
            f'<attvalue for="n_description" value={attr(n.description)}/>'
            f'<attvalue for="n_aliases" value={attr(json.dumps(n.aliases, ensure_ascii=False))}/>'
            f'<attvalue for="n_search_terms" '
            f'value={attr(json.dumps(n.search_terms, ensure_ascii=False))}/>'
            f'<attvalue for="n_evidence" value="{n.evidence}"/>'
            f'<attvalue for="n_documents" value="{n.documents}"/>{kind}</attvalues></node>\n')


def edge(e: Edge) -> str:
    kind = attr(e.type)
    return (f'      <edge id="r{e.id}" source="c{e.source_id}" target="c{e.target_id}" '
            f'label={kind} weight="{e.confidence!r}"><attvalues>'
            f'<attvalue for="e_type" value={kind}/>'
            f'<attvalue for="e_category" value={attr(e.category)}/>'
            f'<attvalue for="e_direction" value="{e.direction}"/>'
            f'<attvalue for="e_confidence" value="{e.confidence!r}"/>'
            f'<attvalue for="e_evidence" value="{e.evidence}"/>'
            f'<attvalue for="e_kg_id" value="{e.id}"/></attvalues></edge>\n')


def write(source: GraphSource, out: TextIO) -> tuple[int, int]:
    """Write the whole document; returns (nodes, edges)."""
    out.write(HEADER)
    columns = source.attribute_columns({name for name, _kind in _node_attributes()}
                                       | {"label"})
    out.write(_declarations(columns))
    out.write("    <nodes>\n")
    nodes = edges = 0
    for n in source.nodes():
        out.write(node(n, columns))
        nodes += 1
    out.write("    </nodes>\n    <edges>\n")
    for e in source.edges():
        out.write(edge(e))
        edges += 1
    out.write("    </edges>\n  </graph>\n</gexf>\n")
    return nodes, edges
