"""kg: turn documents into a provenance-linked knowledge graph with a local LLM."""

__version__ = "0.1.0"
