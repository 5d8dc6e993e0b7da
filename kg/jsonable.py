"""The one JSON encoding of kg's values, shared by `kg ... --json` and the HTTP API, so both
write the same object the same way."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any


def json_default(value: Any) -> Any:
    """`json.dumps(default=...)` for what kg returns: datetimes as ISO 8601, Decimal as a
    number, enums as their value, sets as sorted lists, paths as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        # Sorted: the same set always encodes the same way.
        return sorted(value)
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
