"""JSON Lines: one object per concept, then one per relationship, each with its evidence
(quote, document, character offsets, run; page and box on the image for OCR text, else
null); a concept also with its literal attributes, each with its own evidence."""

from __future__ import annotations

import json
from typing import TextIO

from kg.export.source import Attribute, Edge, GraphSource, Node, Quote


def _evidence(quotes: list[Quote]) -> list[dict[str, object]]:
    return [{"quote": q.quote, "document": q.document, "char_start": q.char_start,
             "char_end": q.char_end, "run_id": q.run_id, "page": q.page, "box": q.box}
            for q in quotes]


def _attribute(a: Attribute) -> dict[str, object]:
    return {"name": a.name, "datatype": a.datatype, "value": a.value,
            "normalised": a.normalised, "evidence_count": a.evidence,
            "evidence": _evidence(a.quotes)}


def node(n: Node) -> str:
    return json.dumps({
        "kind": "concept", "id": n.id, "label": n.label, "description": n.description,
        "search_terms": n.search_terms, "aliases": n.aliases, "type": n.type,
        "evidence_count": n.evidence, "documents": n.documents,
        "attributes": [_attribute(a) for a in n.attributes],
        "evidence": _evidence(n.quotes)}, ensure_ascii=False) + "\n"


def edge(e: Edge) -> str:
    return json.dumps({
        "kind": "relationship", "id": e.id, "source_id": e.source_id, "source": e.source,
        "type": e.type, "target_id": e.target_id, "target": e.target,
        "category": e.category, "direction": e.direction, "confidence": e.confidence,
        "evidence_count": e.evidence, "evidence": _evidence(e.quotes)},
        ensure_ascii=False) + "\n"


def write(source: GraphSource, out: TextIO) -> tuple[int, int]:
    """Write every line; returns (nodes, edges)."""
    nodes = edges = 0
    for n in source.nodes():
        out.write(node(n))
        nodes += 1
    for e in source.edges():
        out.write(edge(e))
        edges += 1
    return nodes, edges
