"""Read commands: `kg concepts`, `kg runs`, `kg vocab`."""

from __future__ import annotations

import click

from kg import queries
from kg.cli import context
from kg.cli.context import complete_run_ids
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

LIMIT_HELP = "Show at most N rows."


@click.group()
def concepts() -> None:
    """Browse extracted concepts."""


@concepts.command(name="list")
@click.option("--search", help="Text to look for in labels and aliases.")
@click.option("--limit", default=50, show_default=True,
              type=context.LIMIT, metavar="N", help=LIMIT_HELP)
@output_option
def concepts_list(search: str | None, limit: int, output: str) -> None:
    """Concepts, most mentioned first."""
    rows = context.read(queries.list_concepts, search, limit)
    emit_rows(rows, output, ["id", "label", "description", "mentions", "relationships"])


@concepts.command(name="show")
@click.argument("name")
@json_option
def concepts_show(name: str, output: str) -> None:
    """One concept (by id, label or alias): aliases, relationships, literal attributes,
    evidence quotes."""
    data = context.read(queries.concept_detail, name)
    if output != "table":
        emit_object(data, output)
        return
    emit(key_values([("id", data["id"]), ("label", data["label"]),
                     ("description", data["description"]), ("aliases", data["aliases"]),
                     ("search terms", data["search_terms"])]))
    emit("\nrelationships:")
    emit(table([{"": "->" if r["direction"] == "out" else "<-", "type": r["type"],
                 "concept": r["concept"], "confidence": r["confidence"]}
                for r in data["relationships"]]))
    if data.get("attributes"):
        emit("\nattributes:")
        emit(table([{"name": a["name"], "value": a["value"], "normalised": a["normalised"],
                     "quotes": a["evidence"]} for a in data["attributes"]]))
    emit("\nevidence:")
    ocr = any("places" in e for e in data["evidence"])  # the column only when it says something
    emit(table([{"quote": e["quote"], "document": e["document"],
                 "chars": f"{e['char_start']}-{e['char_end']}", "run": e["run_id"],
                 **({"page, box": _places(e.get("places", []))} if ocr else {})}
                for e in data["evidence"]]))


def _places(places: list[dict]) -> str:
    """OCR evidence on the page: `p2 (x0,y0)-(x1,y1)` per line, pixels of the page image."""
    return "; ".join(f"p{p['page']}" + (" ({},{})-({},{})".format(*p["box"]) if p["box"] else "")
                     for p in places)


@click.group()
def runs() -> None:
    """Ingestion runs."""


@runs.command(name="list")
@click.option("--limit", default=20, show_default=True,
              type=context.LIMIT, metavar="N", help=LIMIT_HELP)
@output_option
def runs_list(limit: int, output: str) -> None:
    """Recent runs, newest first; a run whose process died shows as interrupted."""
    emit_rows(context.read(queries.list_runs, limit), output)


@runs.command(name="show")
@click.argument("run_id", type=context.ROW_ID, shell_complete=complete_run_ids)
@json_option
def runs_show(run_id: int, output: str) -> None:
    """One run: status, totals from its calls, profiles used, failed chunks."""
    data = context.read(queries.run_detail, run_id)
    if output != "table":
        emit_object(data, output)
        return
    scalars = [(k, v) for k, v in data.items()
               if k not in ("profiles_used", "calls_by_revision", "workers", "failed_chunks")]
    emit(key_values(scalars))
    emit("\ncalls by profile revision:")
    emit(table(data["calls_by_revision"]))
    if data["workers"]:
        emit("\nchunks by worker:")
        emit(table(data["workers"]))
    if data["failed_chunks"]:
        emit("\nfailed chunks:")
        emit(table(data["failed_chunks"]))
    emit(f"\nprompts and replies: kg logs --run {run_id}")


@runs.command(name="diff")
@click.argument("run_a", type=context.ROW_ID, shell_complete=complete_run_ids)
@click.argument("run_b", type=context.ROW_ID, shell_complete=complete_run_ids)
@json_option
def runs_diff(run_a: int, run_b: int, output: str) -> None:
    """The graph difference between two runs: concepts and relationships added, removed,
    changed."""
    data = context.read(queries.runs_diff, run_a, run_b)
    if output != "table":
        emit_object(data, output)
        return
    if not data["same_documents"]:
        emit(f"note: the runs cover different documents ({data['shared_documents']} shared)")
    emit(key_values([
        ("concepts", f"+{len(data['concepts_added'])} -{len(data['concepts_removed'])} "
                     f"(={data['concepts_in_both']})"),
        ("relationships", f"+{len(data['relationships_added'])} "
                          f"-{len(data['relationships_removed'])} "
                          f"~{len(data['relationships_changed'])} "
                          f"(={data['relationships_in_both']})"),
    ]))
    lines = [f"+ concept {label}" for label in data["concepts_added"]]
    lines += [f"- concept {label}" for label in data["concepts_removed"]]
    lines += [f"+ {s} -[{t}]-> {g}" for s, t, g in data["relationships_added"]]
    lines += [f"- {s} -[{t}]-> {g}" for s, t, g in data["relationships_removed"]]
    lines += [f"~ {c['source']} -> {c['target']}: {', '.join(c['types_a'])} -> "
              f"{', '.join(c['types_b'])}" for c in data["relationships_changed"]]
    if lines:
        emit(text_block("\n".join(lines)))


@click.group()
def vocab() -> None:
    """The relationship vocabulary."""


@vocab.command(name="list")
@output_option
def vocab_list(output: str) -> None:
    """Relationship types offered to the model."""
    emit_rows(context.read(queries.vocabulary), output)


@vocab.command(name="proposals")
@click.option("--limit", default=50, show_default=True,
              type=context.LIMIT, metavar="N", help=LIMIT_HELP)
@output_option
def vocab_proposals(limit: int, output: str) -> None:
    """Types models used that are not in the vocabulary (kept for review, not added)."""
    emit_rows(context.read(queries.proposals, limit), output)


@vocab.command(name="accept")
@click.argument("name")
@click.option("--into", "into", default="default", show_default=True, metavar="ONTOLOGY",
              help="Ontology to add the type to.")
@json_option
def vocab_accept(name: str, into: str, output: str) -> None:
    """Promote a proposed type into an ontology (its revision grows)."""
    from kg import ontology

    result = context.read(ontology.accept_proposal, name, into)
    if output == "json":
        emit_object(result, output)
        return
    emit(f"accepted {result['name']} into ontology {result['ontology']} "
         f"(revision {result['revision']})")
