"""The one JSON encoding of kg's values, shared by `kg ... --json` and the HTTP API, so both
write the same object the same way."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kg.errors import UsageError

M = TypeVar("M", bound=BaseModel)


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


def read_jsonl(path: Path, model: type[M], *, what: str, help: str) -> list[M]:
    """Every line of a JSON Lines file as `model` (blank lines skipped); a bad line is a
    UsageError naming file:line, the field and `help`; an empty file says it holds no `what`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(model.model_validate_json(line))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UsageError(f"{path}:{number}: {where + ': ' if where else ''}{err['msg']}; "
                             f"{help}") from None
    if not out:
        raise UsageError(f"{path} holds no {what}")
    return out
