"""Candidate spans on layout lines (titles, bullets, box labels read off a slide): names are
offered whole; prose sentences keep the noun-phrase pieces they always had."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from kg.extraction import ocr
from kg.extraction.grounding import candidates, grounded_schema, quotes
from kg.extraction.schema import bounds_for_budget, triples_schema

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SLIDE = "Alan Turing on Hiring Plan\n- Solar Battery feeds Hiring Plan\n- Heat Pump uses Power Grid"


def texts(text: str) -> list[str]:
    return [s.text for s in candidates(text)]


def test_a_slides_lines_offer_each_name_whole() -> None:
    offered = texts(SLIDE)
    assert {"Alan Turing", "Hiring Plan", "Solar Battery", "Heat Pump", "Power Grid"} <= set(
        offered)
    # no surname or head noun cut off a name, no verb joined to one
    assert not {"Turing", "Plan", "Battery", "feeds Hiring Plan", "feeds Hiring",
                "uses Power Grid", "Grid"} & set(offered)
    assert all(SLIDE[s.start:s.end] == s.text for s in candidates(SLIDE))


def test_labels_on_lines_of_their_own_are_not_one_name() -> None:
    # OCR writes boxes side by side as lines of their own: each label is a candidate.
    assert texts("Test Suite\nCustomer Portal\nReactor Core") == [
        "Test Suite", "Customer Portal", "Reactor Core"]


def test_prose_keeps_surnames_and_head_nouns() -> None:
    sentence = "Alan Bean flew on Apollo 12 with Pete Conrad."
    assert {"Conrad", "Bean"} <= set(texts(sentence))
    # a heading above a paragraph: the chunk holds a sentence, so it is prose throughout
    assert {"Bean", "Conrad"} <= set(texts("Moon Landings\n\n" + sentence))


def test_a_sentence_or_a_long_line_makes_prose() -> None:
    # sentence-ending punctuation, or more words than a title or bullet has (wrapped prose)
    assert "Plan" in texts("Grace Hopper on Hiring Plan\n" + "and a line of words " * 3)
    assert "Plan" in texts("Solar Battery feeds Hiring Plan.")
    wrapped = "the committee said that the new report from Grace Hopper and the Hiring Plan\n"
    assert {"Plan", "Hopper"} <= set(texts(wrapped + "were both late."))


def test_a_prose_schema_is_what_it_was_without_layout_lines() -> None:
    # One line break inside a sentence does not make layout: the same schema either way.
    schema = triples_schema(bounds_for_budget(1024), ("related",))
    one = "Pete Conrad flew Apollo 12 with Alan Bean and Richard Gordon in November."
    two = one.replace(" with ", "\nwith ")
    first = grounded_schema(schema, one).schema["properties"]["triples"]
    second = grounded_schema(schema, two).schema["properties"]["triples"]
    assert first["prefixItems"][0]["anyOf"][0]["properties"]["object"] == (
        second["prefixItems"][0]["anyOf"][0]["properties"]["object"])
    assert "Conrad" in texts(two)


def test_a_diagram_read_by_tesseract_offers_each_box_label() -> None:
    labels = ["Power Grid", "Heat Pump", "Supply Chain"]
    image = Image.new("RGB", (1280, 400), "white")
    draw = ImageDraw.Draw(image)
    for i, label in enumerate(labels):
        x = 60 + i * 410
        draw.rectangle((x, 120, x + 330, 240), outline="black", width=4)
        draw.text((x + 20, 160), label, fill="black", font=ImageFont.truetype(FONT, 30))
    page = ocr.ocr_image(image, 1)
    assert texts(page.text) == labels


def test_each_line_of_layout_is_a_quote_with_rows_of_its_own() -> None:
    from kg.extraction.chunking import sentence_spans

    labels = "Test Suite\nCustomer Portal\nReactor Core"
    # the segmenter alone reads three box labels as one sentence: two rows for three names
    assert [s.text for s in quotes(labels)] == labels.split("\n")
    rows = grounded_schema(triples_schema(bounds_for_budget(1024), ("related",)), labels
                           ).schema["properties"]["triples"]["prefixItems"]
    assert len(rows) == 6
    prose = "Test Suite runs first.\nCustomer Portal and Reactor Core follow"
    assert sentence_spans(prose) == [(0, 22), (23, len(prose))]  # the segmenter's sentences

