"""Logging set-up: one `kg` logger tree on stderr, its level from -v or KG_LOG_LEVEL.

Modules log through `logging.getLogger(__name__)`; only the CLI (or an embedding program)
calls `configure`. Every record passes through `kg.urls.redact`, so a URL's password or the
value of a key variable cannot reach the terminal even if a message carries one by mistake.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from kg.errors import UsageError
from kg.urls import redact

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LEVEL = "WARNING"


def parse_level(value: str, source: str = "KG_LOG_LEVEL") -> str:
    """The canonical level name, or a one-line UsageError naming the allowed values."""
    name = value.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise UsageError(f"{source} must be one of {', '.join(LEVELS)} (got {value!r})")
    return name


def level_for(verbosity: int, env_level: str | None) -> str:
    """-v means INFO, -vv DEBUG; without -v, KG_LOG_LEVEL; else WARNING."""
    if verbosity >= 2:
        return "DEBUG"
    if verbosity == 1:
        return "INFO"
    return env_level or DEFAULT_LEVEL


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (test runners swap it per command)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream: TextIO = sys.stderr
            if stream.isatty():
                from rich.console import Console
                from rich.text import Text

                style = {"DEBUG": "dim", "INFO": "cyan", "WARNING": "yellow"}.get(
                    record.levelname, "red")
                line = Text(f"{record.levelname.lower()} ", style=style)
                line.append(f"{record.name}: ", style="dim")
                line.append(record.getMessage())
                Console(file=stream, highlight=False).print(line, soft_wrap=True)
            else:
                stream.write(self.format(record) + "\n")
                stream.flush()
        except Exception:  # a broken stderr must not break the command
            self.handleError(record)


def configure(level: str) -> None:
    """Send the `kg` loggers' records at `level` and above to stderr (idempotent)."""
    logger = logging.getLogger("kg")
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redacting())
    logger.addHandler(handler)
    logger.setLevel(level)
    # Records stop here: an application's root handlers would print them a second time.
    logger.propagate = False
