"""API tokens: `kg admin tokens create|list|revoke`, stored hashed, the secret shown once."""

from __future__ import annotations

import hashlib
import json

import pytest

from kg import tokens
from kg.errors import NotFoundError, UsageError
from kg.tokens import TokenScope
from tests.graph_seed import rows


def test_create_shows_the_secret_once_and_stores_only_its_hash(kg, db) -> None:
    created = kg("admin", "tokens", "create", "ci", "--scope", "admin", "--by", "alice")
    assert created.exit_code == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("kgt_") and len(secret) > 40
    assert "only time it is shown" in created.stderr
    ((name, scope, stored, hint, by),) = rows(
        db, "SELECT name, scope, token_hash, hint, created_by FROM api_tokens")
    assert (name, scope, by) == ("ci", "admin", "alice")
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps(rows(db, "SELECT * FROM api_tokens"), default=str)
    assert secret.startswith(hint)

    listed = kg("admin", "tokens", "list", "--json")
    assert listed.exit_code == 0
    (entry,) = json.loads(listed.stdout)
    assert entry["name"] == "ci" and entry["scope"] == "admin" and entry["hint"].endswith("…")
    assert secret not in listed.stdout and stored not in listed.stdout
    table = kg("admin", "tokens", "list")
    assert "ci" in table.stdout and secret not in table.stdout


def test_scopes_names_and_revocation(kg, db) -> None:
    assert kg("admin", "tokens", "create", "viewer").exit_code == 0  # read by default
    duplicate = kg("admin", "tokens", "create", "viewer", "--scope", "admin")
    assert duplicate.exit_code == 2 and "revoke it first" in duplicate.stderr
    bad_scope = kg("admin", "tokens", "create", "x", "--scope", "root")
    assert bad_scope.exit_code == 2 and "read" in bad_scope.stderr
    bad_name = kg("admin", "tokens", "create", "two words")
    assert bad_name.exit_code == 2 and bad_name.stderr.startswith("error: token name")
    missing = kg("admin", "tokens", "revoke", "nobody")
    assert missing.exit_code == 2 and "live tokens: viewer" in missing.stderr

    revoked = kg("admin", "tokens", "revoke", "viewer", "--by", "bob")
    assert revoked.exit_code == 0 and revoked.stdout.strip() == "token viewer revoked"
    assert json.loads(kg("admin", "tokens", "list", "--json").stdout) == []
    (old,) = json.loads(kg("admin", "tokens", "list", "--all", "--json").stdout)
    assert old["revoked_by"] == "bob" and old["revoked_at"]
    # A revoked token's name can be given to a new one; the old row stays for the record.
    assert kg("admin", "tokens", "create", "viewer").exit_code == 0
    assert rows(db, "SELECT count(*) FROM api_tokens WHERE name = 'viewer'") == [(2,)]


def test_authenticate_by_secret_only_while_live(db) -> None:
    with db.session() as session:
        assert not tokens.any_live(session)
        row, secret = tokens.create(session, "svc", "read", by="tester")
        principal = tokens.authenticate(session, secret)
        assert principal is not None and principal.name == "svc"
        assert principal.scope is TokenScope.READ and principal.actor == "token:svc"
        assert not principal.scope.allows(TokenScope.ADMIN)
        assert TokenScope.ADMIN.allows(TokenScope.READ)
        assert tokens.authenticate(session, secret + "x") is None
        assert tokens.authenticate(session, "not-even-a-token") is None
        assert tokens.any_live(session)
        tokens.revoke(session, "svc", by="tester")
        assert tokens.authenticate(session, secret) is None
        assert not tokens.any_live(session)
        with pytest.raises(NotFoundError):
            tokens.revoke(session, "svc", by="tester")
        with pytest.raises(UsageError, match="--scope must be read or admin"):
            tokens.create(session, "other", "write", by="tester")
        assert row["scope"] == "read"
