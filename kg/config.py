"""Extraction profiles: validate settings, read the active one, change it with an audit trail."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from kg.db.models import PROVIDERS, THINKING_MODES, ExtractionProfile, ProfileChange, utcnow
from kg.errors import NotFoundError, UsageError
from kg.providers.base import ProviderSettings

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Go duration ("10m", "1h30m", "-1s") or a plain number of seconds ("300", "-1", "0").
KEEP_ALIVE = re.compile(r"^-?(\d+(\.\d+)?)$|^-?((\d+(\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
SECRETISH_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASS)", re.IGNORECASE)

EDITABLE_FIELDS = (
    "provider",
    "model",
    "base_url",
    "api_key_env",
    "temperature",
    "top_p",
    "thinking_mode",
    "gpu_layers",
    "num_threads",
    "context_window",
    "max_output_tokens",
    "max_parallel",
    "max_retries",
    "timeout_s",
    "keep_alive",
)

# What a new profile starts from, per provider; anything given on the command line wins.
PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "ollama": {
        "base_url": "http://localhost:11434",
        "context_window": 8192,
        "max_output_tokens": 2048,
        "max_parallel": 2,
        "keep_alive": "10m",
        "timeout_s": 300.0,
    },
    "vllm": {
        "base_url": "http://localhost:8000/v1",
        "context_window": 8192,
        "max_output_tokens": 2048,
        "max_parallel": 8,
        "keep_alive": None,
        "timeout_s": 300.0,
    },
    "openai": {
        "base_url": "http://localhost:8000/v1",
        "context_window": 8192,
        "max_output_tokens": 2048,
        "max_parallel": 4,
        "keep_alive": None,
        "timeout_s": 300.0,
    },
    "llamacpp": {
        "model": "smollm2",
        "base_url": None,
        "context_window": 4096,
        "max_output_tokens": 1024,
        "max_parallel": 1,
        "keep_alive": None,
        "timeout_s": 600.0,
    },
}
COMMON_DEFAULTS: dict[str, Any] = {
    "temperature": 0.1,
    "top_p": 0.9,
    "thinking_mode": "off",
    "gpu_layers": -1,
    "num_threads": None,
    "max_retries": 2,
    "api_key_env": None,
}


class ProfileFields(BaseModel):
    """Every editable setting of a profile, validated as the database CHECKs will."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["ollama", "vllm", "openai", "llamacpp"]
    model: str = Field(min_length=1, max_length=512)
    base_url: str | None = Field(default=None, max_length=512)
    api_key_env: str | None = None
    temperature: float = Field(ge=0, le=2)
    top_p: float = Field(gt=0, le=1)
    thinking_mode: Literal["off", "low", "medium", "high"]
    gpu_layers: int = Field(ge=-1)
    num_threads: int | None = Field(default=None, ge=1, le=1024)
    context_window: int = Field(ge=512, le=2_097_152)
    max_output_tokens: int = Field(ge=64)
    max_parallel: int = Field(ge=1, le=64)
    max_retries: int = Field(ge=0, le=10)
    timeout_s: float = Field(gt=0, le=86_400)
    keep_alive: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"must start with http:// or https:// (got {value!r})")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not ENV_NAME.match(value) or _looks_like_secret(value):
            # Never echo the value: it may be the key itself.
            raise ValueError(
                "must be the NAME of an environment variable that holds the key "
                "(letters, digits, underscore, e.g. VLLM_API_KEY), not the key itself; "
                "the value was not stored"
            )
        return value

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not KEEP_ALIVE.match(value):
            raise ValueError(
                f"must be a duration like 10m, 1h, 30s, or seconds like 300, -1 (forever), "
                f"0 (unload at once) (got {value!r})"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProfileFields:
        if self.max_output_tokens >= self.context_window:
            raise ValueError(
                f"max_output_tokens ({self.max_output_tokens}) must be smaller than "
                f"context_window ({self.context_window})"
            )
        if self.provider != "llamacpp" and not self.base_url:
            raise ValueError(f"provider {self.provider} needs --base-url")
        return self


def _looks_like_secret(value: str) -> bool:
    """True for strings that are plausibly a key rather than a variable name."""
    if value.startswith(("sk-", "sk_", "hf_", "ghp_", "xox")):
        return True
    for name, env_value in os.environ.items():
        if env_value == value and len(value) >= 8 and SECRETISH_NAME.search(name):
            return True
    has_lower = any(c.islower() for c in value)
    has_digit = sum(c.isdigit() for c in value) >= 4
    return len(value) >= 24 and has_lower and has_digit and "_" not in value


RANGES = {
    "temperature": "must be between 0 and 2",
    "top_p": "must be above 0 and at most 1",
    "gpu_layers": "must be -1 (auto), 0 (CPU only) or a number of layers",
    "num_threads": "must be between 1 and 1024 (omit for auto)",
    "context_window": "must be between 512 and 2097152 tokens",
    "max_output_tokens": "must be at least 64 and below context_window",
    "max_parallel": "must be between 1 and 64",
    "max_retries": "must be between 0 and 10",
    "timeout_s": "must be above 0 and at most 86400 seconds",
    "model": "must be 1 to 512 characters",
}


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if field in RANGES and err["type"] != "value_error":
            msg = RANGES[field]
        if err["type"] == "literal_error":
            allowed = {"provider": PROVIDERS, "thinking_mode": THINKING_MODES}.get(field, ())
            msg = f"must be one of {', '.join(allowed)}"
        elif err["type"] == "extra_forbidden":
            msg = "is not a profile setting"
        if "input" in err and err["type"] not in ("value_error", "extra_forbidden") and (
            field != "api_key_env"
        ):
            msg += f" (got {err['input']!r})"
        parts.append(msg if field == "settings" else f"{field} {msg}")
    return "; ".join(parts)


def validate_fields(values: dict[str, Any]) -> ProfileFields:
    """Validate a full set of settings, or raise UsageError naming each bad field."""
    try:
        return ProfileFields(**values)
    except ValidationError as exc:
        raise UsageError(f"invalid profile settings: {_format_validation(exc)}") from None


@dataclass
class ProfileView:
    """A profile as plain data, for rendering."""

    name: str
    active: bool
    revision: int
    updated_at: str
    updated_by: str
    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "active": self.active,
            "revision": self.revision,
            **self.fields,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


def view(profile: ExtractionProfile) -> ProfileView:
    """Plain-data view of a profile row."""
    return ProfileView(
        name=profile.name,
        active=profile.active,
        revision=profile.revision,
        updated_at=profile.updated_at.isoformat(timespec="seconds"),
        updated_by=profile.updated_by,
        fields={f: getattr(profile, f) for f in EDITABLE_FIELDS},
    )


def provider_settings(profile: ExtractionProfile) -> ProviderSettings:
    """The plain settings a provider is built from (the API key is read from the env later)."""
    return ProviderSettings(
        profile_name=profile.name,
        revision=profile.revision,
        **{f: getattr(profile, f) for f in EDITABLE_FIELDS},
    )


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
    unknown = set(updates) - set(EDITABLE_FIELDS)
    if unknown:
        raise UsageError(f"unknown profile settings: {', '.join(sorted(unknown))}")
    updates = {k: v for k, v in updates.items() if v is not None}
    if "provider" in updates and updates["provider"] not in PROVIDERS:
        raise UsageError(
            f"invalid profile settings: provider must be one of {', '.join(PROVIDERS)} "
            f"(got {updates['provider']!r})"
        )
    existing = (
        session.scalar(select(ExtractionProfile).where(ExtractionProfile.name == name))
        if name
        else get_active(session)
    )
    if existing is None:
        assert name is not None
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", name):
            raise UsageError(
                f"profile name {name!r} is not allowed; use letters, digits, '.', '_', ':' or '-' "
                "(at most 64 characters)"
            )
        return _create(session, name, updates, activate=activate, by=by)

    current = {f: getattr(existing, f) for f in EDITABLE_FIELDS}
    merged = dict(current)
    new_provider = updates.get("provider", current["provider"])
    if new_provider != current["provider"]:
        old_defaults = PROVIDER_DEFAULTS[current["provider"]]
        new_defaults = PROVIDER_DEFAULTS[new_provider]
        # Settings left at the old provider's default follow the new provider's default.
        for field, old_default in old_defaults.items():
            if field not in updates and current.get(field) == old_default:
                merged[field] = new_defaults.get(field, current.get(field))
        if "model" not in updates and new_provider != "llamacpp" and (
            current["provider"] == "llamacpp"
        ):
            raise UsageError(
                f"provider {new_provider} needs --model (the model name the server knows, "
                "e.g. qwen3:8b)"
            )
    merged.update(updates)
    fields = validate_fields(merged)
    changes = [
        Change(f, current[f], getattr(fields, f))
        for f in EDITABLE_FIELDS
        if getattr(fields, f) != current[f]
    ]
    activated = False
    if activate and not existing.active:
        _deactivate_all(session)
        existing.active = True
        activated = True
        changes.append(Change("active", False, True))
    if not changes:
        return SetResult(existing.name, False, False, existing.revision, [])
    for change in changes:
        if change.field != "active":
            setattr(existing, change.field, change.new)
    existing.revision += 1
    existing.updated_at = utcnow()
    existing.updated_by = by
    for change in changes:
        _log(session, existing.name, existing.revision, change, by)
    session.flush()
    return SetResult(existing.name, False, activated, existing.revision, changes)


def _create(
    session: Session, name: str, updates: dict[str, Any], *, activate: bool, by: str
) -> SetResult:
    provider = updates.get("provider")
    if provider is None:
        raise UsageError(
            f"profile {name!r} does not exist; to create it give --provider "
            f"({', '.join(PROVIDERS)}) and --model"
        )
    if provider != "llamacpp" and not updates.get("model"):
        raise UsageError(
            f"provider {provider} needs --model (the model name the server knows, e.g. qwen3:8b)"
        )
    values = {**COMMON_DEFAULTS, **PROVIDER_DEFAULTS[provider], **updates}
    fields = validate_fields(values)
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
    changes = [Change(f, None, getattr(fields, f)) for f in EDITABLE_FIELDS]
    if activate:
        changes.append(Change("active", None, True))
    session.flush()
    for change in changes:
        _log(session, name, 1, change, by)
    return SetResult(name, True, activate, 1, changes)


def _deactivate_all(session: Session) -> None:
    session.execute(
        update(ExtractionProfile).where(ExtractionProfile.active.is_(True)).values(active=False)
    )
    # Flush the deactivation first: the partial unique index would reject two active rows.
    session.flush()


def use_profile(session: Session, name: str, *, by: str) -> tuple[str | None, bool]:
    """Make `name` the active profile; returns (previously active name, whether it changed)."""
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
    profile = get_profile(session, name)
    if profile.active:
        raise UsageError(
            f"profile {name!r} is active and cannot be deleted; activate another first with "
            "`kg admin extraction use NAME`"
        )
    _log(session, name, profile.revision, Change("deleted", None, True), by)
    session.delete(profile)
    session.flush()


def history(session: Session, *, limit: int = 50, name: str | None = None) -> list[ProfileChange]:
    """The newest profile changes first."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    query = select(ProfileChange).order_by(ProfileChange.id.desc()).limit(limit)
    if name:
        query = query.where(ProfileChange.profile_name == name)
    return list(session.scalars(query))
