"""Scoring: components, weighted score, side and confidence, and the entry/stop/target levels."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.factories import features, mirror
from ultra_signals.core.config import ScoringSettings
from ultra_signals.core.decision import Side
from ultra_signals.engine.scoring import levels, score

S = ScoringSettings()


def test_uptrend_scores_long_with_agreeing_components() -> None:
    sc = score(features(), S)
    assert sc.side is Side.LONG
    assert sc.total >= S.entry_threshold
    assert all(v > 0 for v in sc.components().values())
    assert 0.5 < sc.confidence <= 1.0


def test_mirror_image_scores_short_symmetrically() -> None:
    up, down = score(features(), S), score(mirror(features()), S)
    assert down.side is Side.SHORT
    assert down.total == pytest.approx(-up.total)
    assert down.confidence == pytest.approx(up.confidence)


def test_flat_market_is_no_trade() -> None:
    f = features(
        ema_fast=60_600.0,
        ema_mid=60_600.0,
        ema_slow=60_600.0,
        rsi=50.0,
        macd_hist=0.0,
        bb_mid=60_600.0,
        vwap=60_600.0,
        volume_z=0.0,
    )
    sc = score(f, S)
    assert sc.side is None and sc.confidence == 0.0 and sc.total == pytest.approx(0.0)


def test_weights_and_threshold_come_from_settings() -> None:
    only_trend = ScoringSettings(weight_trend=1.0, weight_momentum=0.0, weight_volatility=0.0, weight_volume=0.0)
    sc = score(features(), only_trend)
    assert sc.total == pytest.approx(sc.trend)
    strict = ScoringSettings(entry_threshold=0.99)
    assert score(features(), strict).side is None


def test_levels_at_atr_multiple_and_r_targets() -> None:
    stop, targets = levels(Side.LONG, 100.0, 2.0, S)
    assert stop == pytest.approx(100.0 - 1.5 * 2.0)
    assert targets == pytest.approx((103.0, 106.0, 109.0))
    stop, targets = levels(Side.SHORT, 100.0, 2.0, S)
    assert stop == pytest.approx(103.0) and targets == pytest.approx((97.0, 94.0, 91.0))


@given(
    close=st.floats(1e-5, 1e6),
    rsi=st.floats(0, 100),
    hist=st.floats(-1e3, 1e3),
    z=st.floats(-5, 5),
    atr_frac=st.floats(1e-5, 0.2),
)
def test_score_is_bounded_and_scale_free(close: float, rsi: float, hist: float, z: float, atr_frac: float) -> None:
    f = features()
    k = close / f.close
    scaled = replace(
        f,
        close=close,
        ema_fast=f.ema_fast * k,
        ema_mid=f.ema_mid * k,
        ema_slow=f.ema_slow * k,
        bb_mid=f.bb_mid * k,
        bb_upper=f.bb_upper * k,
        bb_lower=f.bb_lower * k,
        vwap=f.vwap * k,
        vwap_upper=f.vwap_upper * k,
        vwap_lower=f.vwap_lower * k,
        atr=close * atr_frac,
        rsi=rsi,
        macd_hist=hist * k,
        volume_z=z,
    )
    sc = score(scaled, S)
    assert -1.0 <= sc.total <= 1.0 and 0.0 <= sc.confidence <= 1.0
    assert (sc.side is None) == (abs(sc.total) < S.entry_threshold)
