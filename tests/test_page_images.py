"""`GET /documents/{id}/page/{n}`: a page of an ingested image or scanned PDF as a PNG thumbnail,
for the web page to show evidence where it came from (issue 25); both databases."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from kg import sourcemap, tokens
from kg.db import Database
from kg.db import collections as kg_collections
from kg.export.pages import MAX_SIDE as THUMBNAIL
from tests.test_ingest import rows, use_server
from tests.test_ocr import SLIDE, ollama, save, save_bytes, scanned_pdf, slide  # noqa: F401
from tests.test_server import ServerThread, assert_error, serve


@dataclass
class Pages:
    server: ServerThread
    ids: dict[str, int]  # file name -> document id
    folder: Path
    admin: str
    other: str  # a read token of the collection `other` only

    def get(self, name: str, page: int = 1, token: str | None = None,
            prefix: str = "") -> httpx.Response:
        with self.server.client(token or self.admin) as client:
            return client.get(f"{prefix}/documents/{self.ids[name]}/page/{page}")


@pytest.fixture
def pages(kg, db: Database, ollama, tmp_path: Path) -> Iterator[Pages]:  # noqa: F811
    use_server(kg, ollama.url)
    folder = tmp_path / "docs"
    folder.mkdir()
    save(slide(SLIDE), folder / "slide.png")
    save(slide(SLIDE, size=(2560, 1440)), folder / "photo.jpg", quality=90)  # decoded small
    save(slide(["Tall Poster"], size=(600, 2000)), folder / "tall.png")
    save_bytes(folder / "scan.pdf", scanned_pdf([slide(["Ada Lovelace met Charles Babbage"])]))
    (folder / "notes.md").write_text("Sherlock Holmes lives in London.\n", encoding="utf-8")
    result = kg("ingest", str(folder), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["documents"] == 5, result.stderr
    ids = {Path(path).name: i for i, path in rows(db, "SELECT id, path FROM documents")}
    with db.session() as session:
        kg_collections.create(session, "other", by="tester")
        admin = tokens.create(session, "ops", "admin", by="tester")[1]
        other = tokens.create(session, "other-reader", "read", by="tester",
                              collections=["other"])[1]
    with serve(db) as server:
        yield Pages(server, ids, folder, admin, other)


def _png(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    return image


@pytest.mark.parametrize(("name", "size"), [("slide.png", (1280, 720)),
                                             ("photo.jpg", (2560, 1440))])
def test_image_page_is_a_thumbnail_the_boxes_fit(pages: Pages, db: Database, name: str,
                                                 size: tuple[int, int]) -> None:
    answer = pages.get(name)
    image = _png(answer)
    assert image.size == (THUMBNAIL, THUMBNAIL * 720 // 1280)
    width, height = int(answer.headers["x-page-width"]), int(answer.headers["x-page-height"])
    assert (width, height) == size
    # The box of "Paris", scaled as the page scales it, lands on ink in the thumbnail.
    [(text, offset, source_map)] = [row for row in rows(
        db, "SELECT c.text, c.char_start, d.source_map FROM documents d JOIN chunks c"
            " ON c.document_id = d.id WHERE d.id = :i", i=pages.ids[name]) if "Paris" in row[0]]
    source_map = json.loads(source_map) if isinstance(source_map, str) else source_map
    start = offset + text.index("Paris")
    [place] = sourcemap.places(source_map, start, start + 5)
    assert place.box is not None
    scale = image.width / width
    box = tuple(round(v * scale) for v in place.box)
    assert image.convert("L").crop(box).getextrema()[0] < 100
    below = (box[0], box[3] + 10, box[2], box[3] + 30)  # nothing was drawn under the last line
    assert image.convert("L").crop(below).getextrema()[0] > 200
    tall = _png(pages.get("tall.png"))
    assert tall.size == (600 * THUMBNAIL // 2000, THUMBNAIL)  # the longest side is the limit
    assert_error(pages.get("slide.png", page=2), 404, "no page 2")


def test_scanned_pdf_page(pages: Pages, db: Database) -> None:
    answer = pages.get("scan.pdf")
    image = _png(answer)
    assert max(image.size) == THUMBNAIL
    [(source_map,)] = rows(db, "SELECT source_map FROM documents WHERE id = :i",
                           i=pages.ids["scan.pdf"])
    source_map = json.loads(source_map) if isinstance(source_map, str) else source_map
    page = source_map["pages"][0]
    assert int(answer.headers["x-page-width"]) == page["width"]
    assert int(answer.headers["x-page-height"]) == page["height"]
    # Rendered at another scale than for OCR, the page still fits the boxes: "Lovelace" is ink.
    [(text,)] = rows(db, "SELECT text FROM chunks WHERE document_id = :i",
                     i=pages.ids["scan.pdf"])
    start = text.index("Lovelace")
    [place] = sourcemap.places(source_map, start, start + len("Lovelace"))
    assert place.box is not None
    scale = image.width / page["width"]
    box = tuple(round(v * scale) for v in place.box)
    gray = image.convert("L")
    assert gray.crop(box).getextrema()[0] < 100
    assert gray.crop((box[0], box[3] + 8, box[2], box[3] + 20)).getextrema()[0] > 200
    assert_error(pages.get("scan.pdf", page=3), 404, "no page 3")


def test_no_picture_is_a_one_line_404(pages: Pages) -> None:
    assert_error(pages.get("notes.md"), 404, "markdown text", "no page images")
    with pages.server.client(pages.admin) as client:
        assert_error(client.get("/documents/999999/page/1"), 404, "no document 999999")
        assert client.get("/documents/1/page/0").status_code == 422
    (pages.folder / "tall.png").unlink()
    assert_error(pages.get("tall.png"), 404, "the original file", "is gone")
    save(slide(["Something else"]), pages.folder / "slide.png")
    assert_error(pages.get("slide.png"), 404, "changed since it was read")


def test_another_collections_token_is_refused(pages: Pages) -> None:
    assert_error(pages.get("slide.png", token=pages.other), 403, "may use only other")
    # In its own collection, default's document does not exist.
    assert_error(pages.get("slide.png", token=pages.other, prefix="/c/other"), 404,
                 "no document")
    _png(pages.get("slide.png", prefix="/c/default"))
