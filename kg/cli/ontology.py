"""`kg ontology`: import, list, show, export and delete ontologies (types as data)."""

from __future__ import annotations

from pathlib import Path

import click

from kg import ontology
from kg.cli import context
from kg.cli.render import (
    emit,
    emit_object,
    emit_rows,
    json_option,
    key_values,
    output_option,
    table,
)


@click.group(name="ontology")
def ontology_group() -> None:
    """Ontologies: the concept and relation types extraction may use."""


@ontology_group.command(name="import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", help="Name to store it under (default: the file name without suffix).")
@json_option
def import_(file: Path, name: str | None, output: str) -> None:
    """Import a YAML or JSON ontology file (an existing name gets a new revision)."""
    with context.session() as session:
        result = ontology.import_file(session, file, name)
    if output == "json":
        emit_object(result, output)
        return
    emit(f"imported ontology {result['name']} (revision {result['revision']}, {result['mode']}): "
         f"{result['concept_types']} concept types, {result['relation_types']} relation types")


@ontology_group.command(name="list")
@output_option
def list_(output: str) -> None:
    """Stored ontologies."""
    with context.session() as session:
        rows = ontology.listing(session)
    emit_rows(rows, output)


@ontology_group.command()
@click.argument("name")
@json_option
def show(name: str, output: str) -> None:
    """One ontology: its concept and relation types."""
    with context.session() as session:
        data = ontology.show(session, name)
    if output == "json":
        emit_object(data, output)
        return
    emit(key_values([("name", data["name"]), ("revision", data["revision"]),
                     ("mode", data["mode"]), ("description", data.get("description", ""))]))
    if data["concept_types"]:
        emit(table(data["concept_types"], ["name", "description"]))
    emit(table(data["relation_types"],
               ["name", "domain", "range", "direction", "category", "description"]))


@ontology_group.command()
@click.argument("name")
def export(name: str) -> None:
    """Print an ontology as YAML that `kg ontology import` reads back."""
    with context.session() as session:
        text = ontology.export_text(session, name)
    click.echo(text, nl=False)


@ontology_group.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete an ontology that no profile and no past run uses."""
    with context.session() as session:
        ontology.delete_ontology(session, name)
    emit(f"deleted ontology {name}")
