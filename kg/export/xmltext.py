"""XML text that any parser accepts: escaped markup, and no characters XML 1.0 forbids."""

from __future__ import annotations

import re

# Control characters other than tab, newline and carriage return cannot appear in XML 1.0,
# not even escaped; a label holding one (rare, from odd PDFs) gets U+FFFD in their place.
_FORBIDDEN = "\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff"
_TEXT = re.compile(f"[&<>\r{_FORBIDDEN}]")
_ATTR = re.compile(f"[&<>\"\r\n\t{_FORBIDDEN}]")
_REPLACE = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
            # A raw carriage return reads back as a newline (end-of-line normalisation), and
            # whitespace in an attribute as a space (attribute normalisation): keep them.
            "\r": "&#13;", "\n": "&#10;", "\t": "&#9;"}


def _sub(match: re.Match[str]) -> str:
    return _REPLACE.get(match.group(), "\ufffd")


def text(value: str) -> str:
    """Element content (most labels need no change: checked first, cheaply)."""
    return _TEXT.sub(_sub, value) if _TEXT.search(value) else value


def attr(value: str) -> str:
    """A double-quoted attribute value, whitespace kept."""
    return '"' + (_ATTR.sub(_sub, value) if _ATTR.search(value) else value) + '"'
