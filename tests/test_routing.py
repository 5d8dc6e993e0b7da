"""Routing rules: a safe little expression language over chunk features, a table, the run."""

from __future__ import annotations

import json

import pytest

from kg.errors import UsageError
from kg.routing import rules as routing
from tests.fakes import FakeModel, FakeOllama, Reply, chunk_of, graph_reply
from tests.test_ingest import rows, use_server, write

CODE_DOC = """# Guide

Alice Smith wrote the service. Bob Jones reviewed it in London.

```python
def main():
    return 42
```

| Name | Role |
|------|------|
| Alice | author |
"""


def test_features_of_a_chunk() -> None:
    found = routing.features(CODE_DOC, "/data/guide.md", "md")
    assert found.code_blocks == 1 and found.tables == 1 and found.words > 10
    assert found.language == "en" and found.type == "md"
    assert routing.language("Der Hund und die Katze sind nicht mit einer Maus.") == "de"
    assert routing.language("Это простой текст на русском языке.") == "ru"


@pytest.mark.parametrize(("expr", "expected"), [
    ("words > 5", True),
    ("words > 5 and code_blocks >= 1", True),
    ("code_blocks == 0 or tables >= 1", True),
    ("not (language == de) and type == MD", True),
    ('path ~ "*.md"', True),
    ("path ~ 'guide.*' and words < 10", False),
    ("language != en", False),
])
def test_expressions(expr: str, expected: bool) -> None:
    chunk = routing.features(CODE_DOC, "/data/guide.md", "md")
    assert routing.parse(expr)(chunk) is expected


@pytest.mark.parametrize(("expr", "message"), [
    ("__import__('os').system('x')", "unknown feature"),
    ("words >", "ends too soon"),
    ("words > many", "is a number"),
    ("language > 3", "is text"),
    ("words ~ 3", "is a number"),
    ("(words > 3", "not closed"),
    ("words > 3 extra", "unexpected"),
    ("pages > 3", "unknown feature 'pages'"),
])
def test_bad_expressions_are_one_line(expr: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        routing.parse(expr)
    assert message in caught.value.message and "\n" not in caught.value.message


def test_rules_table_through_the_cli(kg, db, tmp_path) -> None:
    assert kg("admin", "extraction", "set", "--profile", "coder", "--provider", "ollama",
              "--model", "qwen3:8b").exit_code == 0
    missing = kg("admin", "routing", "add", "--when", "words > 1", "--profile", "nope")
    assert missing.exit_code == 2 and "nope" in missing.stderr
    bad = kg("admin", "routing", "add", "--when", "words >> 1", "--profile", "coder")
    assert bad.exit_code == 2
    first = kg("admin", "routing", "add", "--when", "code_blocks >= 1", "--profile", "coder",
               "--json")
    assert first.exit_code == 0, first.stderr
    rule = json.loads(first.stdout)["id"]
    assert kg("admin", "routing", "add", "--when", "words > 100000", "--profile", "coder",
              "--priority", "5").exit_code == 0
    listed = json.loads(kg("admin", "routing", "list", "--json").stdout)
    assert [r["priority"] for r in listed] == [5, 100]
    path = write(tmp_path, "guide.md", CODE_DOC + "\n\nPlain prose about London and Paris.\n")
    shown = json.loads(kg("admin", "routing", "test", str(path), "--json").stdout)
    assert shown and all(r["profile"] == ("coder" if r["code_blocks"] else "default")
                         for r in shown)
    assert any(r["rule"] == rule for r in shown)
    assert kg("admin", "routing", "delete", str(rule)).exit_code == 0
    assert kg("admin", "routing", "delete", str(rule)).exit_code == 2
    assert rows(db, "SELECT count(*) FROM routing_rules") == [(1,)]


def test_a_run_sends_matching_chunks_to_the_rule_s_profile(kg, db, tmp_path) -> None:
    model = [FakeModel("qwen3:8b", ["completion"])]
    answer = lambda b: Reply(graph_reply(chunk_of(b)))  # noqa: E731
    with FakeOllama(models=model, responder=answer) as main, FakeOllama(
            models=model, responder=answer) as coder:
        assert kg("admin", "extraction", "set", "--profile", "coder", "--provider", "ollama",
                  "--model", "qwen3:8b", "--base-url", coder.url).exit_code == 0
        use_server(kg, main.url)
        added = kg("admin", "routing", "add", "--when", "code_blocks >= 1", "--profile",
                   "coder", "--json")
        rule = json.loads(added.stdout)["id"]
        prose = "\n\n".join(f"Agent Number{i} met Director Alpha{i} in City Beta{i}. " * 8
                            for i in range(3))
        path = write(tmp_path, "mixed.md", prose + "\n\n" + CODE_DOC)
        result = kg("ingest", str(path), "--chunk-tokens", "60", "--chunk-min", "20",
                    "--chunk-max", "200", "--chunk-overlap", "0", "--json")
        assert result.exit_code == 0, result.stderr
        to_coder, to_main = len(coder.chat_bodies()), len(main.chat_bodies())
    assert to_coder >= 1 and to_main >= 1
    served = dict(rows(db, "SELECT profile_name, count(*) FROM calls GROUP BY profile_name"))
    assert served == {"coder": to_coder, "test": to_main}
    assert rows(db, "SELECT DISTINCT rule_id FROM calls WHERE profile_name = 'coder'") == [
        (rule,)]
    assert rows(db, "SELECT count(*) FROM calls WHERE profile_name = 'test' AND rule_id "
                    "IS NOT NULL") == [(0,)]
