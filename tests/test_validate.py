"""Validation against an ontology: concept types, domain/range, strict types, descriptions,
ends resolved from the text."""

from __future__ import annotations

import json

from kg.extraction.schema import bounds_for_budget
from kg.extraction.validate import validate_reply
from kg.extraction.vocabulary import TypeInfo, Vocabulary

BOUNDS = bounds_for_budget(2048)
TEXT = ("Aspirin treats headache. It was first sold by Bayer in Germany. Headache and migraine "
        "resemble each other in many patients who take Aspirin daily.")
VOCAB = Vocabulary([TypeInfo(1, "treats", "general", "directed", "drug", "condition"),
                    TypeInfo(2, "similar_to", "general", "symmetric", "condition", "condition"),
                    TypeInfo(3, "sold_by", "general", "directed", "drug", "company")],
                   concept_types=["drug", "condition", "company"], ontology="med",
                   mode="strict")


def concept(label: str, kind: str | None, quote: str | None = None) -> dict:
    item = {"label": label, "description": "made up", "search_terms": [],
            "quote": quote or label}
    if kind is not None:
        item["type"] = kind
    return item


def rel(source: str, kind: str, target: str, quote: str = "Aspirin treats headache.") -> dict:
    return {"source": source, "type": kind, "target": target, "confidence": 0.8, "quote": quote}


def reply(concepts: list[dict], relationships: list[dict]) -> str:
    return json.dumps({"concepts": concepts, "relationships": relationships})


def test_concept_types_and_domain_range_are_checked() -> None:
    content = reply(
        [concept("Aspirin", "Drug"), concept("headache", "condition"),
         concept("Bayer", "organisation"), concept("migraine", "condition")],
        [rel("Aspirin", "treats", "headache"),
         rel("headache", "treats", "Aspirin"),  # range and domain swapped
         rel("migraine", "similar_to", "headache", "Headache and migraine resemble"),
         rel("Aspirin", "sold_by", "Bayer", "It was first sold by Bayer")])  # Bayer untyped
    verdict = validate_reply(content, TEXT, VOCAB, BOUNDS)
    assert verdict.usable
    assert [(c.label, c.type) for c in verdict.concepts] == [
        ("Aspirin", "drug"), ("headache", "condition"), ("Bayer", None),
        ("migraine", "condition")]
    kept = [(r.source, r.type.name, r.target) for r in verdict.relationships]
    assert kept == [("Aspirin", "treats", "headache"), ("migraine", "similar_to", "headache"),
                    ("Aspirin", "sold_by", "Bayer")]
    assert verdict.dropped["domain_range"] == 1 and verdict.dropped["unknown_concept_type"] == 1
    assert any("treats links drug to condition, but 'headache' is condition" in e
               for e in verdict.errors)


def test_strict_ontology_calls_unknown_types_errors_and_open_does_not() -> None:
    rels = [rel("Aspirin", "cures", "headache"), rel("Aspirin", "heals", "headache"),
            rel("Aspirin", "fixes", "headache")]
    content = reply([concept("Aspirin", "drug"), concept("headache", "condition")], rels)
    strict = validate_reply(content, TEXT, VOCAB, BOUNDS)
    assert not strict.usable and strict.kind == "mostly_invalid"
    assert "is not a type of the ontology 'med'" in " ".join(strict.errors)
    open_vocab = Vocabulary(list(VOCAB.types.values()), concept_types=VOCAB.concept_types,
                            mode="open")
    lenient = validate_reply(content, TEXT, open_vocab, BOUNDS)
    assert lenient.usable and [p[0] for p in lenient.proposals] == ["cures", "heals", "fixes"]


def test_descriptions_generate_evidence_off() -> None:
    content = reply([concept("Bayer", "company", "first sold by Bayer")], [])
    generated = validate_reply(content, TEXT, VOCAB, BOUNDS)
    evidence = validate_reply(content, TEXT, VOCAB, BOUNDS, descriptions="evidence")
    off = validate_reply(content, TEXT, VOCAB, BOUNDS, descriptions="off")
    assert generated.concepts[0].description == "made up"
    assert evidence.concepts[0].description == "It was first sold by Bayer in Germany."
    assert off.concepts[0].description == ""


def test_grounded_ends_the_text_names_become_concepts() -> None:
    content = reply([concept("Aspirin", "drug")],
                    [rel("Aspirin", "sold_by", "Bayer", "It was first sold by Bayer"),
                     rel("Aspirin", "treats", "Dracula")])
    plain = validate_reply(content, TEXT, VOCAB, BOUNDS)
    assert plain.dropped["unknown_end"] == 2 and len(plain.relationships) == 0
    grounded = validate_reply(content, TEXT, VOCAB, BOUNDS, resolve_ends=True,
                              descriptions="evidence")
    assert [c.label for c in grounded.concepts] == ["Aspirin", "Bayer"]
    assert grounded.concepts[1].description == "It was first sold by Bayer in Germany."
    assert grounded.dropped["end_as_concept"] == 1 and grounded.dropped["unknown_end"] == 1
    assert [(r.source, r.target) for r in grounded.relationships] == [("Aspirin", "Bayer")]
