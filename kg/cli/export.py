"""`kg export`: the graph as GraphML, GEXF, JSONL, Neo4j CSV, Cypher or Turtle, and
`kg export training`: chat-format fine-tuning data."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kg.cli import context
from kg.cli.render import emit
from kg.db.scope import parse_as_of
from kg.errors import UsageError
from kg.export import FORMATS, ExportFilter, export_graph
from kg.training import export_training

SUFFIXES = {".graphml": "graphml", ".gexf": "gexf", ".jsonl": "jsonl", ".cypher": "cypher",
            ".cql": "cypher", ".ttl": "turtle"}
FORMAT_HELP = "; ".join(f"{name}: {text}" for name, text in FORMATS.items())


def _format(fmt: str | None, output: Path | None) -> str:
    if fmt:
        return fmt
    if output is not None and output.suffix.lower() in SUFFIXES:
        return SUFFIXES[output.suffix.lower()]
    raise UsageError("give --format (" + ", ".join(FORMATS) + "), or -o with a known suffix "
                     "(" + ", ".join(SUFFIXES) + ")")


@click.group(invoke_without_command=True)
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), help=FORMAT_HELP)
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="PATH",
              help="File to write (a folder for csv); default: standard output.")
@click.option("--run", type=context.ROW_ID, metavar="N", shell_complete=context.complete_run_ids,
              help="Only what run N has evidence for.")
@click.option("--document", metavar="PATH", help="Only what this document has evidence for.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), metavar="X",
              help="Only relationships with at least this confidence.")
@click.option("--base-iri", default="urn:kg:", show_default=True,
              help="Turtle: the IRI that concept/ID and relationship/ID hang off.")
@click.option("--escape-formulas/--no-escape-formulas", default=False, show_default=True,
              help="csv: put ' before text cells starting with = + - @ (tab, CR) so that a "
                   "spreadsheet shows them instead of running them. Off by default: "
                   "neo4j-admin would import the ' as part of the label.")
@click.option("--as-of", "as_of", metavar="DATE",
              help="The graph as it was at DATE (ISO 8601: 2026-12-01 or 2026-12-01T14:30).")
@click.pass_context
def export(ctx: click.Context, fmt: str | None, output: Path | None, run: int | None,
           document: str | None, min_confidence: float | None, base_iri: str,
           escape_formulas: bool, as_of: str | None) -> None:
    """Write the graph out for other tools (streams: any size of graph in bounded memory).

    \b
    kg export --format graphml -o graph.graphml     networkx, Gephi, yEd, Cytoscape
    kg export -o graph.gexf                         Gephi (format from the suffix)
    kg export --format csv -o neo4j/                neo4j-admin database import
    kg export --format cypher -o graph.cypher       cypher-shell -f graph.cypher
    kg export --format turtle --run 3               RDF of one run, to standard output
    kg export training -o train.jsonl               fine-tuning data (see its --help)
    """
    if ctx.invoked_subcommand is not None:
        return
    chosen = _format(fmt, output)
    if escape_formulas and chosen != "csv":
        raise UsageError(f"--escape-formulas is for --format csv; {chosen} has no cells a "
                         "spreadsheet would run")
    scope = ExportFilter(run=run, document=document, min_confidence=min_confidence,
                         as_of=parse_as_of(as_of) if as_of is not None else None)
    database = context.database()
    try:
        result = export_graph(database, chosen, output, scope=scope, base_iri=base_iri,
                              stream=None if output else sys.stdout,
                              escape_formulas=escape_formulas)
    finally:
        database.dispose()
    if output is not None:
        emit(f"wrote {result.concepts} concept(s) and {result.relationships} relationship(s) "
             f"as {chosen} to {', '.join(result.paths)} in {result.seconds:.1f}s")


@export.command(name="training")
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="PATH",
              help="JSONL file to write; default: standard output.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), metavar="X",
              help="Leave out relationships below this confidence.")
@click.option("--profile", help="Profile whose prompt and output bounds to use "
              "(default: the active one).")
def training(output: Path | None, min_confidence: float | None, profile: str | None) -> None:
    """Chat-format JSONL for fine-tuning: system prompt, chunk, and the chunk's validated
    extraction (curation applied) as the assistant reply; only chunks whose quotes the model
    wrote verbatim."""
    database = context.database()
    try:
        result = export_training(database, output, min_confidence=min_confidence,
                                 profile=profile,
                                 stream=None if output else sys.stdout)
    finally:
        database.dispose()
    summary = (f"{result.examples} example(s) from {result.chunks} chunk(s); left out: "
               f"{result.skipped_recovered_quotes} with recovered quotes, "
               f"{result.skipped_invalid} no longer valid")
    if output is not None:
        emit(f"wrote {summary} to {output} in {result.seconds:.1f}s")
    else:
        emit(summary, err=True)
