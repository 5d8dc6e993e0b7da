"""Extraction profiles: every setting declared once, validated, stored with an audit trail.

`ProfileSettings` is the one declaration of a profile's settings. Its fields (type, default,
description, bounds) drive validation and its one-line messages, the `kg admin extraction set`
flags and their help, `show`/`--json`, the settings handed to providers (`ProviderSettings`)
and a run's snapshot. The database CHECKs repeat the bounds (a test keeps them equal).
"""

from __future__ import annotations

import os
import re
import types
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Union, get_args, get_origin

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from sqlalchemy import Connection, false, select, text, update
from sqlalchemy.orm import Session

from kg.db.models import FALLBACK_KINDS, ExtractionProfile, Ontology, ProfileChange, utcnow
from kg.errors import NotFoundError, UsageError
from kg.providers import registry
from kg.providers.base import THINKING_BUDGET, redact_url, url_has_credentials

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Go duration ("10m", "1h30m", "-1s") or a plain number of seconds ("300", "-1", "0").
KEEP_ALIVE = re.compile(r"^-?(\d+(\.\d+)?)$|^-?((\d+(\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
SECRETISH_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASS)", re.IGNORECASE)
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
ACTOR_MAX = 128
# Any constant: every kg process that changes profiles takes this PostgreSQL advisory lock.
PROFILES_LOCK = 0x6B67_7072  # "kgpr"


class ThinkingMode(StrEnum):
    OFF = "off"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class DescriptionMode(StrEnum):
    GENERATE = "generate"
    EVIDENCE = "evidence"
    OFF = "off"


class GroundingMode(StrEnum):
    ON = "on"
    OFF = "off"


class ProfileSettings(BaseModel):
    """Every editable setting of an extraction profile: the one place each is declared."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              use_enum_values=True)

    provider: str = Field(
        max_length=16,
        description="Backend: a registered provider (ollama, vllm, openai, llamacpp, ...).")
    model: str = Field(
        min_length=1, max_length=512,
        description="Model name on the server, or a GGUF path / 'smollm2' for llamacpp.")
    base_url: str | None = Field(
        default=None, max_length=512,
        description="Server URL, e.g. http://gpu:8000/v1 (Ollama without one: $OLLAMA_HOST); "
                    "repeat the flag for several endpoints of the same model.")
    api_key_env: str | None = Field(
        default=None, max_length=128,
        description="NAME of the environment variable holding the API key, never the key.")
    temperature: float = Field(default=0.1, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(default=0.9, gt=0, le=1, description="Nucleus sampling.")
    thinking_mode: ThinkingMode = Field(
        default=ThinkingMode.OFF, description="Whether and how hard the model thinks.")
    gpu_layers: int = Field(
        default=-1, ge=-1, description="Layers on the GPU: -1 auto, 0 CPU only.")
    num_threads: int | None = Field(
        default=None, ge=1, le=1024, description="CPU threads (none: as many as the machine has).")
    context_window: int = Field(
        default=8192, ge=512, le=2_097_152,
        description="Context length in tokens (sent to Ollama as num_ctx).")
    max_output_tokens: int = Field(
        default=2048, ge=64, description="Output budget per call, below context_window.")
    max_parallel: int = Field(default=1, ge=1, le=64, description="Requests in flight at once.")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Repair attempts per chunk after the first call.")
    timeout_s: float = Field(
        default=300.0, gt=0, le=86_400, description="Seconds per request.",
        json_schema_extra={"flag": "--timeout"})
    keep_alive: str | None = Field(
        default=None, max_length=32,
        description="Ollama keep_alive: 10m, 1h, -1 (forever), 0 (unload at once).")
    ontology: str = Field(
        default="default", min_length=1, max_length=64,
        description="Ontology whose types extraction uses (see `kg ontology list`).")
    descriptions: DescriptionMode = Field(
        default=DescriptionMode.GENERATE,
        description="Concept descriptions: generate, evidence (the quoted sentence) or off.")
    grounding: GroundingMode = Field(
        default=GroundingMode.ON,
        description="Grounded decoding: labels, ends and quotes can only be text of the chunk.")
    fallback_profile: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Profile that serves the chunks this one cannot (see --fallback-on).")
    fallback_on: str = Field(
        default="unreachable,timeout,error", max_length=64,
        description="When a chunk goes to the fallback profile: any of unreachable, timeout, "
                    "invalid, error, joined by commas.")

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        if not registry.is_registered(value):
            raise ValueError(f"must be one of {', '.join(registry.names())} (got {value!r})")
        return value

    @field_validator("base_url")
    @classmethod
    def _urls(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Several endpoints (--base-url given more than once) are stored comma-separated.
        if value is None or "," not in value:
            return cls._url(value, info)
        urls = [cls._url(u.strip(), info) for u in value.split(",") if u.strip()]
        if len(set(urls)) != len(urls):
            raise ValueError("lists the same URL twice; give each endpoint once")
        return ",".join(u for u in urls if u)

    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            shown = value if "@" not in value else "<hidden>"
            raise ValueError(f"must start with http:// or https:// (got {shown!r})")
        if url_has_credentials(value) and not (info.context or {}).get("stored"):
            # Never echo it: the URL holds a password. (A row stored by an older kg still
            # works; listings and messages mask it.)
            raise ValueError(
                "must not contain a user name or password; put the key in an environment "
                "variable and name it with --api-key-env (the URL was not stored)"
            )
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not ENV_NAME.match(value) or _looks_like_secret(value):
            # Never echo the value: it may be the key itself.
            raise ValueError(
                "must be the NAME of an environment variable that holds the key "
                "(letters, digits, underscore, e.g. VLLM_API_KEY), not the key itself; "
                "the value was not stored"
            )
        return value

    @field_validator("fallback_on")
    @classmethod
    def _fallback_on(cls, value: str) -> str:
        kinds = {k.strip() for k in value.split(",") if k.strip()}
        unknown = kinds - set(FALLBACK_KINDS)
        if unknown or not kinds:
            raise ValueError(f"must be one or more of {', '.join(FALLBACK_KINDS)}, joined by "
                             f"commas (got {value!r})")
        return ",".join(k for k in FALLBACK_KINDS if k in kinds)  # the stored, CHECKed order

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: str | None) -> str | None:
        if value is not None and not KEEP_ALIVE.match(value):
            raise ValueError(
                f"must be a duration like 10m, 1h, 30s, or seconds like 300, -1 (forever), "
                f"0 (unload at once) (got {value!r})"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProfileSettings:
        if self.max_output_tokens >= self.context_window:
            raise ValueError(
                f"max_output_tokens ({self.max_output_tokens}) must be smaller than "
                f"context_window ({self.context_window})"
            )
        if registry.spec(self.provider).needs_base_url and not self.base_url:
            raise ValueError(f"provider {self.provider} needs --base-url")
        return self


class ProviderSettings(ProfileSettings):
    """One revision of a profile as handed to a provider: the settings plus where they came from."""

    profile_name: str
    revision: int = Field(ge=1)

    def api_key(self) -> str | None:
        """The key from the environment variable the profile names (never stored anywhere)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def output_budget(self) -> int:
        """max_output_tokens plus room for thinking, never beyond half the context."""
        extra = THINKING_BUDGET.get(self.thinking_mode, 0)
        if extra == 0:
            return self.max_output_tokens
        return max(self.max_output_tokens,
                   min(self.max_output_tokens + extra, self.context_window // 2))

    def with_model(self, model: str) -> ProviderSettings:
        """The same settings for another model (to unload the one served before)."""
        return self.model_copy(update={"model": model})


FIELDS: tuple[str, ...] = tuple(ProfileSettings.model_fields)


# -- the declaration, read back for messages, CLI flags and the CHECK comparison -------------

@dataclass(frozen=True)
class Bounds:
    """Numeric bounds of a setting (or length bounds of a text setting)."""

    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True

    def phrase(self, unit: str = "") -> str | None:
        """'between 0 and 2', 'above 0 and at most 1', '-1 or more'... (None: unbounded)."""
        low, high = _num(self.low), _num(self.high)
        unit = f" {unit}" if unit else ""
        if low is not None and high is not None:
            if self.low_inclusive and self.high_inclusive:
                return f"between {low} and {high}{unit}"
            first = f"{low} or more" if self.low_inclusive else f"above {low}"
            second = f"at most {high}" if self.high_inclusive else f"below {high}"
            return f"{first} and {second}{unit}"
        if low is not None:
            return f"{low} or more{unit}" if self.low_inclusive else f"above {low}{unit}"
        if high is not None:
            return f"at most {high}{unit}" if self.high_inclusive else f"below {high}{unit}"
        return None


def _num(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One profile setting as the CLI and the messages see it, read from ProfileSettings."""

    name: str
    flag: str
    kind: type  # int, float or str
    nullable: bool
    description: str
    bounds: Bounds
    choices: tuple[str, ...] = field(default=())

    @property
    def is_text(self) -> bool:
        return self.kind is str

    def rule(self) -> str | None:
        """What a valid value is, as the end of 'X must be ...'."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        low, high = self.bounds.low, self.bounds.high
        if self.is_text and low is not None and high is not None:
            return f"{_num(low)} to {_num(high)} characters"
        return self.bounds.phrase("characters" if self.is_text else "")

    def help(self) -> str:
        parts = [self.description.rstrip(".") + "."]
        rule = self.rule()
        if rule and (self.choices or not self.is_text):
            parts.append(f"Must be {rule}.")
        if self.nullable:
            parts.append("'' clears it.")
        return " ".join(parts)


def _bounds(info: FieldInfo) -> Bounds:
    values: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            values.update(low=float(item.ge), low_inclusive=True)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Gt):
            values.update(low=float(item.gt), low_inclusive=False)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le):
            values.update(high=float(item.le), high_inclusive=True)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Lt):
            values.update(high=float(item.lt), high_inclusive=False)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.MinLen):
            values.update(low=float(item.min_length), low_inclusive=True)
        elif isinstance(item, annotated_types.MaxLen):
            values.update(high=float(item.max_length), high_inclusive=True)
    return Bounds(**values)


def _kind(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def _setting(name: str, info: FieldInfo) -> Setting:
    kind, nullable = _kind(info.annotation)
    choices: tuple[str, ...] = ()
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        choices = tuple(m.value for m in kind)
        kind = str
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    flag = str(extra.get("flag") or "--" + name.replace("_", "-"))
    return Setting(name=name, flag=flag, kind=kind, nullable=nullable,
                   description=info.description or name, bounds=_bounds(info), choices=choices)


SETTINGS: dict[str, Setting] = {
    name: _setting(name, info) for name, info in ProfileSettings.model_fields.items()
}


# -- validation with one-line messages ---------------------------------------------------------

_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                 "string_too_short", "string_too_long", "finite_number"}
_TYPE_ERRORS = {"int_parsing": "must be a whole number", "int_from_float": "must be a whole number",
                "int_type": "must be a whole number", "float_parsing": "must be a number",
                "float_type": "must be a number", "string_type": "must be text",
                "bool_type": "must be true or false"}
_NEVER_ECHO = {"api_key_env", "base_url"}


def _message(err: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    name = loc[0] if loc else ""
    kind = err["type"]
    setting = SETTINGS.get(name)
    if kind == "value_error":
        msg = err["msg"].removeprefix("Value error, ")
        return msg if not name else f"{name} {msg}"
    if kind == "extra_forbidden":
        return f"{name} is not a profile setting"
    if kind == "missing":
        return f"{name} is required"
    if setting is not None and (kind in _BOUND_ERRORS or kind in ("enum", "literal_error")):
        msg = f"must be {setting.rule()}"
        if name == "gpu_layers":
            msg += " (-1 auto, 0 CPU only, N layers on the GPU)"
    else:
        msg = _TYPE_ERRORS.get(kind, err["msg"].lower())
    if "input" in err and name not in _NEVER_ECHO:
        msg += f" (got {err['input']!r})"
    return f"{name} {msg}" if name else msg


def _check_ontology(session: Session, fields: ProfileSettings, given: dict[str, Any]) -> None:
    """A profile may only name an ontology that exists (else ingest would fail much later)."""
    if "ontology" not in given:
        return
    known = session.scalar(select(Ontology.id).where(Ontology.name == fields.ontology))
    if known is None:
        raise UsageError(f"no ontology named {fields.ontology!r}; see `kg ontology list` or "
                         "import one with `kg ontology import FILE`")


def validate_fields(values: dict[str, Any]) -> ProfileSettings:
    """Validate a full set of settings, or raise UsageError naming each bad field."""
    try:
        return ProfileSettings(**values)
    except ValidationError as exc:
        detail = "; ".join(_message(e) for e in exc.errors())
        raise UsageError(f"invalid profile settings: {detail}") from None


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


def defaults_for(provider: str) -> dict[str, Any]:
    """What a new profile of this provider starts from: the model's defaults, then the spec's."""
    common = {name: info.default for name, info in ProfileSettings.model_fields.items()
              if not info.is_required()}
    return {**common, **registry.spec(provider).defaults}


def check_actor(by: str) -> str:
    """Who makes a change: one line of printable text (it lands in tables and audit rows)."""
    if not by or len(by) > ACTOR_MAX or any(
        unicodedata.category(c).startswith("C") for c in by
    ):
        raise UsageError(
            f"--by must be one line of printable text, 1 to {ACTOR_MAX} characters "
            f"(got {by[:40]!r})"
        )
    return by


def _check_name(name: str) -> str:
    if name == "":
        raise UsageError("--profile must name a profile (it was empty); leave it out to use "
                         "the active profile")
    return name


# -- plain views --------------------------------------------------------------------------------

@dataclass
class ProfileView:
    """A profile as plain data, for rendering (credentials in a URL are masked)."""

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


def _row_fields(profile: ExtractionProfile) -> dict[str, Any]:
    return {f: getattr(profile, f) for f in FIELDS}


def view(profile: ExtractionProfile) -> ProfileView:
    """Plain-data view of a profile row."""
    fields = _row_fields(profile)
    fields["base_url"] = redact_url(fields["base_url"])
    return ProfileView(
        name=profile.name,
        active=profile.active,
        revision=profile.revision,
        updated_at=profile.updated_at.isoformat(timespec="seconds"),
        updated_by=profile.updated_by,
        fields=fields,
    )


def provider_settings(profile: ExtractionProfile) -> ProviderSettings:
    """The settings a provider is built from (the API key is read from the env later)."""
    try:
        return ProviderSettings.model_validate(
            {"profile_name": profile.name, "revision": profile.revision, **_row_fields(profile)},
            context={"stored": True})
    except ValidationError as exc:
        detail = "; ".join(_message(e) for e in exc.errors())
        raise UsageError(f"profile {profile.name} cannot be used: {detail}; fix it with "
                         f"`kg admin extraction set --profile {profile.name}`") from None


def snapshot(settings: ProviderSettings) -> dict[str, Any]:
    """What a run records about each profile revision it used (no secrets: only the env name)."""
    data = settings.model_dump(mode="json", exclude={"profile_name", "revision"})
    data["base_url"] = redact_url(data["base_url"])
    return {"profile": settings.profile_name, "revision": settings.revision, **data,
            "at": utcnow().isoformat(timespec="seconds")}


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


def _check_for_provider(fields: ProfileSettings) -> None:
    spec = registry.spec(fields.provider)
    if spec.thinking is registry.Thinking.NONE and fields.thinking_mode != ThinkingMode.OFF:
        raise UsageError(
            f"invalid profile settings: provider {spec.name} cannot think; set "
            "--thinking-mode off"
        )


def _warnings(given: dict[str, Any], fields: ProfileSettings) -> list[str]:
    env = fields.api_key_env
    if "api_key_env" in given and env and env not in os.environ:
        return [f"the environment variable {env} is not set here; runs and "
                "`kg admin extraction test` will stop until it is"]
    return []


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

    current = _row_fields(existing)
    merged = {**current, **_follow_provider(current, given), **given}
    fields = validate_fields(merged)
    _check_ontology(session, fields, given)
    _check_for_provider(fields)
    changes = [Change(f, current[f], getattr(fields, f)) for f in FIELDS
               if getattr(fields, f) != current[f]]
    activated = False
    if activate and not existing.active:
        _deactivate_all(session)
        existing.active = True
        activated = True
        changes.append(Change("active", False, True))
    warnings = _warnings(given, fields)
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
    _check_ontology(session, fields, given)
    _check_for_provider(fields)
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
    return SetResult(name, True, activate, 1, changes, _warnings(given, fields))


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
