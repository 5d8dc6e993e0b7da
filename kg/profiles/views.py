"""A stored profile as plain data: for listings, for a provider, for a run's record.

Credentials in a URL are masked in everything shown or recorded; the API key is only ever
the NAME of an environment variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kg.db.models import ExtractionProfile, utcnow
from kg.errors import UsageError
from kg.profiles.settings import FIELDS, ProviderSettings
from kg.profiles.validation import InvalidSettings, validated
from kg.urls import redact_url


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


def row_fields(profile: ExtractionProfile) -> dict[str, Any]:
    """Every setting of a profile row, as stored."""
    return {f: getattr(profile, f) for f in FIELDS}


def view(profile: ExtractionProfile) -> ProfileView:
    """Plain-data view of a profile row."""
    fields = row_fields(profile)
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
        return validated(
            ProviderSettings,
            {"profile_name": profile.name, "revision": profile.revision, **row_fields(profile)},
            stored=True)
    except InvalidSettings as exc:
        raise UsageError(f"profile {profile.name} cannot be used: {exc.detail}; fix it with "
                         f"`kg admin extraction set --profile {profile.name}`") from None


def snapshot(settings: ProviderSettings) -> dict[str, Any]:
    """What a run records about each profile revision it used (no secrets: only the env name)."""
    data = settings.model_dump(mode="json", exclude={"profile_name", "revision"})
    data["base_url"] = redact_url(data["base_url"])
    return {"profile": settings.profile_name, "revision": settings.revision, **data,
            "at": utcnow().isoformat(timespec="seconds")}
