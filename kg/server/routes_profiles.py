"""Extraction profiles over HTTP: the same functions, validation and audit as
`kg admin extraction ...`; changes name the API token that made them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db.models import ExtractionProfile
from kg.errors import UsageError
from kg.profiles import storage
from kg.profiles.fields import CLEARABLE, SETTINGS
from kg.profiles.settings import key_var_problem
from kg.profiles.views import view
from kg.server.auth import Admin, Reader
from kg.server.errors import ApiError
from kg.server.state import State, json_response
from kg.urls import redact_url

router = APIRouter(prefix="/profiles", tags=["profiles"])

SETTINGS_EXAMPLE = {"provider": "ollama", "model": "qwen3:8b",
                    "base_url": "http://gpu:11434", "temperature": 0.2, "activate": True}


@router.get("", summary="Every profile; the active one has active: true")
def list_profiles(state: State,
                  _who: Reader) -> Response:
    with state.db.session() as session:
        rows = [view(p).as_dict() for p in storage.list_profiles(session)]
    return json_response(rows)


@router.get("/{name}", summary="One profile's settings")
def show_profile(name: str, state: State,
                 _who: Reader) -> Response:
    with state.db.session() as session:
        data = view(storage.get_profile(session, name)).as_dict()
    return json_response(data)


@router.get("/{name}/history", summary="Who changed which setting of this profile, newest first")
def profile_history(name: str, state: State, _who: Reader,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> Response:
    with state.db.session() as session:
        storage.get_profile(session, name)
        rows = storage.history(session, limit=limit, name=name)
    return json_response(rows)


def _updates(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The settings to change and whether to activate; null clears an optional setting."""
    values = dict(body)
    activate = values.pop("activate", False)
    if not isinstance(activate, bool):
        raise UsageError(f"activate must be true or false (got {activate!r})")
    updates: dict[str, Any] = {}
    for field, value in values.items():
        if value is None and field in SETTINGS:
            if field not in CLEARABLE:
                raise UsageError(f"{field} cannot be cleared; give a value")
            value = ""
        updates[field] = value
    return updates, activate


KEY_ROUTE = ("base_url", "api_key_env")


def _refuse_key_redirect(session: Session, name: str, updates: dict[str, Any]) -> None:
    """A profile that sends an API key gets where it sends it only from the CLI: over HTTP, a
    stolen or forged admin token could otherwise send the operator's key to any host."""
    existing = session.scalar(select(ExtractionProfile).where(ExtractionProfile.name == name))
    stored = {f: getattr(existing, f) if existing else None for f in KEY_ROUTE}
    changed = [f for f in KEY_ROUTE if f in updates and (updates[f] or None) != stored[f]]
    key = updates["api_key_env"] if "api_key_env" in updates else stored["api_key_env"]
    if changed and key and key_var_problem(key) is None:  # a bad name: 400 from validation
        raise ApiError(403, f"{' and '.join(changed)} of a profile that sends an API key "
                            f"change only on the command line: `kg admin extraction set "
                            f"--profile {name} ...` on the server's machine")


def _shown(field: str, value: Any) -> Any:
    return redact_url(value) if field == "base_url" else value


@router.put("/{name}", summary="Create a profile or change some of its settings",
            description="Settings not given keep their value; null clears an optional one "
                        f"({', '.join(CLEARABLE)}). `activate: true` also makes it the active "
                        "profile. Nothing is written unless the whole resulting profile is "
                        "valid; a setting the profile's provider ignores is refused.")
def put_profile(name: str,
                body: Annotated[dict[str, Any], Body(examples=[SETTINGS_EXAMPLE])],
                state: State,
                who: Admin) -> Response:
    updates, activate = _updates(body)
    with state.db.session() as session:
        _refuse_key_redirect(session, name, updates)
        result = storage.set_profile(session, updates, name=name, activate=activate,
                                      by=who.actor)
    data = {"name": result.name, "created": result.created, "activated": result.activated,
            "revision": result.revision, "warnings": result.warnings,
            "changes": [{"field": c.field, "old": _shown(c.field, c.old),
                         "new": _shown(c.field, c.new)} for c in result.changes]}
    return json_response(data, 201 if result.created else 200)


@router.post("/{name}/activate", summary="Make this the active profile (running ingestions "
             "that follow the active profile switch on their next chunk)")
def activate_profile(name: str, state: State,
                     who: Admin) -> Response:
    with state.db.session() as session:
        previous, changed = storage.use_profile(session, name, by=who.actor)
    return json_response({"active": name, "previous": previous, "changed": changed})


@router.delete("/{name}", summary="Delete a profile (not the active one)")
def delete_profile(name: str, state: State,
                   who: Admin) -> Response:
    with state.db.session() as session:
        storage.delete_profile(session, name, by=who.actor)
    return json_response({"deleted": name})
