"""kg: turn documents into a provenance-linked knowledge graph with a local LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kg.api import Graph

__version__ = "0.1.0"
__all__ = ["__version__", "open"]


def open(url: str | None = None, collection: str | None = None) -> Graph:
    """Open the kg database (same settings as the CLI) and return a `kg.api.Graph` working in
    `collection` (else KG_COLLECTION, else `default`)."""
    # Imported here so that `import kg` (and every CLI command) stays light.
    from kg.api import open as open_graph

    return open_graph(url, collection)
