"""Ontologies as rows: import from YAML/JSON, list, show, export, delete, accept a proposal.

An ontology file has two top-level lists, `concept_types` (name, description) and
`relation_types` (name, description, optional direction, domain, range, example, category).
A bad file is refused whole, with one line naming the file, the line and the problem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from kg.db.models import (
    ExtractionProfile,
    Ontology,
    OntologyConceptType,
    OntologyRelationType,
    RelationshipType,
    RelationshipTypeProposal,
    Run,
    utcnow,
)
from kg.errors import NotFoundError, UsageError
from kg.text import datatype_of, known_datatypes, label_key, looks_like_datatype

DEFAULT = "default"
# Type names are kept as the ontology spells them (`Person`, `birthPlace`, `Work_For`,
# `associatedBand/associatedMusicalArtist`); names that differ only in case or separators
# clash. No spaces: a name is also a command-line argument (`kg vocab accept NAME`).
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_./:-]{0,63}$")
ONTOLOGY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class ConceptTypeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME.pattern)
    description: str = Field(default="", max_length=300)


class RelationTypeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME.pattern)
    description: str = Field(default="", max_length=300)
    direction: str = Field(default="directed", pattern="^(directed|symmetric)$")
    domain: str | None = Field(default=None, max_length=64)
    range: str | None = Field(default=None, max_length=64)
    example: str | None = Field(default=None, max_length=300)
    category: str = Field(default="general", max_length=32)


class OntologySpec(BaseModel):
    """One ontology as a file holds it (and as `export` writes it)."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=500)
    mode: str = Field(default="strict", pattern="^(strict|open)$")
    concept_types: list[ConceptTypeSpec] = Field(default_factory=list)
    relation_types: list[RelationTypeSpec] = Field(min_length=1)


# -- reading a file -----------------------------------------------------------------------------

def _bad(path: Path, line: int | None, problem: str) -> UsageError:
    where = f"{path}:{line}" if line else str(path)
    return UsageError(f"{where}: {problem}; nothing was imported")


def _lines(node: yaml.Node, trail: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """(key path) -> 1-based line, for every node of a composed YAML/JSON document."""
    found = {trail: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found |= _lines(value, (*trail, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found |= _lines(item, (*trail, i))
    return found


def parse_file(path: Path) -> OntologySpec:
    """The ontology a file describes, or UsageError naming the file, the line and the problem."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the file ({exc.strerror}); nothing was imported"
                         ) from None
    if not raw.strip():
        raise _bad(path, None, "the file is empty; it needs a relation_types list")
    if path.suffix.lower() == ".json":
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _bad(path, exc.lineno, f"JSON syntax error: {exc.msg}") from None
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
        data = yaml.safe_load(raw)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise _bad(path, line, f"YAML syntax error: {exc.problem or exc.context}") from None
    if node is None or data is None:
        raise _bad(path, None, "the file is empty; it needs a relation_types list")
    lines = _lines(node)
    if not isinstance(data, dict):
        raise _bad(path, 1, "the file must be a mapping with concept_types and relation_types")
    try:
        spec = OntologySpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
        where = ".".join(str(p) for p in loc)
        raise _bad(path, line, f"{where}: {err['msg']}" if where else err["msg"]) from None
    _check_names(path, spec, lines)
    return spec


def _check_names(path: Path, spec: OntologySpec, lines: dict[tuple[Any, ...], int]) -> None:
    """No two concept (or relation) types whose names differ only in case or separators;
    every domain a concept type, every range a concept type or a datatype kg knows."""
    seen: dict[str, int] = {}
    concept_keys: dict[str, str] = {}
    for i, concept in enumerate(spec.concept_types):
        line = lines.get(("concept_types", i, "name"))
        clash = concept_keys.get(label_key(concept.name))
        if clash is not None:
            same = "" if clash == concept.name else f"same as {clash!r}, "
            raise _bad(path, line, f"duplicate concept type {concept.name!r} "
                                   f"({same}first at line {seen[clash]})")
        seen[concept.name] = line or 0
        concept_keys[label_key(concept.name)] = concept.name
    relations: dict[str, tuple[str, int]] = {}
    for i, relation in enumerate(spec.relation_types):
        line = lines.get(("relation_types", i, "name"))
        first = relations.get(label_key(relation.name))
        if first is not None:
            same = "" if first[0] == relation.name else f"same as {first[0]!r}, "
            raise _bad(path, line, f"duplicate relation type {relation.name!r} "
                                   f"({same}first at line {first[1]})")
        relations[label_key(relation.name)] = (relation.name, line or 0)
        for end in ("domain", "range"):
            value = getattr(relation, end)
            if value is None or (end == "range" and datatype_of(value)):
                continue
            declared = concept_keys.get(label_key(value))
            if declared is not None:
                # `domain: person` names the type declared `Person`: stored (and exported)
                # in the declaration's spelling, so every later comparison is exact.
                setattr(relation, end, declared)
                continue
            where = lines.get(("relation_types", i, end), line)
            if end == "range" and looks_like_datatype(value):
                raise _bad(path, where, f"relation {relation.name!r} has range {value!r}, a "
                                        f"datatype kg does not know (known: {known_datatypes()})")
            known = ", ".join(seen) or "none declared"
            datatypes = f"; or a datatype: {known_datatypes()}" if end == "range" else ""
            raise _bad(path, where, f"relation {relation.name!r} has {end} {value!r}, which is "
                                    f"not a concept type (known: {known}{datatypes})")


# -- storing ------------------------------------------------------------------------------------

def _registry_id(session: Session, relation: RelationTypeSpec) -> int:
    """The graph-wide type row for this name (created on first use by any ontology, in its
    spelling): `partOf` in one ontology and `part_of` in another are one relationship type of
    the graph, so one fact found under either is one edge. The ontology keeps its spelling."""
    found = registry_type(session, relation.name)
    if found is None:
        found = RelationshipType(name=relation.name, category=relation.category[:32],
                                 direction=relation.direction,
                                 description=relation.description[:200], curated=True)
        session.add(found)
        session.flush()
    return found.id


def registry_type(session: Session, name: str) -> RelationshipType | None:
    """The graph's relationship type a name means, in any case or separators (`birth_place`,
    `Birth-Place` find `birthPlace`); None when no type has that name."""
    found = session.scalar(select(RelationshipType).where(RelationshipType.name == name))
    if found is not None:
        return found
    key = label_key(name)
    # The registry is small (the types of every ontology): read it rather than index keys.
    return next((t for t in session.scalars(select(RelationshipType).order_by(
        RelationshipType.id)) if label_key(t.name) == key), None)


def _check_ontology_name(name: str) -> str:
    if not ONTOLOGY_NAME.match(name):
        raise UsageError(f"ontology name {name!r} must be 1 to 64 letters, digits, '_', '.', "
                         "':' or '-', starting with a letter or digit")
    return name


def store(session: Session, name: str, spec: OntologySpec) -> Ontology:
    """Create the ontology, or replace its types and bump its revision."""
    _check_ontology_name(name)
    row = session.scalar(select(Ontology).where(Ontology.name == name))
    if row is None:
        row = Ontology(name=name, description=spec.description, mode=spec.mode, revision=1)
        session.add(row)
        session.flush()
    else:
        row.revision += 1
        row.description, row.mode, row.updated_at = spec.description, spec.mode, utcnow()
        session.execute(delete(OntologyConceptType).where(
            OntologyConceptType.ontology_id == row.id))
        session.execute(delete(OntologyRelationType).where(
            OntologyRelationType.ontology_id == row.id))
    for concept in spec.concept_types:
        session.add(OntologyConceptType(ontology_id=row.id, name=concept.name,
                                        description=concept.description))
    for relation in spec.relation_types:
        session.add(OntologyRelationType(
            ontology_id=row.id, type_id=_registry_id(session, relation), name=relation.name,
            category=relation.category, description=relation.description,
            direction=relation.direction, domain=relation.domain, range=relation.range,
            example=relation.example))
    session.flush()
    return row


def import_file(session: Session, path: Path, name: str | None = None) -> dict[str, Any]:
    """Parse and store one ontology file (its name: --name, else the file's stem)."""
    spec = parse_file(path)
    row = store(session, name or path.stem, spec)
    return {"name": row.name, "revision": row.revision, "mode": row.mode,
            "concept_types": len(spec.concept_types),
            "relation_types": len(spec.relation_types)}


# -- reading back -------------------------------------------------------------------------------

def get(session: Session, name: str) -> Ontology:
    row = session.scalar(select(Ontology).where(Ontology.name == name))
    if row is None:
        raise NotFoundError(f"no ontology named {name!r}; see `kg ontology list`")
    return row


def spec_of(session: Session, name: str) -> OntologySpec:
    """The stored ontology in the file format (what `export` writes and `import` reads)."""
    row = get(session, name)
    concepts = session.scalars(select(OntologyConceptType).where(
        OntologyConceptType.ontology_id == row.id).order_by(OntologyConceptType.id))
    relations = session.scalars(select(OntologyRelationType).where(
        OntologyRelationType.ontology_id == row.id).order_by(OntologyRelationType.id))
    return OntologySpec(
        description=row.description, mode=row.mode,
        concept_types=[ConceptTypeSpec(name=c.name, description=c.description)
                       for c in concepts],
        relation_types=[RelationTypeSpec(
            name=r.name, description=r.description, direction=r.direction, domain=r.domain,
            range=r.range, example=r.example, category=r.category) for r in relations])


def listing(session: Session) -> list[dict[str, Any]]:
    concept_counts: dict[int, int] = {oid: n for oid, n in session.execute(select(
        OntologyConceptType.ontology_id, func.count()).group_by(
        OntologyConceptType.ontology_id))}
    relation_counts: dict[int, int] = {oid: n for oid, n in session.execute(select(
        OntologyRelationType.ontology_id, func.count()).group_by(
        OntologyRelationType.ontology_id))}
    return [{"name": o.name, "mode": o.mode, "revision": o.revision,
             "concept_types": concept_counts.get(o.id, 0),
             "relation_types": relation_counts.get(o.id, 0), "description": o.description}
            for o in session.scalars(select(Ontology).order_by(Ontology.name))]


def show(session: Session, name: str) -> dict[str, Any]:
    row = get(session, name)
    spec = spec_of(session, name)
    return {"name": row.name, "revision": row.revision,
            **spec.model_dump(exclude_none=True)}


def export_text(session: Session, name: str) -> str:
    """YAML that `kg ontology import` reads back to the same ontology."""
    data = spec_of(session, name).model_dump(exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def delete_ontology(session: Session, name: str) -> None:
    """Remove an ontology no profile and no past run uses (else say which ones do)."""
    row = get(session, name)
    profiles = list(session.scalars(select(ExtractionProfile.name).where(
        ExtractionProfile.ontology == name).order_by(ExtractionProfile.name)))
    runs = list(session.scalars(select(Run.id).where(Run.ontology == name).order_by(Run.id)))
    users = []
    if profiles:
        users.append("profile(s) " + ", ".join(profiles))
    if runs:
        shown = ", ".join(str(r) for r in runs[:10]) + (" ..." if len(runs) > 10 else "")
        users.append(f"run(s) {shown}")
    if users:
        raise UsageError(f"ontology {name!r} is used by {' and '.join(users)}; point the "
                         "profiles at another ontology first (runs keep it for their record)")
    session.delete(row)
    session.flush()


def accept_proposal(session: Session, type_name: str, into: str = DEFAULT) -> dict[str, Any]:
    """Promote a proposed relationship type into an ontology (its revision grows)."""
    proposal = session.scalar(select(RelationshipTypeProposal).where(
        RelationshipTypeProposal.name == type_name))
    if proposal is None:
        raise NotFoundError(f"no proposal named {type_name!r}; see `kg vocab proposals`")
    if not NAME.match(proposal.name):
        raise UsageError(f"proposal {proposal.name!r} is not a valid type name")
    row = get(session, into)
    key = label_key(proposal.name)
    exists = next((name for name in session.scalars(select(OntologyRelationType.name).where(
        OntologyRelationType.ontology_id == row.id)) if label_key(name) == key), None)
    if exists is not None:
        same = "" if exists == proposal.name else f" (as {exists!r})"
        raise UsageError(f"ontology {into!r} already has the type {proposal.name!r}{same}")
    spec = RelationTypeSpec(name=proposal.name, description="", category="accepted")
    session.add(OntologyRelationType(
        ontology_id=row.id, type_id=_registry_id(session, spec), name=spec.name,
        category=spec.category, description="", direction="directed",
        example=proposal.example[:300] or None))
    row.revision += 1
    row.updated_at = utcnow()
    session.delete(proposal)
    session.flush()
    return {"name": spec.name, "ontology": row.name, "revision": row.revision}
