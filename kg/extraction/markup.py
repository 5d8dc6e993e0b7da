"""Text and section starts of marked-up documents: HTML (main content only) and Markdown.

HTML goes through trafilatura, which keeps an article's text and leaves out navigation,
footers, forms and cookie banners; pages too small or too broken for it go through a plain
walk of the repaired tree that drops those parts by name. Markdown keeps its source text (so
evidence offsets point into the file) and markdown-it-py finds the headings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

# Below this many characters of main text trafilatura falls back to heuristics that flatten
# headings and paragraphs into one block (its own MIN_EXTRACTED_SIZE): the plain walk is
# better there, and such a page carries little boilerplate anyway.
MIN_MAIN_CHARS = 250


@dataclass(frozen=True)
class _Tags:
    """How one tree's tag names map to text structure."""

    headings: frozenset[str]
    blocks: frozenset[str]
    preformatted: frozenset[str]
    breaks: frozenset[str]
    cells: frozenset[str]
    dropped: frozenset[str]


# Tag names of trafilatura's own output tree (TEI-like).
_MAIN = _Tags(
    headings=frozenset({"head"}),
    blocks=frozenset({"p", "list", "item", "table", "row", "quote", "div", "note", "fw"}),
    preformatted=frozenset({"code"}),
    breaks=frozenset({"lb"}),
    cells=frozenset({"cell"}),
    dropped=frozenset({"graphic"}),
)
# Plain HTML, for the fallback walk.
_HTML = _Tags(
    headings=frozenset({"h1", "h2", "h3", "h4", "h5", "h6"}),
    blocks=frozenset({"p", "div", "section", "article", "main", "header", "li", "ul", "ol",
                      "dl", "dt", "dd", "tr", "table", "thead", "tbody", "tfoot", "caption",
                      "blockquote", "figure", "figcaption", "address", "details", "summary",
                      "hr", "center"}),
    preformatted=frozenset({"pre"}),
    breaks=frozenset({"br"}),
    cells=frozenset({"td", "th"}),
    dropped=frozenset({"head", "script", "style", "noscript", "template", "svg", "math",
                       "nav", "footer", "aside", "form", "button", "select", "textarea",
                       "label", "dialog", "iframe", "object", "embed", "canvas", "audio",
                       "video", "map"}),
)
_BOILERPLATE_ROLES = {"navigation", "banner", "contentinfo", "search", "dialog", "alertdialog",
                      "complementary", "menu", "menubar"}
_BOILERPLATE_NAMES = re.compile(r"cookie|consent|gdpr|newsletter|subscribe", re.IGNORECASE)
_CONTENT_CONTAINERS = {"html", "body", "main", "article"}
_SPACES = re.compile(r"\s+")


def _text_of(node: str | None) -> str:
    return _SPACES.sub(" ", node) if node else ""


def _is_boilerplate(element: Any) -> bool:
    """Parts of a page that are not its content, recognised by attribute (fallback walk)."""
    if element.get("hidden") is not None or element.get("aria-hidden") == "true":
        return True
    if element.get("role") in _BOILERPLATE_ROLES:
        return True
    if element.tag in _CONTENT_CONTAINERS:  # <body class="has-cookie-banner"> is the page
        return False
    names = f"{element.get('id', '')} {element.get('class', '')}"
    return bool(names.strip()) and _BOILERPLATE_NAMES.search(names) is not None


class _Blocks:
    """Walks a tree into paragraphs: (is_heading, text), in document order."""

    def __init__(self, tags: _Tags, by_attribute: bool) -> None:
        self.tags = tags
        self.by_attribute = by_attribute
        self.out: list[tuple[bool, str]] = []
        self.line: list[str] = []

    def flush(self, heading: bool = False) -> None:
        text = "".join(self.line)
        self.line.clear()
        text = re.sub(r" *\n[ \n]*", "\n", text).strip()
        if text:
            self.out.append((heading, text))

    def walk(self, element: Any) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""  # comments, PIs: no tag
        tag = tag.lower()
        if not tag or tag in self.tags.dropped or (self.by_attribute and
                                                    _is_boilerplate(element)):
            return
        if tag in self.tags.preformatted:
            self.flush()
            raw = "".join(element.itertext()).replace("\t", "    ")
            # Blank lines would read as paragraph breaks: keep the lines, drop the gaps.
            text = "\n".join(line.rstrip() for line in raw.split("\n") if line.strip())
            if text:
                self.out.append((False, text))
            return
        heading = tag in self.tags.headings
        block = heading or tag in self.tags.blocks
        if block:
            self.flush()
        elif tag in self.tags.breaks:
            self.line.append("\n")
        elif tag in self.tags.cells:
            previous = element.getprevious()
            if previous is not None and isinstance(previous.tag, str) \
                    and previous.tag.lower() in self.tags.cells:
                self.line.append(" | ")
        self.line.append(_text_of(element.text))
        for child in element:
            self.walk(child)
            self.line.append(_text_of(child.tail))
        if block:
            self.flush(heading)


def _assemble(blocks: list[tuple[bool, str]]) -> tuple[str, list[int]]:
    """Paragraphs joined by blank lines, and the offsets where headings start."""
    parts: list[str] = []
    boundaries: list[int] = []
    length = 0
    for heading, block in blocks:
        if parts:
            parts.append("\n\n")
            length += 2
        if heading:
            boundaries.append(length)
        parts.append(block)
        length += len(block)
    return "".join(parts), boundaries


@cache
def quiet_library_logs(name: str) -> None:
    """Send a library's warnings to our log at debug level instead of the terminal."""

    class _ToDebug(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log.debug("%s: %s", record.name, record.getMessage())

    library = logging.getLogger(name)
    library.addHandler(_ToDebug())
    library.propagate = False  # else Python's last-resort handler prints them on stderr


def _main_content(html: str) -> list[tuple[bool, str]] | None:
    """trafilatura's main text as paragraphs, or None when it finds (almost) nothing."""
    import trafilatura

    quiet_library_logs("trafilatura")
    # favor_recall: on broken markup the balanced mode drops whole sections; the
    # boilerplate filters still apply. Offline: the string is parsed, nothing is fetched.
    try:
        document = trafilatura.bare_extraction(
            html, favor_recall=True, include_comments=False, include_tables=True,
            include_images=False, include_links=False, with_metadata=False, deduplicate=False)
    # Its heuristics run on arbitrary markup; whatever goes wrong there, the plain walk below
    # still reads the page, so a failure is only worth a debug line.
    except Exception as exc:
        log.debug("trafilatura failed (%s); reading the whole page", exc)
        return None
    body = getattr(document, "body", None)
    if body is None:
        return None
    walker = _Blocks(_MAIN, by_attribute=False)
    walker.line.append(_text_of(body.text))
    for child in body:
        walker.walk(child)
        walker.line.append(_text_of(child.tail))
    walker.flush()
    if sum(len(text) for _, text in walker.out) < MIN_MAIN_CHARS:
        return None
    return walker.out


def _all_content(html: str) -> list[tuple[bool, str]]:
    """Every visible paragraph of the repaired tree, minus navigation, forms and banners."""
    # lxml ships no type information (it comes with trafilatura).
    import lxml.etree  # type: ignore[import-untyped]
    import lxml.html  # type: ignore[import-untyped]

    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    try:
        root = lxml.html.document_fromstring(html.encode("utf-8", "surrogatepass"), parser)
    except (lxml.etree.ParserError, ValueError):
        return []  # nothing parseable: an empty document
    walker = _Blocks(_HTML, by_attribute=True)
    walker.walk(root)
    walker.flush()
    return walker.out or _tag_soup(html)


def _tag_soup(html: str) -> list[tuple[bool, str]]:
    """Last resort for markup the parser gives up on (nesting deeper than libxml2's 255
    levels is dropped, not repaired): the words between the tags, as one paragraph."""
    import html as entities

    text = re.sub(r"<(script|style|template)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", " ", html,
                  flags=re.DOTALL | re.IGNORECASE)
    text = _SPACES.sub(" ", entities.unescape(text)).strip()
    return [(False, text)] if text else []


def html_to_text(html: str) -> tuple[str, list[int]]:
    """The readable text of a page, paragraphs separated by blank lines, and heading offsets."""
    blocks = _main_content(html)
    if blocks is None:
        blocks = _all_content(html)
    return _assemble(blocks)


# -- Markdown ---------------------------------------------------------------------------------
_FRONT_MATTER = re.compile(r"\A(---|\+\+\+)[ \t]*\n.*?\n\1[ \t]*(\n|\Z)", re.DOTALL)


@cache
def _markdown_parser() -> Any:
    from markdown_it import MarkdownIt

    # Block structure is all that is needed: inline parsing would only cost time.
    return MarkdownIt("commonmark").disable("inline")


def _line_offsets(text: str, lines: list[int]) -> Iterator[int]:
    """Offsets where the given (sorted, 0-based) line numbers start."""
    line, offset = 0, 0
    for wanted in lines:
        while line < wanted:
            offset = text.index("\n", offset) + 1
            line += 1
        yield offset


def markdown_boundaries(text: str) -> list[int]:
    """Offsets of the top-level headings (ATX and setext) of a Markdown text.

    Front matter (YAML `---` or TOML `+++`) is not a heading; neither is `# x` in a code block.
    """
    parsed = text
    front = _FRONT_MATTER.match(text)
    if front:  # blank its lines so line numbers still match the text
        parsed = "\n" * front.group(0).count("\n") + text[front.end():]
    lines = [token.map[0] for token in _markdown_parser().parse(parsed)
             if token.type == "heading_open" and token.level == 0 and token.map]
    return list(_line_offsets(text, sorted(set(lines))))
