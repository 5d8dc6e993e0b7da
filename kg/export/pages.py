"""A page of an ingested image or scanned PDF as a PNG thumbnail, to see evidence where it came
from: drawn from the original file (which must still be there, unchanged), upright and opaque
as ingestion read it, so the boxes of the document's source map fit it once scaled."""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kg import sourcemap
from kg.db.models import Document
from kg.errors import NotFoundError, UsageError

__all__ = ["MAX_SIDE", "PageFile", "PageImage", "find", "render"]

MAX_SIDE = 1024  # the longest side of a thumbnail, in pixels
# Ingestion's limits: a file it read is within them, so a file beyond them was swapped.
MAX_PIXELS = sourcemap.MAX_PIXELS
MAX_BYTES = sourcemap.MAX_FILE_BYTES
FORMATS = sourcemap.IMAGE_FORMATS
KINDS = ("image", "pdf")
# A 50-megapixel page decodes to 150 MB: a burst of requests renders two at a time.
_rendering = threading.BoundedSemaphore(2)


@dataclass(frozen=True)
class PageFile:
    """Where a document's page is: its file, and the size of the page as read (the pixels of
    its boxes; 0 when the source map does not say)."""

    path: str
    kind: str
    sha256: str
    number: int
    width: int
    height: int


@dataclass(frozen=True)
class PageImage:
    png: bytes
    width: int  # the page as read: scale boxes by thumbnail width / width
    height: int


def find(session: Session, document_id: int, number: int) -> PageFile:
    """Page `number` (1-based) of a document of the session's collection; NotFoundError when
    the document is not there, is text, or has no such page read."""
    row = session.execute(
        select(Document.path, Document.kind, Document.sha256, Document.source_map)
        .where(Document.id == document_id)).first()
    if row is None:
        raise NotFoundError(f"no document {document_id}; see `kg documents list`")
    path, kind, sha, source_map = row
    if kind not in KINDS:
        raise NotFoundError(f"document {document_id} is {kind} text: it has no page images")
    pages = {p["page"]: p for p in (source_map or {}).get("pages", ())}
    page = pages.get(number)
    if page is None and (kind == "pdf" or pages):
        raise NotFoundError(f"document {document_id} has no page {number} that was read")
    page = page or {}
    return PageFile(path, kind, sha, number, int(page.get("width") or 0),
                    int(page.get("height") or 0))


def render(page: PageFile, side: int = MAX_SIDE) -> PageImage:
    """The page as a PNG of at most `side` pixels a side, from the original file."""
    file = Path(page.path)
    try:
        if file.stat().st_size > MAX_BYTES:
            raise NotFoundError(f"the original file {page.path} changed since it was read; "
                                "ingest it again to see its pages")
        data = file.read_bytes()
    except OSError:
        raise NotFoundError(f"the original file {page.path} is gone; put it back or ingest it "
                            "again to see its pages") from None
    if hashlib.sha256(data).hexdigest() != page.sha256:
        raise NotFoundError(f"the original file {page.path} changed since it was read; ingest "
                            "it again to see its pages")
    with _rendering:
        image = (_pdf_page(data, page, side) if page.kind == "pdf"
                 else _image_page(data, page, side))
        with image:
            width, height = page.width or image.width, page.height or image.height
            image.thumbnail((side, side))
            out = io.BytesIO()
            image.save(out, format="PNG")
    return PageImage(out.getvalue(), width, height)


def _image_page(data: bytes, page: PageFile, side: int) -> Any:
    from PIL import Image, ImageOps, ImageSequence

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # as when it was read: a bomb is refused, not decoded
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as opened:
                if page.width and page.height:
                    # A JPEG decodes straight at a fraction of its size (the boxes keep the
                    # page's own size, from the source map).
                    opened.draft("RGB", (side, side))
                for number, frame in enumerate(ImageSequence.Iterator(opened), 1):
                    if number == page.number:
                        frame.load()
                        return _opaque(ImageOps.exif_transpose(frame) or frame.copy())
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, bomb errors...
        raise UsageError(f"cannot show page {page.number} of {page.path}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from None
    raise NotFoundError(f"{page.path} has no page {page.number}")


def _opaque(image: Any) -> Any:
    """On white, as Tesseract saw it: a transparent picture is not shown on black."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _pdf_page(data: bytes, page: PageFile, side: int) -> Any:
    import pypdfium2 as pdfium

    try:
        with sourcemap.open_pdf(data) as pdf:
            if page.number > len(pdf):
                raise NotFoundError(f"{page.path} has no page {page.number}")
            rendered = pdf[page.number - 1]
            # Straight at the thumbnail's size: the longest side `side` pixels.
            width_pt, height_pt = rendered.get_size()
            image = rendered.render(scale=side / max(width_pt, height_pt, 1)).to_pil()
            rendered.close()
    except pdfium.PdfiumError as exc:
        raise UsageError(f"cannot show page {page.number} of {page.path}: {exc}") from None
    return image
