"""Read queries over the decisions the rest of the code needs: the operator views (control/) and the rollout gate.

They live here so that no module outside ``journal/`` writes SQL: a schema change touches this room and its
migrations only.  Every function takes the journal's :class:`~sqlalchemy.Engine` (``Journal.engine``), reads in
one short statement, and returns plain values.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, func, select

from ultra_signals.journal.schema import decisions


def recent_allowed(engine: Engine, namespace: str, n: int) -> list[dict[str, Any]]:
    """The last ``n`` allowed signals of a namespace, oldest first (Telegram's /signals)."""
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
            {"ts": int(ts), "symbol": sym, "side": side, "entry": entry, "stop": stop, "targets": json.loads(targets)}
            for ts, sym, side, entry, stop, targets in c.execute(q)
        ]
    return rows[::-1]


def allowed_times(engine: Engine, namespace: str) -> list[int]:
    """Event times of every allowed signal of a namespace, ascending (the caps' windows are checked over them)."""
    q = select(decisions.c.ts).where(decisions.c.namespace == namespace, decisions.c.allowed.is_(True))
    with engine.connect() as c:
        return sorted(int(t) for (t,) in c.execute(q))


def allowed_count(engine: Engine, namespace: str, after_ms: int, upto_ms: int) -> int:
    """Allowed signals of a namespace with ``after_ms < ts <= upto_ms`` (a sliding cap window ending at upto)."""
    q = (
        select(func.count())
        .select_from(decisions)
        .where(
            decisions.c.namespace == namespace,
            decisions.c.allowed.is_(True),
            decisions.c.ts > after_ms,
            decisions.c.ts <= upto_ms,
        )
    )
    with engine.connect() as c:
        return int(c.execute(q).scalar_one())


def last_decision_ms(engine: Engine, run_id: str) -> int | None:
    """Event time of a run's latest decision (its market clock), None before its first."""
    with engine.connect() as c:
        ts = c.execute(select(func.max(decisions.c.ts)).where(decisions.c.run_id == run_id)).scalar()
    return None if ts is None else int(ts)


def recent_decisions(engine: Engine, run_id: str, n: int) -> list[dict[str, Any]]:
    """The last ``n`` decisions of a run, allowed and blocked, with the reason, newest first (the web page)."""
    c_ = decisions.c
    q = (
        select(c_.ts, c_.symbol, c_.timeframe, c_.side, c_.allowed, c_.reason, c_.score, c_.entry, c_.stop)
        .where(c_.run_id == run_id)
        .order_by(c_.ts.desc(), c_.id.desc())
        .limit(n)
    )
    with engine.connect() as c:
        return [dict(r) for r in c.execute(q).mappings()]


def blocked_counts(engine: Engine, run_id: str) -> dict[str, int]:
    """Blocked candidates of a run by reason (what the journal holds: the runner flushes at least once a second)."""
    q = (
        select(decisions.c.reason, func.count())
        .where(decisions.c.run_id == run_id, decisions.c.allowed.is_(False))
        .group_by(decisions.c.reason)
    )
    with engine.connect() as c:
        return {str(reason or "unknown"): int(n) for reason, n in c.execute(q)}
