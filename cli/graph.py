"""Read commands over the graph."""

COMMANDS: list = []
