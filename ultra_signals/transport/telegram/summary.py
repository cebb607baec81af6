"""The daily summary, read from the journal (the one record of every decision), as a Notice for any sink."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from ultra_signals.core.caps import DAY_MS
from ultra_signals.journal.models import decisions
from ultra_signals.transport.notifier import Notice
from ultra_signals.transport.telegram.format import DailyStats, daily_summary_text


def day_start_ms(ts_ms: int) -> int:
    """Start of the UTC day holding ``ts_ms`` (market time)."""
    return ts_ms - ts_ms % DAY_MS


def daily_stats(engine: Engine, namespace: str, start_ms: int) -> DailyStats:
    """Decisions of one namespace with event time in ``[start_ms, start_ms + 1 day)``."""
    q = select(decisions.c.symbol, decisions.c.allowed, decisions.c.reason).where(
        decisions.c.namespace == namespace,
        decisions.c.ts >= start_ms,
        decisions.c.ts < start_ms + DAY_MS,
    )
    allowed: Counter[str] = Counter()
    blocked: Counter[str] = Counter()
    n = 0
    with engine.connect() as c:
        for symbol, ok, reason in c.execute(q):
            n += 1
            if ok:
                allowed[str(symbol)] += 1
            else:
                blocked[str(reason or "unknown")] += 1
    day = datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return DailyStats(
        day=day,
        allowed=sum(allowed.values()),
        candidates=n,
        blocked_by_reason=dict(blocked),
        allowed_by_symbol=dict(allowed),
    )


def daily_summary_notice(engine: Engine, namespace: str, mode: str, start_ms: int) -> Notice:
    """Keyed by namespace and day, so a restart on the same day cannot send the summary twice."""
    stats = daily_stats(engine, namespace, start_ms)
    return Notice(
        kind="daily_summary",
        text=daily_summary_text(mode, stats),
        chat_key=f"daily:{namespace}:{mode}:{stats.day}",
    )
