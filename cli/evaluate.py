"""`kg eval`: score extraction against gold annotations; compare models or evaluations."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli import context
from cli.render import as_json, emit, table
from kg import evaluation as ev
from kg.errors import UsageError

SHOWN = ("concept_precision", "concept_recall", "concept_f1", "relationship_f1", "untyped_f1",
         "type_accuracy", "quotes_verbatim_rate", "valid_json_first_try", "retries",
         "chunks_failed")


class _EvalGroup(click.Group):
    """`kg eval GOLD_DIR` runs an evaluation; `kg eval compare|list|show` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _scope_table(data: dict) -> str:
    rows = [{"scope": "overall", **{k: data["overall"].get(k) for k in SHOWN}}]
    rows += [{"scope": c, **{k: m.get(k) for k in SHOWN}} for c, m in data["by_category"].items()]
    return table(rows)


def _run(gold_dir: Path, profile: str | None) -> int:
    database = context.database()
    progress = (lambda doc: click.echo(f"scored {doc}", err=True)) if sys.stderr.isatty() \
        else None
    return ev.evaluate(database, gold_dir, profile=profile,
                       models_dir=context.settings().models_dir, on_document=progress)


def _show(evaluation_id: int, as_json_: bool) -> None:
    with context.session() as session:
        data = ev.summary(ev.get_evaluation(session, evaluation_id))
    if as_json_:
        emit(as_json(data))
        return
    profile = data["profile"]
    emit(f"evaluation {data['id']}: {data['documents']} documents, profile {profile['name']} "
         f"(revision {profile['revision']}, {profile['provider']} {profile['model']})")
    emit(_scope_table(data))


@click.group(cls=_EvalGroup, name="eval")
def eval_() -> None:
    """Score extraction against gold annotations (NAME.gold.json beside each document)."""


@eval_.command(name="run", hidden=True)
@click.argument("gold_dir", type=click.Path(path_type=Path))
@click.option("--profile", help="Profile to evaluate (default: the active one).")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def run(gold_dir: Path, profile: str | None, as_json_: bool) -> None:
    """Extract and score every annotated document under GOLD_DIR."""
    _show(_run(gold_dir, profile), as_json_)


@eval_.command()
@click.argument("a")
@click.argument("b")
@click.option("--gold", "gold_dir", type=click.Path(path_type=Path),
              help="With two profile names: the gold folder to evaluate both on.")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def compare(a: str, b: str, gold_dir: Path | None, as_json_: bool) -> None:
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
    if as_json_:
        emit(as_json({"a": ids[0], "b": ids[1], "rows": rows}))
        return
    emit(f"A = evaluation {ids[0]}, B = evaluation {ids[1]}; delta = B - A")
    emit(table(rows))


@eval_.command(name="list")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def list_(as_json_: bool) -> None:
    """Stored evaluations, newest first."""
    with context.session() as session:
        rows = ev.list_evaluations(session)
    emit(as_json(rows) if as_json_ else table(rows))


@eval_.command()
@click.argument("evaluation_id", type=int)
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def show(evaluation_id: int, as_json_: bool) -> None:
    """One stored evaluation, per category and overall."""
    _show(evaluation_id, as_json_)
