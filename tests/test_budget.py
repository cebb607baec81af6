"""The budget's parts: the quality score from settings, the online threshold, the same-direction bound."""

from __future__ import annotations

import math

import pytest

from ultra_signals.core.config import ConfigError, QualityWeights, load_settings
from ultra_signals.engine.budget import DAY_MS, HOUR_MS, OnlineThreshold, SameDirectionBound, feature_row, quality

M = 60_000


def test_threshold_targets_the_budget() -> None:
    """60 candidates a day with qualities 0..59 and a budget of 6 a day: the top tenth clears it."""
    thr = OnlineThreshold(window_ms=DAY_MS, target_per_day=6.0, min_history=10)
    for i in range(60):
        thr.observe("5m", i * 24 * M, float(i))
    t = thr.threshold("5m", 60 * 24 * M - 1)
    assert t is not None and 53.0 <= t <= 54.0
    assert thr.threshold("1h", 0) is None  # another timeframe has its own (empty) history
    assert thr.threshold("5m", 60 * 24 * M + 2 * DAY_MS) is None  # the window emptied: no threshold


def test_no_threshold_while_demand_is_within_the_budget_or_history_is_short() -> None:
    thr = OnlineThreshold(window_ms=DAY_MS, target_per_day=6.0, min_history=3)
    thr.observe("5m", 0, 0.9)
    thr.observe("5m", 1, 0.1)
    assert thr.threshold("5m", 2) is None  # 2 < min_history
    thr.observe("5m", 2, math.nan)  # unknown quality is not history
    assert thr.threshold("5m", 3) is None
    for i in range(3):
        thr.observe("5m", (i + 1) * 6 * HOUR_MS, 0.5)
    assert thr.threshold("5m", DAY_MS - 1) is None  # 5 in a day: within the budget of 6
    thr.observe("5m", DAY_MS - 1, 0.5)
    thr.observe("5m", DAY_MS - 1, 0.7)
    assert thr.threshold("5m", DAY_MS - 1) is not None  # 7 in a day: over it


def test_same_direction_bound() -> None:
    b = SameDirectionBound(2, HOUR_MS)
    b.record(True, 0)
    b.record(True, 10 * M)
    assert b.full(True, 20 * M) and not b.full(False, 20 * M)
    assert not b.full(True, HOUR_MS)  # the first one left the window


def test_quality_from_settings_weights() -> None:
    row = feature_row(True, 0.5, 0.8, {"trend": 0.4}, {"close": 100.0, "atr": 1.0, "adx": 25.0})
    assert quality(QualityWeights(), row) == 0.5
    w = QualityWeights(intercept=0.2, weights={"trend_s": 1.0}, mean={"trend_s": 0.1}, scale={"trend_s": 0.5})
    assert quality(w, row) == pytest.approx(1 / (1 + math.exp(-(0.2 + (0.4 - 0.1) / 0.5))))


def test_unknown_quality_feature_is_a_clear_settings_error() -> None:
    with pytest.raises(ConfigError, match="unknown feature"):
        load_settings(overrides={"sniper.quality": {"weights": {"nope": 1.0}}}, environ={})
