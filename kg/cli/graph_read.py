"""Read commands over the graph: `kg relationships`, `kg graph neighbors|path`, `kg documents`."""

from __future__ import annotations

import click

from kg import graph
from kg.cli import context
from kg.cli.render import (
    emit,
    emit_object,
    emit_rows,
    json_option,
    key_values,
    output_option,
    table,
    text_block,
)
from kg.db.scope import parse_as_of

LIMIT_HELP = "Show at most N rows."
EDGE_COLUMNS = ["id", "source", "type", "target", "confidence", "evidence"]


@click.group()
def relationships() -> None:
    """Browse (and curate) typed relationships between concepts."""


@relationships.command(name="list")
@click.option("--type", "type_", metavar="TYPE", help="Only this relationship type.")
@click.option("--concept", metavar="LABEL", help="Only relationships of this concept.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), metavar="X",
              help="Only relationships with at least this confidence.")
@click.option("--limit", default=100, show_default=True,
              type=context.LIMIT, metavar="N", help=LIMIT_HELP)
@output_option
def relationships_list(type_: str | None, concept: str | None, min_confidence: float | None,
                       limit: int, output: str) -> None:
    """Relationships with both ends, type, confidence and evidence count, by id."""
    rows = context.read(graph.list_relationships, type=type_, concept=concept,
                 min_confidence=min_confidence, limit=limit)
    emit_rows(rows, output, EDGE_COLUMNS)


@click.group(name="graph")
def graph_group() -> None:
    """Walk the graph: neighbours of a concept, paths between two."""


@graph_group.command(name="neighbors")
@click.argument("label")
@click.option("--depth", default=1, show_default=True, type=click.IntRange(1, graph.MAX_DEPTH),
              help="How many relationships away.")
@click.option("--limit", default=500, show_default=True, type=context.LIMIT, metavar="N",
              help="At most N concepts (closest first).")
@click.option("--as-of", "as_of", metavar="DATE",
              help="The graph as it was at DATE (ISO 8601: 2026-12-01 or 2026-12-01T14:30).")
@json_option
def neighbors(label: str, depth: int, limit: int, as_of: str | None, output: str) -> None:
    """Concepts within --depth relationships of LABEL (either direction)."""
    when = parse_as_of(as_of) if as_of is not None else None
    data = context.read(graph.neighbors, label, depth=depth, limit=limit, as_of=when)
    if output != "table":
        emit_object(data, output)
        return
    emit(f"{data['concept']['label']}: {len(data['neighbors'])} concept(s) within {depth} "
         f"relationship(s)" + (" (cut at --limit)" if data["truncated"] else ""))
    emit(table(data["neighbors"], ["distance", "label", "id"]))
    if data["relationships"]:
        emit("\nrelationships:")
        emit(table(data["relationships"], EDGE_COLUMNS))


@graph_group.command(name="path")
@click.argument("a")
@click.argument("b")
@click.option("--max-depth", default=4, show_default=True,
              type=click.IntRange(1, graph.MAX_DEPTH * 2), help="Longest path to look for.")
@json_option
def path(a: str, b: str, max_depth: int, output: str) -> None:
    """A shortest chain of relationships between A and B (either direction per step)."""
    data = context.read(graph.path, a, b, max_depth=max_depth)
    if output != "table":
        emit_object(data, output)
        return
    if not data["steps"]:
        if data["from"] == data["to"]:
            emit(f"{a!r} and {b!r} are the same concept ({data['from']})")
            return
        emit(f"no path of at most {max_depth} relationship(s) between {data['from']!r} and "
             f"{data['to']!r}")
        return
    lines = [f"{s['from']} -[{s['type']}]-> {s['to']}" if s["direction"] == "->"
             else f"{s['to']} <-[{s['type']}]- {s['from']}" for s in data["steps"]]
    emit(text_block("\n".join(lines)))


@click.group()
def documents() -> None:
    """Documents in the graph: list, show, delete."""


@documents.command(name="list")
@click.option("--search", help="Text to look for in paths.")
@click.option("--limit", default=100, show_default=True,
              type=context.LIMIT, metavar="N", help=LIMIT_HELP)
@output_option
def documents_list(search: str | None, limit: int, output: str) -> None:
    """Documents, newest first, with status, chunks and evidence counts."""
    rows = context.read(graph.list_documents, search=search, limit=limit)
    emit_rows(rows, output, ["id", "path", "status", "chunks", "evidence", "created_at"])


@documents.command(name="show")
@click.argument("path")
@json_option
def documents_show(path: str, output: str) -> None:
    """One document (by path or id): versions, runs, its most evidenced concepts."""
    data = context.read(graph.document_detail, path)
    if output != "table":
        emit_object(data, output)
        return
    emit(key_values([("path", data["path"]), ("runs", data["runs"]),
                     ("evidence", data["evidence"]),
                     ("relationships", data["relationships"])]))
    emit("\nversions:")
    emit(table(data["versions"], ["id", "status", "chunks", "size_bytes", "created_at",
                                  "sha256"]))
    emit("\nconcepts:")
    emit(table(data["top_concepts"]))


@documents.command(name="history")
@click.argument("path")
@json_option
def documents_history(path: str, output: str) -> None:
    """The versions of a document, with the concepts and relationships each added and
    removed (what the graph looked like then: `kg export --as-of DATE`)."""
    data = context.read(graph.document_history, path)
    if output != "table":
        emit_object(data, output)
        return
    emit(data["path"])
    emit(table(data["versions"], ["version", "id", "status", "live", "valid_from", "valid_to",
                                  "concepts_added", "concepts_removed", "relationships_added",
                                  "relationships_removed"]))


@documents.command(name="delete")
@click.argument("path")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def documents_delete(path: str, yes: bool, output: str) -> None:
    """Remove a document: its chunks and evidence, then the concepts and relationships left
    without evidence. Runs and LLM calls stay (analytics)."""
    if not yes:
        click.confirm(f"delete {path} and what only it supports from the graph?", abort=True,
                      err=True)
    data = context.read(graph.delete_document, path)
    if output != "table":
        emit_object(data, output)
        return
    emit(f"deleted {data['path']}: {data['chunks']} chunk(s), {data['evidence']} evidence "
         f"row(s), {data['concepts']} concept(s) and {data['relationships']} relationship(s) "
         "left without evidence")
