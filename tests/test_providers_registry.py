"""A provider registered from the tests alone is stored, preflighted and used by `kg ingest`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kg.db import Database
from kg.profiles.settings import ProviderSettings
from kg.providers import ProviderSpec, Reload, Thinking, register, registry
from kg.providers.base import CheckResult, CheckStatus, Completion, Message, ProviderBase
from tests.fakes import chunk_of, graph_reply
from tests.test_ingest import rows


class CannedProvider(ProviderBase):
    """Answers every request with a valid extraction of the chunk, without any server."""

    served: ClassVar[list[str]] = []  # chunks seen, across instances (the engine builds its own)

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        chunk = chunk_of({"messages": messages})
        CannedProvider.served.append(chunk)
        content = graph_reply(chunk)
        return Completion(content=content, prompt_tokens=len(chunk) // 4,
                          completion_tokens=len(content) // 4, latency_s=0.001,
                          finish_reason="stop", model=self.settings.model)

    def check(self) -> list[CheckResult]:
        return [CheckResult("server", CheckStatus.OK, "canned replies, no server")]


@pytest.fixture
def canned() -> Iterator[ProviderSpec]:
    spec = register(ProviderSpec(
        name="canned", factory=lambda settings, _models_dir: CannedProvider(settings),
        summary="test double answering from the chunk text", needs_base_url=False,
        defaults={"max_parallel": 2, "context_window": 4096, "max_output_tokens": 1024},
        thinking=Thinking.NONE, reload=Reload.IN_PROCESS, reload_note="nothing to load"))
    CannedProvider.served = []
    yield spec
    registry.unregister("canned")


TEXT = ("Sherlock Holmes met Doctor Watson in London. Mycroft Holmes worked for the "
        "British Government. Irene Adler lived in Montenegro before she came to Baker Street.")


def test_registered_provider_is_stored_and_used_end_to_end(
    kg, db: Database, canned: ProviderSpec, tmp_path: Path
) -> None:
    listed = json.loads(kg("admin", "extraction", "providers", "--json").stdout)
    assert "canned" in [p["name"] for p in listed]
    created = kg("admin", "extraction", "set", "--profile", "plug", "--provider", "canned",
                 "--model", "canned-1", "--activate")
    assert created.exit_code == 0, created.stderr
    shown = json.loads(kg("admin", "extraction", "show", "--json").stdout)
    # The spec's defaults applied; the rest came from the profile model's defaults.
    assert (shown["provider"], shown["max_parallel"], shown["context_window"]) == (
        "canned", 2, 4096)
    assert rows(db, "SELECT provider FROM extraction_profiles WHERE name = 'plug'") == [
        ("canned",)]

    checks = json.loads(kg("admin", "extraction", "test", "--json").stdout)
    assert [c["status"] for c in checks if c["check"] in ("server", "context")] == ["ok", "ok"]

    document = tmp_path / "holmes.txt"
    document.write_text(TEXT, encoding="utf-8")
    result = kg("ingest", str(document))
    assert result.exit_code == 0, result.stderr
    assert any("Sherlock Holmes" in chunk for chunk in CannedProvider.served)
    labels = {r[0] for r in rows(db, "SELECT label FROM concepts")}
    assert {"Sherlock Holmes", "Doctor Watson", "London"} <= labels
    calls = rows(db, "SELECT DISTINCT provider, model, status FROM calls")
    assert calls == [("canned", "canned-1", "ok")]
    [(used,)] = rows(db, "SELECT profiles_used FROM runs")
    used = json.loads(used) if isinstance(used, str) else used
    assert (used[0]["provider"], used[0]["profile"]) == ("canned", "plug")


def test_unregistered_provider_is_refused_and_a_stored_one_reports_one_line(
    kg, db: Database, canned: ProviderSpec
) -> None:
    refused = kg("admin", "extraction", "set", "--profile", "x", "--provider", "nope",
                 "--model", "m")
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "provider must be one of" in refused.stderr and "canned" in refused.stderr
    assert kg("admin", "extraction", "set", "--profile", "plug", "--provider", "canned",
              "--model", "m").exit_code == 0
    registry.unregister("canned")  # the plug-in is gone, its profile stays in the database
    result = kg("admin", "extraction", "test", "--profile", "plug")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "profile plug cannot be used" in result.stderr and "Traceback" not in result.stderr


def test_register_refuses_bad_or_taken_names(canned: ProviderSpec) -> None:
    with pytest.raises(Exception, match="already registered"):
        register(ProviderSpec(name="canned", factory=canned.factory, summary="again"))
    with pytest.raises(Exception, match="not allowed"):
        register(ProviderSpec(name="Way-Too-Long-Provider-Name", factory=canned.factory,
                              summary="x"))
    assert registry.spec("ollama").reload is Reload.SERVER
    assert registry.spec("vllm").reload is Reload.SERVES_ONE_MODEL
    assert registry.spec("llamacpp").thinking is Thinking.NONE
