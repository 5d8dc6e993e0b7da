"""Validating profile settings, with one-line messages that say what a valid value is.

The settings model checks each value on its own; this module adds the rules that need the
provider registry (a registered provider, a base URL where one is needed, thinking, settings
only some providers use) or the database (the ontology exists). It sits above kg.providers.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db.models import Ontology
from kg.errors import UsageError
from kg.profiles.fields import SETTINGS
from kg.profiles.settings import (
    PROVIDER_SPECIFIC_SETTINGS,
    ProfileSettings,
    ThinkingMode,
    defaults,
)
from kg.providers import registry

ACTOR_MAX = 128

_S = TypeVar("_S", bound=ProfileSettings)

_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                 "string_too_short", "string_too_long", "finite_number"}
_TYPE_ERRORS = {"int_parsing": "must be a whole number", "int_from_float": "must be a whole number",
                "int_type": "must be a whole number", "float_parsing": "must be a number",
                "float_type": "must be a number", "string_type": "must be text",
                "bool_type": "must be true or false"}
_NEVER_ECHO = {"api_key_env", "base_url"}


class InvalidSettings(Exception):
    """Settings that fail validation; `detail` names each problem, joined by '; '."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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


def _unknown_provider(value: Any) -> str | None:
    if registry.is_registered(value):
        return None
    return f"provider must be one of {', '.join(registry.names())} (got {value!r})"


def validated(model: type[_S], values: Mapping[str, Any], *, stored: bool = False) -> _S:
    """The settings checked by the model and by the registry, or InvalidSettings.

    The registry's rules read like the model's own: an unknown provider is reported first,
    beside the other fields' errors; a missing base URL only once every field is valid.
    """
    try:
        result = model.model_validate(values, context={"stored": True} if stored else None)
    except ValidationError as exc:
        errors = exc.errors()
        messages = [_message(e) for e in errors]
        provider_ok = not any(tuple(e["loc"])[:1] == ("provider",) for e in errors)
        unknown = _unknown_provider(values.get("provider")) if provider_ok else None
        if unknown:
            # Cross-field checks only mean something once the provider is known.
            messages = [unknown, *(m for e, m in zip(errors, messages, strict=True) if e["loc"])]
        raise InvalidSettings("; ".join(messages)) from None
    unknown = _unknown_provider(result.provider)
    if unknown:
        raise InvalidSettings(unknown)
    if registry.spec(result.provider).needs_base_url and not result.base_url:
        raise InvalidSettings(f"provider {result.provider} needs --base-url")
    return result


def validate_fields(values: Mapping[str, Any]) -> ProfileSettings:
    """Validate a full set of settings, or raise UsageError naming each bad field."""
    try:
        return validated(ProfileSettings, values)
    except InvalidSettings as exc:
        raise UsageError(f"invalid profile settings: {exc.detail}") from None


def check_ontology(session: Session, fields: ProfileSettings, given: Mapping[str, Any]) -> None:
    """A profile may only name an ontology that exists (else ingest would fail much later)."""
    if "ontology" not in given:
        return
    known = session.scalar(select(Ontology.id).where(Ontology.name == fields.ontology))
    if known is None:
        raise UsageError(f"no ontology named {fields.ontology!r}; see `kg ontology list` or "
                         "import one with `kg ontology import FILE`")


def defaults_for(provider: str) -> dict[str, Any]:
    """What a new profile of this provider starts from: the model's defaults, then the spec's."""
    return {**defaults(), **registry.spec(provider).defaults}


def _users(name: str) -> str:
    users = [s.name for s in registry.specs() if name in s.settings]
    return ", ".join(users) if users else "no registered provider"


def check_for_provider(fields: ProfileSettings, given: Mapping[str, Any]) -> None:
    """Refuse what the profile's provider cannot do, and settings given that it ignores.

    Only settings given in this change are refused (a clearing '' is fine): values stored
    before, or left from another provider, are kept and at most warned about.
    """
    spec = registry.spec(fields.provider)
    if spec.thinking is registry.Thinking.NONE and fields.thinking_mode != ThinkingMode.OFF:
        raise UsageError(
            f"invalid profile settings: provider {spec.name} cannot think; set "
            "--thinking-mode off"
        )
    ignored = [n for n in PROVIDER_SPECIFIC_SETTINGS
               if given.get(n) is not None and n not in spec.settings]
    if ignored:
        detail = "; ".join(
            f"provider {spec.name} ignores {n} (used by {_users(n)}); leave out "
            f"{SETTINGS[n].flag} or choose one of those with --provider" for n in ignored)
        raise UsageError(f"invalid profile settings: {detail}")


def warnings_for(given: Mapping[str, Any], fields: ProfileSettings) -> list[str]:
    """What is worth a warning but not a refusal: a key variable unset here, settings the
    new provider ignores."""
    found = []
    env = fields.api_key_env
    if "api_key_env" in given and env and env not in os.environ:
        found.append(f"the environment variable {env} is not set here; runs and "
                     "`kg admin extraction test` will stop until it is")
    if "provider" in given:
        spec, model_defaults = registry.spec(fields.provider), defaults()
        for name in PROVIDER_SPECIFIC_SETTINGS:
            value = getattr(fields, name)
            if name not in spec.settings and value != model_defaults[name]:
                clear = f"; clear it with {SETTINGS[name].flag} ''" if SETTINGS[name].nullable \
                    else ""
                found.append(f"provider {spec.name} ignores {name} (kept: {value}){clear}")
    return found


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
