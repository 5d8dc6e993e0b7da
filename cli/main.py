"""The `kg` command: a click group that turns every expected failure into one line."""

from __future__ import annotations

import sys
from typing import Any

import click

from kg import __version__
from kg.errors import KgError


class KgGroup(click.Group):
    """Runs commands so that errors print as `error: ...` on one line, with an exit code."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except KgError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(2)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f"; see `{exc.ctx.command_path} --help`"
            click.echo(f"error: {exc.format_message().rstrip('.')}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=KgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kg")
def cli() -> None:
    """kg: extract a knowledge graph from documents with a local LLM."""


def _register() -> None:
    from cli import admin, db, evaluate, graph, ingest, models

    cli.add_command(db.db)
    cli.add_command(admin.admin)
    cli.add_command(ingest.ingest)
    cli.add_command(models.models)
    cli.add_command(evaluate.eval_)
    for command in graph.COMMANDS:
        cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="kg")
