"""`kg resolve` (a resolution pass over the graph) and `kg eval resolve FILE` (the benchmark).

main.py loads the `kg eval` group from here: kg.cli.evaluate's group with `resolve` added.
"""

from __future__ import annotations

from pathlib import Path

import click

from kg.cli import context
from kg.cli.evaluate import eval_
from kg.cli.render import emit, emit_object, json_option, table
from kg.matching.decide import Thresholds
from kg.resolution.evaluate import evaluate
from kg.resolution.judge import Judge
from kg.resolution.passes import resolve as resolve_pass

__all__ = ["eval_", "resolve"]

HIGH = click.option("--high", type=float, default=Thresholds.high, show_default=True,
                    help="Merge pairs scoring at least this.")
LOW = click.option("--low", type=float, default=Thresholds.low, show_default=True,
                   help="Keep apart pairs scoring below this; between the two: for review.")


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what would merge; change nothing.")
@click.option("--full", is_flag=True, help="Look at every concept, not only those created "
              "or given new spellings since the last pass.")
@HIGH
@LOW
@click.option("--judge", is_flag=True, help="Ask the profile's model (yes/no/unsure, one "
              "call per pair) about the grey zone; a yes merges.")
@click.option("--profile", help="The judge's profile (default: the collection's pinned one, "
              "else the active one).")
@click.option("--by", help="Who decides (default: $USER).")
@json_option
def resolve(dry_run: bool, full: bool, high: float, low: float, judge: bool,
            profile: str | None, by: str | None, output: str) -> None:
    """Find concepts that are one thing and merge them (each merge a curation decision that
    `kg curation undo` reverts); `kg concepts duplicates` lists the pairs left for review."""
    from kg.ask import settings_for

    thresholds = Thresholds(high, low)
    asker = None
    if judge:
        database = context.database()
        try:
            asker = Judge(settings_for(database, context.profile_choice(profile)),
                          context.settings().models_dir)
        finally:
            database.dispose()
    try:
        with context.session() as session:
            data = resolve_pass(session, thresholds=thresholds, by=context.actor(by),
                                dry_run=dry_run, full=full, judge=asker)
    finally:
        if asker is not None:
            asker.close()
    if output != "table":
        emit_object(data, output)
        return
    if data["qualified"]:
        # Same-name concepts of incompatible types: each keeps the plain name as an alias.
        emit(table(data["qualified"], ["id", "label", "type", "qualified",
                                       *(["decision"] if not dry_run else [])]))
        emit(f"{'would qualify' if dry_run else 'qualified'} {len(data['qualified'])} "
             "same-name labels")
    if data["merged"]:
        emit(table(data["merged"], ["survivor", "survivor_label", "merged", "merged_label",
                                    "score", *(["decision"] if not dry_run else [])]))
    verb = "would merge" if dry_run else "merged"
    emit(f"{verb} {len(data['merged'])} concepts; looked at {data['examined']} of "
         f"{data['concepts']}; {data['review']} pairs for review (`kg concepts duplicates`)")


@eval_.command(name="resolve")
@click.argument("file", type=click.Path(path_type=Path))
@HIGH
@LOW
@json_option
def eval_resolve(file: Path, high: float, low: float, output: str) -> None:
    """Score entity resolution on a benchmark file (JSON Lines of id, text, cluster, type):
    pairwise precision/recall/F1 and B-cubed; grey-zone pairs stay apart."""
    data = evaluate(file, Thresholds(high, low))
    if output != "table":
        emit_object(data, output)
        return
    rows = [{"metric": kind, **data[kind]} for kind in ("pairwise", "bcubed")]
    emit(table(rows, ["metric", "precision", "recall", "f1"]))
    emit(f"{data['mentions']} mentions, {data['gold_clusters']} gold clusters, "
         f"{data['predicted_clusters']} found; {data['grey']} grey-zone pairs left apart "
         f"({data['grey_per_1000_mentions']} per 1,000 mentions)")
