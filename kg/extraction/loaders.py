"""Turn files into text: .txt, .md (headings kept as boundaries), .pdf (text layer), .html."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from kg.errors import UsageError

KINDS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
         ".pdf": "pdf", ".html": "html", ".htm": "html"}
MAX_BYTES = 200 * 1024 * 1024


@dataclass
class LoadedDocument:
    """A document's text plus the offsets where a section starts (preferred chunk cuts)."""

    path: Path
    kind: str
    text: str
    sha256: str
    size_bytes: int
    boundaries: list[int] = field(default_factory=list)


@dataclass
class Skipped:
    path: Path
    reason: str


def discover(paths: list[Path], recursive: bool) -> list[Path]:
    """Expand the given paths into files; a missing path is a usage error before any work."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}; check the path")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            # Hidden files and gold annotations (name.gold.json beside name.txt) are not
            # documents: leave them out silently instead of reporting them as skipped.
            files.extend(sorted(p for p in path.glob(pattern) if p.is_file()
                                and not p.name.endswith(".gold.json")
                                and not any(part.startswith(".") for part in
                                            p.relative_to(path).parts)))
        else:
            files.append(path)
    seen: set[Path] = set()
    unique = []
    for f in files:
        resolved = f.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(f)
    return unique


def load(path: Path) -> LoadedDocument | Skipped:
    """Read one file, or say in one line why it is skipped."""
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
        return _pdf(path, data, sha)
    if b"\x00" in data[:8192]:
        return Skipped(path, "binary content (NUL bytes) in a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Skipped(path, f"not UTF-8 text (byte {exc.start}); convert it to UTF-8")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    boundaries: list[int] = []
    if kind == "markdown":
        boundaries = [m.start() for m in re.finditer(r"^#{1,6}\s", text, re.MULTILINE)]
    elif kind == "html":
        text, boundaries = html_to_text(text)
    if not text.strip():
        return Skipped(path, "no text content")
    return LoadedDocument(path, kind, text, sha, len(data), boundaries)


def _pdf(path: Path, data: bytes, sha: str) -> LoadedDocument | Skipped:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        return Skipped(path, f"unreadable PDF: {exc}")
    text, boundaries, offset = "", [], 0
    for page in pages:
        page = page.strip()
        if not page:
            continue
        boundaries.append(offset)
        text += page + "\n\n"
        offset = len(text)
    if not text.strip():
        return Skipped(path, "PDF has no text layer (scanned?); run OCR first")
    return LoadedDocument(path, "pdf", text, sha, len(data), boundaries)


BLOCK_TAGS = {"p", "div", "section", "article", "li", "tr", "br", "table", "ul", "ol",
              "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "header", "footer"}
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
HIDDEN = {"script", "style", "noscript", "template", "head", "svg"}


MARK = "\x00"  # placed where a heading starts; NUL cannot occur in decoded HTML text we keep


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n" + (MARK if tag in HEADINGS else ""))

    def handle_endtag(self, tag: str) -> None:
        if tag in HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(re.sub(r"\s+", " ", data.replace(MARK, "")))


def html_to_text(html: str) -> tuple[str, list[int]]:
    """Visible text of an HTML page with paragraph breaks, and the offsets of its headings."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    raw = "".join(parser.parts)
    raw = re.sub(r"[ \t]*\n[ \t]*", "\n", raw)
    raw = re.sub(r"\n{3,}", "\n\n", raw)
    raw = re.sub(r"\n\n(\x00\n\n)+", "\n\n\x00", raw)
    raw = raw.strip(" \n")
    text_parts, boundaries, length = [], [], 0
    for i, piece in enumerate(raw.split(MARK)):
        if i:
            boundaries.append(length)
        text_parts.append(piece)
        length += len(piece)
    text = "".join(text_parts)
    return text, sorted({b for b in boundaries if b < len(text)})
