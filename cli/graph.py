"""Read commands: `kg concepts`, `kg runs`, `kg vocab`."""

from __future__ import annotations

import click

from cli import context
from cli.render import as_json, emit, key_values, table
from kg import queries

JSON = click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")


def _read(func, *args, **kwargs):
    with context.session() as session:
        return func(session, *args, **kwargs)


@click.group()
def concepts() -> None:
    """Browse extracted concepts."""


@concepts.command(name="list")
@click.option("--search", help="Text to look for in labels and aliases.")
@click.option("--limit", default=50, show_default=True, type=int)
@JSON
def concepts_list(search: str | None, limit: int, as_json_: bool) -> None:
    """Concepts, most mentioned first."""
    rows = _read(queries.list_concepts, search, limit)
    emit(as_json(rows) if as_json_ else table(rows))


@concepts.command(name="show")
@click.argument("name")
@JSON
def concepts_show(name: str, as_json_: bool) -> None:
    """One concept: aliases, relationships, evidence quotes with document and offsets."""
    data = _read(queries.concept_detail, name)
    if as_json_:
        emit(as_json(data))
        return
    emit(key_values([("id", data["id"]), ("label", data["label"]),
                     ("description", data["description"]), ("aliases", data["aliases"]),
                     ("search terms", data["search_terms"])]))
    emit("\nrelationships:")
    emit(table([{"": "->" if r["direction"] == "out" else "<-", "type": r["type"],
                 "concept": r["concept"], "confidence": r["confidence"]}
                for r in data["relationships"]]))
    emit("\nevidence:")
    for e in data["evidence"]:
        emit(f'  "{e["quote"]}"  ({e["document"]} chars {e["char_start"]}-{e["char_end"]})')


@click.group()
def runs() -> None:
    """Ingestion runs."""


@runs.command(name="list")
@click.option("--limit", default=20, show_default=True, type=int)
@JSON
def runs_list(limit: int, as_json_: bool) -> None:
    """Recent runs; a run whose process died shows as interrupted."""
    rows = _read(queries.list_runs, limit)
    emit(as_json(rows) if as_json_ else table(rows))


@runs.command(name="show")
@click.argument("run_id", type=int)
@JSON
def runs_show(run_id: int, as_json_: bool) -> None:
    """One run: status, totals from its calls, profiles used, failed chunks."""
    data = _read(queries.run_detail, run_id)
    if as_json_:
        emit(as_json(data))
        return
    scalars = [(k, v) for k, v in data.items()
               if k not in ("profiles_used", "calls_by_revision", "failed_chunks")]
    emit(key_values(scalars))
    emit("\ncalls by profile revision:")
    emit(table(data["calls_by_revision"]))
    if data["failed_chunks"]:
        emit("\nfailed chunks:")
        emit(table(data["failed_chunks"]))


@runs.command(name="diff")
@click.argument("run_a", type=int)
@click.argument("run_b", type=int)
@JSON
def runs_diff(run_a: int, run_b: int, as_json_: bool) -> None:
    """The graph difference between two runs: concepts and relationships added, removed,
    changed."""
    data = _read(queries.runs_diff, run_a, run_b)
    if as_json_:
        emit(as_json(data))
        return
    if not data["same_documents"]:
        emit(f"note: the runs cover different documents ({data['shared_documents']} shared)")
    emit(f"concepts: +{len(data['concepts_added'])} -{len(data['concepts_removed'])} "
         f"(={data['concepts_in_both']}); relationships: +{len(data['relationships_added'])} "
         f"-{len(data['relationships_removed'])} ~{len(data['relationships_changed'])} "
         f"(={data['relationships_in_both']})")
    for label in data["concepts_added"]:
        emit(f"+ concept {label}")
    for label in data["concepts_removed"]:
        emit(f"- concept {label}")
    for s, t, g in data["relationships_added"]:
        emit(f"+ {s} -[{t}]-> {g}")
    for s, t, g in data["relationships_removed"]:
        emit(f"- {s} -[{t}]-> {g}")
    for c in data["relationships_changed"]:
        emit(f"~ {c['source']} -> {c['target']}: {', '.join(c['types_a'])} -> "
             f"{', '.join(c['types_b'])}")


@click.group()
def vocab() -> None:
    """The relationship vocabulary."""


@vocab.command(name="list")
@JSON
def vocab_list(as_json_: bool) -> None:
    """Relationship types offered to the model."""
    rows = _read(queries.vocabulary)
    emit(as_json(rows) if as_json_ else table(rows))


@vocab.command(name="proposals")
@click.option("--limit", default=50, show_default=True, type=int)
@JSON
def vocab_proposals(limit: int, as_json_: bool) -> None:
    """Types models used that are not in the vocabulary (kept for review, not added)."""
    rows = _read(queries.proposals, limit)
    emit(as_json(rows) if as_json_ else table(rows))


COMMANDS = [concepts, runs, vocab]
