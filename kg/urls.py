"""Keeping secrets out of what kg shows: URL credentials and secret-named variables masked.

Shared by the providers (endpoint names in messages), the settings views, the call logs and
the logging filter, so every place masks the same way.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Names of environment variables whose values are secrets wherever they appear.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):(?P<pw>[^/\s@]+)@")
# A URL query (or fragment) parameter: `?name=value`, `&name=value`, `#name=value`.
_PARAM = re.compile(r"(?P<head>[?&;#](?P<name>[^=&;#?\s]{1,100})=)(?P<value>[^&;#\s'\"<>]*)")
# The last word of a parameter name that holds a secret (api_key, X-Amz-Signature, sig,
# accessToken, client_secret, ...), and whole names that are one (apikey).
_SECRET_WORDS = frozenset({"key", "token", "secret", "password", "passwd", "pwd", "pass", "sig",
                           "signature", "auth", "authorization", "credential", "credentials",
                           "jwt", "apikey", "sas"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def secret_param(name: str) -> bool:
    """Whether a URL parameter of this name carries a secret (case-insensitive)."""
    words = re.findall(r"[a-z0-9]+", _CAMEL.sub("_", name).lower())
    return bool(words) and (words[-1] in _SECRET_WORDS or "".join(words) in _SECRET_WORDS)


def mask_params(text: str) -> str:
    """`text` with the value of every secret-named URL query or fragment parameter masked."""
    return _PARAM.sub(lambda m: m["head"] + MASK if m["value"] and secret_param(m["name"])
                      else m[0], text)


def redact_url(url: str | None) -> str | None:
    """The URL with any user name and password replaced by ***, and the values of query (or
    fragment) parameters named like secrets (api_key, token, sig, ...), for messages and
    listings."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            # The host as written (an IPv6 address keeps its brackets).
            parts = parts._replace(netloc=f"{MASK}@{parts.netloc.rpartition('@')[2]}")
        return mask_params(urlunsplit(parts))
    except ValueError:
        return "<unparseable URL>"


def url_has_credentials(url: str) -> bool:
    """True when the URL carries a user name or password (user:pass@host)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return parts.username is not None or parts.password is not None


def redact(text: str) -> str:
    """`text` with URL passwords, secret-named URL parameters and the values of secret-named
    variables masked."""
    text = mask_params(_URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text))
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, MASK)
    return text
