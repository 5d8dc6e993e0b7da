"""The settings declaration read back field by field: flag, kind, bounds and choices of each.

`kg admin extraction set` builds its flags and help from `SETTINGS`, the one-line messages say
what a valid value is from it, and a test compares its bounds with the database's CHECKs.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Union, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo

from kg.profiles.settings import DECLARED, ProfileSettings


@dataclass(frozen=True)
class SettingBounds:
    """Numeric bounds of a setting (or length bounds of a text setting)."""

    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True

    def phrase(self, unit: str = "") -> str | None:
        """'between 0 and 2', 'above 0 and at most 1', '-1 or more'... (None: unbounded)."""
        low, high = _num(self.low), _num(self.high)
        unit = f" {unit}" if unit else ""
        if low is not None and high is not None:
            if self.low_inclusive and self.high_inclusive:
                return f"between {low} and {high}{unit}"
            first = f"{low} or more" if self.low_inclusive else f"above {low}"
            second = f"at most {high}" if self.high_inclusive else f"below {high}"
            return f"{first} and {second}{unit}"
        if low is not None:
            return f"{low} or more{unit}" if self.low_inclusive else f"above {low}{unit}"
        if high is not None:
            return f"at most {high}{unit}" if self.high_inclusive else f"below {high}{unit}"
        return None


def _num(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One profile setting as the CLI and the messages see it, read from ProfileSettings."""

    name: str
    flag: str
    kind: type  # int, float or str
    nullable: bool  # '' on the CLI, null over HTTP clears it
    description: str
    bounds: SettingBounds
    choices: tuple[str, ...] = field(default=())

    @property
    def is_text(self) -> bool:
        return self.kind is str

    def rule(self) -> str | None:
        """What a valid value is, as the end of 'X must be ...'."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        low, high = self.bounds.low, self.bounds.high
        if self.is_text and low is not None and high is not None:
            return f"{_num(low)} to {_num(high)} characters"
        return self.bounds.phrase("characters" if self.is_text else "")

    def help(self) -> str:
        parts = [self.description.rstrip(".") + "."]
        rule = self.rule()
        if rule and (self.choices or not self.is_text):
            parts.append(f"Must be {rule}.")
        if self.nullable:
            parts.append("'' clears it.")
        return " ".join(parts)


def _bounds(info: FieldInfo) -> SettingBounds:
    values: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            values.update(low=float(item.ge), low_inclusive=True)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Gt):
            values.update(low=float(item.gt), low_inclusive=False)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le):
            values.update(high=float(item.le), high_inclusive=True)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Lt):
            values.update(high=float(item.lt), high_inclusive=False)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.MinLen):
            values.update(low=float(item.min_length), low_inclusive=True)
        elif isinstance(item, annotated_types.MaxLen):
            values.update(high=float(item.max_length), high_inclusive=True)
    return SettingBounds(**values)


def _kind(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def _setting(name: str, info: FieldInfo) -> Setting:
    kind, nullable = _kind(info.annotation)
    choices: tuple[str, ...] = ()
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        choices = tuple(m.value for m in kind)
        kind = str
    flag = DECLARED[name].flag or "--" + name.replace("_", "-")
    return Setting(name=name, flag=flag, kind=kind, nullable=nullable,
                   description=info.description or name, bounds=_bounds(info), choices=choices)


SETTINGS: dict[str, Setting] = {
    name: _setting(name, info) for name, info in ProfileSettings.model_fields.items()
}
# Optional settings: '' on the CLI or null over HTTP clears them.
CLEARABLE: tuple[str, ...] = tuple(name for name, s in SETTINGS.items() if s.nullable)
