"""One reader of images everywhere (issue #25): pictures on PDF pages that have text (profile
setting page_images), the same reader choice for runs, dry runs, routing previews and `kg eval`,
a run's --profile choosing its own vision profile, and hot reload of the vision profile between
documents. Real Tesseract, fake Ollama vision servers, both databases."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kg import sourcemap
from kg.db import Database
from kg.extraction import ocr
from kg.extraction.ingest import IngestRequest, Planning, ingest
from kg.extraction.loaders import LoadedDocument, OcrReader, load
from tests.fakes import FakeModel, FakeOllama, Reply, chunk_of, graph_reply
from tests.test_ingest import rows, use_server
from tests.test_ocr import SLIDE, save, save_bytes, slide

VISION_MODEL = "qwen2.5vl:7b"
PAGE_TEXT = "Marie Curie studied radioactivity."
# The picture drawn on the page: 288 x 162 points at (72, 400) from the bottom left corner.
PICTURE_AT = (72, 400, 288, 162)


def pdf_with_picture(lines: list[str], picture: Image.Image) -> bytes:
    """A one-page PDF with a real text layer (Helvetica) and a JPEG picture, built by hand."""
    jpeg = io.BytesIO()
    picture.convert("RGB").save(jpeg, format="JPEG", quality=95)
    data = jpeg.getvalue()
    x, y, w, h = PICTURE_AT
    ops = ("BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines)
           + f" ET q {w} 0 0 {h} {x} {y} cm /Im1 Do Q").encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(ops) + ops + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
        b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n"
        % (picture.width, picture.height, len(data)) + data + b"\nendstream",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return out


def picture_box() -> tuple[int, int, int, int]:
    """PICTURE_AT in the page's pixels at ocr.PDF_DPI (y from the top)."""
    x, y, w, h = PICTURE_AT
    s = ocr.PDF_DPI / 72
    return round(x * s), round((792 - y - h) * s), round((x + w) * s), round((792 - y) * s)


def inside(box: tuple[int, int, int, int] | None, outer: tuple[int, int, int, int]) -> bool:
    slack = 4  # rounding of the two scalings
    return box is not None and (box[0] >= outer[0] - slack and box[1] >= outer[1] - slack
                                and box[2] <= outer[2] + slack and box[3] <= outer[3] + slack)


PICTURE = slide(["Radium Institute"], size=(640, 360))


@pytest.fixture(autouse=True)
def _fresh_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "_ready", set())


# -- pictures on pages with text -------------------------------------------------------------

def test_text_page_keeps_its_text_and_appends_its_pictures_reading(tmp_path: Path) -> None:
    path = save_bytes(tmp_path / "report.pdf", pdf_with_picture([PAGE_TEXT], PICTURE))
    plain = load(path)  # page_images off: the text layer only, no map, nothing read
    assert isinstance(plain, LoadedDocument) and plain.source_map is None and not plain.reads
    assert "Radium" not in plain.text and plain.text.startswith(PAGE_TEXT)
    doc = load(path, OcrReader(page_images=True))
    assert isinstance(doc, LoadedDocument) and doc.source_map is not None
    assert doc.text.startswith(PAGE_TEXT)  # the page's own text first, as before
    start = doc.text.index("Radium Institute")
    assert start > len(PAGE_TEXT)
    assert [(r.kind, r.page) for r in doc.reads] == [("ocr", 1)]
    text_entry, picture_entry = doc.source_map["pages"]
    assert text_entry["reader"] == "text" and picture_entry["reader"] == "ocr"
    assert picture_entry["box"] == list(picture_box())
    assert picture_entry["start"] == start and doc.boundaries == [0, start]
    # Same page size in every entry of the page: thumbnails scale boxes by it.
    assert text_entry["width"] == picture_entry["width"] == round(612 * ocr.PDF_DPI / 72)
    [place] = sourcemap.places(doc.source_map, start, start + len("Radium Institute"))
    assert place.page == 1 and inside(place.box, picture_box())
    assert place.box != picture_box()  # the words' own line, not the whole picture
    assert sourcemap.places(doc.source_map, 0, 5) == [sourcemap.Place(1, None)]


def test_small_pictures_are_not_read(tmp_path: Path) -> None:
    icon = Image.new("RGB", (20, 20), "black")
    path = save_bytes(tmp_path / "icon.pdf", pdf_with_picture([PAGE_TEXT], icon))
    assert ocr.pdf_pictures(path.read_bytes(), 1).pictures == []
    doc = load(path, OcrReader(page_images=True))
    # The picture is drawn large, but its 20 pixels are an icon's: no reading, no map.
    assert isinstance(doc, LoadedDocument) and not doc.reads and doc.source_map is None


def answer(body: dict[str, Any], description: str = SLIDE[0] + "\n\nShown: a box labelled "
           "Radium Institute.") -> Reply:
    images = any(m.get("images") for m in body.get("messages") or [])
    return Reply(description) if images else Reply(graph_reply(chunk_of(body)))


@pytest.fixture
def server():
    with FakeOllama(models=[FakeModel("qwen3:8b", ["completion"]),
                            FakeModel(VISION_MODEL, ["completion", "vision"])],
                    responder=answer) as fake:
        yield fake


def vision_profile(kg, url: str, name: str = "eyes", owner: str = "test") -> None:
    made = kg("admin", "extraction", "set", "--profile", name, "--provider", "ollama",
              "--model", VISION_MODEL, "--base-url", url, "--timeout", "5")
    assert made.exit_code == 0, made.stderr
    named = kg("admin", "extraction", "set", "--profile", owner, "--vision-profile", name)
    assert named.exit_code == 0, named.stderr


def test_page_images_setting_describes_pictures_with_evidence_on_their_box(
        kg, db: Database, server, tmp_path: Path) -> None:
    use_server(kg, server.url)
    vision_profile(kg, server.url)
    bad = kg("admin", "extraction", "set", "--page-images", "maybe")
    assert bad.exit_code == 2 and "off, read" in bad.stderr
    assert kg("admin", "extraction", "set", "--page-images", "read").exit_code == 0
    assert json.loads(kg("admin", "extraction", "show", "--json").stdout)["page_images"] == "read"
    path = save_bytes(tmp_path / "report.pdf", pdf_with_picture([PAGE_TEXT], PICTURE))
    result = kg("ingest", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert len(server.images) == 1  # the picture went to the vision model, the page did not
    [(text, source_map)] = rows(db, "SELECT c.text, d.source_map FROM chunks c JOIN documents d "
                                    "ON d.id = c.document_id")
    source_map = json.loads(source_map) if isinstance(source_map, str) else source_map
    assert text.startswith(PAGE_TEXT) and "Shown: a box labelled Radium Institute." in text
    assert [p["reader"] for p in source_map["pages"]] == ["text", "describe"]
    assert rows(db, "SELECT kind, model FROM calls WHERE kind <> 'extract'") == [
        ("describe", VISION_MODEL)]
    shown = json.loads(kg("concepts", "show", "Radium Institute", "--json").stdout)
    [place] = shown["evidence"][0]["places"]
    assert place["page"] == 1 and tuple(place["box"]) == picture_box()
    shown = json.loads(kg("concepts", "show", "Marie Curie", "--json").stdout)
    assert {(p["page"], p["box"]) for e in shown["evidence"] for p in e["places"]} >= {(1, None)}


# -- one reader choice everywhere --------------------------------------------------------------

def test_dry_run_says_which_reader_and_never_asks_the_vision_model(
        kg, db: Database, server, tmp_path: Path) -> None:
    use_server(kg, server.url)
    path = save(slide(SLIDE), tmp_path / "slide.png")
    ocr_run = json.loads(kg("ingest", "--dry-run", str(path), "--json").stdout)
    assert ocr_run["reader"].startswith("ocr") and ocr_run["reads"] == 1
    # A chunk per block of the slide (its two lines: one block or two, as Tesseract sees it).
    assert ocr_run["read_completion_tokens"] == 0 and 1 <= ocr_run["chunks"] <= 2
    vision_profile(kg, server.url)
    dry = kg("ingest", "--dry-run", str(path), "--json")
    assert dry.exit_code == 0, dry.stderr
    found = json.loads(dry.stdout)
    assert found["reader"] == f"describe (vision profile eyes: ollama {VISION_MODEL})"
    assert found["reads"] == 1 and found["read_completion_tokens"] == 300
    assert "assumed 300 tokens" in found["read_source"] and found["chunks"] >= 1
    assert server.images == [] and server.chat_count == 0
    table = kg("ingest", "--dry-run", str(path))
    assert "images read by" in table.stdout and "vision profile eyes" in table.stdout
    # After a real run, the estimate follows the model's own descriptions.
    assert kg("ingest", str(path)).exit_code == 0
    told = rows(db, "SELECT completion_tokens FROM calls WHERE kind = 'describe'")[0][0]
    (tmp_path / "more").mkdir()
    other = save(slide(["Ada Lovelace"]), tmp_path / "more" / "other.png")
    again = json.loads(kg("ingest", "--dry-run", str(other), "--json").stdout)
    assert again["read_completion_tokens"] == told and "average of 1" in again["read_source"]
    assert len(server.images) == 1


def test_routing_preview_reads_with_the_runs_reader(kg, db: Database, server,
                                                    tmp_path: Path) -> None:
    use_server(kg, server.url)
    path = save(slide(SLIDE), tmp_path / "slide.png")
    plain = json.loads(kg("admin", "routing", "test", str(path), "--json").stdout)
    # A row per chunk, a chunk per block of the slide: together they hold its ten words.
    assert all(r["reader"].startswith("ocr") for r in plain)
    assert sum(r["words"] for r in plain) >= 10
    vision_profile(kg, server.url)
    seen = json.loads(kg("admin", "routing", "test", str(path), "--json").stdout)
    assert seen[0]["reader"].startswith("describe (vision profile eyes")
    assert seen[0]["words"] == 300  # the placeholder: the model was not asked
    assert server.chat_count == 0


def test_eval_reads_gold_images_with_the_vision_profile(kg, db: Database, server,
                                                        tmp_path: Path) -> None:
    use_server(kg, server.url)
    vision_profile(kg, server.url)
    gold = tmp_path / "gold" / "slides"
    gold.mkdir(parents=True)
    save(slide(SLIDE), gold / "slide.png")  # no box on it: only the description names one
    (gold / "slide.gold.json").write_text(json.dumps({
        "document": "slide.png", "concepts": [{"label": "Radium Institute"}],
        "relationships": []}))
    result = kg("eval", str(tmp_path / "gold"), "--json")
    assert result.exit_code == 0, result.stderr
    assert len(server.images) == 1
    assert json.loads(result.stdout)["overall"]["concept_recall"] == 1.0


def test_a_runs_profile_brings_its_own_vision_setting(kg, db: Database, server,
                                                      tmp_path: Path) -> None:
    use_server(kg, server.url)  # the active profile `test`: no vision profile
    made = kg("admin", "extraction", "set", "--profile", "seeing", "--provider", "ollama",
              "--model", "qwen3:8b", "--base-url", server.url, "--timeout", "5")
    assert made.exit_code == 0
    vision_profile(kg, server.url, owner="seeing")
    first = save(slide(SLIDE), tmp_path / "first.png")
    assert kg("ingest", "--profile", "seeing", str(first)).exit_code == 0
    assert len(server.images) == 1
    second = save(slide(["Ada Lovelace"]), tmp_path / "second.png")
    assert kg("ingest", str(second)).exit_code == 0  # the active profile: OCR
    assert len(server.images) == 1
    assert rows(db, "SELECT kind, profile_name FROM calls WHERE kind <> 'extract' "
                    "ORDER BY id") == [("describe", "eyes"), ("ocr", "test")]
    # And the other way round: the active profile sees, --profile plain does not.
    kg("admin", "extraction", "set", "--profile", "test", "--vision-profile", "eyes")
    kg("admin", "extraction", "set", "--profile", "seeing", "--vision-profile", "")
    third = save(slide(["Grace Hopper"]), tmp_path / "third.png")
    assert kg("ingest", "--profile", "seeing", str(third)).exit_code == 0
    assert len(server.images) == 1
    assert rows(db, "SELECT kind FROM calls WHERE kind <> 'extract' ORDER BY id")[-1] == ("ocr",)


# -- hot reload ------------------------------------------------------------------------------

def test_vision_profile_changes_apply_from_the_next_document(kg, db: Database,
                                                             tmp_path: Path) -> None:
    def servers(description: str) -> FakeOllama:
        return FakeOllama(models=[FakeModel("qwen3:8b", ["completion"]),
                                  FakeModel(VISION_MODEL, ["completion", "vision"])],
                          responder=lambda body: answer(body, description))

    with servers("Described by Alpha Server") as alpha, \
            servers("Described by Beta Server") as beta:
        use_server(kg, alpha.url)
        vision_profile(kg, alpha.url)
        folder = tmp_path / "docs"
        folder.mkdir()
        for name in ("a", "b", "c"):
            save(slide([f"Slide {name.upper()} of the deck"]), folder / f"{name}.png")
        changes = {
            # The vision profile's own setting: its server.
            2: ("--profile", "eyes", "--base-url", beta.url),
            # The run's profile drops its vision profile: offline OCR from the next image.
            3: ("--profile", "test", "--vision-profile", ""),
        }

        def planning(step: Planning) -> None:
            if step.done in changes:
                changed = kg("admin", "extraction", "set", *changes[step.done])
                assert changed.exit_code == 0, changed.stderr

        summary = ingest(db, IngestRequest(paths=[folder], cache=False),
                         on_planning=planning)
        assert summary.status == "completed" and summary.documents == 3
        assert (len(alpha.images), len(beta.images)) == (1, 1)
    texts = {Path(path).name: text for path, text in rows(
        db, "SELECT d.path, c.text FROM documents d JOIN chunks c ON c.document_id = d.id")}
    assert texts["a.png"].startswith("Described by Alpha Server")
    assert texts["b.png"].startswith("Described by Beta Server")
    assert "Slide C of the deck" in texts["c.png"]
    assert [k for (k,) in rows(db, "SELECT kind FROM calls WHERE kind <> 'extract' "
                                   "ORDER BY id")] == ["describe", "describe", "ocr"]
