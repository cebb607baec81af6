"""Selection policies replayed offline over a run's candidates: first-come (today's sniper) and ranked.

The engine decides each candidate once; to compare *how the cap budget is spent* without re-running the whole
pipeline, this module replays the sniper's last steps — cooldown, then (ranked only) a quality threshold and a
same-direction bound, then the cap windows — over the candidates in decision order, keeping every earlier
verdict (risk filters, MTF) the engine gave.  Replaying ``first_come`` must give back the engine's own verdicts
exactly; the evaluation checks that before it trusts any comparison.

Ranked selection: :class:`OnlineThreshold` keeps, per timeframe and in event time, the qualities of the recent
candidates that reached the budget step, and sets the threshold at the quantile above which the expected count
per day equals ``daily cap × (1 − reserve)``.  The reserve keeps slots free for a strong late candidate.
A candidate below it is refused ``below_budget_threshold``, with the threshold it was measured against.  The
caps are still checked afterwards by the same window rules as live, so whatever the threshold does, no window
ever holds more than the caps.  Deterministic: the state is a function of the candidates seen so far, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ultra_signals.core.caps import CapPolicy, Reservation
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.engine.budget import DAY_MS, HOUR_MS, OnlineThreshold, SameDirectionBound

__all__ = ["DAY_MS", "HOUR_MS", "RECOMPUTED", "Policy", "Row", "Verdict", "select"]

#: Verdicts the replay recomputes; every other reason (risk filters, MTF) is the engine's and kept.
RECOMPUTED = frozenset({None, "cooldown", "hourly_cap", "daily_cap"})


@dataclass(frozen=True, slots=True)
class Row:
    """What selection needs of one candidate, in decision order."""

    key: str
    ts: int
    symbol: str
    timeframe: str
    bar_open_time: int
    long: bool
    engine_reason: str | None
    quality: float  # nan: no model yet (ranked then behaves first-come for it)


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str | None
    threshold: float | None  # the budget threshold the candidate was measured against (ranked only)


@dataclass(frozen=True, slots=True)
class Policy:
    caps: CapPolicy
    cooldown_bars: int
    mode: str = "first_come"  # first_come | ranked
    reserve: float = 0.25
    window_ms: int = 3 * DAY_MS
    min_history: int = 20
    #: At most ``n`` allowed signals of one direction within ``ms`` (None: no bound).
    same_direction: tuple[int, int] | None = None


def select(rows: Sequence[Row], policy: Policy, daily_cap: int) -> list[Verdict]:
    """Replay the sniper's budget steps over ``rows`` (see the module doc)."""
    counters = MemoryCounters(policy.caps)
    last_allowed: dict[str, int] = {}
    thr = OnlineThreshold(policy.window_ms, daily_cap * (1.0 - policy.reserve), policy.min_history)
    same = SameDirectionBound(*policy.same_direction) if policy.same_direction is not None else None
    out: list[Verdict] = []
    for r in rows:
        if r.engine_reason not in RECOMPUTED:
            out.append(Verdict(r.engine_reason, None))
            continue
        last = last_allowed.get(r.symbol)
        if (
            policy.cooldown_bars
            and last is not None
            and abs(r.bar_open_time - last) < policy.cooldown_bars * tf_ms(r.timeframe)
        ):
            out.append(Verdict("cooldown", None))
            continue
        used: float | None = None
        if policy.mode == "ranked":
            used = thr.threshold(r.timeframe, r.ts)
            thr.observe(r.timeframe, r.ts, r.quality)
            if used is not None and r.quality == r.quality and r.quality < used:
                out.append(Verdict("below_budget_threshold", used))
                continue
        if same is not None and same.full(r.long, r.ts):
            out.append(Verdict("same_direction_cap", used))
            continue
        res = counters.check_and_reserve(Reservation(r.key, r.symbol, r.ts))
        if not res.allowed:
            out.append(Verdict(res.reason or "daily_cap", used))
            continue
        prev = last_allowed.get(r.symbol)
        if prev is None or r.bar_open_time > prev:
            last_allowed[r.symbol] = r.bar_open_time
        if same is not None:
            same.record(r.long, r.ts)
        out.append(Verdict(None, used))
    return out
