"""The :class:`~ultra_signals.transport.telegram.commands.OperatorView` of a running :class:`Runner`.

Reads only what the runner already keeps (its stats, counters, market clock, metrics registry and journal), so
answering /status or /caps costs the decision loop nothing but a few dictionary reads between events.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ultra_signals.journal.models import decisions

if TYPE_CHECKING:
    from ultra_signals.live.runner import Runner


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class RunnerView:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def status(self) -> dict[str, Any]:
        r = self.runner
        st = r.stats
        fresh: dict[str, Any] = {}
        for sym in st.symbols:
            age = r.metrics.registry.get_sample_value("feed_last_event_age_seconds", {"symbol": sym})
            fresh[sym] = "no data yet" if age is None else f"{age:.1f}s"
        now_ms = r.clock.now_ms()
        return {
            "mode": st.mode,
            "run_id": st.run_id,
            "profile": st.profile,
            "source": st.source + (" (SIMULATED)" if st.simulated else ""),
            "uptime": f"{time.time() - st.wall_start:.0f}s" if st.wall_start else "not started",
            "market_time": _iso_ms(now_ms) if now_ms else "-",
            "counter_backend": r.counters.backend,
            "data_age": fresh,
        }

    def caps(self) -> dict[str, Any]:
        r = self.runner
        counts = r.counters.window_counts(r.clock.now_ms())
        s = r.settings.sniper
        caps = {"hour": s.max_signals_per_hour, "day": s.daily_signal_cap}
        return {w: {"count": counts.get(w, 0), "cap": caps.get(w, "?")} for w in ("hour", "day")}

    def recent_signals(self, n: int) -> list[dict[str, Any]]:
        r = self.runner
        q = (
            select(
                decisions.c.ts,
                decisions.c.symbol,
                decisions.c.side,
                decisions.c.entry,
                decisions.c.stop,
                decisions.c.targets_json,
            )
            .where(decisions.c.namespace == r.journal_ns, decisions.c.allowed.is_(True))
            .order_by(decisions.c.ts.desc(), decisions.c.id.desc())
            .limit(n)
        )
        with r.journal.engine.connect() as c:
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
