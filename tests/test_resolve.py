"""Concept resolution across chunks, vocabulary normalisation, and reply validation."""

from __future__ import annotations

import json
import random

import pytest

from kg.extraction.resolve import MAX_BLOCK, ConceptIndex, GroupPlan, label_rank
from kg.extraction.schema import bounds_for_budget, output_schema
from kg.extraction.validate import find_quote, validate_reply
from kg.extraction.vocabulary import TypeInfo, Vocabulary
from kg.matching.candidates import distinct, entity, plausible, signals
from kg.matching.scoring import score
from kg.text import normalise_label
from tests.fakes import FakeOllama, Reply, chunk_of
from tests.test_ingest import rows, small_chunks, use_server

SURFACES = ["Sherlock Holmes", "sherlock holmes", "Holmes, Sherlock", "Mycroft Holmes",
            "Sherlok Holmes", "Type 1 diabetes", "Type 2 diabetes"]


def surface_reply(body: dict) -> Reply:
    chunk = chunk_of(body)
    found = [s for s in SURFACES if s in chunk]
    return Reply(json.dumps({
        "concepts": [{"label": s, "description": "", "search_terms": [], "quote": s}
                     for s in found],
        "relationships": []}))


def test_surface_forms_merge_into_one_concept_with_aliases(kg, db, tmp_path) -> None:
    doc = tmp_path / "holmes.md"
    filler = " ".join(["and then the story went on"] * 4)
    doc.write_text(
        f"# One\n\nSherlock Holmes solved it {filler}.\n\n"
        f"# Two\n\nLater sherlock holmes returned {filler}.\n\n"
        f"# Three\n\nThe file says Holmes, Sherlock was there {filler}.\n\n"
        f"# Four\n\nMycroft Holmes agreed {filler}.\n\n"
        f"# Five\n\nA typo: Sherlok Holmes {filler}.\n\n"
        f"# Six\n\nType 1 diabetes differs {filler}.\n\n"
        f"# Seven\n\nType 2 diabetes too {filler}.\n", encoding="utf-8")
    with FakeOllama(responder=surface_reply) as server:
        use_server(kg, server.url)
        result = kg("ingest", str(doc), *small_chunks(), "--json")
    assert json.loads(result.stdout)["chunks_ok"] == 7
    labels = sorted(r[0] for r in rows(db, "SELECT label FROM concepts"))
    assert labels == ["Mycroft Holmes", "Sherlock Holmes", "Type 1 diabetes", "Type 2 diabetes"]
    shown = json.loads(kg("concepts", "show", "Holmes, Sherlock", "--json").stdout)
    assert shown["label"] == "Sherlock Holmes"
    assert shown["aliases"] == ["Holmes, Sherlock", "Sherlok Holmes", "sherlock holmes"]
    assert len(shown["evidence"]) == 4
    found = json.loads(kg("concepts", "list", "--search", "sherlok", "--json").stdout)
    assert [c["label"] for c in found] == ["Sherlock Holmes"]


def test_fuzzy_threshold_101_disables_fuzzy_merging(kg, db, tmp_path) -> None:
    doc = tmp_path / "typo.md"
    doc.write_text("# A\n\nSherlock Holmes here " + "x " * 30 + "\n\n# B\n\nSherlok Holmes "
                   + "y " * 30, encoding="utf-8")
    with FakeOllama(responder=surface_reply) as server:
        use_server(kg, server.url)
        kg("ingest", str(doc), *small_chunks(), "--fuzzy-threshold", "101")
    assert sorted(r[0] for r in rows(db, "SELECT label FROM concepts")) == [
        "Sherlock Holmes", "Sherlok Holmes"]


@pytest.mark.parametrize(("a", "b"), [
    ("Sherlock Holmes", "sherlock holmes"), ("Holmes, Sherlock", "Sherlock Holmes"),
    ("The Reichenbach Falls", "Reichenbach Falls"), ("  café  ", "CAFÉ"),
    ("Baker-Street", "baker street"),
])
def test_normalise_label_equal(a: str, b: str) -> None:
    assert normalise_label(a) == normalise_label(b)


def scan_all(index: ConceptIndex, norm: str) -> int | None:
    """What ConceptIndex.find decides, the slow way: every concept scored (no blocking keys),
    none above the bar if two of those are distinct, else the best, the lowest id among
    equals."""
    if norm in index.holders:
        hit = index.find(norm)
        return hit[0] if hit else None
    query = entity(0, norm, None, [norm])
    above = []
    for cid in sorted(index.canonical):
        other = index.entity(cid)
        if plausible(query, other) and not distinct(query, other):
            value = score(signals(query, other))
            if value >= index.threshold / 100:
                above.append((value, cid))
    if any(distinct(index.entity(x), index.entity(y)) for _v, x in above for _w, y in above):
        return None
    return min(above, key=lambda hit: (-hit[0], hit[1]))[1] if above else None


def test_lookup_through_blocking_keys_nearly_always_equals_a_scan_of_every_concept() -> None:
    # Near-duplicates, ties, numbers and a key past MAX_BLOCK ("agent", a stopword then):
    # a hit is always one the full scan accepts too, and blocking loses few lookups.
    rng = random.Random(26)
    words = ["agent", "holmes", "sherlock", "watson", "baker", "street", "type", "diabetes",
             "1", "2", "london", "bridge", "moriarty"]
    index = ConceptIndex(threshold=88)
    for n in range(MAX_BLOCK + 50):
        index.add_label(f"agent {n:04d}x", 10_000 + n, f"Agent {n:04d}x")
    lookups = agree = 0
    for n in range(1500):
        label = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.6:  # a typo: one letter changed, dropped or added
            i = rng.randrange(len(label))
            letter = rng.choice("aeioust")
            label = rng.choice([label[:i] + letter + label[i + 1:], label[:i] + label[i + 1:],
                                label[:i] + letter + label[i:]])
        norm = normalise_label(label)
        if not norm:
            continue
        hit = index.find(norm)
        lookups += 1
        agree += (hit[0] if hit else None) == scan_all(index, norm)
        if hit is not None and hit[1] == "fuzzy":
            query = entity(0, norm, None, [norm])
            assert score(signals(query, index.entity(hit[0]))) >= 0.88, label
            assert not distinct(query, index.entity(hit[0])), label
        if hit is None:
            index.add_label(norm, n, label)
        elif rng.random() < 0.5:
            index.add_alias(norm, hit[0], label)
    assert agree / lookups >= 0.97, (agree, lookups)


def test_index_refuses_fuzzy_merge_across_numbers_and_short_labels() -> None:
    index = ConceptIndex(threshold=85)
    index.add_label("type 1 diabetes", 1, "Type 1 diabetes")
    index.add_label("ibm", 2, "IBM")
    assert index.find("type 2 diabetes") is None
    assert index.find("ibn") is None
    assert index.find("type 1 diabetis") == (1, "fuzzy")


def test_index_finds_a_concept_by_any_of_its_spellings() -> None:
    index = ConceptIndex(threshold=92)
    index.add_label("moriarty", 7, "Moriarty")
    assert index.find("moriartie") is None  # too far from the label alone
    index.add_alias("moriarti", 7, "Moriarti")
    # Close to the alias: found, so the result does not depend on which spelling is the label.
    assert index.find("moriartie") == (7, "fuzzy")
    assert index.find("moriarti") == (7, "exact")
    assert index.names[7] == {"moriarty", "moriarti"}
    index.add_alias("moriarti", 7, "MORIARTI")  # same norm: no new name
    assert index.names[7] == {"moriarty", "moriarti"}
    # A title before a full name folds away; before one word it stays ('St Louis').
    index.add_label("dr marie curie", 8, "Dr. Marie Curie")
    assert index.names[8] == {"marie curie"} and index.find("marie curie") == (8, "fuzzy")
    assert index.find("professor moriarty") is None  # for `kg resolve` to judge


def test_index_uses_the_resolvers_signals_in_the_automatic_band_only() -> None:
    # What one fuzzy threshold missed: acronyms, initials, titles, accents; the grey zone
    # ('Boltzmann' inside 'Ludwig Boltzmann') is left to `kg resolve --judge` and review.
    index = ConceptIndex()
    for cid, label in enumerate(["International Business Machines", "Marie Curie",
                                 "Kurt Gödel", "Ludwig Boltzmann"], 1):
        index.add_label(normalise_label(label), cid, label, "thing")
    for spelling, expected in [("IBM", 1), ("M. Curie", 2), ("Dr. Marie Curie", 2),
                               ("Kurt Godel", 3), ("Boltzmann", None), ("Pierre Curie", None)]:
        hit = index.find(normalise_label(spelling), "thing")
        assert (hit[0] if hit else None) == expected, spelling
    assert ConceptIndex(threshold=101).find("ibm") is None  # above 100: equal spellings only


def test_index_leaves_a_short_form_of_two_distinct_names_alone() -> None:
    index = ConceptIndex()
    index.add_label("john smith", 1, "John Smith", "person")
    assert index.find("j smith", "person") == (1, "fuzzy")
    index.add_label("jane smith", 2, "Jane Smith", "person")
    assert index.find("j smith", "person") is None  # John or Jane: neither
    assert index.find("mr john smith", "person") == (1, "fuzzy")


def _plan(items: list[tuple[str, str | None]], renamed: frozenset[int] = frozenset(),
          ) -> dict[str, list[str]]:
    """Label -> aliases after planning the spellings in this order."""
    plan = GroupPlan(ConceptIndex(), {}, 1, 1, renamed)
    for label, kind in items:
        plan.concept(label, normalise_label(label), kind)
    return {row["label"]: sorted(a for (cid, a) in plan.aliases if cid == row["id"])
            for row in plan.new_concepts.values()}


def test_same_name_concepts_of_two_types_get_qualified_labels_in_any_order() -> None:
    spellings = [("paris", "place"), ("Paris", "person"), ("Paris", "place"),
                 ("Paris", "person"), ("Paris, capital of France", "place")]
    outcomes = set()
    for seed in range(6):
        shuffled = spellings[:]
        random.Random(seed).shuffle(shuffled)
        outcomes.add(tuple(sorted((k, tuple(v)) for k, v in _plan(shuffled).items())))
    labels = {label for outcome in outcomes for label, _a in outcome}
    assert {"Paris (place)", "Paris (person)"} <= labels
    assert len({tuple(label for label, _a in o) for o in outcomes}) == 1  # same labels always
    for outcome in outcomes:  # the plain name stays an alias of both
        aliases = dict(outcome)
        assert "Paris" in aliases["Paris (place)"] and "Paris" in aliases["Paris (person)"]
    # An untyped mention of the name goes to one of them, chosen by label, not arrival.
    assert _plan([("Paris", "place"), ("Paris", "person"), ("PARIS", None)])["Paris (person)"] \
        == _plan([("Paris", "person"), ("Paris", "place"), ("PARIS", None)])["Paris (person)"]
    # A label a person chose stays; the newcomer is still qualified.
    assert set(_plan([("Paris", "place"), ("Paris", "person")], frozenset({1}))) == {
        "Paris", "Paris (person)"}


@pytest.mark.parametrize(("better", "worse"), [
    ("Sherlock Holmes", "sherlock holmes"), ("Sherlock Holmes", "Holmes, Sherlock"),
    ("Sherlock Holmes", "Sherlok Holmes"), ("Professor Moriarty", "Professor Moriarti"),
])
def test_label_rank_prefers_the_fuller_spelling(better: str, worse: str) -> None:
    assert label_rank(better) > label_rank(worse)


VOCAB = Vocabulary([TypeInfo(1, "causes", "causal", "directed"),
                    TypeInfo(2, "part_of", "structural", "directed"),
                    TypeInfo(3, "precedes", "temporal", "directed"),
                    TypeInfo(4, "depends_on", "functional", "directed")])


@pytest.mark.parametrize(("raw", "expected"), [
    ("causes", "causes"), ("Causes", "causes"), ("caused", "causes"), ("causing", "causes"),
    ("cause", "causes"), ("is part of", "part_of"), ("Part-Of", "part_of"),
    ("preceeds", "precedes"), ("depend on", "depends_on"), ("loves", None), ("x", None),
])
def test_vocabulary_normalisation(raw: str, expected: str | None) -> None:
    found = VOCAB.normalise(raw)
    assert (found.name if found else None) == expected


TEXT = "Sherlock Holmes lives at Baker Street.\nHe plays the violin."
BOUNDS = bounds_for_budget(2048)


def reply(concepts: list, relationships: list | None = None) -> str:
    return json.dumps({"concepts": concepts, "relationships": relationships or []})


def c(label: str, quote: str) -> dict:
    return {"label": label, "description": "", "search_terms": [], "quote": quote}


def test_find_quote_tolerates_whitespace_and_case_only() -> None:
    assert find_quote("Holmes lives", TEXT) == (9, 21)
    assert find_quote("Baker Street.  He plays", TEXT) is not None
    assert find_quote("baker street", TEXT) == (25, 37)
    assert find_quote("Moriarty lives", TEXT) is None


@pytest.mark.parametrize(("content", "finish", "thinking", "kind"), [
    ("", "stop", "", "empty"),
    ("", "length", "hmm", "thinking_only"),
    ('{"concepts": [', "length", "", "truncated"),
    ("not json at all", "stop", "", "not_json"),
    ('["a list"]', "stop", "", "schema"),
    (reply([]), "stop", "", "empty"),
    (reply([c("A", "nowhere"), c("B", "nope"), c("Sherlock Holmes", "Sherlock Holmes"),
            c("C", "absent")]), "stop", "", "mostly_invalid"),
])
def test_unusable_replies(content: str, finish: str, thinking: str, kind: str) -> None:
    long_text = TEXT + " filler" * 30
    verdict = validate_reply(content, long_text, VOCAB, BOUNDS, finish_reason=finish,
                             thinking=thinking, budget=2048)
    assert not verdict.usable and verdict.kind == kind and verdict.errors


def test_code_fences_and_raw_newlines_are_accepted() -> None:
    content = '```json\n{"concepts": [{"label": "Sherlock\nHolmes", "description": "", ' \
              '"search_terms": [], "quote": "Sherlock Holmes"}], "relationships": []}\n```'
    verdict = validate_reply(content, TEXT, VOCAB, BOUNDS)
    assert verdict.usable and verdict.lenient_json
    assert verdict.concepts[0].label == "Sherlock\nHolmes"


def test_short_text_may_yield_nothing() -> None:
    assert validate_reply(reply([]), "Chapter 2", VOCAB, BOUNDS).usable


def test_schema_bounds_fit_the_budget() -> None:
    for budget in (256, 512, 1024, 2048, 4096, 8192, 32768):
        bounds = bounds_for_budget(budget)
        assert bounds.max_concepts >= 1 and bounds.max_relationships >= 1
        if budget >= 1024:
            assert bounds.worst_case_tokens() <= budget
    schema = output_schema(bounds_for_budget(1024))
    concept = schema["properties"]["concepts"]
    assert concept["maxItems"] == bounds_for_budget(1024).max_concepts
    assert concept["items"]["properties"]["label"]["maxLength"] == 60
    assert "$ref" not in json.dumps(schema) and "$defs" not in schema


def test_grounded_fallbacks_and_confidence_repair() -> None:
    content = reply(
        [c("Sherlock Holmes", "Holmes is a genius"), c("Baker Street", "Baker Street"),
         c("Dracula", "Count Dracula")],
        [{"source": "Sherlock Holmes", "type": "located_in", "target": "Baker Street",
          "confidence": 85, "quote": "made-up sentence"}],
    )
    verdict = validate_reply(content, TEXT, VOCAB_WITH_LOCATION, BOUNDS)
    assert verdict.usable
    assert [x.label for x in verdict.concepts] == ["Sherlock Holmes", "Baker Street"]
    assert TEXT[verdict.concepts[0].start:verdict.concepts[0].end] == "Sherlock Holmes"
    rel = verdict.relationships[0]
    assert rel.confidence == 0.85
    assert TEXT[rel.start:rel.end] == "Sherlock Holmes lives at Baker Street."
    assert verdict.dropped == {"quote_from_label": 1, "label_not_in_text": 1,
                               "quote_from_sentence": 1, "confidence_fixed": 1}


VOCAB_WITH_LOCATION = Vocabulary([TypeInfo(9, "located_in", "meta", "directed")])


def test_fallbacks_are_counted_only_for_items_kept() -> None:
    # A small model repeating one concept three times with an invented quote.
    content = reply([c("Sherlock Holmes", "invented")] * 3)
    verdict = validate_reply(content, TEXT, VOCAB, BOUNDS)
    assert verdict.usable and len(verdict.concepts) == 1
    assert verdict.dropped == {"quote_from_label": 1, "duplicate": 2}


@pytest.mark.parametrize("threshold", [92, 93, 95])
def test_prefilter_decides_exactly_as_scoring_whole_blocks(threshold: int) -> None:
    # Typos, transliterations, acronyms, initials, titles, numbers and word order: the
    # prefilter only skips what cannot reach the bar, so both indexes answer alike.
    rng = random.Random(threshold)
    words = ["marie", "curie", "john", "smith", "jane", "international", "business",
             "machines", "ibm", "m", "j", "dr", "schroeder", "schroder", "fyodor", "fedor",
             "type", "1", "2", "thermodynamics", "law", "of", "sherlock", "holmes"]
    fast = ConceptIndex(threshold=threshold)
    slow = ConceptIndex(threshold=threshold, prefilter=False)
    lookups = fuzzy = 0
    for n in range(2500):
        label = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.5:
            i = rng.randrange(len(label))
            letter = rng.choice("aeiostr")
            label = rng.choice([label[:i] + letter + label[i + 1:], label[:i] + label[i + 1:],
                                label[:i] + letter + label[i:],
                                label[:i] + label[i + 1:i + 2] + label[i:i + 1] + label[i + 2:]])
        norm = normalise_label(label)
        if not norm:
            continue
        type_ = rng.choice([None, None, "person", "organisation"])
        hit = fast.find(norm, type_)
        assert hit == slow.find(norm, type_), label
        lookups += 1
        fuzzy += hit is not None and hit[1] == "fuzzy"
        for index in (fast, slow):
            if hit is None:
                index.add_label(norm, n, label, type_)
            else:
                index.add_alias(norm, hit[0], label)
    assert lookups > 2000 and fuzzy > 100, (lookups, fuzzy)
