"""Model prices as the dry-run estimate and analytics both read them, and exact cost arithmetic.

Money is computed with Decimal and rounded to the cent once, at the end (`money`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db.models import ModelPrice

log = logging.getLogger(__name__)
MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Price:
    prompt: Decimal
    completion: Decimal


def _usable(value: Decimal | None) -> bool:
    return value is not None and value.is_finite() and value >= 0


def prices_by_name(session: Session) -> dict[str, Price]:
    """Prices by name; a row no valid price could be (written by hand: NaN, Infinity) is ignored."""
    prices = {}
    for p in session.scalars(select(ModelPrice)):
        prompt, completion = as_decimal(p.prompt_per_million), as_decimal(p.completion_per_million)
        if prompt is None or completion is None or not (_usable(prompt) and _usable(completion)):
            log.warning("price of %s is not a usable number (%s, %s): treated as unpriced; fix "
                        "it with `kg admin prices set`", p.name, p.prompt_per_million,
                        p.completion_per_million)
            continue
        prices[p.name] = Price(prompt, completion)
    return prices


def as_decimal(value: object) -> Decimal | None:
    """The stored price as a Decimal, or None when it is not a number at all."""
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        return None


def cost(prompt_tokens: int, output_tokens: int, price: Price | None) -> Decimal:
    """Exact cost in currency units (not rounded)."""
    if price is None:
        return Decimal(0)
    return (Decimal(prompt_tokens) * price.prompt
            + Decimal(output_tokens) * price.completion) / MILLION


def money(value: Decimal) -> float:
    return float(value.quantize(CENT, rounding=ROUND_HALF_UP))
