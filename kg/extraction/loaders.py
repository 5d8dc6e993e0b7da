"""Turn files into text: .txt, .md (headings kept as boundaries), .pdf (text layer, OCR for
pages without one), .html, and images read by OCR (kg.extraction.ocr).

A file that cannot be read becomes a `Skipped` with a one-line reason; the run goes on.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kg import sourcemap
from kg.errors import UsageError
from kg.extraction import ocr
from kg.extraction.markup import html_to_text, markdown_boundaries, quiet_library_logs

__all__ = ["KINDS", "MAX_BYTES", "LoadedDocument", "Skipped", "discover", "html_to_text", "load",
           "markdown_boundaries", "sha256_file"]

log = logging.getLogger(__name__)

KINDS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
         ".pdf": "pdf", ".html": "html", ".htm": "html",
         **dict.fromkeys(ocr.IMAGE_SUFFIXES, "image")}
MAX_BYTES = sourcemap.MAX_FILE_BYTES
_HASH_BLOCK = 1 << 20
# A PDF page whose text layer has fewer letters and digits than this is read by OCR instead:
# scanners often stamp a page number or a blank layer on a page that is only a picture.
MIN_PAGE_CHARACTERS = 3
# A page read from pixels with at most this many words is a slide or a diagram (the generated
# slides of benchmarks/vision.py hold 15 to 45), not a page of a report (150 and more).
SLIDE_WORDS = 80


@dataclass
class ReadCall:
    """One page or image read by a reader: a `calls` row of kind 'ocr' (seconds, no tokens)
    or 'describe' (a vision model's tokens and latency), written once the document has a run."""

    kind: str  # 'ocr' | 'describe' (kg.db.models.CALL_KINDS)
    page: int
    provider: str
    model: str
    seconds: float
    profile_name: str | None = None  # None: the run's profile (OCR serves no profile)
    profile_revision: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    thinking_tokens: int = 0
    load_s: float | None = None
    prompt_eval_s: float | None = None
    eval_s: float | None = None
    finish_reason: str | None = None
    endpoint: str | None = None
    fallback: bool = False


Page = ocr.OcrPage | ocr.DescribedPage


class ImageReader(Protocol):
    """What reads images and PDF pages without a text layer: Tesseract (OcrReader) or a vision
    profile's model (kg.extraction.vision.Describer). Both raise ocr.Unreadable with the
    file's one-line skip reason. `page_images`: also read the pictures of PDF pages that have
    a text layer (the profile setting)."""

    @property
    def what(self) -> str: ...  # who reads, for messages: "OCR", "the vision model"

    @property
    def page_images(self) -> bool: ...

    def read_image(self, data: bytes) -> list[tuple[Page, ReadCall]]: ...

    def read_pdf_pages(self, data: bytes,
                       numbers: list[int]) -> dict[int, tuple[Page, ReadCall]]: ...

    def read_picture(self, image: Any, number: int) -> tuple[Page, ReadCall]: ...


class OcrReader:
    """The default reader: offline OCR (kg.extraction.ocr), one 'ocr' call per page."""

    what = "OCR"

    def __init__(self, page_images: bool = False) -> None:
        self.page_images = page_images

    @staticmethod
    def _call(page: ocr.OcrPage) -> ReadCall:
        return ReadCall("ocr", page.number, "tesseract", "tesseract", page.seconds)

    def read_picture(self, image: Any, number: int) -> tuple[Page, ReadCall]:
        page = ocr.ocr_image(image, number)
        return page, self._call(page)

    def read_image(self, data: bytes) -> list[tuple[Page, ReadCall]]:
        return [(p, self._call(p)) for p in ocr.read_image(data)]

    def read_pdf_pages(self, data: bytes,
                       numbers: list[int]) -> dict[int, tuple[Page, ReadCall]]:
        return {n: (p, self._call(p)) for n, p in ocr.read_pdf_pages(data, numbers).items()}


@dataclass
class LoadedDocument:
    """A document's text plus the offsets where a section starts (preferred chunk cuts)."""

    path: Path
    kind: str
    text: str
    sha256: str
    size_bytes: int
    boundaries: list[int] = field(default_factory=list)
    # Pages and boxes of OCR text (kg.sourcemap's format); None for text read as text.
    source_map: dict[str, Any] | None = None
    # Which reader served each page read from pixels (calls rows once the run exists).
    reads: list[ReadCall] = field(default_factory=list)


@dataclass
class Skipped:
    """A file that is not read, and why (one line)."""

    path: Path
    reason: str


def sha256_file(path: Path) -> str | None:
    """Hex SHA-256 of a file's bytes, read in blocks; None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _unreachable(path: Path) -> str | None:
    """Why a path cannot be followed (missing, symlink loop, broken link, not a regular file
    or folder), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop; point the link at a real file or folder"
        if path.is_symlink():
            return (f"broken symlink (to {os.readlink(path)}); fix the link or give "
                    "the file itself")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "no such file or directory"
        return f"cannot be read: {exc.strerror or exc}"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        # Opening a FIFO waits for a writer forever; devices and sockets are no documents.
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
        return f"not a regular file ({kind}); kg reads regular files only"
    return None


def _listed(folder: Path, recursive: bool) -> list[Path]:
    """The documents in a folder, sorted. Hidden files and gold annotations (name.gold.json
    beside name.txt) are left out silently; links that lead nowhere are kept so that `load`
    reports them instead of losing them without a word."""
    found = []
    for p in folder.glob("**/*" if recursive else "*"):
        if p.name.endswith(".gold.json") or any(
                part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if p.is_file() or (p.is_symlink() and not p.exists()):
            found.append(p)
    return sorted(found)


def discover(paths: list[Path], recursive: bool) -> list[Path]:
    """Expand the given paths into files; a path that cannot be followed is a usage error
    before any work (one line naming it: missing, symlink loop or broken link)."""
    problems = [(p, reason) for p in paths if (reason := _unreachable(p))]
    missing = [str(p) for p, reason in problems if reason == "no such file or directory"]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}; check the path")
    if problems:
        path, reason = problems[0]
        raise UsageError(f"{path}: {reason}")
    files: list[Path] = []
    for path in paths:
        files.extend(_listed(path, recursive) if path.is_dir() else [path])
    seen: set[Path] = set()
    unique = []
    for f in files:
        try:
            resolved = f.resolve()
        except (OSError, RuntimeError):  # a link loop inside a folder: keep it for `load`
            resolved = f.absolute()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(f)
    return unique


def load(path: Path, reader: ImageReader | None = None) -> LoadedDocument | Skipped:
    """Read one file, or say in one line why it is skipped. Images and PDF pages without a
    text layer go to `reader` (default: offline OCR)."""
    reader = reader or OcrReader()
    if (problem := _unreachable(path)) is not None:
        return Skipped(path, problem)
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        return Skipped(path, f"unsupported file type {path.suffix or '(none)'!r}; kg reads "
                             f"{', '.join(sorted(set(KINDS)))}")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return Skipped(path, f"larger than {MAX_BYTES // 2**20} MB")
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(path, f"cannot read: {exc.strerror or exc}")
    if not data.strip():
        return Skipped(path, "empty file")
    sha = hashlib.sha256(data).hexdigest()
    if kind == "pdf":
        try:
            return _pdf(path, data, sha, reader)
        except ImportError as exc:
            raise _not_installed(path, "PDF", exc) from None
    if kind == "image":
        try:
            return _image(path, data, sha, reader)
        except ImportError as exc:
            raise _not_installed(path, "an image", exc) from None
    if b"\x00" in data[:8192]:
        return Skipped(path, "binary content (NUL bytes) in a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Skipped(path, f"not UTF-8 text (byte {exc.start}); convert it to UTF-8")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    boundaries: list[int] = []
    try:
        if kind == "markdown":
            boundaries = markdown_boundaries(text)
        elif kind == "html":
            text, boundaries = html_to_text(text)
    except ImportError as exc:
        raise _not_installed(path, "HTML" if kind == "html" else "Markdown", exc) from None
    if not text.strip():
        return Skipped(path, "no text content")
    return LoadedDocument(path, kind, text, sha, len(data), boundaries)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else type(exc).__name__
    return message if len(message) <= 160 else message[:157] + "..."


# What reading a file imports (itself or through trafilatura and jusText), longest name first:
# a library's own ImportError (lxml.html.clean) names the missing package only in its text.
_LIBRARIES = ("lxml_html_clean", "trafilatura", "justext", "lxml", "pypdfium2", "pypdf",
              "pytesseract", "markdown_it", "PIL")
_DISTRIBUTIONS = {"justext": "jusText", "markdown_it": "markdown-it-py", "PIL": "Pillow"}


def _not_installed(path: Path, what: str, exc: ImportError) -> UsageError:
    """A library this type of file needs does not import: one line (exit 2), not a traceback.
    These are dependencies of kg itself, so installing the package is the fix, not an extra."""
    named = exc.name or next((m for m in _LIBRARIES if m in str(exc)), "")
    module = named.partition(".")[0]
    if not module:
        return UsageError(f"cannot read {path}: {what} needs a library that does not import "
                          f"({_one_line(exc)}); reinstall kg with its dependencies")
    package = _DISTRIBUTIONS.get(module, module)
    return UsageError(f"cannot read {path}: {what} needs the Python package {package}, which "
                      f"is not installed; pip install {package}")


def _pdf_pages(path: Path, data: bytes) -> list[str] | str:
    """The text of each page, or the reason the PDF cannot be read."""
    from pypdf import PdfReader

    if b"%PDF-" not in data[:1024]:  # where the format puts its header
        return "not a PDF (no %PDF- header); check the file's type"
    quiet_library_logs("pypdf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                return "encrypted PDF; save a decrypted copy and ingest that"
            pages = [page.extract_text() or "" for page in reader.pages]
        # A damaged file can make the parser raise nearly anything (struct, zlib, key and
        # recursion errors among them): each means the same thing here, an unreadable PDF.
        except Exception as exc:
            return f"unreadable PDF ({_one_line(exc)}); re-save or re-export it"
    for warning in caught:
        log.debug("pypdf: %s: %s", path, warning.message)
    return pages


def _pdf(path: Path, data: bytes, sha: str, reader: ImageReader) -> LoadedDocument | Skipped:
    pages = _pdf_pages(path, data)
    if isinstance(pages, str):
        return Skipped(path, pages)
    scanned = [n for n, page in enumerate(pages, 1)
               if sum(c.isalnum() for c in page) < MIN_PAGE_CHARACTERS]
    read: list[tuple[int, str | Page]] = list(enumerate(pages, 1))
    calls: list[ReadCall] = []
    if scanned:
        try:
            served = reader.read_pdf_pages(data, scanned)
            found = {n: page for n, (page, _call) in served.items()}
            calls = [call for _page, call in served.values()]
            log.info("%s: %d page(s) without a text layer read by OCR", path, len(scanned))
        except ocr.Unreadable as exc:
            return Skipped(path, str(exc))
        except UsageError as exc:  # no Tesseract (or language pack): the run goes on
            if len(scanned) == len(pages):
                return Skipped(path, f"{len(scanned)} page(s) without a text layer need OCR: "
                                     f"{exc}")
            # Often blank pages of a text PDF: its text is worth more than a skipped file.
            log.warning("%s: %d page(s) without a text layer not read: %s", path, len(scanned),
                        exc)
            found, scanned = {}, []
        read = [(n, found.get(n, page)) for n, page in read]
    pictured = False
    if reader.page_images:
        read, picture_calls = _page_pictures(path, data, read, reader)
        calls += picture_calls
        pictured = bool(picture_calls)
    # A scanned page of few words is a slide or a diagram: read block by block, as an image
    # is. A page of prose keeps its paragraphs together (700-token chunks, as a text layer).
    slides = {n for n, page in read if isinstance(page, ocr.OcrPage | ocr.DescribedPage)
              and len(page.text.split()) <= SLIDE_WORDS}
    text, boundaries, source_map = ocr.assemble(read, blocks=slides)
    if not text.strip():
        return Skipped(path, f"PDF has no text: no text layer, and OCR found none on its "
                             f"{len(pages)} page(s) (pictures only?)")
    return LoadedDocument(path, "pdf", text, sha, len(data), boundaries,
                          source_map if scanned or pictured else None, calls)


def _page_pictures(path: Path, data: bytes, read: list[tuple[int, str | Page]],
                   reader: ImageReader) -> tuple[list[tuple[int, Any]], list[ReadCall]]:
    """Pages with a text layer get the readings of their pictures appended (ocr.TextPage);
    a picture that cannot be read is left out with a warning, the page keeps its text."""
    out: list[tuple[int, Any]] = []
    calls: list[ReadCall] = []
    stopped: str | None = None  # no Tesseract, or a model that cannot see: no use trying on
    for number, page in read:
        if not isinstance(page, str) or not page.strip() or stopped:
            out.append((number, page))
            continue
        try:
            found = ocr.pdf_pictures(data, number)
        except ocr.Unreadable as exc:
            log.warning("%s: %s", path, exc)
            out.append((number, page))
            continue
        text_page = ocr.TextPage(number, page, found.width, found.height, found.dpi)
        for picture in found.pictures:
            try:
                if stopped is None:
                    read_page, call = reader.read_picture(picture.image, number)
                    text_page.pictures.append((picture.box, read_page))
                    calls.append(call)
            except ocr.Unreadable as exc:
                log.warning("%s: a picture on page %d not read: %s", path, number, exc)
            except UsageError as exc:
                stopped = str(exc)
                log.warning("%s: pictures on pages with text not read: %s", path, exc)
            finally:
                picture.image.close()
        out.append((number, text_page if text_page.pictures else page))
    return out, calls


def _image(path: Path, data: bytes, sha: str, reader: ImageReader) -> LoadedDocument | Skipped:
    """An image read by its reader: its text, a boundary per page (multi-page TIFF), the
    source map."""
    try:
        served = reader.read_image(data)
    except ocr.Unreadable as exc:
        return Skipped(path, str(exc))
    # Each block of an image (a slide's title, a group of bullets, a caption) is read as its
    # own chunk by default (ChunkingOptions.block_min_tokens): a whole slide in one chunk
    # loses names with the bundled model (benchmarks/vision.py: 39% vs 76% concept F1).
    # Scanned PDF pages are cut so only when they hold few words (SLIDE_WORDS).
    pages = [(p.number, p) for p, _call in served]
    text, boundaries, source_map = ocr.assemble(pages, blocks={n for n, _p in pages})
    if not text.strip():
        return Skipped(path, f"{reader.what} found no text in the image")
    return LoadedDocument(path, "image", text, sha, len(data), boundaries, source_map,
                          [call for _page, call in served])
