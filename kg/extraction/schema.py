"""The output model: pydantic classes whose JSON Schema is sent to the provider.

Every string length and array size is bounded, and the bounds come from the output budget, so
that the schema's worst case fits in max_output_tokens: small models otherwise loop until the
budget runs out and the JSON is cut mid-way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

# Conservative characters per token for worst-case JSON (short keys, punctuation).
WORST_CHARS_PER_TOKEN = 3
MAX_CONCEPTS = 20
MAX_RELATIONSHIPS = 20


@dataclass(frozen=True)
class OutputBounds:
    """Length and count limits for one output budget."""

    max_concepts: int
    max_relationships: int
    label_len: int = 60
    description_len: int = 120
    term_len: int = 30
    max_terms: int = 3
    quote_len: int = 160
    type_len: int = 64  # relationship_types.name is String(64)

    @property
    def concept_chars(self) -> int:
        # keys, quotes, commas and braces of one concept object: about 70 characters
        return (self.label_len + self.description_len + self.max_terms * (self.term_len + 3)
                + self.quote_len + 70)

    @property
    def relationship_chars(self) -> int:
        return 2 * self.label_len + self.type_len + 6 + self.quote_len + 75

    def worst_case_tokens(self) -> int:
        chars = (self.max_concepts * self.concept_chars
                 + self.max_relationships * self.relationship_chars + 40)
        return chars // WORST_CHARS_PER_TOKEN + 1


def bounds_for_budget(max_output_tokens: int) -> OutputBounds:
    """The largest item counts whose worst case fits the budget (at least one of each)."""
    probe = OutputBounds(1, 1)
    budget_chars = (max_output_tokens - 20) * WORST_CHARS_PER_TOKEN
    concepts = max(1, min(MAX_CONCEPTS, int(budget_chars * 0.55) // probe.concept_chars))
    relationships = max(1, min(MAX_RELATIONSHIPS,
                               (budget_chars - concepts * probe.concept_chars)
                               // probe.relationship_chars))
    return OutputBounds(concepts, relationships)


def _strict(name: str, **fields: Any) -> type[BaseModel]:
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


@lru_cache(maxsize=32)
def item_models(bounds: OutputBounds) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """(Concept, Relationship, Reply) pydantic models for these bounds."""
    label = Annotated[str, Field(min_length=1, max_length=bounds.label_len)]
    concept = _strict(
        "Concept",
        label=(label, ...),
        # Optional here so that `evidence`/`off` replies validate; output_schema requires it
        # from the model only when descriptions are generated.
        description=(Annotated[str, Field(max_length=bounds.description_len)], ""),
        search_terms=(
            Annotated[
                list[Annotated[str, Field(max_length=bounds.term_len)]],
                Field(max_length=bounds.max_terms),
            ],
            ...,
        ),
        quote=(Annotated[str, Field(min_length=1, max_length=bounds.quote_len)], ...),
        type=(Annotated[str | None, Field(max_length=bounds.type_len)], None),
    )
    relationship = _strict(
        "Relationship",
        source=(label, ...),
        type=(Annotated[str, Field(min_length=1, max_length=bounds.type_len)], ...),
        target=(label, ...),
        confidence=(Annotated[float, Field(ge=0, le=1)], ...),
        quote=(Annotated[str, Field(min_length=1, max_length=bounds.quote_len)], ...),
    )
    reply = _strict(
        "Extraction",
        # Classes made at run time (per bounds): fine for pydantic, opaque to mypy.
        concepts=(Annotated[list[concept], Field(  # type: ignore[valid-type]
            max_length=bounds.max_concepts)], ...),
        relationships=(
            Annotated[list[relationship],  # type: ignore[valid-type]
                      Field(max_length=bounds.max_relationships)],
            ...,
        ),
    )
    return concept, relationship, reply


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("title", "$defs")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


@lru_cache(maxsize=64)
def _schema(bounds: OutputBounds, descriptions: str, concept_types: tuple[str, ...],
            relation_types: tuple[str, ...]) -> str:
    raw = item_models(bounds)[2].model_json_schema()
    schema = _inline(raw, raw.get("$defs", {}))
    concept = schema["properties"]["concepts"]["items"]
    props = concept["properties"]
    # Key order is generation order: the quote comes before the type it justifies.
    del props["type"]
    if descriptions == "generate":
        concept["required"] = ["label", "description", "search_terms", "quote"]
    else:
        del props["description"]
        concept["required"] = ["label", "search_terms", "quote"]
    if concept_types:
        props["type"] = {"type": "string", "enum": list(concept_types)}
        concept["required"].append("type")
    if relation_types:
        rel = schema["properties"]["relationships"]["items"]["properties"]
        rel["type"] = {"type": "string", "enum": list(relation_types)}
    return json.dumps(schema)


def output_schema(bounds: OutputBounds, descriptions: str = "generate",
                  concept_types: tuple[str, ...] = (),
                  relation_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """Self-contained JSON Schema (no $ref: some grammar compilers do not follow them).

    Concept types, when given, are an enum the model must pick from; relation types too (a
    strict ontology). Descriptions are asked for only in `generate` mode.
    """
    return json.loads(_schema(bounds, descriptions, concept_types, relation_types))


@lru_cache(maxsize=64)
def _triples_schema(bounds: OutputBounds, relation_types: tuple[str, ...]) -> str:
    label = {"type": "string", "minLength": 1, "maxLength": bounds.label_len}
    relation: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": bounds.type_len}
    if relation_types:
        relation = {"type": "string", "enum": list(relation_types)}
    item = {"type": "object", "additionalProperties": False,
            # Generation order: the quote first, so the triple is read off the sentence.
            "properties": {"quote": {"type": "string", "minLength": 1,
                                     "maxLength": bounds.quote_len},
                           "subject": label, "relation": relation, "object": label},
            "required": ["quote", "subject", "relation", "object"]}
    most = bounds.max_relationships + bounds.max_concepts // 2
    return json.dumps({"type": "object", "additionalProperties": False,
                       "properties": {"triples": {"type": "array", "items": item,
                                                  "maxItems": most}},
                       "required": ["triples"]})


def triples_schema(bounds: OutputBounds, relation_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `triples` shape: a list of (quote, subject, relation, object or value). Small models
    name facts more readily than a concept list followed by links between its entries."""
    return json.loads(_triples_schema(bounds, relation_types))


def triples_to_graph(data: dict[str, Any]) -> dict[str, Any]:
    """A `triples` reply as the graph reply validation reads: no listed concepts (each end
    becomes a concept if it stands in the text, typed by inference), one relationship per
    triple. A malformed row is passed on as is, so validation names what is wrong with it."""
    relationships = []
    for row in data.get("triples") or []:
        if not isinstance(row, dict):
            relationships.append(row)
            continue
        relationships.append({"source": row.get("subject"), "type": row.get("relation"),
                              "target": row.get("object"), "confidence": 0.8,
                              "quote": row.get("quote")})
    return {"concepts": [], "relationships": relationships}
