"""The learnt structured-output styles (kg.providers.styles) kept in `endpoint_styles`.

Loaded before a run so that a server already probed is sent the right style from its first
request; what a run learnt is stored when it ends. Providers never touch the database.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kg.db import Database
from kg.db.models import EndpointStyle, utcnow
from kg.providers.styles import MEMO, Style


def load(db: Database) -> None:
    """Put every stored style into this process's memory."""
    with db.session() as session:
        rows = session.execute(select(EndpointStyle.base_url, EndpointStyle.model,
                                      EndpointStyle.style)).all()
    MEMO.preload({(url, model): Style(style) for url, model, style in rows})


def save(db: Database) -> int:
    """Store the styles learnt since the last save; returns how many."""
    learned = MEMO.learned()
    if not learned:
        return 0
    try:
        with db.session() as session:
            for (url, model), (style, detail) in learned.items():
                row = session.get(EndpointStyle, (url, model))
                if row is None:
                    session.add(EndpointStyle(base_url=url, model=model, style=style.value,
                                              detail=detail, probed_at=utcnow()))
                else:
                    row.style, row.detail, row.probed_at = style.value, detail, utcnow()
    except IntegrityError:
        return 0  # another process stored the same endpoint meanwhile: it learnt the same
    return len(learned)
