"""Human tables (rich) and machine JSON / JSON Lines / CSV: the only place that formats output.

Tables fit the terminal (or $COLUMNS): long cells wrap (cut after MAX_CELL characters), newlines
stay inside their cell, piped output has no trailing spaces, and colour appears only on a
terminal and never with NO_COLOR (rich's own rules).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

import click
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from kg.jsonable import json_default

F = TypeVar("F", bound=Callable[..., Any])
OUTPUTS = ("table", "json", "jsonl", "csv")
MAX_CELL = 200  # characters of one table cell; a list is for scanning, `show`/--json for all


def console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (looked up per call, so test runners capture it)."""
    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value)


def _clip(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
          max_cell: int | None = MAX_CELL) -> RenderableType:
    """A table that fits the terminal; cells are plain text (no markup is interpreted), wrap
    inside their column, and are cut after `max_cell` characters (the full text is in --json)."""
    if not rows:
        return "(none)"
    columns = list(columns or rows[0].keys())
    grid = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for name in columns:
        grid.add_column(name.upper().replace("_", " "), overflow="fold")
    for row in rows:
        grid.add_row(*(Text(_clip(_cell(row.get(c)), max_cell)) for c in columns))
    return grid


def text_block(text: str, style: str | None = None) -> Text:
    """Plain text (no markup) that wraps to the terminal; newlines are kept."""
    return Text(text, style=style or "")


def key_values(pairs: Iterable[tuple[str, Any]]) -> RenderableType:
    """A two-column listing of one object."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(Text(key), Text(_cell(value)))
    return grid


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=json_default, ensure_ascii=False)


def as_jsonl(rows: Iterable[Any]) -> str:
    return "\n".join(json.dumps(r, default=json_default, ensure_ascii=False) for r in rows)


def as_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    fields = list(columns or rows[0].keys())
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in fields})
    return out.getvalue()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, Mapping | list | tuple):
        value = json.dumps(value, default=json_default, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        # --csv is for spreadsheets: text that one would run as a formula is made inert
        # (numbers stay numbers). `kg export --format csv` decides with --escape-formulas.
        from kg.export.cells import escape_formula

        return escape_formula(value)
    return value


def emit(content: RenderableType | str, *, err: bool = False) -> None:
    """Print plain text as is, or a rich renderable fitted to the terminal."""
    if isinstance(content, str):
        click.echo(content, err=err)
        return
    out = console(stderr=err)
    if out.is_terminal:
        out.print(content)
        return
    # Piped or captured: no colour, and no padding spaces at the ends of lines.
    with out.capture() as captured:
        out.print(content)
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    click.echo(text, err=err)


def output_option(func: F) -> F:
    """Add --json, --jsonl and --csv; the command receives `output` (one of OUTPUTS)."""

    @click.option("--json", "as_json_flag", is_flag=True, help="JSON output.")
    @click.option("--jsonl", "as_jsonl_flag", is_flag=True,
                  help="JSON Lines, one row per line.")
    @click.option("--csv", "as_csv_flag", is_flag=True, help="CSV output.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json_flag: bool = False, as_jsonl_flag: bool = False,
                as_csv_flag: bool = False, **kwargs: Any) -> Any:
        chosen = [name for name, on in (("json", as_json_flag), ("jsonl", as_jsonl_flag),
                                        ("csv", as_csv_flag)) if on]
        if len(chosen) > 1:
            raise click.UsageError("give only one of --json, --jsonl, --csv")
        return func(*args, output=chosen[0] if chosen else "table", **kwargs)

    return wrapper  # type: ignore[return-value]


def json_option(func: F) -> F:
    """Add --json for commands that show one nested object; `output` is "json" or "table"."""

    @click.option("--json", "output", flag_value="json", help="JSON output.")
    @functools.wraps(func)
    def wrapper(*args: Any, output: str | None = None, **kwargs: Any) -> Any:
        return func(*args, output=output or "table", **kwargs)

    return wrapper  # type: ignore[return-value]


def emit_rows(rows: Sequence[Mapping[str, Any]], output: str,
              columns: Sequence[str] | None = None) -> None:
    """Rows in the chosen format; `columns` picks and orders the table's (and CSV's) columns."""
    if output == "json":
        emit(as_json(list(rows)))
    elif output == "jsonl":
        if rows:
            emit(as_jsonl(rows))
    elif output == "csv":
        click.echo(as_csv(rows, columns), nl=False)
    else:
        emit(table(rows, columns))


def emit_object(data: Mapping[str, Any], output: str) -> None:
    """One object: key/value lines on a terminal, JSON otherwise (jsonl: one line)."""
    if output == "json":
        emit(as_json(dict(data)))
    elif output == "jsonl":
        emit(as_jsonl([dict(data)]))
    elif output == "csv":
        click.echo(as_csv([dict(data)]), nl=False)
    else:
        emit(key_values(data.items()))
