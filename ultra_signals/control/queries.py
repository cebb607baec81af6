"""The journal reads the operator actions need that the journal does not offer yet.

Moved unchanged from ``apps/cli_operator.py`` (cap windows at the run's latest decision) and
``transport/telegram/view.py`` (recent allowed signals), so both adapters share one copy; they belong in
``ultra_signals.journal`` with the rest of the queries once it owns them all.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, func, select

from ultra_signals.journal.models import decisions


def latest_decision_ts(engine: Engine, run_id: str) -> int | None:
    """Event time of the run's latest decision (the market time the run's caps were last counted at)."""
    with engine.connect() as c:
        v = c.execute(select(func.max(decisions.c.ts)).where(decisions.c.run_id == run_id)).scalar()
    return None if v is None else int(v)


def allowed_between(engine: Engine, namespace: str, after_ms: int, until_ms: int) -> int:
    """Allowed decisions of ``namespace`` with event time in ``(after_ms, until_ms]``: what the sniper counted."""
    with engine.connect() as c:
        n = c.execute(
            select(func.count())
            .select_from(decisions)
            .where(
                decisions.c.namespace == namespace,
                decisions.c.allowed.is_(True),
                decisions.c.ts > after_ms,
                decisions.c.ts <= until_ms,
            )
        ).scalar_one()
    return int(n)


def recent_allowed(engine: Engine, namespace: str, n: int) -> list[dict[str, Any]]:
    """The last ``n`` allowed decisions of ``namespace``, oldest first."""
    q = (
        select(
            decisions.c.ts,
            decisions.c.symbol,
            decisions.c.side,
            decisions.c.entry,
            decisions.c.stop,
            decisions.c.targets_json,
        )
        .where(decisions.c.namespace == namespace, decisions.c.allowed.is_(True))
        .order_by(decisions.c.ts.desc(), decisions.c.id.desc())
        .limit(n)
    )
    with engine.connect() as c:
        rows = [
            {
                "ts": int(ts),
                "symbol": sym,
                "side": side,
                "entry": entry,
                "stop": stop,
                "targets": json.loads(targets),
            }
            for ts, sym, side, entry, stop, targets in c.execute(q)
        ]
    return rows[::-1]
