"""`kg collections`: separate graphs in one database (create, list, show, rename, pin, delete)."""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.cli import context
from kg.cli.render import emit, emit_object, emit_rows, json_option, key_values, output_option
from kg.db import collections as store
from kg.db.models import DEFAULT_COLLECTION_ID, ExtractionProfile, Ontology
from kg.errors import KgError, NotFoundError, UsageError

COLUMNS = ["name", "documents", "concepts", "relationships", "runs", "pinned", "description"]
COUNTS = ("documents", "concepts", "relationships", "evidence", "runs")
NAME = click.argument("name", shell_complete=context.complete_collection_names)
BY = click.option("--by", help="Who makes the change (default: $USER).")


@click.group()
def collections() -> None:
    """Collections: separate graphs in one database.

    Graph commands work in one collection: --collection NAME (`kg ingest -o NAME`), else
    $KG_COLLECTION, else `default`. A collection may pin the profile and ontology its runs
    extract with.
    """


def _check_pins(session: Session, profile: str | None, ontology: str | None) -> None:
    """Refuse pinning a profile or ontology that does not exist (an empty name unpins)."""
    if profile:
        known = list(session.scalars(select(ExtractionProfile.name)
                                     .order_by(ExtractionProfile.name)))
        if profile not in known:
            raise NotFoundError(f"no profile {profile!r}; existing: {', '.join(known)} "
                                "(see `kg admin extraction list`)")
    if ontology:
        names = list(session.scalars(select(Ontology.name).distinct().order_by(Ontology.name)))
        if ontology not in names:
            raise NotFoundError(f"no ontology {ontology!r}; existing: "
                                f"{', '.join(names) or 'none'} (see `kg ontology list`)")


def _show(data: dict[str, Any], output: str, headline: str | None = None) -> None:
    if output != "table":
        emit_object(data, output)
        return
    if headline:
        emit(headline)
    emit(key_values([
        ("name", data["name"]), ("description", data["description"] or "-"),
        ("profile", data["profile"] or "active profile (not pinned)"),
        ("ontology", data["ontology"] or "the profile's (not pinned)"),
        *((key, data[key]) for key in COUNTS),
        ("created", f"{data['created_at']:%Y-%m-%d %H:%M} by {data['created_by'] or '-'}"),
    ]))


@collections.command()
@NAME
@click.option("--description", default="", help="What the collection holds.")
@click.option("--profile", shell_complete=context.complete_profile_names,
              help="Pin this profile for the collection's runs (default: the active one).")
@click.option("--ontology", metavar="NAME",
              help="Pin this ontology for the collection's runs (default: the profile's).")
@BY
@json_option
def create(name: str, description: str, profile: str | None, ontology: str | None,
           by: str | None, output: str) -> None:
    """Create an empty collection NAME."""
    with context.session() as session:
        _check_pins(session, profile, ontology)
        data = store.create(session, name, by=context.actor(by), description=description,
                            profile=profile or None, ontology=ontology or None)
    _show(data, output, f"created collection {data['name']}; ingest into it with "
                        f"`kg ingest -o {data['name']} FILES`")


@collections.command(name="list")
@output_option
def list_(output: str) -> None:
    """Every collection with what it holds."""
    with context.session() as session:
        rows = store.list_all(session)
    if output == "table":  # narrow enough for a terminal; --json has every field
        rows = [{**row, "pinned": ", ".join(filter(None, (row["profile"], row["ontology"])))
                 or None} for row in rows]
        emit_rows(rows, output, COLUMNS)
        return
    emit_rows(rows, output)


@collections.command()
@NAME
@json_option
def show(name: str, output: str) -> None:
    """One collection: description, pinned profile and ontology, what it holds."""
    with context.session() as session:
        data = store.describe(session, store.find(session, name))
    _show(data, output)


@collections.command()
@click.argument("old", shell_complete=context.complete_collection_names)
@click.argument("new")
@json_option
def rename(old: str, new: str, output: str) -> None:
    """Rename collection OLD to NEW (its URLs, /c/NEW/..., change with it)."""
    with context.session() as session:
        data = store.rename(session, old, new)
    if output != "table":
        emit_object(data, output)
        return
    emit(f"renamed collection {old.strip()} to {data['name']}")


@collections.command()
@NAME
@click.option("--profile", shell_complete=context.complete_profile_names,
              help="The profile the collection's runs use ('' unpins).")
@click.option("--ontology", metavar="NAME",
              help="The ontology the collection's runs use ('' unpins).")
@click.option("--clear", is_flag=True, help="Unpin both (then --profile/--ontology pin anew).")
@json_option
def pin(name: str, profile: str | None, ontology: str | None, clear: bool,
        output: str) -> None:
    """Pin the profile and/or ontology runs in collection NAME extract with; --profile or
    --ontology given to `kg ingest` still wins for that run."""
    if profile is None and ontology is None and not clear:
        raise UsageError("give --profile NAME, --ontology NAME or --clear; see "
                         "`kg collections pin --help`")
    with context.session() as session:
        _check_pins(session, profile, ontology)
        data = store.pin(session, name, profile=profile, ontology=ontology, clear=clear)
    _show(data, output, f"collection {data['name']}: profile {data['profile'] or 'not pinned'}"
                        f", ontology {data['ontology'] or 'not pinned'}")


@collections.command()
@NAME
@click.option("--yes", "-y", is_flag=True, help="Do not ask; delete without a question.")
@json_option
def delete(name: str, yes: bool, output: str) -> None:
    """Delete collection NAME with everything in it: documents, chunks, concepts,
    relationships, evidence, runs and their LLM calls, curation decisions, evaluations.

    Says what it deletes, then asks; --yes skips the question. Without a terminal to ask on,
    it refuses unless --yes is given. `default` cannot be deleted, nor a collection with a
    run still going.
    """
    with context.session() as session:
        data = store.describe(session, store.find(session, name))
        if data["id"] == DEFAULT_COLLECTION_ID or store.running_run(session, data["id"]):
            store.delete(session, name)  # refuses, saying why
            session.rollback()  # the run ended meanwhile: ask first all the same
    if not yes:
        _confirm(data)
    with context.session() as session:
        data = store.delete(session, name)  # checks again: a run may have started meanwhile
    if output != "table":
        emit_object(data, output)
        return
    emit(f"deleted collection {data['name']}: {_holding(data)}")


def _holding(data: dict[str, Any]) -> str:
    return ", ".join(f"{data[key]} {key}" for key in COUNTS)


def _confirm(data: dict[str, Any]) -> None:
    if not sys.stdin.isatty():
        raise UsageError(f"deleting collection {data['name']} drops {_holding(data)}; run it "
                         "in a terminal to confirm, or add --yes")
    emit(f"Deleting collection {data['name']} drops {_holding(data)}, with their chunks, "
         "LLM calls, curation decisions and evaluations. This cannot be undone.")
    if not click.confirm("Delete?", default=False):
        raise KgError("delete cancelled; nothing changed")
