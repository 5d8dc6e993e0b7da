"""The settings of an extraction profile, each declared once, with what it does.

Every setting is a field of `ProfileSettings`: type, default, bounds, description, and a
`Declared` marker saying whether it changes the model's output and whether only some providers
use it. Everything else is derived from that: the CLI flags (kg.profiles.fields), the call-cache
key, the evaluation snapshot, the database CHECK lists, the providers' own settings.

This module imports nothing from kg.providers or kg.db: both build on it (providers read the
settings, the database's choice lists are these enums).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo

from kg.urls import url_has_credentials

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Go duration ("10m", "1h30m", "-1s") or a plain number of seconds ("300", "-1", "0").
KEEP_ALIVE = re.compile(r"^-?(\d+(\.\d+)?)$|^-?((\d+(\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
SECRETISH_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASS)", re.IGNORECASE)
# A profile sends the value of its api_key_env to its base_url, and profiles can be changed over
# HTTP: so only variables declared to hold keys may be named, never one kg itself reads.
KEY_VARS_ENV = "KG_API_KEY_VARS"
DEFAULT_KEY_VARS = ("*_API_KEY", "*_TOKEN")
RESERVED_ENV = re.compile(r"^(KG_.*|DATABASE_URL|PG[A-Z_]*|PYTHON.*|HOME|PATH)$", re.IGNORECASE)


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


class OutputShape(StrEnum):
    GRAPH = "graph"  # concepts, then relationships between them
    TRIPLES = "triples"  # (subject, relation, object, quote) rows; concepts derived from them


class PageImages(StrEnum):
    OFF = "off"  # a PDF page with a text layer gives its text only
    READ = "read"  # ... and the text the image reader finds in its pictures, after it


class FallbackKind(StrEnum):
    """What sends a chunk to the fallback profile; stored as a comma-separated subset in this
    order."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    INVALID = "invalid"
    ERROR = "error"


FALLBACK_KINDS: tuple[str, ...] = tuple(k.value for k in FallbackKind)
# Extra output budget granted when a model thinks, so that the answer still fits after it.
THINKING_BUDGET: dict[str, int] = {ThinkingMode.OFF: 0, ThinkingMode.LOW: 1024,
                                   ThinkingMode.MEDIUM: 4096, ThinkingMode.HIGH: 8192}


@dataclass(frozen=True)
class Declared:
    """What a setting says about itself beyond its type and bounds (an Annotated marker)."""

    # True: another value can give another reply to the same request (cache key, evaluation).
    changes_output: bool
    # True: only the providers whose ProviderSpec.settings name it use it; `set` refuses it
    # for the others.
    provider_specific: bool = False
    flag: str | None = None  # the CLI flag, when it is not --<name-with-dashes>


OUTPUT = Declared(changes_output=True)
SERVING = Declared(changes_output=False)  # where, how fast, how often: not what comes back
PROVIDER_SPECIFIC = Declared(changes_output=False, provider_specific=True)


class ProfileSettings(BaseModel):
    """Every editable setting of an extraction profile: the one place each is declared.

    Rules that need the provider registry (a known provider, one that needs a base URL, what a
    provider uses) are checked by kg.profiles.validation, which sits above kg.providers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              use_enum_values=True)

    provider: Annotated[str, OUTPUT] = Field(
        max_length=16,
        description="Backend: a registered provider (ollama, vllm, openai, llamacpp, ...).")
    model: Annotated[str, OUTPUT] = Field(
        min_length=1, max_length=512,
        description="Model name on the server, or a GGUF path / 'smollm2' for llamacpp.")
    base_url: Annotated[str | None, SERVING] = Field(
        default=None, max_length=512,
        description="Server URL, e.g. http://gpu:8000/v1 (Ollama without one: $OLLAMA_HOST); "
                    "repeat the flag for several endpoints of the same model.")
    api_key_env: Annotated[str | None, SERVING] = Field(
        default=None, max_length=128,
        description="NAME of the environment variable holding the API key, never the key.")
    temperature: Annotated[float, OUTPUT] = Field(
        default=0.1, ge=0, le=2, description="Sampling temperature.")
    top_p: Annotated[float, OUTPUT] = Field(
        default=0.9, gt=0, le=1, description="Nucleus sampling.")
    thinking_mode: Annotated[ThinkingMode, OUTPUT] = Field(
        default=ThinkingMode.OFF, description="Whether and how hard the model thinks.")
    gpu_layers: Annotated[int, PROVIDER_SPECIFIC] = Field(
        default=-1, ge=-1, description="Layers on the GPU: -1 auto, 0 CPU only.")
    num_threads: Annotated[int | None, PROVIDER_SPECIFIC] = Field(
        default=None, ge=1, le=1024, description="CPU threads (none: as many as the machine has).")
    context_window: Annotated[int, OUTPUT] = Field(
        default=8192, ge=512, le=2_097_152,
        description="Context length in tokens (sent to Ollama as num_ctx).")
    max_output_tokens: Annotated[int, OUTPUT] = Field(
        default=2048, ge=64, description="Output budget per call, below context_window.")
    max_parallel: Annotated[int, SERVING] = Field(
        default=1, ge=1, le=64, description="Requests in flight at once.")
    max_retries: Annotated[int, SERVING] = Field(
        default=2, ge=0, le=10, description="Repair attempts per chunk after the first call.")
    timeout_s: Annotated[float, Declared(changes_output=False, flag="--timeout")] = Field(
        default=300.0, gt=0, le=86_400, description="Seconds per request.")
    keep_alive: Annotated[str | None, PROVIDER_SPECIFIC] = Field(
        default=None, max_length=32,
        description="Ollama keep_alive: 10m, 1h, -1 (forever), 0 (unload at once).")
    ontology: Annotated[str, OUTPUT] = Field(
        default="default", min_length=1, max_length=64,
        description="Ontology whose types extraction uses (see `kg ontology list`).")
    descriptions: Annotated[DescriptionMode, OUTPUT] = Field(
        default=DescriptionMode.GENERATE,
        description="Concept descriptions: generate, evidence (the quoted sentence) or off.")
    grounding: Annotated[GroundingMode, OUTPUT] = Field(
        default=GroundingMode.ON,
        description="Grounded decoding: labels, ends and quotes can only be text of the chunk.")
    shape: Annotated[OutputShape, OUTPUT] = Field(
        default=OutputShape.GRAPH,
        description="What the model writes: graph (concepts, then relationships) or triples "
                    "(subject, relation, object or value, quote; concepts derived from them).")
    fallback_profile: Annotated[str | None, SERVING] = Field(
        default=None, min_length=1, max_length=64,
        description="Profile that serves the chunks this one cannot (see --fallback-on).")
    fallback_on: Annotated[str, SERVING] = Field(
        default="unreachable,timeout,error", max_length=64,
        description="When a chunk goes to the fallback profile: any of unreachable, timeout, "
                    "invalid, error, joined by commas.")
    vision_profile: Annotated[str | None, SERVING] = Field(
        default=None, min_length=1, max_length=64,
        description="Profile whose model describes images and scanned pages (its provider "
                    "must take images); none: offline OCR (Tesseract).")
    page_images: Annotated[PageImages, SERVING] = Field(
        default=PageImages.OFF,
        description="PDF pages with a text layer: off (their text only) or read (their "
                    "pictures too, by the vision profile or OCR, appended to the page's text).")

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
        if not ENV_NAME.match(value) or looks_like_secret(value):
            # Never echo the value: it may be the key itself.
            raise ValueError(
                "must be the NAME of an environment variable that holds the key "
                "(letters, digits, underscore, e.g. VLLM_API_KEY), not the key itself; "
                "the value was not stored"
            )
        problem = key_var_problem(value)
        if problem:
            raise ValueError(problem)
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


def key_var_patterns() -> tuple[str, ...]:
    """Names a profile may read its key from: the defaults plus $KG_API_KEY_VARS (the operator's
    environment, which nothing over HTTP can change)."""
    extra = os.environ.get(KEY_VARS_ENV, "")
    return DEFAULT_KEY_VARS + tuple(p.strip() for p in extra.split(",") if p.strip())


def key_var_problem(name: str) -> str | None:
    """Why a profile may not read its API key from variable `name`, or None if it may."""
    if RESERVED_ENV.match(name):
        return (f"{name} is a variable kg or the system itself uses, never an API key; "
                "name a variable that holds only the key, e.g. VLLM_API_KEY")
    patterns = key_var_patterns()
    if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
        return (f"{name} is not an allowed key variable (allowed: {', '.join(patterns)}); "
                f"rename it, or let the operator allow it with {KEY_VARS_ENV}={name}")
    return None


def looks_like_secret(value: str) -> bool:
    """True for strings that are plausibly a key rather than a variable name."""
    if value.startswith(("sk-", "sk_", "hf_", "ghp_", "xox")):
        return True
    for name, env_value in os.environ.items():
        if env_value == value and len(value) >= 8 and SECRETISH_NAME.search(name):
            return True
    has_lower = any(c.islower() for c in value)
    has_digit = sum(c.isdigit() for c in value) >= 4
    return len(value) >= 24 and has_lower and has_digit and "_" not in value


# -- what the declaration says, derived once ---------------------------------------------------

def _declared(name: str, info: FieldInfo) -> Declared:
    found = [m for m in info.metadata if isinstance(m, Declared)]
    if len(found) != 1:
        # At import time, so a new setting cannot ship without saying what it does.
        raise TypeError(f"ProfileSettings.{name} must carry exactly one Declared marker "
                        "(OUTPUT, SERVING, PROVIDER_SPECIFIC or Declared(...))")
    return found[0]


FIELDS: tuple[str, ...] = tuple(ProfileSettings.model_fields)
DECLARED: dict[str, Declared] = {
    name: _declared(name, info) for name, info in ProfileSettings.model_fields.items()
}
# The settings that change what the model answers: the call-cache key and the evaluation record.
OUTPUT_SETTINGS: tuple[str, ...] = tuple(n for n, d in DECLARED.items() if d.changes_output)
# The settings a provider uses only if its ProviderSpec.settings names them.
PROVIDER_SPECIFIC_SETTINGS: tuple[str, ...] = tuple(
    n for n, d in DECLARED.items() if d.provider_specific)


def output_settings(settings: ProfileSettings) -> dict[str, Any]:
    """The settings that change the model's output, as JSON-ready values in declaration order."""
    return settings.model_dump(mode="json", include=set(OUTPUT_SETTINGS))


def defaults() -> dict[str, Any]:
    """The model's own default for every setting that has one."""
    return {name: info.default for name, info in ProfileSettings.model_fields.items()
            if not info.is_required()}
