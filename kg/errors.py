"""Exceptions that carry the one-line message a user sees, and the exit code the CLI returns."""

from __future__ import annotations


class KgError(Exception):
    """Base of every expected failure: the message says what is wrong and what to do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(KgError):
    """A bad value, flag or name given by the user."""

    exit_code = 2


class NotFoundError(UsageError):
    """A named thing (profile, run, concept, file) does not exist."""


class ConflictError(UsageError):
    """The thing exists but its state forbids the request (e.g. resuming a completed run)."""


class DatabaseError(KgError):
    """The database cannot be reached or used."""

    exit_code = 3


class SchemaNotMigrated(DatabaseError):
    """The database schema is missing or older than this version of kg."""


class ProviderError(KgError):
    """A failure talking to the LLM backend.

    `fatal` errors cannot be fixed by retrying (unknown model, no server, bad key): they stop
    a run before or between chunks. `transient` errors (busy, timeout, 5xx) are retried with
    backoff. Others fail the chunk at hand only.
    """

    exit_code = 4
    fatal = False
    transient = False


class ProviderUnavailable(ProviderError):
    fatal = True


class ModelNotFound(ProviderError):
    fatal = True


class AuthenticationFailed(ProviderError):
    fatal = True


class ThinkingUnsupported(ProviderError):
    fatal = True


class ProviderNotInstalled(ProviderError):
    """The provider's package is not installed (e.g. `kg[local]`): fixed by installing, exit 2
    like any missing optional package, not a backend failure."""

    exit_code = 2
    fatal = True


class ServerBusy(ProviderError):
    transient = True


class ProviderTimeout(ProviderError):
    transient = True


class ServerFailure(ProviderError):
    transient = True


class ContextOverflow(ProviderError):
    """The prompt does not fit the model's context: the chunk fails, the run goes on."""


class SchemaRejected(ProviderError):
    """The backend cannot use this request's schema (e.g. no grammar can be built from it):
    neither fatal nor worth the same retry; extraction falls back to free text."""


class MalformedReply(ProviderError):
    """An HTTP 200 whose body is not the protocol's shape (not JSON, fields missing).

    Treated like a malformed extraction: retried, recorded as a call, counted in analytics.
    """

    transient = True


class MissingApiKey(AuthenticationFailed):
    """The profile names an API key variable (--api-key-env) that is not set."""
