"""Images and scanned PDF pages read by real Tesseract (images drawn here with Pillow and
DejaVu), their source map, every bad input, and ingestion on both databases."""

from __future__ import annotations

import io
import json
import logging
import math
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter

from kg import sourcemap
from kg.errors import UsageError
from kg.extraction import ocr
from kg.extraction.loaders import KINDS, LoadedDocument, Skipped, load
from tests.fakes import FakeModel, FakeOllama, Reply, chunk_of, graph_reply
from tests.test_ingest import rows, use_server
from tests.test_loaders import pdf_with_text

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SLIDE = ["Marie Curie discovered Polonium", "She worked in Paris with Pierre Curie"]


def slide(lines: list[str], size: tuple[int, int] = (1280, 720), mode: str = "RGB",
          background: str | tuple[int, ...] = "white", ink: str | tuple[int, ...] = "black",
          box: str | None = None) -> Image.Image:
    """A slide: one line of text every 80 pixels from (60, 60), and a labelled box below."""
    font = ImageFont.truetype(FONT, 36)
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 60 + 80 * i), line, fill=ink, font=font)
    if box:
        draw.rectangle((60, 400, 560, 500), outline=ink, width=3)
        draw.text((90, 430), box, fill=ink, font=font)
        draw.line((560, 450, 900, 450), fill=ink, width=3)
    return image


def save(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


def scanned_pdf(pages: list[Image.Image]) -> bytes:
    """Pages that are pictures only: Pillow writes each image as a page, no text layer."""
    out = io.BytesIO()
    pages[0].save(out, format="PDF", resolution=150, save_all=True, append_images=pages[1:])
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size (the decompression bomb's promise) with no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


@pytest.fixture(autouse=True)
def _fresh_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "_ready", set())  # each test sees Tesseract checked anew
    monkeypatch.delenv(ocr.LANGUAGES_VARIABLE, raising=False)


# -- reading -------------------------------------------------------------------------------

def test_slide_text_boxes_and_confidence(tmp_path: Path) -> None:
    doc = load(save(slide(SLIDE, box="Radium Institute"), tmp_path / "slide.png"))
    assert isinstance(doc, LoadedDocument) and doc.kind == "image" and doc.boundaries[0] == 0
    # Each block (paragraph) of the image is a preferred cut.
    assert all(doc.text[b - 2:b] == "\n\n" for b in doc.boundaries[1:])
    assert doc.text.startswith("Marie Curie discovered Polonium\n")
    assert "She worked in Paris with Pierre Curie" in doc.text and "Radium Institute" in doc.text
    assert doc.source_map is not None
    page = doc.source_map["pages"][0]
    assert (page["page"], page["reader"], page["width"], page["height"]) == (1, "ocr", 1280, 720)
    words = doc.source_map["words"]
    for start, end, *_rest, confidence in words:  # every word's range is its text
        assert doc.text[start:end].strip() == doc.text[start:end] and 0 <= confidence <= 100
    assert min(w[-1] for w in words) > 50  # clean print: Tesseract is sure of every word
    # "Paris" was drawn on the second line, 140 pixels down, about 36 high.
    start = doc.text.index("Paris")
    [place] = sourcemap.places(doc.source_map, start, start + len("Paris"))
    x0, y0, x1, y1 = place.box or (0, 0, 0, 0)
    assert place.page == 1 and 140 <= y0 <= 160 and 160 <= y1 <= 185 and 300 < x0 < x1 < 450
    # A span over two lines: one box per line, top first, each as wide as its part.
    both = sourcemap.places(doc.source_map, doc.text.index("Polonium"), start + 5)
    assert [p.page for p in both] == [1, 1]
    assert both[0].box and both[1].box and both[0].box[1] < both[1].box[1]


def test_turned_photo_is_levelled_and_boxes_land_on_it(tmp_path: Path) -> None:
    angle = 6.0
    image = slide(SLIDE)
    turned = image.rotate(angle, expand=True, fillcolor="white",
                          resample=Image.Resampling.BICUBIC)
    doc = load(save(turned, tmp_path / "photo.png"))
    assert isinstance(doc, LoadedDocument) and doc.source_map
    assert "She worked in Paris with Pierre Curie" in doc.text
    # Where the middle of "Paris" (drawn near 370, 160) went when the slide was turned.
    theta = math.radians(angle)
    dx, dy = 370 - image.width / 2, 160 - image.height / 2
    x = turned.width / 2 + math.cos(theta) * dx + math.sin(theta) * dy
    y = turned.height / 2 - math.sin(theta) * dx + math.cos(theta) * dy
    start = doc.text.index("Paris")
    [place] = sourcemap.places(doc.source_map, start, start + 5)
    assert place.box is not None
    x0, y0, x1, y1 = place.box
    assert x0 < x < x1 and y0 < y < y1 and x1 - x0 < 120 and y1 - y0 < 60


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp", ".gif", ".tiff", ".bmp"])
def test_each_image_type_is_read(tmp_path: Path, suffix: str) -> None:
    assert KINDS[suffix] == "image"
    doc = load(save(slide(SLIDE[:1], size=(900, 200)), tmp_path / f"slide{suffix}"))
    assert isinstance(doc, LoadedDocument), getattr(doc, "reason", "")
    assert "Marie Curie discovered Polonium" in doc.text


def test_transparent_and_low_contrast_images(tmp_path: Path) -> None:
    # Black text on transparent black: flattened on white first, or the text would vanish.
    clear = slide(SLIDE[:1], size=(900, 200), mode="RGBA", background=(0, 0, 0, 0),
                  ink=(0, 0, 0, 255))
    doc = load(save(clear, tmp_path / "clear.png"))
    assert isinstance(doc, LoadedDocument) and "Marie Curie" in doc.text
    faint = slide(SLIDE[:1], size=(900, 200), mode="L", background=200, ink=170)
    doc = load(save(faint, tmp_path / "faint.png"))
    assert isinstance(doc, LoadedDocument) and "Marie Curie" in doc.text


def test_multi_page_tiff_gives_pages(tmp_path: Path) -> None:
    first, second = slide(["Chapter One Lisbon"]), slide(["Chapter Two Porto"])
    doc = load(save(first, tmp_path / "scan.tiff", save_all=True, append_images=[second]))
    assert isinstance(doc, LoadedDocument) and doc.source_map
    assert len(doc.boundaries) == 2 and "Lisbon" in doc.text and "Porto" in doc.text
    start = doc.text.index("Porto")
    assert [p.page for p in sourcemap.places(doc.source_map, start, start + 5)] == [2]


def test_animated_gif_reads_its_first_frame(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    frames = [slide([f"Frame {word}"], size=(900, 200)) for word in ("Alpha", "Bravo")]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:],
                duration=500, loop=0)
    with caplog.at_level(logging.WARNING, logger="kg"):
        doc = load(path)
    assert isinstance(doc, LoadedDocument) and "Alpha" in doc.text and "Bravo" not in doc.text
    assert "animated GIF (2 frames): only the first frame is read" in caplog.text


def test_scanned_pdf_is_read_by_ocr(tmp_path: Path) -> None:
    pdf = scanned_pdf([slide(SLIDE), slide([]), slide(["Radium Institute"])])
    assert not "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).strip()
    doc = load(save_bytes(tmp_path / "scan.pdf", pdf))
    assert isinstance(doc, LoadedDocument) and doc.kind == "pdf" and doc.source_map
    assert "Pierre Curie" in doc.text and "Radium Institute" in doc.text
    pages = doc.source_map["pages"]
    assert [p["page"] for p in pages] == [1, 3]  # the blank page 2 gave nothing
    assert {p["dpi"] for p in pages} == {ocr.PDF_DPI}
    # The page was rendered at 300 dpi from 150 dpi pixels: boxes are twice the drawing's.
    start = doc.text.index("Paris")
    [place] = sourcemap.places(doc.source_map, start, start + 5)
    assert place.page == 1 and place.box and 280 <= place.box[1] <= 320


def test_pdf_mixes_text_layer_and_scanned_pages(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(pdf_with_text(["Ada Lovelace wrote programs."]))))
    writer.append(PdfReader(io.BytesIO(scanned_pdf([slide(["Charles Babbage Engine"])]))))
    out = io.BytesIO()
    writer.write(out)
    doc = load(save_bytes(tmp_path / "mixed.pdf", out.getvalue()))
    assert isinstance(doc, LoadedDocument) and doc.source_map and len(doc.boundaries) == 2
    assert doc.text.startswith("Ada Lovelace wrote programs.") and "Babbage" in doc.text
    assert [p["reader"] for p in doc.source_map["pages"]] == ["text", "ocr"]
    assert sourcemap.places(doc.source_map, 0, 3) == [sourcemap.Place(1, None)]
    start = doc.text.index("Babbage")
    [place] = sourcemap.places(doc.source_map, start, start + 7)
    assert place.page == 2 and place.box is not None
    # A PDF read from its text layer alone keeps no map.
    plain = load(save_bytes(tmp_path / "plain.pdf", pdf_with_text(["Ada Lovelace."])))
    assert isinstance(plain, LoadedDocument) and plain.source_map is None


def save_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_locate_reads_a_documents_map() -> None:
    class Row:
        def __init__(self, source_map: dict | None) -> None:
            self.source_map = source_map

    row = Row({"version": 1, "pages": [{"page": 1, "start": 0, "end": 9, "reader": "ocr"}],
               "words": [[0, 4, 1, 0, 10, 10, 50, 30, 90.0], [5, 9, 1, 0, 60, 12, 90, 31, 80.0]]})
    assert sourcemap.locate(row, 0, 9) == [sourcemap.Place(1, (10, 10, 90, 31))]
    assert sourcemap.locate(row, 5, 6) == [sourcemap.Place(1, (60, 12, 90, 31))]
    assert sourcemap.locate(row, 4, 5) == []  # the space between the words
    assert sourcemap.locate(Row(None), 0, 9) == []


# -- bad input -----------------------------------------------------------------------------

def test_corrupt_and_truncated_images_are_skipped(tmp_path: Path) -> None:
    corrupt = load(save_bytes(tmp_path / "corrupt.png", b"\x89PNG\r\n\x1a\nnot really" * 20))
    assert isinstance(corrupt, Skipped) and corrupt.reason.startswith("not a readable image")
    whole = io.BytesIO()
    slide(SLIDE).save(whole, format="PNG")
    cut = load(save_bytes(tmp_path / "cut.png", whole.getvalue()[: len(whole.getvalue()) // 2]))
    assert isinstance(cut, Skipped) and cut.reason.startswith("unreadable image")
    assert "truncated" in cut.reason and "\n" not in cut.reason
    words = load(save_bytes(tmp_path / "words.jpg", b"just some text, named .jpg"))
    assert isinstance(words, Skipped) and "not a readable image" in words.reason


@pytest.mark.parametrize("size", [(20_000, 20_000), (9_000, 6_000)])
def test_decompression_bomb_is_refused(tmp_path: Path, size: tuple[int, int]) -> None:
    # 400 MP is past Pillow's hard stop (twice the limit); 54 MP only past the limit itself.
    doc = load(save_bytes(tmp_path / "bomb.png", png_header(*size)))
    assert isinstance(doc, Skipped)
    assert "above kg's limit of 50 megapixels (decompression bomb?)" in doc.reason


def test_pictures_without_text_are_said_empty(tmp_path: Path) -> None:
    picture = Image.new("RGB", (1000, 700), "white")
    draw = ImageDraw.Draw(picture)
    for i in range(8):  # shapes, shading: a picture of nothing to read
        draw.ellipse((60 + 100 * i, 200, 140 + 100 * i, 300), fill=(30 * i, 90, 160))
    image = load(save(picture, tmp_path / "shapes.png"))
    assert isinstance(image, Skipped) and image.reason == "OCR found no text in the image"
    pdf = load(save_bytes(tmp_path / "blank.pdf", scanned_pdf([picture, Image.new(
        "RGB", (1000, 700), "white")])))
    assert isinstance(pdf, Skipped)
    assert pdf.reason == ("PDF has no text: no text layer, and OCR found none on its 2 page(s) "
                          "(pictures only?)")


def test_tesseract_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "none"))
    with pytest.raises(UsageError) as error:
        load(save(slide(SLIDE), tmp_path / "slide.png"))
    assert str(error.value) == ("Tesseract OCR is not installed (images and scanned PDF pages "
                                "need it); apt-get install tesseract-ocr")
    # A scanned PDF is one skipped file (it may be one of many PDFs with a text layer).
    pdf = load(save_bytes(tmp_path / "scan.pdf", scanned_pdf([slide(SLIDE)])))
    assert isinstance(pdf, Skipped) and pdf.reason.startswith(
        "1 page(s) without a text layer need OCR: Tesseract OCR is not installed")
    # A text PDF with a blank page keeps its text, and a warning names the page left unread.
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(pdf_with_text(["Ada Lovelace wrote programs."]))))
    writer.add_blank_page(612, 792)
    out = io.BytesIO()
    writer.write(out)
    with caplog.at_level(logging.WARNING, logger="kg"):
        text = load(save_bytes(tmp_path / "text.pdf", out.getvalue()))
    assert isinstance(text, LoadedDocument) and text.source_map is None
    assert "1 page(s) without a text layer not read: Tesseract OCR is not installed" in \
        caplog.text


def test_language_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(slide(SLIDE[:1], size=(900, 200)), tmp_path / "slide.png")
    monkeypatch.setenv(ocr.LANGUAGES_VARIABLE, "eng+zz_missing")
    with pytest.raises(UsageError) as error:
        load(path)
    assert str(error.value) == ("Tesseract language pack zz_missing is not installed "
                                "(KG_OCR_LANGUAGES=eng+zz_missing); apt-get install "
                                "tesseract-ocr-zz-missing")
    monkeypatch.setenv(ocr.LANGUAGES_VARIABLE, "eng deu")
    with pytest.raises(UsageError, match="joined by \\+"):
        load(path)
    monkeypatch.setenv(ocr.LANGUAGES_VARIABLE, "eng")
    assert isinstance(load(path), LoadedDocument)


# -- ingestion, both databases --------------------------------------------------------------

@pytest.fixture
def ollama():
    with FakeOllama(models=[FakeModel("qwen3:8b", ["completion"])],
                    responder=lambda b: Reply(graph_reply(chunk_of(b)))) as server:
        yield server


def test_ingest_images_and_scans_with_evidence_on_the_page(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    folder = tmp_path / "docs"
    folder.mkdir()
    save(slide(SLIDE, box="Radium Institute"), folder / "slide.png")
    save_bytes(folder / "scan.pdf", scanned_pdf([slide(["Ada Lovelace met Charles Babbage"])]))
    save_bytes(folder / "bomb.png", png_header(20_000, 20_000))
    dry = kg("ingest", "--dry-run", str(folder), "--json")
    assert dry.exit_code == 0, dry.stderr
    result = kg("ingest", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["documents"] == 2
    [(skipped, reason)] = summary["skipped"]
    assert skipped == str(folder / "bomb.png") and "decompression bomb" in reason
    # Every quote is verbatim in the stored transcription, at its offsets.
    quotes = rows(db, "SELECT e.quote, e.char_start - c.char_start, c.text FROM evidence e "
                      "JOIN chunks c ON c.id = e.chunk_id")
    assert quotes
    for quote, start, text in quotes:
        assert text[start:start + len(quote)] == quote
    kinds = dict(rows(db, "SELECT kind, source_map IS NOT NULL FROM documents"))
    assert kinds == {"image": True, "pdf": True}
    shown = json.loads(kg("concepts", "show", "Pierre Curie", "--json").stdout)
    [place] = shown["evidence"][0]["places"]
    assert place["page"] == 1 and 140 <= place["box"][1] <= 160
    table = kg("concepts", "show", "Charles Babbage")
    assert table.exit_code == 0 and "PAGE, BOX" in table.stdout and "p1 (" in table.stdout
    calls = ollama.chat_count
    again = kg("ingest", str(folder / "slide.png"), str(folder / "scan.pdf"), "--json")
    assert json.loads(again.stdout)["unchanged"] and ollama.chat_count == calls


def test_ingest_without_tesseract_stops_before_any_run(kg, db, ollama, tmp_path,
                                                       monkeypatch) -> None:
    import pytesseract

    use_server(kg, ollama.url)
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "none"))
    (tmp_path / "notes.txt").write_text("Sherlock Holmes lives in London.", encoding="utf-8")
    path = save(slide(SLIDE), tmp_path / "slide.png")
    result = kg("ingest", str(tmp_path / "notes.txt"), str(path))
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("apt-get install tesseract-ocr")
    assert result.stderr.strip().count("\n") == 0
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)]
    assert rows(db, "SELECT count(*) FROM documents") == [(0,)]


def test_uploaded_image_is_read(kg, db, ollama) -> None:
    from tests.test_server import read_events, serve

    use_server(kg, ollama.url)
    content = io.BytesIO()
    slide(SLIDE).save(content, format="PNG")
    with serve(db) as server, server.client() as client:
        started = client.post("/runs", files={"files": ("slide.png", content.getvalue())})
        assert started.status_code == 202, started.text
        events = read_events(client, started.json()["run_id"])
        assert events.of("finished")[0].data["status"] == "completed"
    [(path, kind, mapped)] = rows(db, "SELECT path, kind, source_map IS NOT NULL FROM documents")
    assert path.endswith(".png") and kind == "image" and mapped


def test_labels_side_by_side_stay_separate_phrases(tmp_path: Path) -> None:
    image = Image.new("RGB", (1280, 720), "white")
    draw = ImageDraw.Draw(image)
    for i, label in enumerate(("Power Grid", "Heat Pump", "Solar Farm")):
        x = 60 + 410 * i
        draw.rectangle((x, 160, x + 330, 280), outline=(20, 60, 140), width=4)
        draw.text((x + 20, 200), label, fill="black", font=ImageFont.truetype(FONT, 32))
    draw.text((60, 650), "Figure: how it works", fill="black", font=ImageFont.truetype(FONT, 28))
    doc = load(save(image, tmp_path / "boxes.png"))
    assert isinstance(doc, LoadedDocument)
    assert doc.text.split("\n")[:3] == ["Power Grid", "Heat Pump", "Solar Farm"]


def test_blocks_of_an_image_are_preferred_cuts(tmp_path: Path) -> None:
    from kg.extraction.chunking import ChunkingOptions, chunk_text

    image = Image.new("RGB", (1280, 720), "white")
    draw = ImageDraw.Draw(image)
    draw.text((60, 40), "Marie Curie on Radium", fill="black", font=ImageFont.truetype(FONT, 48))
    for i, line in enumerate(["- Polonium feeds Research", "- Paris hosts Sorbonne"]):
        draw.text((80, 300 + 60 * i), line, fill="black", font=ImageFont.truetype(FONT, 34))
    doc = load(save(image, tmp_path / "slide.png"))
    assert isinstance(doc, LoadedDocument) and len(doc.boundaries) >= 2
    assert doc.text[doc.boundaries[1]:].startswith("- Polonium")
    # Default sizes read a slide block by block; block_min_tokens as large as min_tokens
    # keeps it whole (blocks are then cuts like headings), and min_tokens 1 cuts there anyway.
    blocks = [c.text for c in chunk_text(doc.text, ChunkingOptions(), doc.boundaries)]
    assert blocks[0] == "Marie Curie on Radium" and len(blocks) >= 2
    whole = ChunkingOptions(block_min_tokens=150)
    assert [c.text for c in chunk_text(doc.text, whole, doc.boundaries)] == [doc.text.strip()]
    assert [c.text for c in chunk_text(doc.text, ChunkingOptions(min_tokens=1,
                                                                 block_min_tokens=150),
                                       doc.boundaries)] == blocks
    # A scanned PDF page of few words (a slide) is cut at its blocks like an image; a page of
    # prose is not: its blocks are a report's paragraphs, read 700 tokens at a time.
    prose = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(prose)
    words = str.split("radium polonium samples were measured again by the team in Paris "
                      "during winter while the laboratory stayed cold and damp")
    for i in range(18):
        line = " ".join(words[(i * 5 + k) % len(words)] for k in range(8)).capitalize() + "."
        draw.text((100, 100 + 60 * i + 60 * (i // 6)), line, fill=0,
                  font=ImageFont.truetype(FONT, 30))
    scan = load(save_bytes(tmp_path / "scan.pdf", scanned_pdf([image, prose])))
    assert isinstance(scan, LoadedDocument)
    [page_two] = [p["start"] for p in (scan.source_map or {})["pages"] if p["page"] == 2]
    slide_cuts = [c.text for c in chunk_text(scan.text, ChunkingOptions(), scan.boundaries)
                  if c.char_start < page_two]
    assert slide_cuts == blocks
    assert [b for b in scan.boundaries if b >= page_two] == [page_two]
    assert scan.text[page_two:].count("\n\n") >= 2  # paragraphs, yet no cut between them


def test_ingest_reads_an_image_block_by_block(kg, db, ollama, tmp_path) -> None:
    # `kg ingest` with its default sizes: the title, the bullets and the caption of a slide
    # are chunks of their own (a request each), not one chunk of the whole slide.
    image = Image.new("RGB", (1280, 720), "white")
    draw = ImageDraw.Draw(image)
    draw.text((60, 40), "Marie Curie on Radium", fill="black", font=ImageFont.truetype(FONT, 48))
    for i, line in enumerate(["- Polonium feeds Research", "- Paris hosts Sorbonne"]):
        draw.text((80, 250 + 60 * i), line, fill="black", font=ImageFont.truetype(FONT, 34))
    draw.text((60, 620), "Figure: how Pierre Curie works", fill="black",
              font=ImageFont.truetype(FONT, 28))
    use_server(kg, ollama.url)
    result = kg("ingest", str(save(image, tmp_path / "slide.png")), "--json")
    assert result.exit_code == 0, result.stderr
    chunks = [text for (text,) in rows(db, "SELECT text FROM chunks ORDER BY ordinal")]
    # Tesseract may put the two bullets in one block or two; no chunk spans two blocks.
    assert chunks[0] == "Marie Curie on Radium" and chunks[-1] == "Figure: how Pierre Curie works"
    assert 3 <= len(chunks) <= 4 and not any("\n\n" in c for c in chunks)
    assert "- Polonium feeds Research" in chunks[1]
    assert ollama.chat_count == len(chunks)
