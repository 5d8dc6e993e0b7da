"""`kg ingest`: placeholder until the engine lands."""

import click


@click.command()
def ingest() -> None:
    """Extract a knowledge graph from documents."""
