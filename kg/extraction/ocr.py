"""Offline OCR: images and scanned PDF pages read by Tesseract into text plus a source map.

The transcription is built from Tesseract's word list (one run per page, `image_to_data`), so
every word's character range in the text and its box on the page agree by construction.
Limits: an image or rendered page above MAX_PIXELS is refused (decompression bombs); an
animated GIF/WebP/PNG gives its first frame only; a multi-page TIFF gives each page.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kg import sourcemap
from kg.errors import UsageError
from kg.extraction.chunking import Boundaries

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".tiff", ".tif", ".bmp")
FORMATS = sourcemap.IMAGE_FORMATS
MAX_PIXELS = sourcemap.MAX_PIXELS
MAX_FRAMES = 200  # pages of one multi-page TIFF
PDF_DPI = 300  # scanned PDF pages are rendered at this resolution (Tesseract's sweet spot)
# Small images (screenshots, web slides) are enlarged before OCR: Tesseract misreads letters
# under about 20 pixels high. Boxes are mapped back to the original pixels.
UPSCALE_BELOW = 1600
TIMEOUT_S = 300  # one page; a page Tesseract cannot finish in 5 minutes is not worth waiting for
# Words with no letter or digit below this confidence are line art (arrows, box edges) read
# as "|", "—" or "~", not text: they are left out of the transcription.
SYMBOL_MIN_CONFIDENCE = 60.0
# A gap between two words of one Tesseract line wider than this many text heights separates
# two phrases (boxes of a diagram side by side, table cells), not two words of one sentence.
GAP_LINES = 2.0
LANGUAGES_VARIABLE = "KG_OCR_LANGUAGES"
DEFAULT_LANGUAGES = "eng"
INSTALL = "apt-get install tesseract-ocr"
_LANGUAGES = re.compile(r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*")

_ready: set[str] = set()  # language settings found installed (a failure is checked again)


@dataclass
class Word:
    """One word on a page: its range in the page's text, its line, box and confidence."""

    start: int
    end: int
    line: int
    box: sourcemap.Box
    confidence: float


@dataclass
class OcrPage:
    """The text Tesseract read on one page or image, with its words."""

    number: int
    text: str
    width: int
    height: int
    dpi: int | None = None
    words: list[Word] = field(default_factory=list)
    seconds: float = 0.0  # Tesseract's time on the page (a `calls` row of kind 'ocr')


@dataclass
class DescribedPage:
    """What a vision model wrote about one page or image: the text on it, then what it shows.
    Evidence on it points at the page as a whole (no boxes)."""

    number: int
    text: str
    width: int
    height: int
    dpi: int | None = None


@dataclass
class Picture:
    """A picture drawn on a PDF page that has a text layer, and its box on the page (pixels of
    the page rendered at `dpi`)."""

    image: Any
    box: sourcemap.Box


@dataclass
class PagePictures:
    """The pictures of one PDF page worth reading, and the size of the page they sit on."""

    number: int
    width: int
    height: int
    dpi: int
    pictures: list[Picture] = field(default_factory=list)


@dataclass
class TextPage:
    """A PDF page's text layer, then what the image reader read on each of its pictures
    (appended after the text; each reading placed at its picture's box)."""

    number: int
    text: str
    width: int
    height: int
    dpi: int
    pictures: list[tuple[sourcemap.Box, OcrPage | DescribedPage]] = field(default_factory=list)


def languages() -> str:
    """The Tesseract language packs to use, from KG_OCR_LANGUAGES (eng+deu style)."""
    value = os.environ.get(LANGUAGES_VARIABLE, "").strip() or DEFAULT_LANGUAGES
    if not _LANGUAGES.fullmatch(value):
        raise UsageError(f"{LANGUAGES_VARIABLE}={value!r} is not a list of Tesseract language "
                         "packs joined by + (like eng+deu)")
    return value


def check_ready() -> str:
    """The language setting, once Tesseract and each named pack answer; else one line (exit 2)
    saying what to install."""
    langs = languages()
    if langs in _ready:
        return langs
    pytesseract = _pytesseract()
    try:
        pytesseract.get_tesseract_version()
        installed = set(pytesseract.get_languages(config=""))
    except pytesseract.TesseractNotFoundError:
        raise UsageError(f"Tesseract OCR is not installed (images and scanned PDF pages need "
                         f"it); {INSTALL}") from None
    missing = [lang for lang in langs.split("+") if lang not in installed]
    if missing:
        packs = " ".join(f"tesseract-ocr-{lang.lower().replace('_', '-')}" for lang in missing)
        raise UsageError(f"Tesseract language pack {', '.join(missing)} is not installed "
                         f"({LANGUAGES_VARIABLE}={langs}); apt-get install {packs}")
    _ready.add(langs)
    return langs


class _TesseractEnvironment(Mapping[str, str]):
    """The process environment as Tesseract's child processes see it: OMP_THREAD_LIMIT=1 unless
    the operator set it. Tesseract's OpenMP threads fight each other on a few shared cores (a
    300 dpi page: 7 s with them, 1.7 s without, on 2 cores); setting it in os.environ instead
    would also cap an embedded llama.cpp model in this process."""

    def __getitem__(self, key: str) -> str:
        if key == "OMP_THREAD_LIMIT" and key not in os.environ:
            return "1"
        return os.environ[key]

    def __iter__(self) -> Iterator[str]:
        yield from os.environ
        if "OMP_THREAD_LIMIT" not in os.environ:
            yield "OMP_THREAD_LIMIT"

    def __len__(self) -> int:
        return len(os.environ) + ("OMP_THREAD_LIMIT" not in os.environ)


def _pytesseract() -> Any:
    import pytesseract

    # pytesseract passes its module's `environ` to every tesseract it starts.
    pytesseract.pytesseract.environ = _TesseractEnvironment()
    return pytesseract


class Unreadable(Exception):
    """An image or page that cannot be read; the message is the file's one-line skip reason."""


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else type(exc).__name__
    return message if len(message) <= 160 else message[:157] + "..."


def _refuse_large(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise Unreadable(f"image of {width} x {height} pixels is above kg's limit of "
                         f"{MAX_PIXELS // 1_000_000} megapixels (decompression bomb?); scale "
                         "it down")


def frames(data: bytes) -> Iterator[Any]:
    """The decoded frames of an image file to read (limits as for OCR); raises Unreadable."""
    return _frames(data)


def _frames(data: bytes) -> Iterator[Any]:
    """The decoded frames to read, each checked against MAX_PIXELS before it is decoded."""
    from PIL import Image, ImageSequence

    # Pillow checks the size when it opens a file: above MAX_IMAGE_PIXELS it warns (made an
    # error here), above twice that it raises DecompressionBombError.
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Unreadable(f"image is above kg's limit of {MAX_PIXELS // 1_000_000} "
                             "megapixels (decompression bomb?); scale it down") from None
        except Exception as exc:  # Pillow's plugins raise OSError, SyntaxError, ValueError...
            raise Unreadable(f"not a readable image ({_one_line(exc)}); check the file's "
                             "type") from None
        with image:
            frames = getattr(image, "n_frames", 1)
            if image.format != "TIFF" and frames > 1:
                # An animation's frames repeat the same picture: read it once, say so.
                log.warning("animated %s (%d frames): only the first frame is read",
                            image.format, frames)
                frames = 1
            if frames > MAX_FRAMES:
                raise Unreadable(f"TIFF of {frames} pages is above kg's limit of {MAX_FRAMES}; "
                                 "split it")
            for number, frame in enumerate(ImageSequence.Iterator(image), 1):
                if number > frames:
                    break
                _refuse_large(*frame.size)
                try:
                    frame.load()
                except Exception as exc:  # truncated data, bad compression, ...
                    raise Unreadable(f"unreadable image ({_one_line(exc)}); re-save or "
                                     "re-export it") from None
                yield frame


@dataclass(frozen=True)
class _Geometry:
    """How the image Tesseract read was made from the page: enlarged by `scale`, then turned
    by `angle` degrees about its centre (the canvas grown to `turned` from `scaled`)."""

    scale: float = 1.0
    angle: float = 0.0
    scaled: tuple[int, int] = (0, 0)
    turned: tuple[int, int] = (0, 0)

    def box(self, left: int, top: int, width: int, height: int) -> sourcemap.Box:
        """A box Tesseract reported, in the page's own pixels (upright bounding box)."""
        corners: list[tuple[float, float]] = [(left, top), (left + width, top),
                                              (left, top + height), (left + width, top + height)]
        if self.angle:
            # Undo the turn: Pillow turns counter-clockwise with y pointing down.
            theta = math.radians(self.angle)
            cos, sin = math.cos(theta), math.sin(theta)
            (cx, cy), (tx, ty) = ((w / 2, h / 2) for w, h in (self.scaled, self.turned))
            corners = [(cx + cos * (x - tx) - sin * (y - ty), cy + sin * (x - tx) + cos * (y - ty))
                       for x, y in corners]
        xs, ys = [x / self.scale for x, _ in corners], [y / self.scale for _, y in corners]
        return round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))


MAX_SKEW = 10.0  # degrees: a photo or scan turned further is not searched for lines
SKEW_STEP = 0.5


def _skew(gray: Any) -> float:
    """The turn that makes text lines level (0 if none helps): the angle whose rows of ink are
    sharpest (projection profile), searched on a small copy."""
    from PIL import Image

    small = gray.copy()
    small.thumbnail((800, 800))
    ink = small.point(lambda v: 255 if v < 128 else 0)

    def sharpness(angle: float) -> float:
        turned = ink.rotate(angle, resample=Image.Resampling.NEAREST, fillcolor=0)
        rows = turned.resize((1, turned.size[1]), Image.Resampling.BOX).tobytes()  # row means
        return float(sum((a - b) ** 2 for a, b in itertools.pairwise(rows)))

    level = sharpness(0.0)
    steps = int(MAX_SKEW / SKEW_STEP)
    best, angle = max((sharpness(a * SKEW_STEP), a * SKEW_STEP)
                      for a in range(-steps, steps + 1) if a)
    # Tesseract copes with a degree or so; a turn is worth it only when lines clearly sharpen.
    return angle if abs(angle) >= 1.0 and best > 1.2 * level else 0.0


def _prepared(image: Any) -> tuple[Any, _Geometry]:
    """Grayscale on white, contrast stretched, small images enlarged, text lines levelled:
    (image for Tesseract, how to map its boxes back)."""
    from PIL import Image, ImageOps

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels are often black underneath: text on them would vanish.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, "white")
        white.alpha_composite(rgba)
        image = white
    gray = ImageOps.autocontrast(image.convert("L"))  # low-contrast text becomes dark on light
    scale = 1.0
    longest = max(gray.size)
    if longest < UPSCALE_BELOW:
        scale = min(2.0, (MAX_PIXELS / (gray.size[0] * gray.size[1])) ** 0.5)
        if scale > 1.0:
            gray = gray.resize((round(gray.size[0] * scale), round(gray.size[1] * scale)),
                               Image.Resampling.LANCZOS)
        scale = max(scale, 1.0)
    angle = _skew(gray)
    if not angle:
        return gray, _Geometry(scale, 0.0, gray.size, gray.size)
    turned = gray.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    return turned, _Geometry(scale, angle, gray.size, turned.size)


def ocr_image(image: Any, number: int, dpi: int | None = None) -> OcrPage:
    """Tesseract's reading of one page: words in reading order, lines and paragraphs kept."""
    from PIL import ImageOps

    langs = check_ready()
    pytesseract = _pytesseract()
    started = time.perf_counter()
    image = ImageOps.exif_transpose(image) or image  # photos: upright as the camera meant
    width, height = image.size
    prepared, geometry = _prepared(image)
    try:
        data = pytesseract.image_to_data(prepared, lang=langs, timeout=TIMEOUT_S,
                                         output_type=pytesseract.Output.DICT)
    except RuntimeError as exc:  # pytesseract's timeout
        raise Unreadable(f"page {number}: Tesseract did not finish in {TIMEOUT_S} s "
                         f"({_one_line(exc)})") from None
    except pytesseract.TesseractError as exc:
        raise Unreadable(f"page {number}: Tesseract failed ({_one_line(exc)})") from None
    finally:
        if prepared is not image:
            prepared.close()
    page = OcrPage(number, "", width, height, dpi)
    parts: list[str] = []
    offset = 0
    last_line: tuple[int, int, int] | None = None
    last_right = last_height = 0
    lines: dict[tuple[int, int, int], int] = {}
    for i, raw in enumerate(data["text"]):
        text = str(raw).strip()
        confidence = float(data["conf"][i])
        if not text or confidence < 0:
            continue
        if confidence < SYMBOL_MIN_CONFIDENCE and not any(c.isalnum() for c in text):
            continue
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        left, height = int(data["left"][i]), int(data["height"][i])
        if last_line is not None:
            # Same line: a space; new line of the paragraph: newline; new paragraph: blank line.
            sep = " " if key == last_line else "\n" if key[:2] == last_line[:2] else "\n\n"
            if sep == " " and left - last_right > GAP_LINES * max(height, last_height):
                # Labels of boxes side by side come out as one Tesseract line: a gap wider
                # than a few letters ends the phrase, so "Power Grid" and "Heat Pump" stay two.
                sep = "\n"
            parts.append(sep)
            offset += len(sep)
        last_line = key
        last_right, last_height = left + int(data["width"][i]), height
        line = lines.setdefault(key, len(lines))
        box = geometry.box(int(data["left"][i]), int(data["top"][i]), int(data["width"][i]),
                           int(data["height"][i]))
        page.words.append(Word(offset, offset + len(text), line, box, round(confidence, 1)))
        parts.append(text)
        offset += len(text)
    page.text = "".join(parts)
    page.seconds = time.perf_counter() - started
    return page


def read_image(data: bytes) -> list[OcrPage]:
    """Every page of an image file (one, or each page of a TIFF); raises Unreadable."""
    check_ready()  # before decoding anything: a missing Tesseract is the user's first news
    return [ocr_image(frame, number) for number, frame in enumerate(_frames(data), 1)]


def render_pdf_page(data: bytes, number: int) -> tuple[Any, int]:
    """One PDF page (1-based) as a grayscale image at PDF_DPI (less for a page so large that
    it would pass MAX_PIXELS), and the dpi used; raises Unreadable."""
    import pypdfium2 as pdfium

    try:
        with sourcemap.open_pdf(data) as pdf:
            page = pdf[number - 1]
            width_pt, height_pt = page.get_size()
            dpi = PDF_DPI
            pixels = width_pt * height_pt * (dpi / 72) ** 2
            if pixels > MAX_PIXELS:
                dpi = int(72 * (MAX_PIXELS / (width_pt * height_pt)) ** 0.5)
                log.warning("page %d is large: rendered at %d dpi", number, dpi)
            image = page.render(scale=dpi / 72, grayscale=True).to_pil()
            page.close()
    except pdfium.PdfiumError as exc:
        raise Unreadable(f"cannot render PDF page {number} ({_one_line(exc)}); "
                         "re-save or re-export it") from None
    return image, dpi


# Pictures smaller than this on the page (points, 1/72 inch) or in pixels are rules, bullets,
# logos and icons, not figures worth a reading; a page with more pictures than MAX_PICTURES
# (a tiled scan, a mosaic) has its largest MAX_PICTURES read.
PICTURE_MIN_POINTS = 36.0
PICTURE_MIN_PIXELS = 32
MAX_PICTURES = 16


def pdf_pictures(data: bytes, number: int) -> PagePictures:
    """The pictures on one PDF page (1-based), as drawn (masks and turns applied), with their
    boxes in the page's pixels at PDF_DPI; raises Unreadable when the page cannot be parsed."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    found: list[tuple[float, Picture]] = []
    try:
        with sourcemap.open_pdf(data) as pdf:
            page = pdf[number - 1]
            width_pt, height_pt = page.get_size()
            scale = PDF_DPI / 72
            for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]):
                left, bottom, right, top = obj.get_bounds()
                px_width, px_height = obj.get_px_size()
                if (min(right - left, top - bottom) < PICTURE_MIN_POINTS
                        or min(px_width, px_height) < PICTURE_MIN_PIXELS):
                    continue
                if px_width * px_height > MAX_PIXELS:
                    log.warning("page %d: a picture of %d x %d pixels is above kg's limit "
                                "of %d megapixels: not read", number, px_width, px_height,
                                MAX_PIXELS // 1_000_000)
                    continue
                try:
                    image = obj.get_bitmap(render=True).to_pil()
                except (pdfium.PdfiumError, ValueError) as exc:
                    log.warning("page %d: a picture cannot be decoded (%s): not read",
                                number, _one_line(exc))
                    continue
                box = (max(0, round(left * scale)), max(0, round((height_pt - top) * scale)),
                       round(right * scale), round((height_pt - bottom) * scale))
                found.append(((right - left) * (top - bottom), Picture(image, box)))
            page.close()
    except pdfium.PdfiumError as exc:
        raise Unreadable(f"cannot read the pictures of PDF page {number} "
                         f"({_one_line(exc)}); re-save or re-export it") from None
    if len(found) > MAX_PICTURES:
        log.warning("page %d has %d pictures: the %d largest are read", number, len(found),
                    MAX_PICTURES)
        kept = {id(p) for _area, p in sorted(found, key=lambda f: -f[0])[:MAX_PICTURES]}
        for _area, picture in found:
            if id(picture) not in kept:
                picture.image.close()
        found = [f for f in found if id(f[1]) in kept]
    # Reading order: top to bottom, then left to right.
    pictures = sorted((p for _area, p in found), key=lambda p: (p.box[1], p.box[0]))
    return PagePictures(number, round(width_pt * scale), round(height_pt * scale), PDF_DPI,
                        pictures)


def read_pdf_pages(data: bytes, numbers: Iterable[int]) -> dict[int, OcrPage]:
    """OCR of the given PDF pages (1-based), rendered by render_pdf_page; raises Unreadable."""
    check_ready()
    pages: dict[int, OcrPage] = {}
    for number in numbers:
        image, dpi = render_pdf_page(data, number)
        try:
            pages[number] = ocr_image(image, number, dpi)
        finally:
            image.close()
    return pages


_BLOCK = re.compile(r"\n[ \t]*\n\s*(?=\S)")  # where a block of a read page starts


def _placed(box: sourcemap.Box, page: OcrPage) -> Any:
    """Maps a box of a picture's own pixels onto the page it is drawn on (its box there)."""
    sx = (box[2] - box[0]) / max(page.width, 1)
    sy = (box[3] - box[1]) / max(page.height, 1)

    def place(b: sourcemap.Box) -> sourcemap.Box:
        return (round(box[0] + b[0] * sx), round(box[1] + b[1] * sy),
                round(box[0] + b[2] * sx), round(box[1] + b[3] * sy))
    return place


def assemble(pages: Sequence[tuple[int, str | OcrPage | DescribedPage | TextPage]],
             blocks: Collection[int] = ()) -> tuple[str, Boundaries, dict[str, Any]]:
    """The document text of numbered pages (a PDF's text layer or OCR), the offsets where each
    page (and each picture read on a text page) starts, and the source map; pages without text
    are left out. `blocks` (page numbers): each block of such a page read from pixels (a
    paragraph: a slide's title, a group of bullets, the 'Shown:' part of a description) is a
    block cut (Boundaries.blocks), and so is the page's start."""
    parts: list[str] = []
    boundaries: list[int] = []
    block_cuts: list[int] = []
    listed: list[dict[str, Any]] = []
    words: list[list[Any]] = []
    lines: dict[int, int] = {}
    offset = 0
    for number, page in pages:
        pieces: list[tuple[OcrPage | DescribedPage | str, dict[str, Any]]] = []
        if isinstance(page, TextPage):
            # Every entry of the page carries its size: the page thumbnail scales boxes by it.
            size = {"width": page.width, "height": page.height, "dpi": page.dpi}
            pieces.append((page.text.strip(), size if page.pictures else {}))
            pieces += [(read, {**size, "box": list(box)}) for box, read in page.pictures]
        else:
            pieces.append((page.strip() if isinstance(page, str) else page, {}))
        for piece, extra in pieces:
            text = piece if isinstance(piece, str) else piece.text
            if not text.strip():
                continue
            boundaries.append(offset)
            cut = not isinstance(piece, str) and number in blocks
            if cut:
                block_cuts += [offset, *(offset + m.end() for m in _BLOCK.finditer(text))]
            entry: dict[str, Any] = {"page": number, "start": offset, "end": offset + len(text),
                                     "reader": "text", **extra}
            if isinstance(piece, OcrPage):
                entry.setdefault("width", piece.width)
                entry.setdefault("height", piece.height)
                entry.setdefault("dpi", piece.dpi)
                entry["reader"] = "ocr"
                place = _placed(extra["box"], piece) if "box" in extra else (lambda b: b)
                # Lines are numbered per page: the pictures of one page continue the count.
                base = lines.get(number, 0)
                words.extend([offset + w.start, offset + w.end, number, base + w.line,
                              *place(w.box), w.confidence] for w in piece.words)
                lines[number] = base + 1 + max((w.line for w in piece.words), default=0)
            elif isinstance(piece, DescribedPage):
                # A vision model's description: the page (or the picture's box on it) as a
                # whole is the evidence.
                entry.setdefault("width", piece.width)
                entry.setdefault("height", piece.height)
                entry.setdefault("dpi", piece.dpi)
                entry["reader"] = "describe"
            listed.append(entry)
            parts.append(text + "\n\n")
            offset += len(parts[-1])
            if cut:
                block_cuts.append(offset)  # what follows a slide starts a chunk too
    block_cuts = [c for c in block_cuts if c < offset]  # not the end of the text
    return ("".join(parts), Boundaries(sorted({*boundaries, *block_cuts}), block_cuts),
            {"version": sourcemap.VERSION, "pages": listed, "words": words})
