"""`kg models`: what the active profile's backend has, and what it has loaded."""

from __future__ import annotations

import click

from cli import context
from cli.render import as_json, emit, table


@click.group()
def models() -> None:
    """Models of the active profile's backend."""


@models.command(name="list")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def list_(as_json_: bool) -> None:
    """Available models (Ollama /api/tags, vLLM /v1/models, embedded: bundled + KG_HOME/models)."""
    from kg.operations import models_list

    with context.session() as session:
        rows = models_list(session, context.settings().models_dir)
    emit(as_json(rows) if as_json_ else table(rows))


@models.command()
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def status(as_json_: bool) -> None:
    """Loaded models (Ollama /api/ps; vLLM: its one model; embedded: loaded per kg process)."""
    from kg.operations import models_status

    with context.session() as session:
        rows = models_status(session, context.settings().models_dir)
    if as_json_:
        emit(as_json(rows))
    elif not rows:
        emit("no model loaded (the embedded model loads inside each kg process that needs it)")
    else:
        emit(table(rows))
