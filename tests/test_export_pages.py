"""Exports carry where a quote is on the image: page and box for OCR text (issue 25), null for
text documents; both databases, a real Tesseract reading an image drawn here."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image
from sqlalchemy import event

from kg.db import Database
from kg.export import export_graph
from kg.export.source import GraphSource, snapshot
from tests.fakes import FakeModel, FakeOllama
from tests.test_ingest import use_server
from tests.test_ocr import SLIDE, ollama, save, slide  # noqa: F401  (the fixture)
from tests.test_vision import VISION_MODEL, answer, vision_profile

SIZE = (1280, 720)


def _jsonl(db: Database) -> list[dict]:
    out = io.StringIO()
    export_graph(db, "jsonl", stream=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _ingest(kg, ollama, folder: Path) -> None:  # noqa: F811
    use_server(kg, ollama.url)
    result = kg("ingest", str(folder), "--json")
    assert result.exit_code == 0, result.stderr


def test_jsonl_evidence_has_page_and_box_on_the_image(kg, db: Database, ollama,  # noqa: F811
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    image = slide(SLIDE, size=SIZE)
    save(image, folder / "slide.png")
    (folder / "notes.md").write_text("Ada Lovelace met Charles Babbage in London.\n",
                                     encoding="utf-8")
    _ingest(kg, ollama, folder)
    lines = _jsonl(db)
    evidence = [e for line in lines for e in line["evidence"]]
    on_image = [e for e in evidence if e["document"].endswith("slide.png")]
    in_text = [e for e in evidence if e["document"].endswith("notes.md")]
    assert on_image and in_text
    for e in in_text:  # a text document has no page
        assert e["page"] is None and e["box"] is None
    gray = image.convert("L")
    for e in on_image:
        assert e["page"] == 1
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1]
        # The box holds ink: the quote's words were drawn there.
        assert _ink(gray, (x0, y0, x1, y1))
    # "Pierre Curie" was drawn on the second line (y 140..185), right of "Paris".
    [pierre] = [line for line in lines if line["kind"] == "concept"
                and line["label"] == "Pierre Curie"]
    [quote] = pierre["evidence"]
    x0, y0, x1, y1 = quote["box"]
    assert 130 <= y0 <= 160 and 165 <= y1 <= 195 and 400 < x0 < x1 < 900
    # The box covers the whole quoted phrase: ink just inside both edges, none after it
    # (the phrase ends the line).
    assert _ink(gray, (x0, y0, x0 + 8, y1)) and _ink(gray, (x1 - 8, y0, x1, y1))
    assert not _ink(gray, (x1 + 2, y0, x1 + 40, y1))
    # Relationships' evidence carries them too.
    edges = [e for line in lines if line["kind"] == "relationship" for e in line["evidence"]
             if e["document"].endswith("slide.png")]
    assert edges and all(e["page"] == 1 and e["box"] for e in edges)


def _ink(gray: Image.Image, box: tuple[int, int, int, int]) -> bool:
    return gray.crop(box).getextrema()[0] < 100


def test_source_maps_are_read_once_per_document(kg, db: Database, ollama,  # noqa: F811
                                                tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    save(slide(SLIDE, size=SIZE), folder / "slide.png")
    _ingest(kg, ollama, folder)
    with db.engine.connect() as conn:
        snapshot(conn, db)
        # One concept a batch: the slide's map comes from the cache after the first batch.
        source = GraphSource(conn, quotes=True, batch=1)
        reads: list[str] = []

        def seen(_conn, _cursor, statement: str, *_rest) -> None:
            if "documents.source_map" in statement and "IS NOT NULL" not in statement:
                reads.append(statement)

        event.listen(conn, "before_cursor_execute", seen)
        nodes = list(source.nodes())
        conn.rollback()
    assert len(nodes) > 2 and all(q.page == 1 for n in nodes for q in n.quotes)
    assert len(reads) == 1


def test_index_answers_as_places(tmp_path: Path) -> None:
    from kg import sourcemap
    from kg.extraction.loaders import LoadedDocument, load

    doc = load(save(slide(SLIDE, box="Radium Institute"), tmp_path / "slide.png"))
    assert isinstance(doc, LoadedDocument) and doc.source_map
    index = sourcemap.Index(doc.source_map)
    edges = sorted({0, len(doc.text)} | {o for w in doc.source_map["words"] for o in w[:2]}
                   | {w[0] + 1 for w in doc.source_map["words"]})
    spans = [(a, b) for a in edges for b in edges] + [(-5, 3), (len(doc.text), 10**6)]
    for start, end in spans:
        assert index.places(start, end) == sourcemap.places(doc.source_map, start, end)
    assert index.places(0, len(doc.text))  # not only empty answers


def test_described_images_export_their_page_without_a_box(kg, db: Database,
                                                         tmp_path: Path) -> None:
    with FakeOllama(models=[FakeModel("qwen3:8b", ["completion"]),
                            FakeModel(VISION_MODEL, ["completion", "vision"])],
                    responder=answer) as fake:
        use_server(kg, fake.url)
        vision_profile(kg, fake.url)
        folder = tmp_path / "docs"
        folder.mkdir()
        save(slide(SLIDE), folder / "slide.png")
        result = kg("ingest", str(folder), "--json")
        assert result.exit_code == 0, result.stderr
    evidence = [e for line in _jsonl(db) for e in line["evidence"]]
    assert evidence and all(e["page"] == 1 and e["box"] is None for e in evidence)
