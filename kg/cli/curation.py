"""Curation commands: `kg concepts merge|rename|delete|keep-apart|duplicates`,
`kg relationships delete`, `kg curation list|undo`.

The merge/rename/delete commands join the `kg concepts` and `kg relationships` groups here,
so main.py loads those two groups from this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kg import curation as decisions
from kg.cli import context
from kg.cli.graph import concepts
from kg.cli.graph_read import relationships
from kg.cli.render import emit, emit_object, emit_rows, json_option, output_option

__all__ = ["concepts", "curation", "relationships"]

BY = click.option("--by", help="Who decides (default: $USER).")


def _decide(func: Callable[..., dict[str, Any]], *args: Any, by: str | None,
            output: str, **kwargs: Any) -> None:
    with context.session() as session:
        data = func(session, *args, by=context.actor(by), **kwargs)
    if output != "table":
        emit_object(data, output)
        return
    emit(f"{data['summary']} (decision {data['id']}; `kg curation undo {data['id']}` reverts it)")


@concepts.command(name="merge")
@click.argument("a")
@click.argument("b")
@click.option("--into", metavar="LABEL", help="Which of the two survives (default: the one "
              "with more evidence, else A).")
@BY
@json_option
def concepts_merge(a: str, b: str, into: str | None, by: str | None, output: str) -> None:
    """Merge concepts A and B: the other's labels become aliases of the survivor and its
    evidence and relationships move there; later ingests resolve those labels to it."""
    _decide(decisions.merge, a, b, into=into, by=by, output=output)


@concepts.command(name="rename")
@click.argument("old")
@click.argument("new")
@BY
@json_option
def concepts_rename(old: str, new: str, by: str | None, output: str) -> None:
    """Give a concept a new label; the old one stays as an alias."""
    _decide(decisions.rename, old, new, by=by, output=output)


@concepts.command(name="delete")
@click.argument("label")
@BY
@json_option
def concepts_delete(label: str, by: str | None, output: str) -> None:
    """Delete a concept with its aliases, evidence and relationships; later ingests of the
    same text do not create it again (counted as suppressed)."""
    _decide(decisions.delete_concept, label, by=by, output=output)


@concepts.command(name="duplicates")
@click.option("--high", type=float, default=0.9, show_default=True,
              help="Pairs scoring at least this are merged by `kg resolve`, not listed.")
@click.option("--low", type=float, default=0.8, show_default=True,
              help="Pairs scoring below this are kept apart, not listed.")
@output_option
def concepts_duplicates(high: float, low: float, output: str) -> None:
    """Pairs of concepts that may be one (the grey zone of `kg resolve`), strongest first:
    merge them with `kg concepts merge A B` or keep them apart with `kg concepts keep-apart A B`."""
    from kg.matching.decide import Thresholds
    from kg.resolution.passes import duplicates

    thresholds = Thresholds(high, low)
    with context.session() as session:
        rows = duplicates(session, thresholds=thresholds)
    emit_rows(rows, output, ["a", "a_label", "a_type", "b", "b_label", "b_type", "score"])


@concepts.command(name="keep-apart")
@click.argument("a")
@click.argument("b")
@BY
@json_option
def concepts_keep_apart(a: str, b: str, by: str | None, output: str) -> None:
    """Concepts A and B are not one: `kg resolve` never merges them and `kg concepts
    duplicates` no longer lists them (`kg curation undo` withdraws it)."""
    _decide(decisions.keep_apart, a, b, by=by, output=output)


@relationships.command(name="delete")
@click.argument("relationship_id", type=context.ROW_ID, metavar="ID")
@BY
@json_option
def relationships_delete(relationship_id: int, by: str | None, output: str) -> None:
    """Delete one relationship (ID from `kg relationships list`) and its evidence."""
    _decide(decisions.delete_relationship, relationship_id, by=by, output=output)


@click.group()
def curation() -> None:
    """Curation decisions (merges, renames, deletions, pairs kept apart): list and undo."""


@curation.command(name="list")
@click.option("--limit", default=50, show_default=True, type=context.LIMIT, metavar="N",
              help="Show at most N decisions.")
@click.option("--active", is_flag=True, help="Leave out decisions that were undone.")
@output_option
def curation_list(limit: int, active: bool, output: str) -> None:
    """Decisions, newest first: who, when, what, and whether it was undone."""
    with context.session() as session:
        rows = decisions.list_decisions(session, limit=limit, include_undone=not active)
    emit_rows(rows, output, ["id", "action", "summary", "by", "at", "undone_at"])


@curation.command(name="undo")
@click.argument("decision_id", type=context.ROW_ID, metavar="ID")
@click.option("--cascade", is_flag=True, help="Also undo the later merges built on this "
              "merge (newest first); without it such an undo is refused, naming them.")
@BY
@json_option
def curation_undo(decision_id: int, cascade: bool, by: str | None, output: str) -> None:
    """Revert one decision (ID from `kg curation list`) as far as the graph still allows."""
    with context.session() as session:
        data = decisions.undo(session, decision_id, by=context.actor(by), cascade=cascade)
    if output != "table":
        emit_object(data, output)
        return
    also = data["also_undone"]
    emit(f"undone: {data['summary']} (decision {data['id']})"
         + (f"; also undone, newest first: {', '.join(map(str, also[::-1]))}" if also else ""))
