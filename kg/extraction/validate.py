"""Check a model reply against the chunk: JSON, schema, verbatim quotes, ends, vocabulary.

A reply is either unusable as a whole (sent back to the model with the exact errors) or usable,
in which case the items that fail on their own are dropped and counted, never stored.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from kg.extraction.resolve import normalise_label
from kg.extraction.schema import Bounds, item_models
from kg.extraction.vocabulary import TypeInfo, Vocabulary, snake

FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
QUOTE_MARKS = "\"'“”‘’«»"
MIN_WORDS_FOR_CONTENT = 20
MAX_END_CONCEPTS = 40


@dataclass
class ValidConcept:
    label: str
    description: str
    search_terms: list[str]
    quote: str
    start: int
    end: int
    type: str | None = None  # the ontology's concept type; None when it has none


@dataclass
class ValidRelationship:
    source: str
    target: str
    type: TypeInfo
    confidence: float
    quote: str
    start: int
    end: int


@dataclass
class Validation:
    """The verdict on one reply."""

    usable: bool
    kind: str | None = None  # why unusable: not_json, truncated, thinking_only, empty, schema,
    #                          mostly_invalid
    errors: list[str] = field(default_factory=list)
    concepts: list[ValidConcept] = field(default_factory=list)
    relationships: list[ValidRelationship] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    proposals: list[tuple[str, str]] = field(default_factory=list)
    lenient_json: bool = False


def find_quote(quote: str, text: str) -> tuple[int, int] | None:
    """Offsets of the quote in text: exact, else whitespace- and then case-tolerant."""
    q = quote.strip().strip(QUOTE_MARKS).strip()
    if not q:
        return None
    i = text.find(q)
    if i >= 0:
        return i, i + len(q)
    pattern = r"\s+".join(re.escape(w) for w in q.split())
    match = re.search(pattern, text) or re.search(pattern, text, re.IGNORECASE)
    return (match.start(), match.end()) if match else None


SENTENCE_SPAN = re.compile(r"[^.!?\n]+[.!?]?")


def sentence_with(text: str, a: ValidConcept, b: ValidConcept) -> tuple[int, int] | None:
    """The first sentence of text that mentions both concepts (by label or quote span)."""
    for match in SENTENCE_SPAN.finditer(text):
        start, end = match.start(), match.end()
        sentence = match.group()

        def mentions(c: ValidConcept, sentence: str = sentence, start: int = start,
                     end: int = end) -> bool:
            return start <= c.start < end or find_mention(c.label, sentence) is not None

        if mentions(a) and mentions(b):
            stripped = len(sentence) - len(sentence.lstrip())
            return start + stripped, end
    return None


def words_of(text: str) -> set[str]:
    return set(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


def label_grounded(label: str, chunk_words: set[str]) -> bool:
    """At least half of the label's words occur in the chunk (any case, any order)."""
    words = words_of(label)
    if not words:
        return False
    return sum(w in chunk_words for w in words) * 2 >= len(words)


def find_mention(label: str, text: str) -> tuple[int, int] | None:
    """Offsets of a label standing as whole words in text (case-insensitive), 3+ characters."""
    words = label.split()
    if len(label.strip()) < 3 or not words:
        return None
    pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
    match = re.search(pattern, text) or re.search(pattern, text, re.IGNORECASE)
    return (match.start(), match.end()) if match else None


def _fix_confidence(raw: Any) -> Any:
    """Grammars bound strings and arrays, not numbers: 85 means 0.85, 2019 means 1."""
    if not isinstance(raw, dict):
        return raw
    value = raw.get("confidence")
    if isinstance(value, bool) or not isinstance(value, int | float) or 0 <= value <= 1:
        return raw
    repaired = value / 100 if 1 < value <= 100 else min(max(float(value), 0.0), 1.0)
    return {**raw, "confidence": repaired}


def _parse(content: str) -> tuple[Any, bool, str | None]:
    """(data, needed lenient parsing, error message)."""
    fenced = FENCE.match(content)
    if fenced:
        content = fenced.group(1)
    try:
        return json.loads(content), False, None
    except json.JSONDecodeError:
        pass
    try:
        # Grammar-constrained llama.cpp output can hold raw newlines inside strings.
        return json.loads(content, strict=False), True, None
    except json.JSONDecodeError as exc:
        return None, False, f"{exc.msg} at line {exc.lineno} column {exc.colno}"


# Drops that mean the model got something wrong (as opposed to duplicates, self-loops or
# types outside the vocabulary, which are fair answers): they decide "mostly invalid".
INVALID_REASONS = ("schema", "label_not_in_text", "quote_not_found", "unknown_end",
                   "domain_range")


def evidence_sentence(text: str, start: int, end: int) -> str:
    """The sentence of text around [start, end): a description that invents nothing."""
    for match in SENTENCE_SPAN.finditer(text):
        if match.start() <= start < match.end():
            return text[match.start():max(match.end(), end)].strip()
    return text[start:end]


def _end_concept(label: str, chunk: str, descriptions: str, result: Validation,
                 names: dict[str, str]) -> str | None:
    """A concept made from a relationship end that stands in the text (counted apart)."""
    norm = normalise_label(label)
    span = find_mention(label, chunk) if norm else None
    if span is None or len(result.concepts) >= MAX_END_CONCEPTS:
        return None
    text = chunk[span[0]:span[1]]
    description = evidence_sentence(chunk, *span) if descriptions == "evidence" else ""
    result.concepts.append(ValidConcept(text, description, [], text, span[0], span[1]))
    result.dropped["end_as_concept"] += 1
    names[norm] = text
    return text


def _ends_conform(rel: TypeInfo, source: ValidConcept, target: ValidConcept) -> str | None:
    """Why the ends' concept types break the relation's domain/range, or None if they fit."""
    def fits(a: ValidConcept, b: ValidConcept) -> bool:
        return ((rel.domain is None or a.type is None or a.type == rel.domain)
                and (rel.range is None or b.type is None or b.type == rel.range))

    if fits(source, target) or (rel.direction == "symmetric" and fits(target, source)):
        return None
    return (f"{rel.name} links {rel.domain or 'any'} to {rel.range or 'any'}, but "
            f"{source.label[:40]!r} is {source.type or 'untyped'} and {target.label[:40]!r} is "
            f"{target.type or 'untyped'}")


def _item(model: type[BaseModel], raw: Any, where: str, result: Validation) -> Any:
    """The validated item, or None with the schema error recorded."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        result.dropped["schema"] += 1
        result.errors.append(_pydantic_error(where, exc))
        return None


def _pydantic_error(prefix: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{prefix}.{where}: {err['msg']}" if where else f"{prefix}: {err['msg']}"


def validate_reply(
    content: str,
    chunk: str,
    vocabulary: Vocabulary,
    bounds: Bounds,
    *,
    finish_reason: str | None = None,
    thinking: str = "",
    budget: int | None = None,
    descriptions: str = "generate",
    resolve_ends: bool = False,
) -> Validation:
    """Judge one reply for one chunk (`descriptions`: generate keeps the model's, evidence
    uses the quoted sentence, off stores none). With `resolve_ends` (grounded decoding: ends
    are spans of the text), an end the text names but the concepts omit becomes a concept.)"""
    if not content.strip():
        if thinking:
            return Validation(False, "thinking_only", [
                f"the model wrote {len(thinking)} characters of thinking and no answer; lower "
                "--thinking-mode or raise --max-output-tokens"])
        if finish_reason == "length":
            return Validation(False, "truncated", ["the reply was cut off before any JSON"])
        return Validation(False, "empty", ["the reply was empty; answer with the JSON object"])
    data, lenient, error = _parse(content)
    if error is not None:
        if finish_reason == "length":
            return Validation(False, "truncated", [
                f"the reply was cut off at the output limit ({budget or '?'} tokens) before the "
                "JSON was complete; give fewer, shorter items"])
        return Validation(False, "not_json", [f"the reply is not valid JSON: {error}"])
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), list):
        return Validation(False, "schema", [
            'the reply must be an object {"concepts": [...], "relationships": [...]}'])
    raw_relationships = data.get("relationships", [])
    if not isinstance(raw_relationships, list):
        return Validation(False, "schema", ['"relationships" must be a list'])

    concept_model, relationship_model, _ = item_models(bounds)
    result = Validation(True, lenient_json=lenient)
    by_norm: dict[str, ValidConcept] = {}
    chunk_words = words_of(chunk)
    names: dict[str, str] = {}  # normalised label or search term -> canonical label in reply
    for i, raw in enumerate(data["concepts"][: bounds.max_concepts * 2]):
        item = _item(concept_model, raw, f"concepts[{i}]", result)
        if item is None:
            continue
        if not label_grounded(item.label, chunk_words):
            result.dropped["label_not_in_text"] += 1
            result.errors.append(f"concepts[{i}].label {item.label[:60]!r} does not occur in "
                                 "the text; use the name as the text writes it")
            continue
        span = find_quote(item.quote, chunk)
        from_label = span is None
        if span is None:
            # Grounded fallback: the label itself stands in the text, so its mention is
            # verbatim evidence. Counted apart (once kept) so quote fidelity stays measurable.
            span = find_mention(item.label, chunk)
            if span is None:
                result.dropped["quote_not_found"] += 1
                result.errors.append(
                    f"concepts[{i}].quote is not in the text: {item.quote[:60]!r}")
                continue
        norm = normalise_label(item.label)
        if not norm:
            result.dropped["schema"] += 1
            result.errors.append(f"concepts[{i}].label has no letters or digits")
            continue
        if norm in by_norm:
            result.dropped["duplicate"] += 1
            continue
        concept_type = None
        if item.type is not None and vocabulary.concept_types:
            concept_type = vocabulary.normalise_concept_type(item.type)
            if concept_type is None:
                result.dropped["unknown_concept_type"] += 1
                result.errors.append(f"concepts[{i}].type {item.type[:40]!r} is not one of "
                                     f"{', '.join(vocabulary.concept_types)}")
        if descriptions == "generate":
            description = item.description.strip()
        elif descriptions == "evidence":
            description = evidence_sentence(chunk, span[0], span[1])
        else:
            description = ""
        concept = ValidConcept(item.label.strip(), description,
                               [t.strip() for t in item.search_terms if t.strip()],
                               chunk[span[0]:span[1]], span[0], span[1], concept_type)
        by_norm[norm] = concept
        result.concepts.append(concept)
        if from_label:
            result.dropped["quote_from_label"] += 1
        names[norm] = concept.label
        for term in concept.search_terms:
            names.setdefault(normalise_label(term), concept.label)

    by_label = {concept.label: concept for concept in result.concepts}
    seen_edges: set[tuple[str, str, str]] = set()
    for i, raw in enumerate(raw_relationships[: bounds.max_relationships * 2]):
        fixed = _fix_confidence(raw)
        if fixed is not raw:
            result.dropped["confidence_fixed"] += 1
        item = _item(relationship_model, fixed, f"relationships[{i}]", result)
        if item is None:
            continue
        source = names.get(normalise_label(item.source))
        target = names.get(normalise_label(item.target))
        if resolve_ends:
            source = source or _end_concept(item.source, chunk, descriptions, result, names)
            target = target or _end_concept(item.target, chunk, descriptions, result, names)
            by_label = {concept.label: concept for concept in result.concepts}
        if source is None or target is None:
            result.dropped["unknown_end"] += 1
            missing = item.source if source is None else item.target
            result.errors.append(
                f"relationships[{i}] refers to {missing[:60]!r}, which is not in concepts")
            continue
        if source == target:
            result.dropped["self_loop"] += 1
            continue
        type_info = vocabulary.normalise(item.type)
        if type_info is None:
            # Kept as a proposal for review either way; a strict ontology also calls it an
            # error (its schema offered only its own types).
            if vocabulary.strict:
                result.errors.append(f"relationships[{i}].type {item.type[:40]!r} is not a type "
                                     f"of the ontology {vocabulary.ontology!r}")
            result.dropped["unknown_type"] += 1
            result.proposals.append((snake(item.type) or item.type[:64],
                                     f"{source} -[{item.type}]-> {target}"[:300]))
            continue
        violation = _ends_conform(type_info, by_label[source], by_label[target])
        if violation is not None:
            result.dropped["domain_range"] += 1
            result.errors.append(f"relationships[{i}]: {violation}")
            continue
        span = find_quote(item.quote, chunk)
        from_sentence = span is None
        if span is None:
            span = sentence_with(chunk, by_label[source], by_label[target])
            if span is None:
                result.dropped["quote_not_found"] += 1
                result.errors.append(
                    f"relationships[{i}].quote is not in the text: {item.quote[:60]!r}")
                continue
        edge = (source, type_info.name, target)
        if edge in seen_edges:
            result.dropped["duplicate"] += 1
            continue
        seen_edges.add(edge)
        if from_sentence:
            result.dropped["quote_from_sentence"] += 1
        result.relationships.append(ValidRelationship(
            source, target, type_info, item.confidence, chunk[span[0]:span[1]], span[0], span[1]))

    total = len(data["concepts"]) + len(raw_relationships)
    invalid = sum(result.dropped[reason] for reason in INVALID_REASONS)
    if vocabulary.strict:
        invalid += result.dropped["unknown_type"]
    if not result.concepts:
        if total == 0 and len(chunk.split()) < MIN_WORDS_FOR_CONTENT:
            return result  # a heading or a signature: nothing to extract is a fair answer
        result.usable = False
        result.kind = "empty" if total == 0 else "mostly_invalid"
        if total == 0:
            result.errors.insert(0, "the reply lists no concepts, but the text has content")
    elif total >= 4 and invalid * 2 > total:
        result.usable = False
        result.kind = "mostly_invalid"
    if not result.usable:
        result.errors.insert(0, f"{invalid} of {total} items were invalid"
                             if total else "no items")
    return result
