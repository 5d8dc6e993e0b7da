"""The `kg` command: a click group that turns every expected failure into one line."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click

from kg import __version__
from kg.errors import KgError
from kg.log import configure, level_for
from kg.settings import load_settings

log = logging.getLogger(__name__)
SIGINT_EXIT = 128 + signal.SIGINT
SIGTERM_EXIT = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program stands so that it unwinds exactly like Ctrl-C."""


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # The first SIGTERM starts an orderly stop (the run is marked interrupted); repeats must
    # not break that clean-up half-way. SIGKILL still ends a stuck process.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


class _Stopped(Exception):
    """A Ctrl-C or SIGTERM carried past click, which would turn it into a bare "Aborted!"."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def _interrupt_exit(exc: BaseException | None) -> int:
    """130 for Ctrl-C, 143 when the interruption came from SIGTERM (shell conventions)."""
    while exc is not None:
        if isinstance(exc, Terminated):
            return SIGTERM_EXIT
        exc = exc.__context__
    return SIGINT_EXIT


# Each command's module is imported only when that command runs (or help lists it): `kg logs`
# and every shell-completion TAB do not pay for the engine and the providers.
COMMANDS = {
    "admin": "kg.cli.admin:admin",
    "ask": "kg.cli.ask:ask",
    "collections": "kg.cli.collections:collections",
    "concepts": "kg.cli.curation:concepts",  # kg.cli.graph's group + merge/rename/delete
    "curation": "kg.cli.curation:curation",
    "db": "kg.cli.db:db",
    "documents": "kg.cli.graph_read:documents",
    "eval": "kg.cli.resolve:eval_",  # kg.cli.evaluate's group + resolve
    "export": "kg.cli.export:export",
    "graph": "kg.cli.graph_read:graph_group",
    "ingest": "kg.cli.ingest:ingest",
    "logs": "kg.cli.logs:logs",
    "mcp": "kg.cli.mcp:mcp",
    "models": "kg.cli.models:models",
    "ontology": "kg.cli.ontology:ontology_group",
    "relationships": "kg.cli.curation:relationships",  # + delete
    "resolve": "kg.cli.resolve:resolve",
    "runs": "kg.cli.graph:runs",
    "search": "kg.cli.search:search",
    "serve": "kg.cli.serve:serve",
    "vocab": "kg.cli.graph:vocab",
    "worker": "kg.cli.worker:worker",
}


# Every command gets --collection (and KG_COLLECTION) except these, which work on no single
# collection's graph: the schema, operator settings, global profiles, ontologies and
# vocabulary, the collections themselves, and the server and workers (which serve them all).
NOT_IN_A_COLLECTION = frozenset({"admin", "collections", "db", "models", "ontology", "serve",
                                 "vocab", "worker"})
# ...apart from these subcommands of theirs, which read one collection's runs and calls.
IN_A_COLLECTION_TOO = (("admin", "extraction", "analytics"),)
COLLECTION_SHORT = {"ingest": "-o"}  # `kg ingest -o slides paper.pdf`


def _collection_commands(name: str, command: click.Command) -> Iterator[click.Command]:
    """The commands under the top-level command `name` that work in a collection."""
    if name not in NOT_IN_A_COLLECTION:
        yield from _leaves(command)
        return
    for path in IN_A_COLLECTION_TOO:
        found: click.Command | None = command if path[0] == name else None
        for part in path[1:]:
            found = found.commands.get(part) if isinstance(found, click.Group) else None
        if found is not None:
            yield found


def _leaves(command: click.Command) -> Iterator[click.Command]:
    if not isinstance(command, click.Group):
        yield command
        return
    if command.invoke_without_command:  # `kg export` exports by itself
        yield command
    for sub in command.commands.values():
        yield from _leaves(sub)


def add_collection_option(name: str, command: click.Command) -> None:
    """Give the top-level command `name` (its subcommands) --collection NAME (envvar
    KG_COLLECTION), which `context.database()` opens the database in; once per command."""
    from kg.cli import context

    short = [COLLECTION_SHORT[name]] if name in COLLECTION_SHORT else []
    for target in _collection_commands(name, command):
        if any(p.name == "collection" for p in target.params):
            continue
        target.params.append(click.Option(
            ["collection", "--collection", *short], envvar="KG_COLLECTION",
            expose_value=False, metavar="NAME", callback=context.remember_collection,
            shell_complete=context.complete_collection_names,
            help="Work in this collection (default: $KG_COLLECTION, else default); see "
                 "`kg collections list`."))


class KgGroup(click.Group):
    """Runs commands so that errors print as `error: ...` on one line, with an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        add_collection_option(cmd_name, command)
        self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Stopped(_interrupt_exit(exc)) from exc

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except KgError as exc:
            code = exc.exit_code
            if code == SIGINT_EXIT:  # an interruption the command explained (e.g. how to resume)
                code = _interrupt_exit(exc)
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(code)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(2)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f"; see `{exc.ctx.command_path} --help`"
            click.echo(f"error: {exc.format_message().rstrip('.')}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort as exc:
            click.echo("error: aborted", err=True)
            sys.exit(_interrupt_exit(exc))
        except (KeyboardInterrupt, _Stopped) as exc:
            code = exc.exit_code if isinstance(exc, _Stopped) else _interrupt_exit(exc)
            click.echo(f"error: {'terminated' if code == SIGTERM_EXIT else 'interrupted'}",
                       err=True)
            sys.exit(code)
        except BrokenPipeError:
            # `kg logs | head`: the reader left; stop quietly like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=KgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True,
              help="Log to stderr: -v progress notes, -vv debugging detail (or KG_LOG_LEVEL).")
@click.version_option(__version__, prog_name="kg")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """kg: extract a knowledge graph from documents with a local LLM.

    \b
    Environment: KG_HOME (default ~/.kg), KG_DATABASE_URL (default: the SQLite file
    KG_HOME/kg.db, created on first use), KG_COLLECTION (the collection graph commands work
    in; default: default), KG_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR), NO_COLOR. Shell
    completion: eval "$(_KG_COMPLETE=bash_source kg)" (zsh_source, fish_source).
    """
    configure(level_for(verbose, load_settings().log_level))
    log.debug("kg %s: %s", __version__, ctx.invoked_subcommand)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    cli.main(prog_name="kg")
