"""Stored profiles: reading them, and changing them with an audit trail under one lock.

Every change (set, use, delete) bumps the profile's revision, so a running ingestion rebuilds
its provider on its next chunk, and writes one `profile_changes` row per changed setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, false, select, text, update
from sqlalchemy.orm import Session

from kg.db.models import ExtractionProfile, ProfileChange, utcnow
from kg.errors import NotFoundError, UsageError
from kg.profiles.fields import SETTINGS
from kg.profiles.settings import FIELDS
from kg.profiles.validation import (
    check_actor,
    check_for_provider,
    check_ontology,
    defaults_for,
    validate_fields,
    warnings_for,
)
from kg.profiles.views import row_fields
from kg.providers import registry
from kg.urls import redact_url

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# Any constant: every kg process that changes profiles takes this PostgreSQL advisory lock.
PROFILES_LOCK = 0x6B67_7072  # "kgpr"


def _check_name(name: str) -> str:
    if name == "":
        raise UsageError("--profile must name a profile (it was empty); leave it out to use "
                         "the active profile")
    return name


# -- reading ------------------------------------------------------------------------------------

def get_active(session: Session) -> ExtractionProfile:
    """The active profile; a database always has one after `kg db upgrade`."""
    profile = session.scalar(select(ExtractionProfile).where(ExtractionProfile.active.is_(True)))
    if profile is None:
        raise NotFoundError(
            "no extraction profile is active; run `kg admin extraction use NAME`"
        )
    return profile


def get_profile(session: Session, name: str | None = None) -> ExtractionProfile:
    """The named profile, or the active one when name is None."""
    if name is None:
        return get_active(session)
    _check_name(name)
    profile = session.scalar(select(ExtractionProfile).where(ExtractionProfile.name == name))
    if profile is None:
        known = ", ".join(list_names(session)) or "none"
        raise NotFoundError(f"no extraction profile named {name!r}; known profiles: {known}")
    return profile


def list_names(session: Session) -> list[str]:
    return list(session.scalars(select(ExtractionProfile.name).order_by(ExtractionProfile.name)))


def list_profiles(session: Session) -> list[ExtractionProfile]:
    return list(session.scalars(select(ExtractionProfile).order_by(ExtractionProfile.name)))


def revision_key(session: Session | Connection, name: str | None) -> tuple[int, int]:
    """(profile id, revision) of the named or active profile: one indexed query per chunk."""
    query = select(ExtractionProfile.id, ExtractionProfile.revision)
    if name is None:
        query = query.where(ExtractionProfile.active.is_(True))
    else:
        query = query.where(ExtractionProfile.name == name)
    row = session.execute(query).first()
    if row is None:
        raise NotFoundError(
            f"extraction profile {name or '(active)'} no longer exists; "
            "run `kg admin extraction list`"
        )
    return int(row[0]), int(row[1])


# -- changing -----------------------------------------------------------------------------------

@dataclass
class Change:
    field: str
    old: Any
    new: Any


@dataclass
class SetResult:
    name: str
    created: bool
    activated: bool
    revision: int
    changes: list[Change]
    warnings: list[str] = field(default_factory=list)


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _log(session: Session, name: str, revision: int, change: Change, by: str) -> None:
    session.add(
        ProfileChange(
            profile_name=name,
            revision=revision,
            field=change.field,
            old_value=_as_text(change.old),
            new_value=_as_text(change.new),
            changed_by=by,
            changed_at=utcnow(),
        )
    )


def lock_profiles(session: Session) -> None:
    """Serialise profile changes: concurrent `set --activate` / `use` must not collide.

    PostgreSQL: a transaction-scoped advisory lock, taken before anything is read. SQLite: a
    write statement that touches nothing, so the transaction holds the write lock from here on
    (later writers wait on busy_timeout instead of failing on a stale read).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PROFILES_LOCK})
    else:
        session.execute(update(ExtractionProfile).where(false())
                        .values(revision=ExtractionProfile.revision))


def _given(updates: dict[str, Any]) -> dict[str, Any]:
    """Flags given on the command line: None means 'not given', '' means 'clear this setting'."""
    unknown = set(updates) - set(FIELDS)
    if unknown:
        raise UsageError(f"unknown profile settings: {', '.join(sorted(unknown))}")
    given = {k: v for k, v in updates.items() if v is not None}
    for name, value in given.items():
        if value == "" and SETTINGS[name].nullable:
            given[name] = None
    return given


def set_profile(
    session: Session,
    updates: dict[str, Any],
    *,
    name: str | None = None,
    activate: bool = False,
    by: str,
) -> SetResult:
    """Partially update (or create) a profile; bumps revision and logs each changed field.

    Nothing is written unless the complete resulting profile is valid.
    """
    by = check_actor(by)
    if name is not None:
        _check_name(name)
    given = _given(updates)
    if "provider" in given and not registry.is_registered(given["provider"]):
        raise UsageError(
            f"invalid profile settings: provider must be one of {', '.join(registry.names())} "
            f"(got {given['provider']!r})"
        )
    lock_profiles(session)
    existing = (
        session.scalar(select(ExtractionProfile).where(ExtractionProfile.name == name))
        if name is not None
        else get_active(session)
    )
    if existing is None:
        assert name is not None
        if not PROFILE_NAME.match(name):
            raise UsageError(
                f"profile name {name!r} is not allowed; use letters, digits, '.', '_', ':' or '-' "
                "(at most 64 characters)"
            )
        return _create(session, name, given, activate=activate, by=by)

    current = row_fields(existing)
    merged = {**current, **_follow_provider(current, given), **given}
    fields = validate_fields(merged)
    check_ontology(session, fields, given)
    check_for_provider(fields, given)
    changes = [Change(f, current[f], getattr(fields, f)) for f in FIELDS
               if getattr(fields, f) != current[f]]
    activated = False
    if activate and not existing.active:
        _deactivate_all(session)
        existing.active = True
        activated = True
        changes.append(Change("active", False, True))
    warnings = warnings_for(given, fields)
    if not changes:
        return SetResult(existing.name, False, False, existing.revision, [], warnings)
    for change in changes:
        if change.field != "active":
            setattr(existing, change.field, change.new)
    existing.revision += 1
    existing.updated_at = utcnow()
    existing.updated_by = by
    for change in changes:
        _log(session, existing.name, existing.revision, change, by)
    session.flush()
    return SetResult(existing.name, False, activated, existing.revision, changes, warnings)


def _follow_provider(current: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """On a provider change, settings left at the old provider's default take the new one's."""
    new = given.get("provider", current["provider"])
    if new == current["provider"]:
        return {}
    old_spec = registry.spec(current["provider"]) if registry.is_registered(
        current["provider"]) else None
    old_defaults = defaults_for(current["provider"]) if old_spec else {}
    new_defaults = defaults_for(new)
    follow = {f: new_defaults.get(f, current[f]) for f, old_default in old_defaults.items()
              if f not in given and current.get(f) == old_default}
    if "model" not in given and "model" not in registry.spec(new).defaults and (
        old_spec is None or current["model"] == old_spec.defaults.get("model")
    ):
        raise UsageError(
            f"provider {new} needs --model (the model name the server knows, e.g. qwen3:8b)"
        )
    follow.pop("model", None)
    return follow


def _create(
    session: Session, name: str, given: dict[str, Any], *, activate: bool, by: str
) -> SetResult:
    provider = given.get("provider")
    if provider is None:
        raise UsageError(
            f"profile {name!r} does not exist; to create it give --provider "
            f"({', '.join(registry.names())}) and --model"
        )
    if not given.get("model") and "model" not in registry.spec(provider).defaults:
        raise UsageError(
            f"provider {provider} needs --model (the model name the server knows, e.g. qwen3:8b)"
        )
    fields = validate_fields({**defaults_for(provider), **given})
    check_ontology(session, fields, given)
    check_for_provider(fields, given)
    if activate:
        _deactivate_all(session)
    profile = ExtractionProfile(
        name=name,
        active=activate,
        revision=1,
        updated_at=utcnow(),
        updated_by=by,
        **fields.model_dump(),
    )
    session.add(profile)
    changes = [Change(f, None, getattr(fields, f)) for f in FIELDS]
    if activate:
        changes.append(Change("active", None, True))
    session.flush()
    for change in changes:
        _log(session, name, 1, change, by)
    return SetResult(name, True, activate, 1, changes, warnings_for(given, fields))


def _deactivate_all(session: Session) -> None:
    session.execute(
        update(ExtractionProfile).where(ExtractionProfile.active.is_(True)).values(active=False)
    )
    # Flush the deactivation first: the partial unique index would reject two active rows.
    session.flush()


def use_profile(session: Session, name: str, *, by: str) -> tuple[str | None, bool]:
    """Make `name` the active profile; returns (previously active name, whether it changed)."""
    by = check_actor(by)
    _check_name(name)
    lock_profiles(session)
    target = get_profile(session, name)
    previous = session.scalar(
        select(ExtractionProfile).where(ExtractionProfile.active.is_(True))
    )
    if previous is not None and previous.id == target.id:
        return previous.name, False
    _deactivate_all(session)
    target.active = True
    # Bump the revision so a running ingestion notices the switch on its next chunk.
    target.revision += 1
    target.updated_at = utcnow()
    target.updated_by = by
    _log(session, target.name, target.revision, Change("active", False, True), by)
    if previous is not None:
        _log(session, previous.name, previous.revision, Change("active", True, False), by)
    session.flush()
    return (previous.name if previous else None), True


def delete_profile(session: Session, name: str, *, by: str) -> None:
    """Delete a profile that is not the active one."""
    by = check_actor(by)
    lock_profiles(session)
    profile = get_profile(session, name)
    if profile.active:
        raise UsageError(
            f"profile {name!r} is active and cannot be deleted; activate another first with "
            "`kg admin extraction use NAME`"
        )
    _log(session, name, profile.revision, Change("deleted", None, True), by)
    session.delete(profile)
    session.flush()


def history(session: Session, *, limit: int = 50, name: str | None = None) -> list[dict[str, Any]]:
    """The newest profile changes first, as rows (URL credentials of old rows masked)."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    query = select(ProfileChange).order_by(ProfileChange.id.desc()).limit(limit)
    if name is not None:
        query = query.where(ProfileChange.profile_name == _check_name(name))
    rows = []
    for c in session.scalars(query):
        old, new = c.old_value, c.new_value
        if c.field == "base_url":
            old, new = redact_url(old), redact_url(new)
        rows.append({"changed_at": c.changed_at, "profile": c.profile_name,
                     "revision": c.revision, "field": c.field, "old": old, "new": new,
                     "by": c.changed_by})
    return rows
