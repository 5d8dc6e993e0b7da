"""`kg eval`: score extraction against gold annotations; compare models or evaluations."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import RenderableType

from kg import evaluation as ev
from kg.cli import context
from kg.cli.render import emit, emit_object, emit_rows, json_option, output_option, table
from kg.errors import UsageError

SHOWN = ("concept_precision", "concept_recall", "concept_f1", "relationship_f1", "untyped_f1",
         "type_accuracy", "quotes_verbatim_rate", "valid_json_first_try", "retries",
         "chunks_failed")


class _EvalGroup(click.Group):
    """`kg eval GOLD_DIR` runs an evaluation; `kg eval compare|list|show` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Options may come first (`kg eval --profile gpu DIR`): anything that is not a
        # subcommand or the group's own help is the hidden `run` command's.
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _scope_table(data: dict) -> RenderableType:
    """One row per metric, one column per scope: narrow enough for any terminal."""
    scopes = {"overall": data["overall"], **data["by_category"]}
    # An ontology benchmark (JSONL) has its own metrics and no categories.
    shown = SHOWN if "concept_f1" in data["overall"] else tuple(data["overall"])
    rows = [{"metric": k, **{scope: m.get(k) for scope, m in scopes.items()}} for k in shown]
    return table(rows, ["metric", *scopes])


def _run(gold_dir: Path, profile: str | None) -> int:
    profile = context.profile_choice(profile)
    database = context.database()
    progress = (lambda doc: click.echo(f"scored {doc}", err=True)) if sys.stderr.isatty() \
        else None
    # A .jsonl file is an ontology benchmark: one record per line, each with its ontology.
    run = ev.evaluate_jsonl if gold_dir.suffix.lower() == ".jsonl" else ev.evaluate
    try:
        return run(database, gold_dir, profile=profile,
                   models_dir=context.settings().models_dir, on_document=progress)
    finally:
        database.dispose()


def _show(evaluation_id: int, output: str) -> None:
    with context.session() as session:
        data = ev.summary(ev.get_evaluation(session, evaluation_id))
    if output == "json":
        emit_object(data, output)
        return
    profile = data["profile"]
    emit(f"evaluation {data['id']}: {data['documents']} documents, profile {profile['name']} "
         f"(revision {profile['revision']}, {profile['provider']} {profile['model']})")
    emit(_scope_table(data))


@click.group(cls=_EvalGroup, name="eval")
def eval_() -> None:
    """Score extraction against gold annotations (NAME.gold.json beside each document, or a
    JSONL file of records with their own ontology)."""


@eval_.command(name="run", hidden=True)
@click.argument("gold_dir", metavar="GOLD_DIR|FILE.jsonl", type=click.Path(path_type=Path))
@click.option("--profile",
              shell_complete=context.complete_profile_names,
              help="Profile to evaluate (default: $KG_PROFILE, else the active one).")
@json_option
def run(gold_dir: Path, profile: str | None, output: str) -> None:
    """Extract and score every annotated document under GOLD_DIR (or every record of a
    .jsonl file)."""
    _show(_run(gold_dir, profile), output)


@eval_.command()
@click.argument("a")
@click.argument("b")
@click.option("--gold", "gold_dir", type=click.Path(path_type=Path),
              help="With two profile names: the gold folder to evaluate both on.")
@output_option
def compare(a: str, b: str, gold_dir: Path | None, output: str) -> None:
    """Two stored evaluations (ids) or two profiles (names, with --gold) side by side."""
    if a.isdigit() and b.isdigit():
        ids = int(a), int(b)
    elif not a.isdigit() and not b.isdigit():
        if gold_dir is None:
            raise UsageError("comparing two profiles needs --gold DIR to evaluate them on")
        ids = _run(gold_dir, a), _run(gold_dir, b)
    else:
        raise UsageError("give two evaluation ids or two profile names, not one of each")
    with context.session() as session:
        first, second = (ev.get_evaluation(session, i) for i in ids)
        rows = ev.compare(first, second)
    if output == "json":
        emit_object({"a": ids[0], "b": ids[1], "rows": rows}, output)
        return
    if output == "table":
        emit(f"A = evaluation {ids[0]}, B = evaluation {ids[1]}; delta = B - A")
    emit_rows(rows, output)


@eval_.command(name="list")
@output_option
def list_(output: str) -> None:
    """Stored evaluations, newest first."""
    with context.session() as session:
        rows = ev.list_evaluations(session)
    emit_rows(rows, output)


def _triples(triples: list[list[str]]) -> str:
    return "\n".join(" | ".join(t) for t in triples) or "-"


def _show_records(evaluation_id: int, output: str) -> None:
    """Each record's predicted triples beside its gold ones (what was missed, what was extra)."""
    with context.session() as session:
        rows = ev.record_details(session, ev.get_evaluation(session, evaluation_id))
    if output == "json":
        emit_rows(rows, output)
        return
    if not rows or not any(r["gold"] for r in rows):
        raise UsageError(f"evaluation {evaluation_id} has no per-record triples; --records is "
                         "for a JSONL evaluation (`kg eval FILE.jsonl`) made by this version")
    emit(table([{"record": r["record"], "matched": _triples(r["matched"]),
                 "missed": _triples(r["missed"]), "extra": _triples(r["extra"])}
                for r in rows], ["record", "matched", "missed", "extra"], max_cell=None))


@eval_.command()
@click.argument("evaluation_id", type=context.ROW_ID)
@click.option("--records", is_flag=True,
              help="each record's predicted triples beside its gold ones (JSONL evaluations)")
@json_option
def show(evaluation_id: int, records: bool, output: str) -> None:
    """One stored evaluation, per category and overall."""
    if records:
        _show_records(evaluation_id, output)
        return
    _show(evaluation_id, output)


from kg.cli.ask import eval_ask  # noqa: E402  (`kg eval ask`: the question set, issue #23)

eval_.add_command(eval_ask)
