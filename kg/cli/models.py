"""`kg models`: what the active profile's backend has, and what it has loaded."""

from __future__ import annotations

import click

from kg.cli import context
from kg.cli.render import emit, emit_rows, output_option


@click.group()
def models() -> None:
    """Models of the active profile's backend."""


@models.command(name="list")
@output_option
def list_(output: str) -> None:
    """Available models (Ollama /api/tags, vLLM /v1/models, embedded: bundled + KG_HOME/models)."""
    from kg.operations import models_list

    with context.session() as session:
        rows = models_list(session, context.settings().models_dir)
    emit_rows(rows, output)


@models.command()
@output_option
def status(output: str) -> None:
    """Loaded models (Ollama /api/ps; vLLM: its one model; embedded: loaded per kg process)."""
    from kg.operations import models_status

    with context.session() as session:
        rows = models_status(session, context.settings().models_dir)
    if output == "table" and not rows:
        emit("no model loaded (the embedded model loads inside each kg process that needs it)")
    else:
        emit_rows(rows, output)
