"""Grounded decoding: candidate spans, sentence quotes, the per-chunk schema and its fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

from kg.extraction.grounding import (
    MAX_QUOTES,
    candidates,
    cued_relations,
    grounded_schema,
    quotes,
)
from kg.extraction.schema import bounds_for_budget, output_schema
from tests.fakes import FakeOllama, FakeVLLM, graph_responder
from tests.test_ingest import rows, use_server

TEXT = ("Ada Lovelace wrote the first published algorithm for the Analytical Engine of Charles "
        "Babbage. The Sun heats oceans and lakes, which causes evaporation.\n\nWater vapour "
        "rises into the atmosphere.")


def test_candidates_are_verbatim_spans_with_offsets_names_first() -> None:
    spans = candidates(TEXT)
    assert all(TEXT[s.start:s.end] == s.text for s in spans)
    texts = [s.text for s in spans]
    assert texts[:3] == ["Ada Lovelace", "Analytical Engine of Charles Babbage", "Sun"]
    assert {"first published algorithm", "evaporation", "Water vapour", "atmosphere"} <= set(
        texts)
    # stopwords and verbs in the past tense never open a candidate
    assert not {"the", "which", "wrote", "into"} & {t.casefold() for t in texts}
    assert len({t.casefold() for t in texts}) == len(texts)  # deduplicated
    assert len(candidates(TEXT, limit=4)) == 4


def test_quotes_are_sentences_cut_at_clauses_when_long() -> None:
    found = quotes(TEXT)
    assert [q.text for q in found] == [
        "Ada Lovelace wrote the first published algorithm for the Analytical Engine of "
        "Charles Babbage.", "The Sun heats oceans and lakes, which causes evaporation.",
        "Water vapour rises into the atmosphere."]
    long = ", ".join(["the river carries silt to the delta"] * 12) + "."
    pieces = quotes(long, max_len=160)
    assert len(pieces) > 1 and all(len(p.text) <= 160 for p in pieces)
    assert all(long[p.start:p.end] == p.text for p in pieces)


def test_quotes_avoid_characters_grammar_converters_break_on() -> None:
    text = 'The novel "Glass Harbour" was written by Ines Moll. A path C:\\temp here.'
    found = quotes(text)
    assert [q.text for q in found] == ["The novel", "Glass Harbour", "was written by Ines Moll.",
                                       "A path C:", "temp here."]
    assert all(text[q.start:q.end] == q.text for q in found)


def test_grounded_schema_enums_and_size_fallback() -> None:
    base = output_schema(bounds_for_budget(1024))
    grounded = grounded_schema(base, TEXT)
    assert grounded.grounded and grounded.labels == len(candidates(TEXT))
    concept = grounded.schema["properties"]["concepts"]["items"]["properties"]
    relation = grounded.schema["properties"]["relationships"]["items"]["properties"]
    assert concept["label"]["enum"] == relation["source"]["enum"] == relation["target"]["enum"]
    assert concept["quote"]["enum"] == [q.text for q in quotes(TEXT)]
    assert "enum" not in base["properties"]["concepts"]["items"]["properties"]["label"]
    # a chunk of nothing but punctuation offers no span: today's free text
    assert not grounded_schema(base, "-- ** --").grounded
    # more sentences than an enum may list, or more values than a server takes: free text
    many = " ".join(f"Name{i} met Other{i}." for i in range(MAX_QUOTES + 1))
    assert grounded_schema(base, many).schema is base
    assert not grounded_schema(base, TEXT, max_values=5).grounded
    assert not grounded_schema(base, TEXT, max_chars=100).grounded


def test_ingest_sends_grounded_schemas_and_counts_a_refused_one(kg, db, tmp_path: Path) -> None:
    doc = tmp_path / "story.md"
    doc.write_text("Sherlock Holmes lives at Baker Street with Doctor Watson. Mrs Hudson "
                   "keeps the house in London.\n", encoding="utf-8")
    with FakeVLLM(responder=graph_responder()) as server:
        # This grammar backend takes the ontology's 39 types, not the chunk's spans as well.
        server.max_enum_values = 40
        use_server(kg, server.base_url, "vllm", "Qwen/Qwen3-8B")
        result = kg("ingest", str(doc), "--json")
        assert result.exit_code == 0, result.stderr
        bodies = server.chat_bodies()
    schemas = [b["response_format"]["json_schema"]["schema"] for b in bodies]
    assert "enum" in schemas[0]["properties"]["concepts"]["items"]["properties"]["label"]
    assert "enum" not in schemas[1]["properties"]["concepts"]["items"]["properties"]["label"]
    assert rows(db, "SELECT attempt, status, grounding FROM calls ORDER BY attempt") == [
        (1, "error", "on"), (2, "ok", "fallback")]
    assert json.loads(result.stdout)["status"] == "completed"


def test_grounding_off_sends_todays_schema(kg, db, tmp_path: Path) -> None:
    doc = tmp_path / "story.md"
    doc.write_text("Sherlock Holmes lives at Baker Street.\n", encoding="utf-8")
    with FakeOllama(responder=graph_responder()) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--grounding", "off")
        assert kg("ingest", str(doc)).exit_code == 0
        body = server.chat_bodies()[0]
    label = body["format"]["properties"]["concepts"]["items"]["properties"]["label"]
    assert "enum" not in label and label["maxLength"] == 60
    assert rows(db, "SELECT grounding FROM calls") == [("off",)]


def test_candidates_keep_initials_connectors_and_place_pairs() -> None:
    text = ("Aaron S. Daggett, born in Greene, Maine, studied at the Accademia di Architettura "
            "di Mendrisio.")
    texts = [s.text for s in candidates(text)]
    assert {"Aaron S. Daggett", "Greene, Maine", "Accademia di Architettura di Mendrisio"} <= set(
        texts)


def test_triples_rows_go_sentence_by_sentence_without_self_loops() -> None:
    from kg.extraction.schema import triples_schema

    bounds = bounds_for_budget(1024)
    text = "Ada Lovelace wrote notes on the Analytical Engine. She was born in London in 1815."
    node = grounded_schema(triples_schema(bounds, ("author", "birthPlace")), text).schema[
        "properties"]["triples"]
    sentences = quotes(text)
    assert node["minItems"] == node["maxItems"] == len(node["prefixItems"]) == 2 * len(sentences)
    for i, row in enumerate(node["prefixItems"]):
        sentence = sentences[i // 2].text
        for branch in row["anyOf"]:
            props = branch["properties"]
            assert props["quote"]["enum"] == [sentence]
            (subject,) = props["subject"]["enum"]
            objects = props["object"]["enum"]
            assert objects and all(o in sentence for o in objects)
            # no self-loop, nor a piece of the subject as its object
            assert not any(o.casefold() in subject.casefold()
                           or subject.casefold() in o.casefold() for o in objects)
            # the second sentence names a birth: its first row offers the relation it
            # echoes, its second the rest; the first sentence echoes none and offers all
            assert props["relation"]["enum"] == [["author", "birthPlace"],
                                                 ["author", "birthPlace"],
                                                 ["birthPlace"], ["author"]][i]


def test_cued_relations_are_those_a_sentence_echoes_best_first() -> None:
    relations = ["director", "location", "birthDate", "birthPlace", "academicStaffSize"]
    assert cued_relations("The institute is located in Soldevanahalli.", relations) == [
        "location"]
    # "born" is the verb of "birth"; both birth relations fit, in the ontology's order
    assert cued_relations("Aaron Boogaard was born in Regina.", relations) == [
        "birthDate", "birthPlace"]
    # the relation whose every word is echoed comes before one echoed in part
    assert cued_relations("It has 100 academic staff and a staff director.", relations) == [
        "director", "academicStaffSize"]
    assert cued_relations("Nothing here matches.", relations) == []


def test_a_sentence_echoing_several_relations_offers_them_in_every_row() -> None:
    from kg.extraction.schema import triples_schema

    text = "Ada Lovelace was born in London and died in Marylebone."
    schema = triples_schema(bounds_for_budget(1024), ("author", "deathPlace", "birthPlace"))
    rows = grounded_schema(schema, text).schema["properties"]["triples"]["prefixItems"]
    assert [{tuple(b["properties"]["relation"]["enum"]) for b in row["anyOf"]}
            for row in rows] == [{("deathPlace", "birthPlace")}] * 2  # ontology order


def test_an_open_ontology_keeps_a_free_relation_in_every_row() -> None:
    from kg.extraction.schema import triples_schema

    text = "Ada Lovelace wrote notes on the Analytical Engine. She was born in London in 1815."
    node = grounded_schema(triples_schema(bounds_for_budget(1024)), text).schema[
        "properties"]["triples"]
    for row in node["prefixItems"]:
        assert all("enum" not in b["properties"]["relation"] for b in row["anyOf"])


def test_free_triples_rows_offer_every_relation() -> None:
    from kg.extraction.schema import triples_schema

    # Longer chunks have one free row shape, not one per sentence: no sentence to echo.
    schema = triples_schema(bounds_for_budget(1024), ("director", "location"))
    long_text = " ".join(f"Sentence {i} is located in Place{i}." for i in range(8))
    row = grounded_schema(schema, long_text).schema["properties"]["triples"]["items"]
    relations = {tuple(b["properties"]["relation"]["enum"]) for b in row.get("anyOf", [row])}
    assert relations == {("director", "location")}


def test_triples_rows_pair_each_relation_with_ends_its_range_takes() -> None:
    from kg.extraction.schema import triples_schema

    # The sentence echoes no relation: every one is offered.
    text = "Aaron Boogaard came to Regina with his hockey team in 1986."

    def offered(kinds: dict[str, str | None], grounded: bool = True) -> dict[str, set[str]]:
        schema = triples_schema(bounds_for_budget(1024), tuple(kinds))
        rows = grounded_schema(schema, text, kinds=kinds if grounded else None).schema[
            "properties"]["triples"]["prefixItems"]
        found: dict[str, set[str]] = {}
        for branch in (b for row in rows for b in row["anyOf"]):
            props = branch["properties"]
            for name in props["relation"]["enum"]:
                found.setdefault(name, set()).update(props["object"]["enum"])
        return found

    typed = offered({"birthYear": "year", "birthPlace": "concept", "team": "concept"})
    assert typed["birthYear"] == {"1986"}  # a year is a span holding a digit
    assert "Regina" in typed["birthPlace"]  # concept ranges only: a name
    assert all(o[0].isupper() for o in typed["birthPlace"] | typed["team"])
    # an open (or string) range among them: any span but a bare value
    mixed = offered({"birthYear": "year", "birthPlace": "concept", "nickname": "string",
                     "partner": None})
    assert "hockey team" in mixed["partner"] and "1986" not in mixed["partner"]
    assert mixed["birthYear"] == {"1986"}
    # without kinds every relation is offered with every object, as before
    plain = offered({"birthYear": "year", "birthPlace": "concept"}, grounded=False)
    assert plain["birthYear"] == plain["birthPlace"] and {"1986", "hockey team"} <= plain[
        "birthYear"]


def test_a_relation_whose_range_no_span_fits_is_not_offered() -> None:
    from kg.extraction.schema import triples_schema

    text = "Ada Lovelace met Charles Babbage in London."
    schema = triples_schema(bounds_for_budget(1024), ("birthYear", "knows"))
    rows = grounded_schema(schema, text, kinds={"birthYear": "year", "knows": "concept"}
                           ).schema["properties"]["triples"]["prefixItems"]
    assert {name for row in rows for b in row["anyOf"]
            for name in b["properties"]["relation"]["enum"]} == {"knows"}


def test_a_sentences_two_rows_take_a_subjects_objects_in_turn() -> None:
    from kg.extraction.schema import triples_schema

    text = "Alan Bean flew on Apollo 12 with Pete Conrad."
    schema = triples_schema(bounds_for_budget(1024), ("crewMember", "mission"))
    first, second = grounded_schema(schema, text, kinds={
        "crewMember": "concept", "mission": "concept"}).schema["properties"]["triples"][
        "prefixItems"]

    def objects(row: dict, subject: str) -> list[str]:
        (branch,) = [b for b in row["anyOf"] if b["properties"]["subject"]["enum"] == [subject]]
        return branch["properties"]["object"]["enum"]

    # the first row cannot take the last object, the second not the first: no pair twice
    assert "Apollo 12" in objects(first, "Alan Bean")
    assert "Pete Conrad" not in objects(first, "Alan Bean")
    assert objects(second, "Alan Bean") == ["Pete Conrad", "Conrad"]  # one object, two spans
    assert set(objects(second, "Pete Conrad")) == {"Apollo", "Apollo 12"}


def test_a_sentences_first_row_is_about_one_of_the_chunks_first_names() -> None:
    from kg.extraction.schema import triples_schema

    text = ("HBO, a channel, showed it. Death Farm is a film by Tom Simon, with music by "
            "Jamie Lawrence.")
    schema = triples_schema(bounds_for_budget(1024), ("director", "musicComposer"))
    kinds = {"director": "concept", "musicComposer": "concept"}
    rows = grounded_schema(schema, text, kinds=kinds).schema["properties"]["triples"][
        "prefixItems"]

    def subjects(row: dict) -> set[str]:
        return {b["properties"]["subject"]["enum"][0] for b in row["anyOf"]}

    # first rows: the chunk's first two names, apart from each other; second rows: any name
    assert subjects(rows[2]) == {"HBO", "Death Farm"}
    assert subjects(rows[0]) <= {"HBO", "Death Farm"}
    assert {"Tom Simon", "Jamie Lawrence"} <= subjects(rows[3])
    # without ranges (the default ontology) the first rows are as before
    plain = grounded_schema(schema, text).schema["properties"]["triples"]["prefixItems"]
    assert "Tom Simon" in subjects(plain[2])


def test_a_surname_cut_off_a_full_name_is_no_subject() -> None:
    from kg.extraction.schema import triples_schema

    text = "John Madin designed the building in the City of Lahore."
    rows = grounded_schema(triples_schema(bounds_for_budget(1024), ("architect",)), text,
                           kinds={"architect": "concept"}).schema["properties"]["triples"][
        "prefixItems"]
    subjects = {b["properties"]["subject"]["enum"][0] for row in rows for b in row["anyOf"]}
    assert "John Madin" in subjects and "Madin" not in subjects
    assert "Lahore" in subjects  # a name after a connector is a name of its own


def test_vocabulary_kinds_name_each_relations_range_and_nothing_without_ranges() -> None:
    from kg.extraction.vocabulary import TypeInfo, Vocabulary

    typed = Vocabulary([TypeInfo(1, "birthYear", "c", "forward", "Person", "year"),
                        TypeInfo(2, "birthPlace", "c", "forward", "Person", "Place"),
                        TypeInfo(3, "related", "c", "forward")], concept_types=["Person", "Place"])
    assert typed.kinds() == {"birthYear": "year", "birthPlace": "concept", "related": None}
    # no relation with a range (the default ontology): grounding pairs nothing by range
    assert Vocabulary([TypeInfo(1, "related", "c", "forward")]).kinds() == {}


def test_without_ranges_a_sentences_rows_offer_the_same_ends() -> None:
    from kg.extraction.schema import triples_schema

    # The default ontology has no ranges: no turns, no surname rule (corpus untyped F1 fell).
    text = "Alan Bean flew on Apollo 12 with Pete Conrad."
    first, second = grounded_schema(triples_schema(bounds_for_budget(1024), ("related",)),
                                    text).schema["properties"]["triples"]["prefixItems"]
    assert first == second
    assert "Bean" in {b["properties"]["subject"]["enum"][0] for b in first["anyOf"]}
