"""The ranked budget's threshold rule and its in-process history (the memory backend).

Lives in ``core`` because two rooms need the same rule: the engine's sniper (one runner, memory) and the
counters' Redis failover (the local mirror it falls back on); the Redis script ``counters/budget.lua`` is the
same rule again, checked equal by a property test.  Pure: no I/O, no clock; every window is in event time.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ultra_signals.core.caps import DAY_MS, HOUR_MS, BudgetRule, QualityPoint

__all__ = ["OnlineThreshold", "budget_rank", "quantile_rank"]


def budget_rank(n: int, since_first_ms: int, rule: BudgetRule) -> int | None:
    """Which of the ``n`` window qualities (0-based, ascending) is the threshold, or None for no threshold.

    The rate is measured over the span actually seen (``since_first_ms``, at least an hour), capped at the
    window; the rank is the ``1 − target/rate`` quantile by numpy's ``inverted_cdf`` rule (the smallest value
    whose empirical CDF reaches it).  The Redis script (``counters/budget.lua``) does the same arithmetic in
    IEEE doubles, so both backends pick the same element.
    """
    if n < rule.min_history:
        return None
    span = max(min(rule.window_ms, since_first_ms), HOUR_MS)
    rate = n / (span / DAY_MS)
    if rate <= rule.target_per_day:
        return None
    return quantile_rank(n, 1.0 - rule.target_per_day / rate)


def quantile_rank(n: int, q: float) -> int:
    """numpy's ``inverted_cdf`` index: ``ceil(n·q) − 1`` computed as numpy does (floor, then +1 unless exact)."""
    index = n * q - 1
    prev = math.floor(index)
    k = prev if index - prev == 0 else prev + 1
    return max(0, min(k, n - 1))


@dataclass(slots=True)
class _Series:
    ts: list[int] = field(default_factory=list)  # ascending event times
    values: list[float] = field(default_factory=list)  # quality of each point, same order
    keys: list[str | None] = field(default_factory=list)
    first: int | None = None  # earliest event time ever added (trimming does not move it)
    latest: int | None = None


class OnlineThreshold:
    """Per-timeframe quality threshold from the trailing ``window_ms`` of candidates (event time).

    The threshold is the quantile of recent qualities above which the expected count per day equals
    ``target_per_day``; with fewer than ``min_history`` candidates in the window, or a demand already within the
    budget, there is none (``None``).  The window at ``ts`` is every point with event time in
    ``(ts − window, ts]`` (see :func:`budget_rank`).

    This is the memory backend of :class:`~ultra_signals.core.caps.QualityThreshold` (one runner); the Redis one
    (:mod:`ultra_signals.counters.threshold_redis`) holds the same points and answers the same numbers.  Points
    may arrive out of event-time order (kept sorted); points more than two windows behind the latest are
    dropped.  A keyed point is held once: adding its key again is a no-op, and :meth:`threshold_and_observe`
    answers the threshold it answered the first time.
    """

    backend = "memory"

    def __init__(self, window_ms: int, target_per_day: float, min_history: int) -> None:
        self.rule = BudgetRule(window_ms, target_per_day, min_history)
        self.window_ms = window_ms
        self.target_per_day = target_per_day
        self.min_history = min_history
        self._series: dict[str, _Series] = {}
        self._known: dict[str, float | None] = {}  # key -> threshold answered when first observed (None: seeded)
        self._answered: set[str] = set()

    def threshold(self, timeframe: str, ts: int) -> float | None:
        s = self._series.get(timeframe)
        if s is None or s.first is None:
            return None
        lo = bisect.bisect_right(s.ts, ts - self.window_ms)
        hi = bisect.bisect_right(s.ts, ts)
        k = budget_rank(hi - lo, ts - s.first, self.rule)
        if k is None:
            return None
        window = np.asarray(s.values[lo:hi], dtype=np.float64)
        return float(np.partition(window, k)[k])

    def observe(self, timeframe: str, ts: int, value: float, key: str | None = None) -> None:
        if value != value:  # nan: nothing known about it
            return
        s = self._series.setdefault(timeframe, _Series())
        if s.latest is not None and ts < s.latest - 2 * self.window_ms:  # older than anything kept
            s.first = ts if s.first is None else min(s.first, ts)
            return
        if key is not None:
            if key in self._known:
                return
            self._known[key] = None
        i = bisect.bisect_right(s.ts, ts)
        s.ts.insert(i, ts)
        s.values.insert(i, value)
        s.keys.insert(i, key)
        s.first = ts if s.first is None else min(s.first, ts)
        if s.latest is None or ts > s.latest:
            s.latest = ts
            self._trim(s)

    # -- QualityThreshold ----------------------------------------------------------------------------------
    def threshold_and_observe(self, point: QualityPoint) -> float | None:
        if point.key in self._answered:
            return self._known.get(point.key)
        used = self.threshold(point.timeframe, point.ts_ms)
        if point.quality == point.quality and point.key not in self._known:
            self.observe(point.timeframe, point.ts_ms, point.quality, point.key)
            if point.key in self._known:  # held (not older than anything kept)
                self._known[point.key] = used
                self._answered.add(point.key)
        return used

    def seed_points(self, points: Iterable[QualityPoint]) -> None:
        for p in points:
            self.observe(p.timeframe, p.ts_ms, p.quality, p.key)

    def adopt(self, point: QualityPoint, used: float | None) -> None:
        """Hold a point another backend measured (Redis answered ``used``): a repeat of its key gets ``used``."""
        self.observe(point.timeframe, point.ts_ms, point.quality, point.key)
        if point.key in self._known and point.key not in self._answered:
            self._known[point.key] = used
            self._answered.add(point.key)

    def timeframes(self) -> list[str]:
        return sorted(self._series)

    def points(self) -> list[QualityPoint]:
        """Every point held, by timeframe then event time (what a reconcile writes back to Redis)."""
        return [
            QualityPoint(k, tf, t, v)
            for tf, s in sorted(self._series.items())
            for t, v, k in zip(s.ts, s.values, s.keys, strict=True)
            if k is not None
        ]

    def _trim(self, s: _Series) -> None:
        assert s.latest is not None
        cut = bisect.bisect_left(s.ts, s.latest - 2 * self.window_ms)
        if cut:
            for k in s.keys[:cut]:
                if k is not None:
                    self._known.pop(k, None)
                    self._answered.discard(k)
            del s.ts[:cut], s.values[:cut], s.keys[:cut]
