"""Spending the cap budget on quality: the candidate-quality score, the online threshold, the same-direction bound.

Shared by the live sniper (:mod:`ultra_signals.engine.sniper`) and the offline evaluation
(:mod:`ultra_signals.research.selection`), so what is measured is what runs.  Pure: no I/O, no wall clock; every
window is in event time, and the state is a function of the candidates seen so far in order, which is what
makes it replay-identical and lets a restarted runner rebuild it from the journal.

Quality is ``p = σ(intercept + Σ w_f · (x_f − mean_f) / scale_f)`` over :data:`QUALITY_FEATURES` (settings
``sniper.quality``; ``ultra-signals evaluate`` fits it walk-forward and prints it): an estimate of the
probability that the take-profit target is reached before the stop.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

from ultra_signals.core.config import QUALITY_FEATURES, QualityWeights
from ultra_signals.core.quality_window import OnlineThreshold, budget_rank, quantile_rank

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

__all__ = [
    "QUALITY_FEATURES",
    "OnlineThreshold",
    "SameDirectionBound",
    "budget_rank",
    "feature_row",
    "quality",
    "quantile_rank",
]


def feature_row(
    side_long: bool,
    score: float,
    confidence: float,
    components: Mapping[str, float],
    features: Mapping[str, float],
) -> list[float]:
    """The quality model's inputs for one candidate, from what the candidate carries at decision time."""
    s = 1.0 if side_long else -1.0
    close = features.get("close", 0.0)
    atr = features.get("atr", 0.0)
    vz = features.get("volume_z", 0.0)
    row = [
        s * components.get("trend", 0.0),
        s * components.get("momentum", 0.0),
        s * components.get("volatility", 0.0),
        s * components.get("volume", 0.0),
        abs(score),
        confidence,
        features.get("adx", 0.0) / 100.0,
        atr / close * 100.0 if close > 0 else 0.0,
        s * features.get("htf_trend", 0.0),
        max(-4.0, min(4.0, vz)) if math.isfinite(vz) else 0.0,
    ]
    return [x if math.isfinite(x) else 0.0 for x in row]


def quality(w: QualityWeights, row: list[float]) -> float:
    """The model's probability for one feature row (a missing weight is 0, a missing mean 0, a missing scale 1)."""
    z = w.intercept
    for name, x in zip(QUALITY_FEATURES, row, strict=True):
        wf = w.weights.get(name, 0.0)
        if wf:
            z += wf * (x - w.mean.get(name, 0.0)) / w.scale.get(name, 1.0)
    z = max(-40.0, min(40.0, z))
    return 1.0 / (1.0 + math.exp(-z))


class SameDirectionBound:
    """At most ``n`` allowed signals of one direction within a trailing window of ``window_ms`` (event time)."""

    def __init__(self, n: int, window_ms: int) -> None:
        self.n = n
        self.window_ms = window_ms
        self._recent: deque[tuple[int, bool]] = deque()

    def full(self, long: bool, ts: int) -> bool:
        while self._recent and self._recent[0][0] <= ts - self.window_ms:
            self._recent.popleft()
        return sum(1 for t, lg in self._recent if lg == long and t <= ts) >= self.n

    def record(self, long: bool, ts: int) -> None:
        self._recent.append((ts, long))
