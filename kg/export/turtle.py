"""RDF Turtle (rdflib, Jena, GraphDB): a concept is `<base>concept/ID` with rdfs:label and
skos:altLabel, a relationship both a direct triple (`concept type concept`) and a resource
`<base>relationship/ID` carrying its confidence and evidence count.

A concept's literal attributes (issue #20) are triples `concept <base>type/NAME literal`, the
predicate named as the ontology spells the relation, the literal typed by its normalised form:
xsd:integer or xsd:decimal (xsd:double with an exponent) for numbers, xsd:gYear for years,
xsd:date / xsd:gYearMonth / xsd:gYear for dates, a plain string otherwise (also for a value
whose normal form is unknown: it is kept as the text wrote it).

IRIs come from database ids and the base IRI only, so two exports of the same graph name
every concept and relationship the same way (renames and new evidence do not change them).
"""

from __future__ import annotations

import re
from typing import TextIO
from urllib.parse import quote

from kg.errors import UsageError
from kg.export.source import TYPE_COLUMN, Attribute, Edge, GraphSource, Node

DEFAULT_BASE = "urn:kg:"
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
                          "\b": "\\b", "\f": "\\f"})
_CONTROL = re.compile("[\x00-\x1f\x7f]")
# Characters an IRIREF may not contain (Turtle grammar), plus space.
_BAD_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\]')
# Lexical forms of the XSD types a normalised value (kg.extraction.literals) may have.
_XSD_FORMS = {
    "number": ((re.compile(r"[-+]?\d+"), "integer"), (re.compile(r"[-+]?\d*\.\d+"), "decimal"),
               (re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+"), "double")),
    "year": ((re.compile(r"-?\d{4,}"), "gYear"),),
    "date": ((re.compile(r"-?\d{4,}-\d{2}-\d{2}"), "date"),
             (re.compile(r"-?\d{4,}-\d{2}"), "gYearMonth"), (re.compile(r"-?\d{4,}"), "gYear")),
}


def literal(value: str) -> str:
    """A Turtle string literal that means exactly `value`."""
    escaped = value.translate(_ESCAPES)
    escaped = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04X}", escaped)
    return f'"{escaped}"'


def typed_literal(a: Attribute) -> str:
    """An attribute's normalised value as a Turtle literal of its XSD type (plain text when
    it has none: a string, or a value whose normal form is unknown)."""
    value = a.normalised
    if a.datatype == "year" and re.fullmatch(r"\d{1,3}", value):
        value = value.zfill(4)  # gYear wants four digits
    for form, xsd in _XSD_FORMS.get(a.datatype, ()):
        if form.fullmatch(value):
            return f"{literal(value)}^^xsd:{xsd}"
    return literal(a.normalised)


def check_base(base: str) -> str:
    if not base or _BAD_IRI.search(base) or ":" not in base:
        raise UsageError(f"--base-iri {base!r} is not an absolute IRI (e.g. urn:kg: or "
                         "https://example.org/kg/)")
    return base


def prefixes(base: str) -> str:
    return (f"@prefix kg: <{base}schema#> .\n"
            f"@prefix concept: <{base}concept/> .\n"
            f"@prefix relationship: <{base}relationship/> .\n"
            "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n"
            "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"
            "@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .\n\n")


def type_iri(base: str, name: str) -> str:
    return f"<{base}type/{quote(name, safe='')}>"


def node(n: Node, base: str = DEFAULT_BASE) -> str:
    parts = [f"concept:{n.id} a kg:Concept", f"rdfs:label {literal(n.label)}"]
    for a in n.attributes:
        parts.append(f"{type_iri(base, a.name)} {typed_literal(a)}")
    if n.aliases:
        parts.append("skos:altLabel " + ", ".join(literal(a) for a in n.aliases))
    if n.description:
        parts.append(f"kg:description {literal(n.description)}")
    if n.search_terms:
        parts.append("kg:searchTerm " + ", ".join(literal(t) for t in n.search_terms))
    if TYPE_COLUMN is not None and n.type:
        parts.append(f"kg:conceptType {literal(n.type)}")
    parts.append(f"kg:evidenceCount {n.evidence}")
    parts.append(f"kg:documentCount {n.documents}")
    return " ;\n    ".join(parts) + " .\n"


def edge(base: str, e: Edge) -> str:
    kind = type_iri(base, e.type)
    return (f"concept:{e.source_id} {kind} concept:{e.target_id} .\n"
            f"relationship:{e.id} a kg:Relationship ;\n"
            f"    kg:source concept:{e.source_id} ;\n    kg:target concept:{e.target_id} ;\n"
            f"    kg:type {kind} ;\n    kg:typeName {literal(e.type)} ;\n"
            f"    kg:category {literal(e.category)} ;\n"
            f"    kg:direction {literal(e.direction)} ;\n"
            f'    kg:confidence "{e.confidence!r}"^^xsd:double ;\n'
            f"    kg:evidenceCount {e.evidence} .\n")


def write(source: GraphSource, out: TextIO, base: str = DEFAULT_BASE) -> tuple[int, int]:
    """Write the document; returns (nodes, edges)."""
    base = check_base(base)
    out.write(prefixes(base))
    nodes = edges = 0
    for n in source.nodes():
        out.write(node(n, base))
        nodes += 1
    for e in source.edges():
        out.write(edge(base, e))
        edges += 1
    return nodes, edges
