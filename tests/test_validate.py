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
    # Bayer's own type is not in the ontology: sold_by's range types it (issue 20: inferred)
    assert [(c.label, c.type) for c in verdict.concepts] == [
        ("Aspirin", "drug"), ("headache", "condition"), ("Bayer", "company"),
        ("migraine", "condition")]
    assert verdict.dropped["type_inferred"] == 1
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


# -- issue 20: names as spelled, types inferred, unlisted ends, literals ----------------------

BIO_TEXT = "Ada Lovelace was born in London in 1815. She worked with Charles Babbage."
BIO = Vocabulary([TypeInfo(1, "birthPlace", "general", "directed", "Person", "City"),
                  TypeInfo(2, "birthYear", "general", "directed", "Person", "xsd:gYear"),
                  TypeInfo(3, "Work_With", "general", "symmetric", "Person", "Person"),
                  TypeInfo(4, "capital", "general", "directed", "City", "City")],
                 concept_types=["Person", "City"], ontology="bio", mode="strict")


def test_relation_names_come_back_as_the_ontology_spells_them() -> None:
    content = reply([concept("Ada Lovelace", "person"), concept("London", "CITY")],
                    [rel("Ada Lovelace", "birth_place", "London", "born in London")])
    verdict = validate_reply(content, BIO_TEXT, BIO, BOUNDS)
    assert [(c.label, c.type) for c in verdict.concepts] == [
        ("Ada Lovelace", "Person"), ("London", "City")]
    assert [r.type.name for r in verdict.relationships] == ["birthPlace"]
    assert BIO.normalise("work with").name == "Work_With"  # type: ignore[union-attr]


def test_untyped_and_unlisted_ends_take_the_relation_types() -> None:
    content = reply([concept("Ada Lovelace", None)],
                    [rel("Ada Lovelace", "birthPlace", "London", "born in London"),
                     rel("Ada Lovelace", "Work_With", "Charles Babbage", "worked with")])
    verdict = validate_reply(content, BIO_TEXT, BIO, BOUNDS, resolve_ends=True)
    assert {c.label: c.type for c in verdict.concepts} == {
        "Ada Lovelace": "Person", "London": "City", "Charles Babbage": "Person"}
    assert len(verdict.relationships) == 2
    assert verdict.dropped["type_inferred"] == 3 and verdict.dropped["end_as_concept"] == 2


def test_majority_overrides_a_first_guess_and_only_a_stated_conflict_drops() -> None:
    # London stated Person, but two relations say City: the majority wins (overridden).
    content = reply([concept("Ada Lovelace", "Person"), concept("London", "Person")],
                    [rel("Ada Lovelace", "birthPlace", "London", "born in London"),
                     rel("London", "capital", "London", "born in London"),  # self-loop
                     rel("Ada Lovelace", "capital", "London", "born in London")])
    verdict = validate_reply(content, BIO_TEXT, BIO, BOUNDS)
    assert {c.label: c.type for c in verdict.concepts} == {
        "Ada Lovelace": "Person", "London": "City"}
    assert verdict.dropped["type_overridden"] == 1 and verdict.dropped["self_loop"] == 1
    # Ada was stated Person and stays Person: `capital` wants a City there, a real conflict.
    assert [r.type.name for r in verdict.relationships] == ["birthPlace"]
    assert verdict.dropped["domain_range"] == 1


def test_an_inferred_type_is_a_preference_not_a_veto() -> None:
    # Untyped London is a City by birthPlace, yet `Work_With` (Person-Person) may use it:
    # only a type the model stated can conflict (Text2KGBench uses relations off-domain).
    content = reply([], [rel("Ada Lovelace", "birthPlace", "London", "born in London"),
                         rel("London", "Work_With", "Charles Babbage", "worked with")])
    verdict = validate_reply(content, BIO_TEXT, BIO, BOUNDS, resolve_ends=True)
    assert len(verdict.relationships) == 2 and verdict.dropped["domain_range"] == 0


def test_literal_ranges_make_verbatim_literals_and_invented_values_are_dropped() -> None:
    content = reply([concept("Ada Lovelace", "Person")],
                    [rel("Ada Lovelace", "birthYear", "1815", "born in London in 1815"),
                     rel("Ada Lovelace", "birthYear", "1816", "born in London in 1815")])
    verdict = validate_reply(content, BIO_TEXT, BIO, BOUNDS)
    assert verdict.usable and verdict.relationships == []
    [literal] = verdict.literals
    assert (literal.subject, literal.type.name, literal.value, literal.normalised,
            literal.datatype) == ("Ada Lovelace", "birthYear", "1815", "1815", "year")
    assert BIO_TEXT[literal.value_start:literal.value_end] == "1815"
    assert literal.quote == "born in London in 1815"
    assert verdict.dropped["literal_not_in_text"] == 1
    assert any("'1816' is not in the text" in e for e in verdict.errors)


def test_a_literal_value_is_narrowed_to_the_value_inside_a_longer_span() -> None:
    # Grounded ends are phrases of the text: "in 1815" holds the year, still verbatim.
    content = reply([concept("Ada Lovelace", "Person")],
                    [rel("Ada Lovelace", "birthYear", "in 1815", "born in London in 1815")])
    verdict = validate_reply(content, BIO_TEXT, BIO, BOUNDS)
    [literal] = verdict.literals
    assert (literal.value, literal.normalised) == ("1815", "1815")
    assert BIO_TEXT[literal.value_start:literal.value_end] == "1815"
    # a span without a value of its kind is no year: dropped and counted, not repaired
    content = reply([concept("Ada Lovelace", "Person")],
                    [rel("Ada Lovelace", "birthYear", "London", "born in London in 1815")])
    verdict = validate_reply(content, BIO_TEXT, BIO, BOUNDS)
    assert verdict.usable and verdict.literals == []
    assert verdict.dropped["literal_wrong_kind"] == 1


def test_a_number_whose_digits_form_no_plain_value_is_kept_as_written() -> None:
    text = "The book has the ISBN 1-4165-2060-0 and 320 pages."
    book = Vocabulary([TypeInfo(1, "isbnNumber", "general", "directed", None, "number"),
                       TypeInfo(2, "numberOfPages", "general", "directed", None, "number")],
                      ontology="books", mode="strict")
    content = reply([concept("The book", None)],
                    [rel("The book", "isbnNumber", "ISBN 1-4165-2060-0", "has the ISBN"),
                     rel("The book", "numberOfPages", "320 pages", "320 pages")])
    verdict = validate_reply(content, text, book, BOUNDS)
    assert [lit.value for lit in verdict.literals] == ["ISBN 1-4165-2060-0", "320"]


def test_literal_normal_forms() -> None:
    from kg.extraction.literals import normalise_literal
    assert normalise_literal("1,250", "number") == "1250"
    assert normalise_literal("3.5", "number") == "3.5"
    assert normalise_literal("March 3rd, 1999", "date") == "1999-03-03"
    assert normalise_literal("  New   York ", "string") == "New York"


SPACE_TEXT = ("The 1000 Piazzia has an elevation of 610.0 metres. In 1908 Henri Dor saw it from "
              "Bungie's tower near the AMC Ambassador. It was found after the discovered 103 "
              "by a V8 engine.")
SPACE = Vocabulary([TypeInfo(1, "seenBy", "general", "directed", "Body", "Person"),
                    TypeInfo(2, "near", "general", "directed", "Body", "Place"),
                    TypeInfo(3, "elevation", "general", "directed", "Body", "number"),
                    TypeInfo(4, "discovered", "general", "directed", "Body", "date")],
                   concept_types=["Body", "Person", "Place"], ontology="space", mode="strict")


def test_a_piece_of_a_name_stands_for_the_whole_name() -> None:
    from kg.extraction.validate import whole_name
    assert whole_name("Piazzia", SPACE_TEXT) == "1000 Piazzia"  # a number opening the name
    assert whole_name("Ambassador", SPACE_TEXT) == "AMC Ambassador"  # a surname-like piece
    assert whole_name("Henri Dor", SPACE_TEXT) == "Henri Dor"  # "in 1908" is no part of it
    assert whole_name("Dodge", "It is a 1955 Dodge.") == "Dodge"  # nor "a 1955"
    assert whole_name("Apollo 8", "NASA's Apollo 8 flew.") == "Apollo 8"  # another name's
    assert whole_name("Esperanto", "the World Esperanto Medical Association") == "Esperanto"
    assert whole_name("University", "at the University of New South Wales.") == (
        "University of New South Wales")
    assert whole_name("Lahore", "where the City of Lahore is") == "Lahore"  # only rightwards
    assert whole_name("Madrid", "The Madrid–Barajas Airport is") == "Madrid–Barajas Airport"
    assert whole_name("Esperanto", "an Esperanto-Swahili dictionary") == "Esperanto"
    # a mention standing alone elsewhere keeps the piece as written
    assert whole_name("Piazzia", "The 1000 Piazzia is big. Piazzia is far.") == "Piazzia"


def test_ends_are_whole_names_and_possessors_with_ranges_only() -> None:
    quote = "In 1908 Henri Dor saw it from Bungie's tower near the AMC Ambassador."
    content = reply([], [rel("Piazzia", "seenBy", "Henri Dor", quote),
                         rel("Bungie's", "near", "Ambassador", quote)])
    verdict = validate_reply(content, SPACE_TEXT, SPACE, BOUNDS, resolve_ends=True)
    assert {(r.source, r.type.name, r.target) for r in verdict.relationships} == {
        ("1000 Piazzia", "seenBy", "Henri Dor"), ("Bungie", "near", "AMC Ambassador")}
    assert verdict.dropped["end_widened"] == 2 and verdict.dropped["possessive_cut"] == 1
    # a concept the reply lists keeps its label: its relationships still meet it
    listed = [concept("Piazzia", "Body"), concept("Henri Dor", "Person")]
    verdict = validate_reply(reply(listed, [rel("Piazzia", "seenBy", "Henri Dor", quote)]),
                             SPACE_TEXT, SPACE, BOUNDS, resolve_ends=False)
    assert [(r.source, r.target) for r in verdict.relationships] == [("Piazzia", "Henri Dor")]
    # an ontology without ranges (the default one) reads the ends as written
    plain = Vocabulary([TypeInfo(1, "seenBy", "general", "directed"),
                        TypeInfo(2, "near", "general", "directed")], ontology="plain")
    verdict = validate_reply(content, SPACE_TEXT, plain, BOUNDS, resolve_ends=True)
    assert {(r.source, r.target) for r in verdict.relationships} == {
        ("Piazzia", "Henri Dor"), ("Bungie's", "Ambassador")}
    assert verdict.dropped["end_widened"] == 0 and verdict.dropped["possessive_cut"] == 0


def test_a_value_is_a_whole_number_a_date_has_a_year_a_name_is_no_number() -> None:
    content = reply([], [rel("1000 Piazzia", "elevation", "0 metres", "610.0 metres"),
                         rel("1000 Piazzia", "discovered", "discovered 103",
                             "found after the discovered 103"),
                         rel("1000 Piazzia", "elevation", "V8 engine", "by a V8 engine")])
    verdict = validate_reply(content, SPACE_TEXT, SPACE, BOUNDS, resolve_ends=True)
    assert [(lit.value, lit.normalised) for lit in verdict.literals] == [("610.0", "610")]
    # "103" is no date (no year), "V8" no number (its digit is part of a word)
    assert verdict.dropped["literal_wrong_kind"] == 2


def test_ends_that_name_no_thing_are_dropped_with_ranges_only() -> None:
    text = ("Penned by Dave Mustaine, the song was released on 20 September 1978. Its runway "
            "length is short. Alfred Worden flew to Mars. Theresa May met August Strindberg.")
    vocab = Vocabulary([TypeInfo(1, "writer", "general", "directed", "Work", "Person"),
                        TypeInfo(2, "runwayLength", "general", "directed", "Work", "number"),
                        TypeInfo(3, "followedBy", "general", "directed", "Work", "Work")],
                       concept_types=["Work", "Person"], ontology="songs", mode="strict")
    quote = "Penned by Dave Mustaine, the song was released on 20 September 1978."
    content = reply([], [rel("Penned", "writer", "Dave Mustaine", quote),  # a participle
                         rel("Dave Mustaine", "followedBy", "released", quote),  # a verb
                         rel("Dave Mustaine", "followedBy", "20 September 1978", quote),  # a date
                         rel("Dave Mustaine", "followedBy", "runway length", quote),  # a relation
                         rel("Alfred Worden", "followedBy", "Mars", "Alfred Worden flew to Mars."),
                         # a month's name inside a person's is no date
                         rel("Theresa May", "followedBy", "August Strindberg",
                             "Theresa May met August Strindberg.")])
    verdict = validate_reply(content, text, vocab, BOUNDS, resolve_ends=True)
    assert [(r.source, r.target) for r in verdict.relationships] == [
        ("Alfred Worden", "Mars"), ("Theresa May", "August Strindberg")]
    assert (verdict.dropped["end_is_verb"], verdict.dropped["end_is_date"],
            verdict.dropped["end_is_relation"]) == (2, 1, 1)
    assert verdict.usable
    # an ontology without ranges keeps them (its relationships are judged as before)
    plain = Vocabulary([TypeInfo(1, "writer", "general", "directed"),
                        TypeInfo(3, "followedBy", "general", "directed")], ontology="plain")
    verdict = validate_reply(content, text, plain, BOUNDS, resolve_ends=True)
    assert verdict.dropped["end_is_verb"] == 0 and len(verdict.relationships) == 6
