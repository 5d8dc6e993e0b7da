"""Analytics over `runs` and `calls` rows only: throughput, quality, latency, cost, savings.

Money is computed with Decimal and rounded to the cent once, at the end, per group.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db.models import Call, ModelPrice, utcnow
from kg.db.prices import as_decimal, cost, money, prices_by_name
from kg.errors import NotFoundError, UsageError

# kind: what the call was for (extract, describe, ocr, ...): `--by kind` shows which reader
# served the pages of images (describe: a vision model's tokens; ocr: Tesseract's seconds).
GROUPS = ("provider", "model", "profile", "day", "endpoint", "kind")
# The price columns are NUMERIC(14, 6): anything at or above 10^8 does not fit.
MAX_PRICE = 1_000_000.0


def parse_since(value: str | None, last_30_days: bool) -> datetime | None:
    """--since YYYY-MM-DD (UTC midnight) or --last-30-days; None means all time."""
    if value and last_30_days:
        raise UsageError("give either --since or --last-30-days, not both")
    if last_30_days:
        return utcnow() - timedelta(days=30)
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since must be a date like 2026-01-31 (got {value!r})") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def set_price(session: Session, name: str, prompt: float, completion: float,
              note: str = "") -> ModelPrice:
    """Create or change the price of a model (per million prompt / completion tokens)."""
    for flag, value in (("--prompt", prompt), ("--completion", completion)):
        if not math.isfinite(value) or not 0 <= value <= MAX_PRICE:
            raise UsageError(f"{flag} must be a price per million tokens between 0 and "
                             f"{MAX_PRICE:,.0f} (got {value!r})")
    if not name.strip() or not name.isprintable():
        raise UsageError("give the model name the price is for (one line of printable text)")
    row = session.scalar(select(ModelPrice).where(ModelPrice.name == name))
    if row is None:
        row = ModelPrice(name=name, currency="USD")
        session.add(row)
    row.prompt_per_million = Decimal(str(prompt))
    row.completion_per_million = Decimal(str(completion))
    row.note = note[:200]
    row.updated_at = utcnow()
    session.flush()
    return row


def list_prices(session: Session) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "prompt_per_million": _float(p.prompt_per_million),
         "completion_per_million": _float(p.completion_per_million), "currency": p.currency,
         "note": p.note, "updated_at": p.updated_at}
        for p in session.scalars(select(ModelPrice).order_by(ModelPrice.name))
    ]


def _float(value: object) -> float | None:
    """A price for listing; a value that is not a finite number shows as None."""
    number = as_decimal(value)
    return float(number) if number is not None and number.is_finite() else None


def delete_price(session: Session, name: str) -> None:
    row = session.scalar(select(ModelPrice).where(ModelPrice.name == name))
    if row is None:
        raise NotFoundError(f"no price for {name!r}; see `kg admin prices list`")
    session.delete(row)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 1)


def analytics(
    session: Session,
    *,
    since: datetime | None = None,
    by: str = "model",
    compare_to: str | None = None,
) -> list[dict[str, Any]]:
    """One row per group with volumes, quality, speed, latency, cost and savings."""
    if by not in GROUPS:
        raise UsageError(f"--by must be one of {', '.join(GROUPS)} (got {by!r})")
    prices = prices_by_name(session)
    reference = None
    if compare_to is not None:
        reference = prices.get(compare_to)
        if reference is None:
            known = ", ".join(sorted(prices)) or "none yet"
            raise NotFoundError(
                f"no price named {compare_to!r} to compare to (known: {known}); add one with "
                f"`kg admin prices set {compare_to} --prompt X --completion Y`")
    query = select(Call.run_id, Call.chunk_id, Call.attempt, Call.provider, Call.model,
                   Call.profile_name, Call.status, Call.error_kind, Call.prompt_tokens,
                   Call.completion_tokens, Call.thinking_tokens, Call.latency_ms, Call.eval_ms,
                   Call.started_at, Call.endpoint, Call.fallback, Call.cached, Call.kind)
    if since is not None:
        query = query.where(Call.started_at >= since)
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "chunks": set(), "ok_chunks": set(), "calls": 0, "first": 0, "first_ok": 0,
        "retries": 0, "failures": Counter(), "prompt": 0, "completion": 0, "thinking": 0,
        "latencies": [], "decode_tokens": 0, "decode_ms": 0.0, "cost": Decimal(0),
        "reference": Decimal(0), "fallback_chunks": set(), "fallback_calls": 0,
        "fallback_cost": Decimal(0), "cached": 0,
    })
    for call in session.execute(query):
        key = {"provider": call.provider, "model": call.model, "profile": call.profile_name,
               "day": _day(call.started_at), "endpoint": call.endpoint or "(unrecorded)",
               "kind": call.kind}[by]
        g = groups[key]
        # Calls made by `kg eval` belong to no run's chunk: they count as calls, not chunks.
        chunk = (call.run_id, call.chunk_id) if call.chunk_id is not None else None
        if chunk is not None:
            g["chunks"].add(chunk)
        g["calls"] += 1
        g["cached"] += bool(call.cached)
        if call.status == "ok":
            if chunk is not None:
                g["ok_chunks"].add(chunk)
        else:
            g["failures"][call.error_kind or call.status] += 1
        if call.attempt == 1:
            g["first"] += 1
            g["first_ok"] += call.status == "ok"
        else:
            g["retries"] += 1
        output = call.completion_tokens + call.thinking_tokens
        g["prompt"] += call.prompt_tokens
        g["completion"] += call.completion_tokens
        g["thinking"] += call.thinking_tokens
        if call.status != "error":
            g["latencies"].append(call.latency_ms)
            g["decode_tokens"] += output
            g["decode_ms"] += call.eval_ms if call.eval_ms else call.latency_ms
        call_cost = cost(call.prompt_tokens, output, prices.get(call.model))
        g["cost"] += call_cost
        if call.fallback:  # served by a profile's fallback: how often, and what it cost
            g["fallback_calls"] += 1
            g["fallback_cost"] += call_cost
            if chunk is not None:
                g["fallback_chunks"].add(chunk)
        if reference is not None:
            g["reference"] += cost(call.prompt_tokens, output, reference)
    rows = []
    for key in sorted(groups):
        g = groups[key]
        row: dict[str, Any] = {
            by: key, "chunks": len(g["chunks"]), "calls": g["calls"],
            "success_rate": round(len(g["ok_chunks"]) / len(g["chunks"]), 4)
            if g["chunks"] else None,
            "valid_first_try_rate": round(g["first_ok"] / g["first"], 4) if g["first"] else None,
            "retries": g["retries"],
            "failures": dict(sorted(g["failures"].items())),
            "prompt_tokens": g["prompt"], "completion_tokens": g["completion"],
            "thinking_tokens": g["thinking"],
            "tokens_per_s": round(g["decode_tokens"] / (g["decode_ms"] / 1000), 1)
            if g["decode_ms"] else None,
            # Time spent in all; for `ocr` calls (no tokens) the figure that matters.
            "seconds": round(sum(g["latencies"]) / 1000, 3),
            "latency_p50_ms": _percentile(g["latencies"], 50),
            "latency_p95_ms": _percentile(g["latencies"], 95),
            "cost": money(g["cost"]),
            "fallback_rate": round(len(g["fallback_chunks"]) / len(g["chunks"]), 4)
            if g["chunks"] else None,
            "fallback_calls": g["fallback_calls"],
            "fallback_cost": money(g["fallback_cost"]),
            "cache_hit_rate": round(g["cached"] / g["calls"], 4) if g["calls"] else None,
        }
        if reference is not None:
            row["cost_at_" + _slug(compare_to or "")] = money(g["reference"])
            row["savings"] = money(g["reference"] - g["cost"])
        rows.append(row)
    return rows


def _day(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).date().isoformat()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
