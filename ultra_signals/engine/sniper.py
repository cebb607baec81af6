"""Sniper mode, the last gate: multi-timeframe confirmation, per-symbol cooldown, the budget, then the shared caps.

Order matters: MTF and cooldown are local, free checks; the cap check-and-reserve is the only step that spends
something (a slot shared with every runner), so it runs last and only for a candidate that passed everything.
Between them, with ``sniper.selection: ranked``, a candidate must clear the budget's quality threshold
(``below_budget_threshold``), and with ``sniper.max_same_direction`` the same-direction bound
(``same_direction_cap``); see :mod:`ultra_signals.engine.budget`.  Ranked candidates carry ``quality`` (and
``budget_threshold`` when there was one) in their features, which the journal keeps: a restarted runner rebuilds
the threshold's history from there (:meth:`Sniper.restore_budget`), as the counters are rebuilt from the
allowed signals.  When the counters live in Redis, the threshold's history does too (one per namespace and
timeframe, next to the caps' windows), so every runner of the namespace measures against the same history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from ultra_signals.core.caps import (
    BudgetRule,
    CapResult,
    QualityPoint,
    QualityThreshold,
    Reservation,
    SharedThresholdSource,
    SniperCounters,
    reservation_id,
)
from ultra_signals.core.config import SniperSettings
from ultra_signals.core.decision import Candidate, Side
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.engine.budget import OnlineThreshold, SameDirectionBound, feature_row, quality
from ultra_signals.engine.risk_filters import FilterContext
from ultra_signals.features.store import Features

#: Reason code of a bar another runner of the same namespace already won (exactly once across runners).
TAKEN = "taken"


_TF_LEN: dict[str, int] = {}


def _tf_len(tf: str) -> int:
    """``tf_ms`` remembered per name: the filters below ask on every candidate, and parsing the name each time
    showed in the profile (issue 13).  A name ``tf_ms`` refuses still raises (and is not remembered)."""
    n = _TF_LEN.get(tf)
    if n is None:
        n = _TF_LEN[tf] = tf_ms(tf)
    return n


def htf_trend(f: Features) -> int:
    """+1 up, -1 down, 0 flat, from the confirming timeframe's fast vs mid EMA."""
    return 1 if f.ema_fast > f.ema_mid else -1 if f.ema_fast < f.ema_mid else 0


@dataclass(slots=True)
class MtfConfirmFilter:
    """The higher timeframe's latest *closed* bar must agree with the side; missing, cold or stale blocks."""

    mtf_map: dict[str, str]
    name: str = "mtf_required"

    def check(self, ctx: FilterContext) -> str | None:
        c = ctx.candidate
        htf = self.mtf_map.get(c.timeframe)
        if htf is None:
            return "mtf_required"
        hf = ctx.store.latest(c.symbol, htf)
        if hf is None or not hf.warm:
            return "mtf_required"
        # Stale: the latest higher bar must have closed within one higher-timeframe period of the signal.
        if c.ts - (hf.close_time + 1) > _tf_len(htf):
            return "mtf_required"
        want = 1 if c.side is Side.LONG else -1
        return None if htf_trend(hf) == want else "mtf_required"


@dataclass(slots=True)
class CooldownFilter:
    """No new signal on a symbol within ``bars`` bars (of the signal's timeframe) of its last allowed one."""

    bars: int
    last_allowed: dict[str, int] = field(default_factory=dict)  # symbol -> bar open time of the last allowed
    name: str = "cooldown"

    def check(self, ctx: FilterContext) -> str | None:
        c = ctx.candidate
        last = self.last_allowed.get(c.symbol)
        if last is None or self.bars == 0:
            return None
        return "cooldown" if abs(c.bar_open_time - last) < self.bars * _tf_len(c.timeframe) else None

    def record(self, c: Candidate) -> None:
        self.record_key(c.symbol, c.bar_open_time)

    def record_key(self, symbol: str, bar_open_time: int) -> None:
        """Remember an allowed signal (also used to restore cooldowns from the journal after a restart)."""
        prev = self.last_allowed.get(symbol)
        if prev is None or bar_open_time > prev:
            self.last_allowed[symbol] = bar_open_time


class Sniper:
    def __init__(self, settings: SniperSettings, counters: SniperCounters, run_id: str) -> None:
        self.settings = settings
        self.counters = counters
        self.run_id = run_id
        self.mtf = MtfConfirmFilter(dict(settings.mtf_map))
        self.cooldown = CooldownFilter(settings.cooldown_bars)
        self.last_cap: CapResult | None = None
        self.taken_by: str | None = None  # with reason TAKEN: the run id that holds the bar
        self.ranked = settings.selection == "ranked"
        rule = BudgetRule(
            int(settings.budget_window_hours * 3_600_000),
            settings.daily_signal_cap * (1.0 - settings.budget_reserve),
            settings.budget_min_history,
        )
        # With Redis the counters hold the threshold's history too (shared by the namespace's runners); else
        # it lives here.  Only ranked selection asks for it, so first_come never touches those keys.
        shared = getattr(counters, "quality_threshold", None) if self.ranked else None
        self.budget: QualityThreshold = (
            cast(SharedThresholdSource, counters).quality_threshold(rule)
            if callable(shared)
            else OnlineThreshold(rule.window_ms, rule.target_per_day, rule.min_history)
        )
        self.same_direction = (
            SameDirectionBound(settings.max_same_direction, int(settings.same_direction_window_min * 60_000))
            if settings.max_same_direction is not None
            else None
        )

    def restore_budget(self, history: Iterable[tuple[int, str, bool, bool, float | None, str]]) -> None:
        """Rebuild the budget's state from journaled candidates ``(ts, timeframe, long, allowed, quality, key)``.

        Rows in decision order; ``quality`` is None for a candidate that never reached the budget step; ``key``
        is the run-independent decision key.  With Redis the points are written there too (idempotent by key,
        so runners restarting from the same journal, or a Redis that kept them, count each candidate once).
        """
        points = []
        for ts, tf, long, allowed, q, key in history:
            if self.ranked and q is not None:
                points.append(QualityPoint(key, tf, ts, q))
            if allowed and self.same_direction is not None:
                self.same_direction.record(long, ts)
        if points:
            self.budget.seed_points(points)

    def check(self, ctx: FilterContext) -> str | None:
        """The sniper's verdict; on a pass, the cap slot has been reserved."""
        if not self.settings.enabled:
            return None
        if self.settings.mtf_confirm:
            reason = self.mtf.check(ctx)
            if reason:
                return reason
        reason = self.cooldown.check(ctx)
        if reason:
            return reason
        c = ctx.candidate
        long = c.side is Side.LONG
        if self.ranked:
            q = quality(self.settings.quality, feature_row(long, c.score, c.confidence, c.components, c.features))
            key = reservation_id(c.symbol, c.timeframe, c.bar_open_time)
            threshold = self.budget.threshold_and_observe(QualityPoint(key, c.timeframe, c.ts, q))
            c.features["quality"] = q
            if threshold is not None:
                c.features["budget_threshold"] = threshold
                if q < threshold:
                    return "below_budget_threshold"
        if self.same_direction is not None and self.same_direction.full(long, c.ts):
            return "same_direction_cap"
        self.taken_by = None
        rid = reservation_id(c.symbol, c.timeframe, c.bar_open_time)
        res = self.counters.check_and_reserve(Reservation(rid, c.symbol, c.ts, owner=self.run_id))
        self.last_cap = res
        if not res.allowed:
            return res.reason or "daily_cap"
        if res.duplicate and res.owner != self.run_id:
            # Another runner of the namespace (or an earlier run) holds this bar: it announces, we do not.
            self.taken_by = res.owner or "unknown"
            self.cooldown.record(c)  # the deployment signalled this bar: same cooldown and direction count
            if self.same_direction is not None:
                self.same_direction.record(long, c.ts)
            return TAKEN
        self.cooldown.record(c)
        if self.same_direction is not None:
            self.same_direction.record(long, c.ts)
        return None
