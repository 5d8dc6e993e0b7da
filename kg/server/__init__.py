"""`kg serve`: the HTTP API, live run progress (SSE), health, metrics and the web page."""

from kg.server.app import create_app
from kg.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
