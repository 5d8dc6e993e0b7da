"""Literal values (a year, a number, a date, a name string): found verbatim in the chunk and
given a normalised form beside it, so equal values written two ways compare equal."""

from __future__ import annotations

import re
from datetime import datetime

MONTHS = ("%d %B %Y", "%B %d, %Y", "%B %d %Y", "%d %b %Y", "%b %d, %Y", "%Y-%m-%d",
          "%d/%m/%Y", "%Y/%m/%d", "%B %Y", "%Y")
NUMBER = re.compile(r"[-+]?\d[\d,. ]*")


def normalise_literal(value: str, kind: str) -> str:
    """The canonical form of a verbatim value: numbers without separators, ISO dates, years
    as four digits; strings with whitespace collapsed. A value that does not parse is kept
    as written (it is still verbatim text; only its normal form is unknown)."""
    text = " ".join(value.split())
    if kind == "number":
        return _number(text) or text
    if kind == "year":
        match = re.search(r"\b\d{3,4}\b", text)
        return match.group() if match else text
    if kind == "date":
        return _date(text) or text
    return text


def _number(text: str) -> str | None:
    match = NUMBER.search(text)
    if match is None:
        return None
    digits = match.group().strip().replace(",", "").replace(" ", "")
    try:
        number = float(digits)
    except ValueError:
        return None
    return str(int(number)) if number.is_integer() else repr(number)


def _date(text: str) -> str | None:
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text.strip(" .,"))
    for fmt in MONTHS:
        try:
            parsed = datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
        if fmt == "%Y":
            return f"{parsed.year:04d}"
        if fmt == "%B %Y":
            return f"{parsed.year:04d}-{parsed.month:02d}"
        return parsed.date().isoformat()
    return None
