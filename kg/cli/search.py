"""`kg search TEXT`: concepts, evidence quotes and chunks that match, best first."""

from __future__ import annotations

import click

from kg import search as kg_search
from kg.cli import context
from kg.cli.render import emit, emit_object, json_option, table


@click.command(name="search")
@click.argument("query", metavar="TEXT")
@click.option("--limit", default=20, show_default=True, type=context.LIMIT, metavar="N",
              help="Show at most N hits.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(kg_search.KINDS),
              help="Only hits of this kind (repeatable); default: all.")
@json_option
def search(query: str, limit: int, kinds: tuple[str, ...], output: str) -> None:
    """Full-text search over concept labels, aliases, descriptions, evidence quotes and chunk
    text (every word; if nothing has them all, any word), with snippets."""
    data = context.read(kg_search.search, query, limit=limit, kinds=kinds or kg_search.KINDS)
    if output != "table":
        emit_object(data, output)
        return
    if not data["hits"]:
        emit(f"nothing matches {query!r}")
        return
    note = "" if data["mode"] == "all" else " (no hit has every word: any word)"
    emit(f"{len(data['hits'])} hit(s) for {query!r}{note}")
    emit(table(data["hits"], ["kind", "id", "title", "snippet", "document"]))
