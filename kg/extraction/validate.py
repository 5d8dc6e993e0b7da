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

from kg.extraction.grounding import STOPWORDS, verbish
from kg.extraction.literals import normalise_literal
from kg.extraction.schema import OutputBounds, item_models, triples_to_graph
from kg.extraction.vocabulary import CAMEL, TypeInfo, Vocabulary
from kg.text import label_key, normalise_label, snake

FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
QUOTE_MARKS = "\"'“”‘’«»"
MIN_WORDS_FOR_CONTENT = 20
MAX_END_CONCEPTS = 40
# Ablation switches (benchmarks/recall/BASELINE.md), all only for ontologies with relation
# ranges (`Vocabulary.kinds`): an end is the whole name it stands inside (`whole_name`), a
# possessive end names its possessor ("Bungie's" -> "Bungie"), and a row whose end names no
# thing is dropped.
WHOLE_NAMES = True
POSSESSIVES = True
NAMELESS_ENDS_DROPPED = True  # `_no_end`
POSSESSIVE = re.compile(r"['’]s$")
NUMBER_WORD = re.compile(r"(?<!\S)[^\w\s]*\d[\d\W_]*(?!\S)")  # digits and marks only
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
# The value itself inside a longer span ("100 academic staff", "in 1996", "2777.0 metres").
VALUE_IN_SPAN = {
    "number": re.compile(r"(?<![\w.,-])[-+]?\d+(?:[.,]\d+)*(?![\w-])"),
    "year": re.compile(r"\b\d{4}\b"),
    "date": re.compile(rf"\b\d{{4}}-\d{{2}}-\d{{2}}\b|\b\d{{1,2}}(?:st|nd|rd|th)? {_MONTH},? "
                       rf"\d{{4}}\b|\b{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}\b|"
                       rf"\b{_MONTH} \d{{4}}\b|\b\d{{4}}\b", re.IGNORECASE),
}


@dataclass
class ValidConcept:
    label: str
    description: str
    search_terms: list[str]
    quote: str
    start: int
    end: int
    type: str | None = None  # the ontology's concept type; None when it has none
    stated: str | None = None  # the type the model wrote (None: untyped, so inferred)


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
class ValidLiteral:
    """An attribute of a concept: `subject -relation-> value`, where the relation's range is a
    datatype. `value` is verbatim chunk text at [value_start, value_end); `normalised` is its
    canonical form (numbers without separators, ISO dates, four-digit years); quote/start/end
    are the evidence in the chunk, as for a relationship."""

    subject: str  # the label of a concept of the same verdict
    type: TypeInfo  # the relation (type.id: the registry row, type.range: the datatype name)
    datatype: str  # string | number | date | year
    value: str
    normalised: str
    value_start: int
    value_end: int
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
    literals: list[ValidLiteral] = field(default_factory=list)
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
                   "domain_range", "literal_not_in_text")


def evidence_sentence(text: str, start: int, end: int) -> str:
    """The sentence of text around [start, end): a description that invents nothing."""
    for match in SENTENCE_SPAN.finditer(text):
        if match.start() <= start < match.end():
            return text[match.start():max(match.end(), end)].strip()
    return text[start:end]


@dataclass
class _Reading:
    """One reply being judged: the chunk, the ontology, and what was kept so far."""

    chunk: str
    vocabulary: Vocabulary
    bounds: OutputBounds
    descriptions: str
    resolve_ends: bool
    result: Validation
    names: dict[str, str] = field(default_factory=dict)  # normalised label/term -> label
    by_label: dict[str, ValidConcept] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # normalised labels of listed concepts


@dataclass
class _Candidate:
    """A relationship that passed every check but domain/range (decided once types are)."""

    index: int
    relationship: ValidRelationship


def _end_concept(label: str, reading: _Reading) -> str | None:
    """A concept made from a relationship end that stands in the text (counted apart); its
    type is inferred later from the relations it is used in."""
    result, chunk = reading.result, reading.chunk
    norm = normalise_label(label)
    span = find_mention(label, chunk) if norm else None
    if span is None or len(result.concepts) >= MAX_END_CONCEPTS:
        return None
    text = chunk[span[0]:span[1]]
    description = evidence_sentence(chunk, *span) if reading.descriptions == "evidence" else ""
    concept = ValidConcept(text, description, [], text, span[0], span[1])
    result.concepts.append(concept)
    reading.by_label[text] = concept
    result.dropped["end_as_concept"] += 1
    reading.names[norm] = text
    return text


def _resolve(label: str, reading: _Reading) -> str | None:
    found = reading.names.get(normalise_label(label))
    if found is None and reading.resolve_ends:
        found = _end_concept(label, reading)
    return found


def _conflicts(concept: ValidConcept, required: str | None, vocabulary: Vocabulary) -> bool:
    """Only a type the model stated can conflict, and only when the chunk's evidence did not
    settle the concept on the required type: an inferred type is a preference, never a veto
    (Text2KGBench-style ontologies give every relation one domain, yet use it on others)."""
    if required is None or required not in vocabulary.concept_types:
        return False
    return concept.stated is not None and required not in (concept.stated, concept.type)


def _ends_conform(rel: TypeInfo, source: ValidConcept, target: ValidConcept,
                  vocabulary: Vocabulary) -> str | None:
    """Why the ends' concept types break the relation's domain/range, or None if they fit."""
    def fits(a: ValidConcept, b: ValidConcept) -> bool:
        return not (_conflicts(a, rel.domain, vocabulary)
                    or _conflicts(b, rel.range, vocabulary))

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


def _envelope(content: str, finish_reason: str | None, thinking: str,
              budget: int | None) -> tuple[dict[str, Any], bool] | Validation:
    """The reply's JSON object and whether it needed lenient parsing, or the verdict that it
    is unusable as a whole."""
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
    if isinstance(data, dict) and "concepts" not in data and isinstance(data.get("triples"),
                                                                         list):
        data = triples_to_graph(data)  # the `triples` shape
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), list):
        return Validation(False, "schema", [
            'the reply must be an object {"concepts": [...], "relationships": [...]}'])
    if not isinstance(data.get("relationships", []), list):
        return Validation(False, "schema", ['"relationships" must be a list'])
    return data, lenient


def _read_concept(i: int, raw: Any, model: type[BaseModel], reading: _Reading,
                  chunk_words: set[str]) -> None:
    """Keep one listed concept if its label and quote stand in the text."""
    result, chunk, vocabulary = reading.result, reading.chunk, reading.vocabulary
    item = _item(model, raw, f"concepts[{i}]", result)
    if item is None:
        return
    if not label_grounded(item.label, chunk_words):
        result.dropped["label_not_in_text"] += 1
        result.errors.append(f"concepts[{i}].label {item.label[:60]!r} does not occur in "
                             "the text; use the name as the text writes it")
        return
    span = find_quote(item.quote, chunk)
    from_label = span is None
    if span is None:
        # Grounded fallback: the label itself stands in the text, so its mention is
        # verbatim evidence. Counted apart (once kept) so quote fidelity stays measurable.
        span = find_mention(item.label, chunk)
        if span is None:
            result.dropped["quote_not_found"] += 1
            result.errors.append(f"concepts[{i}].quote is not in the text: {item.quote[:60]!r}")
            return
    norm = normalise_label(item.label)
    if not norm:
        result.dropped["schema"] += 1
        result.errors.append(f"concepts[{i}].label has no letters or digits")
        return
    if norm in reading.listed:
        result.dropped["duplicate"] += 1
        return
    stated = None
    if item.type is not None and vocabulary.concept_types:
        stated = vocabulary.normalise_concept_type(item.type)
        if stated is None:
            result.dropped["unknown_concept_type"] += 1
            result.errors.append(f"concepts[{i}].type {item.type[:40]!r} is not one of "
                                 f"{', '.join(vocabulary.concept_types)}")
    if reading.descriptions == "generate":
        description = item.description.strip()
    elif reading.descriptions == "evidence":
        description = evidence_sentence(chunk, span[0], span[1])
    else:
        description = ""
    concept = ValidConcept(item.label.strip(), description,
                           [t.strip() for t in item.search_terms if t.strip()],
                           chunk[span[0]:span[1]], span[0], span[1], stated, stated)
    result.concepts.append(concept)
    reading.by_label[concept.label] = concept
    reading.listed.add(norm)
    if from_label:
        result.dropped["quote_from_label"] += 1
    reading.names[norm] = concept.label
    for term in concept.search_terms:
        reading.names.setdefault(normalise_label(term), concept.label)


def _evidence(quote: str, chunk: str, fallback: tuple[int, int] | None,
              reading: _Reading) -> tuple[int, int] | None:
    """The quote's span, else the fallback sentence (counted: not verbatim)."""
    span = find_quote(quote, chunk)
    if span is None and fallback is not None:
        reading.result.dropped["quote_from_sentence"] += 1
        return fallback
    return span


def _value_within(chunk: str, where: tuple[int, int], kind: str) -> tuple[int, int] | None:
    """A number, year or date value narrowed to the value itself when the span holds more
    (grounded ends are phrases: "100 academic staff"), still verbatim text of the chunk, and
    widened when the span cut a number ("0 metres" of "610.0 metres"); kept as written when
    its digits form no plain value ("1-4165-2060-0"); None when no word of it is digits and
    marks only ("London", "V8" are no numbers), or when a date or year holds no year. A
    string is the span as written."""
    pattern = VALUE_IN_SPAN.get(kind)
    if pattern is None:
        return where
    where = _whole_number(chunk, *where)
    match = pattern.search(chunk, *where)
    if match is not None:
        return match.span()
    if kind in ("date", "year"):
        return None  # "discovered 103" holds no year: no date either
    # Digits only inside words ("V8", "3-speed", "NZ1951") are part of a name, not a value.
    return where if NUMBER_WORD.search(chunk, *where) else None


def _whole_number(chunk: str, start: int, end: int) -> tuple[int, int]:
    """A span that starts or ends inside a number widened to the whole number: grounded spans
    are cut at full stops, so "610.0 metres" may come back as "0 metres"."""
    def joins(i: int) -> bool:  # chunk[i] belongs to the number beside it
        return chunk[i].isdigit() or (chunk[i] in ".," and 0 < i < len(chunk) - 1
                                      and chunk[i - 1].isdigit() and chunk[i + 1].isdigit())

    if chunk[start].isdigit():
        while start > 0 and joins(start - 1):
            start -= 1
    if chunk[end - 1].isdigit():
        while end < len(chunk) and joins(end):
            end += 1
    return start, end


def _read_literal(i: int, item: Any, source: str, type_info: TypeInfo, reading: _Reading,
                  seen: set[tuple[str, str, str]]) -> None:
    """A datatype-range relation: its target is a value the text must contain verbatim."""
    result, chunk = reading.result, reading.chunk
    kind = type_info.literal or "string"
    where = find_quote(item.target, chunk)
    if where is None:
        result.dropped["literal_not_in_text"] += 1
        result.errors.append(f"relationships[{i}].target {item.target[:60]!r} is not in the "
                             f"text; a {kind} value must be written as the text writes it")
        return
    within = _value_within(chunk, where, kind)
    if within is None:
        # "London" as a birth year: not a value of the range's kind. A fair miss of the
        # model's relation rather than a broken reply, so counted apart, never repaired.
        result.dropped["literal_wrong_kind"] += 1
        return
    value = chunk[within[0]:within[1]]
    normalised = normalise_literal(value, kind)
    key = (source, type_info.name, normalised)
    if key in seen:
        result.dropped["duplicate"] += 1
        return
    sentence = evidence_sentence(chunk, *where)
    s_start = chunk.find(sentence)
    span = _evidence(item.quote, chunk,
                     (s_start, s_start + len(sentence)) if s_start >= 0 else where, reading)
    assert span is not None  # a fallback was given
    seen.add(key)
    result.literals.append(ValidLiteral(
        source, type_info, kind, value, normalised, within[0], within[1], item.confidence,
        chunk[span[0]:span[1]], span[0], span[1]))


def _read_relationship(i: int, raw: Any, model: type[BaseModel], reading: _Reading,
                       seen: set[tuple[str, str, str]]) -> _Candidate | None:
    """One relationship with its ends resolved and its quote found (domain/range later); a
    literal-range one goes to the verdict's literals instead."""
    result, chunk, vocabulary = reading.result, reading.chunk, reading.vocabulary
    fixed = _fix_confidence(raw)
    if fixed is not raw:
        result.dropped["confidence_fixed"] += 1
    item = _item(model, fixed, f"relationships[{i}]", result)
    if item is None:
        return None
    type_info = vocabulary.normalise(item.type)
    source = _resolve(item.source, reading)
    if source is not None and type_info is not None and type_info.literal:
        _read_literal(i, item, source, type_info, reading, seen)
        return None
    target = _resolve(item.target, reading)
    if source is None or target is None:
        result.dropped["unknown_end"] += 1
        missing = item.source if source is None else item.target
        result.errors.append(
            f"relationships[{i}] refers to {missing[:60]!r}, which is not in concepts")
        return None
    if source == target:
        result.dropped["self_loop"] += 1
        return None
    if type_info is None:
        # Kept as a proposal for review either way; a strict ontology also calls it an
        # error (its schema offered only its own types).
        if vocabulary.strict:
            result.errors.append(f"relationships[{i}].type {item.type[:40]!r} is not a type "
                                 f"of the ontology {vocabulary.ontology!r}")
        result.dropped["unknown_type"] += 1
        result.proposals.append((snake(item.type) or item.type[:64],
                                 f"{source} -[{item.type}]-> {target}"[:300]))
        return None
    span = _evidence(item.quote, chunk, sentence_with(
        chunk, reading.by_label[source], reading.by_label[target]), reading)
    if span is None:
        result.dropped["quote_not_found"] += 1
        result.errors.append(f"relationships[{i}].quote is not in the text: {item.quote[:60]!r}")
        return None
    edge = (source, type_info.name, target)
    if edge in seen:
        result.dropped["duplicate"] += 1
        return None
    seen.add(edge)
    return _Candidate(i, ValidRelationship(source, target, type_info, item.confidence,
                                           chunk[span[0]:span[1]], span[0], span[1]))


def _decide_types(candidates: list[_Candidate], reading: _Reading) -> None:
    """Each concept's type by the evidence of the chunk: its stated type and the domain/range
    of every relation it is used in, one vote each; the majority wins, ties go to the type the
    ontology lists first. Counted: inferred (no stated type), overridden (stated type lost)."""
    vocabulary, result = reading.vocabulary, reading.result
    known = set(vocabulary.concept_types)
    votes: dict[str, Counter[str]] = {c.label: Counter() for c in result.concepts}

    def vote(label: str, kind: str | None) -> None:
        if kind in known and label in votes:
            votes[label][kind] += 1

    for concept in result.concepts:
        vote(concept.label, concept.stated)
    for rel in (cand.relationship for cand in candidates):
        if rel.type.direction == "symmetric" and rel.type.domain != rel.type.range:
            continue  # either end may be either type: no evidence for one
        vote(rel.source, rel.type.domain)
        vote(rel.target, rel.type.range)
    for literal in result.literals:
        vote(literal.subject, literal.type.domain)
    for concept in result.concepts:
        tally = votes[concept.label]
        if not tally:
            continue
        concept.type = max(tally, key=lambda k: (tally[k], -vocabulary.concept_rank(k)))
        if concept.stated is None:
            result.dropped["type_inferred"] += 1
        elif concept.type != concept.stated:
            result.dropped["type_overridden"] += 1


def _keep_conforming(candidates: list[_Candidate], reading: _Reading) -> None:
    """Relationships (and literals) whose stated end types do not contradict the relation."""
    result, by_label, vocabulary = reading.result, reading.by_label, reading.vocabulary
    for cand in candidates:
        rel = cand.relationship
        violation = _ends_conform(rel.type, by_label[rel.source], by_label[rel.target],
                                  vocabulary)
        if violation is not None:
            result.dropped["domain_range"] += 1
            result.errors.append(f"relationships[{cand.index}]: {violation}")
            continue
        result.relationships.append(rel)
    kept = []
    for literal in result.literals:
        if _conflicts(by_label[literal.subject], literal.type.domain, vocabulary):
            result.dropped["domain_range"] += 1
            result.errors.append(f"{literal.type.name} belongs to {literal.type.domain}, but "
                                 f"{literal.subject[:40]!r} is {by_label[literal.subject].type}")
            continue
        kept.append(literal)
    result.literals = kept


def _judge(result: Validation, total: int, chunk: str, vocabulary: Vocabulary) -> Validation:
    """Usable, or mostly invalid / empty (then sent back to the model with the errors)."""
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


def validate_reply(
    content: str,
    chunk: str,
    vocabulary: Vocabulary,
    bounds: OutputBounds,
    *,
    finish_reason: str | None = None,
    thinking: str = "",
    budget: int | None = None,
    descriptions: str = "generate",
    resolve_ends: bool = False,
) -> Validation:
    """Judge one reply for one chunk (`descriptions`: generate keeps the model's, evidence
    uses the quoted sentence, off stores none). With `resolve_ends`, an end the text names
    but the concepts omit becomes a concept, typed by inference."""
    envelope = _envelope(content, finish_reason, thinking, budget)
    if isinstance(envelope, Validation):
        return envelope
    data, lenient = envelope
    raw_relationships = data.get("relationships", [])
    concept_model, relationship_model, _ = item_models(bounds)
    reading = _Reading(chunk, vocabulary, bounds, descriptions, resolve_ends,
                       Validation(True, lenient_json=lenient))
    chunk_words = words_of(chunk)
    for i, raw in enumerate(data["concepts"][: bounds.max_concepts * 2]):
        _read_concept(i, raw, concept_model, reading, chunk_words)
    rows = raw_relationships
    if isinstance(rows, list) and vocabulary.kinds():
        relation_keys = {label_key(CAMEL.sub(" ", name)) for name in vocabulary.types}
        rows = [fixed for raw in rows
                if (fixed := _named_ends(raw, reading, relation_keys)) is not None]
    seen: set[tuple[str, str, str]] = set()
    candidates = [cand for i, raw in enumerate(rows[: bounds.max_relationships * 2])
                  if (cand := _read_relationship(i, raw, relationship_model, reading, seen))]
    _decide_types(candidates, reading)
    _keep_conforming(candidates, reading)
    total = len(data["concepts"]) + len(raw_relationships)
    return _judge(reading.result, total, chunk, vocabulary)


def _named_ends(raw: Any, reading: _Reading, relation_keys: set[str]) -> Any | None:
    """A relationship whose concept ends are the names they stand for in the chunk: a piece
    of a name ("Piazzia" of "The 1000 Piazzia") is the whole name (`whole_name`), a possessive
    ("Bungie's") its possessor. Small models pick such pieces among grounded spans; counted
    as end_widened and possessive_cut. A listed concept's label is kept as listed, and a
    literal value is left to `_value_within`. None for a row with an end that names no thing
    (`_no_end`; `relation_keys` are the ontology's relation names as `label_key`s)."""
    if not isinstance(raw, dict):
        return raw
    type_info = reading.vocabulary.normalise(str(raw.get("type") or ""))
    literal = type_info is not None and type_info.literal is not None
    why = (_no_end(str(raw.get("source") or ""), relation_keys, False, reading.chunk)
           or _no_end(str(raw.get("target") or ""), relation_keys, literal, reading.chunk))
    if why and NAMELESS_ENDS_DROPPED:
        reading.result.dropped[why] += 1
        return None
    fixed = dict(raw)
    for key in ("source", "target"):
        label = raw.get(key)
        if (not isinstance(label, str) or normalise_label(label) in reading.names
                or (key == "target" and literal)):
            continue
        if WHOLE_NAMES and (whole := whole_name(label, reading.chunk)) != label.strip():
            reading.result.dropped["end_widened"] += 1
            label = whole
        if POSSESSIVES and POSSESSIVE.search(label) and len(label) > 4:
            reading.result.dropped["possessive_cut"] += 1
            label = label[:-2]
        fixed[key] = label
    return fixed


NAME_PIECE = re.compile(r"([^\W_][\w'’&-]*) $")  # the word just before a mention
# Grounded spans are cut at dashes other than the hyphen (a hyphen stays inside a word).
COMPOUND_REST = re.compile(r"[–—][^\W_][\w'’&-]*(?: [A-Z][\w'’&-]*)*")
OF_NAME = re.compile(r" of [A-Z][\w'’&-]*(?: [A-Z][\w'’&-]*)*")  # "University| of Burgundy"


def whole_name(label: str, chunk: str) -> str:
    """The name every mention of a name-like label stands inside, else the label: a number
    opening it ("1000 Piazzia", "The 11th Mississippi Infantry Monument", not "in 1908 Henri
    Dor" nor "a 1993 Scrooge McDuck"); for one word ending a run of capitalised words, the
    words before it ("AMC Ambassador"; not "World Esperanto Medical Association"); for one
    word, "of" and the capitalised words after it ("University of Burgundy"); a label cut at
    a dash the rest of the compound ("Madrid–Barajas Airport")."""
    label = label.strip()
    if not label or not (label[0].isupper() or label[0].isdigit()):
        return label
    mention = re.compile(r"(?<![\w'’-])" + re.escape(label) + r"(?![\w'’-])")
    names = {chunk[slice(*_widened(chunk, m.start(), m.end()))]
             for m in mention.finditer(chunk)}
    return names.pop() if len(names) == 1 else label


def _widened(chunk: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to the left over the words that belong to the name (see
    `whole_name`); a possessive ("NASA's Apollo 8") is another name and stops it."""
    one_word = " " not in chunk[start:end]
    after = re.match(r" ([^\W_])", chunk[end:])
    run_ends = not (after and (after.group(1).isupper() or after.group(1).isdigit()))
    while (m := NAME_PIECE.search(chunk, 0, start)) is not None:
        word = m.group(1)
        if POSSESSIVE.search(word):
            break
        if word[0].isdigit():
            before = re.search(r"([^\W_][\w'’-]*)\s+$", chunk[:m.start(1)])
            opener = before.group(1).casefold() if before else ""
            if opener not in STOPWORDS or opener == "the":
                start = m.start(1)
            break
        if not (one_word and run_ends and word[0].isupper()
                and word.casefold() not in STOPWORDS):
            break
        start = m.start(1)
    if (cut := COMPOUND_REST.match(chunk, end)) is not None:
        end = cut.end()  # a span cut inside a compound: "Madrid" of "Madrid–Barajas Airport"
    elif one_word and (of := OF_NAME.match(chunk, end)) is not None:
        end = of.end()
    return start, end


MONTH_NAME = (r"(?:January|February|March|April|May|June|July|August|September|October|"
              r"November|December)")
# A month beside a number, or a month alone: "20 September 1978", "May 2001" (not "Theresa
# May" nor "August Strindberg").
DATE_END = re.compile(rf"^{MONTH_NAME}$|\b\d{{1,2}}(?:st|nd|rd|th)? {MONTH_NAME}\b|"
                      rf"\b{MONTH_NAME},? \d")


def _no_end(label: str, relation_keys: set[str], literal: bool, chunk: str) -> str | None:
    """Why a relationship end names no thing (counted under that reason), else None: the name
    of one of the ontology's relations ("runway length", "staff"); for a concept end, a
    lower-case phrase ending in a verb ("released", "leader called"), a participle opening a
    clause ("Penned by", "Assembled in") or a date ("20 September 1978": dates are values of
    date ranges)."""
    key = label_key(CAMEL.sub(" ", label))
    if key and key in relation_keys:
        return "end_is_relation"
    if literal or not label.strip():
        return None
    words = label.split()
    if label[0].islower() and verbish(words[-1]):
        return "end_is_verb"
    if len(words) == 1 and PARTICIPLE_OPENER.search(label + " ") and _opens_clause(label, chunk):
        return "end_is_verb"
    if DATE_END.search(label.strip()) or (VALUE_IN_SPAN["date"].fullmatch(label.strip())
                                          and not label.strip().isdigit()):
        return "end_is_date"
    return None


PARTICIPLE_OPENER = re.compile(r"^[A-Z][a-z]{3,}ed ")


def _opens_clause(word: str, chunk: str) -> bool:
    """Every mention of the word is followed by a preposition: a participle ("Penned by
    Dave Mustaine"), not a name ("Alfred Worden")."""
    mentions = list(re.finditer(r"(?<!\w)" + re.escape(word) + r"(?!\w)", chunk))
    return bool(mentions) and all(
        re.match(r" (?:by|in|at|on|from|for|with|to|as|under|after)\b", chunk[m.end():])
        for m in mentions)
