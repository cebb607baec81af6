"""Scoring: components, weighted score, side and confidence, and the entry/stop/target levels."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import features, mirror
from ultra_signals.core.config import ScoringSettings
from ultra_signals.core.decision import Side
from ultra_signals.engine.scoring import levels, score
from ultra_signals.features.store import Features

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


def _reference_score(f: Features, s: ScoringSettings) -> tuple[object, ...]:
    """The formulas as written before issue 13's rewrite of :func:`score` (fields read at each use, ``_clip``
    and ``max`` calls, ``Side`` read through the class): the fields it returned, for a bit-for-bit comparison."""

    def clip(x: float) -> float:
        return -1.0 if x < -1.0 else 1.0 if x > 1.0 else x

    atr = f.atr if f.atr > 0 else max(abs(f.close) * 1e-6, 1e-12)
    trend = 0.6 * math.tanh((f.ema_fast - f.ema_mid) / atr) + 0.4 * math.tanh((f.close - f.ema_slow) / (2.0 * atr))
    momentum = 0.5 * clip((f.rsi - 50.0) / 20.0) + 0.5 * math.tanh(f.macd_hist / (0.1 * atr))
    half_band = f.bb_upper - f.bb_mid
    volatility = math.tanh((f.close - f.bb_mid) / half_band) if half_band > 0 else 0.0
    vband = f.vwap_upper - f.vwap
    vw = math.tanh((f.close - f.vwap) / vband) if vband > 0 else 0.0
    vz = math.tanh(max(f.volume_z, 0.0) / 2.0)
    direction = 1.0 if f.macd_hist > 0 else -1.0 if f.macd_hist < 0 else 0.0
    volume = 0.6 * vw + 0.4 * vz * direction
    wsum = s.weight_trend + s.weight_momentum + s.weight_volatility + s.weight_volume
    total = (
        s.weight_trend * trend
        + s.weight_momentum * momentum
        + s.weight_volatility * volatility
        + s.weight_volume * volume
    ) / wsum
    total = clip(total)
    side = Side.LONG if total >= s.entry_threshold else Side.SHORT if total <= -s.entry_threshold else None
    confidence = 0.0
    if side is not None:
        sign = 1.0 if side is Side.LONG else -1.0
        agree = (
            s.weight_trend * (trend * sign > 0)
            + s.weight_momentum * (momentum * sign > 0)
            + s.weight_volatility * (volatility * sign > 0)
            + s.weight_volume * (volume * sign > 0)
        ) / wsum
        confidence = max(0.0, min(1.0, 0.5 * min(1.0, abs(total) / 0.6) + 0.5 * agree))
    return (trend, momentum, volatility, volume, total, side, confidence)


def _bits(values: tuple[object, ...]) -> tuple[object, ...]:
    """Floats by their IEEE bytes (NaN equal to NaN, -0.0 unequal to 0.0), anything else as it is."""
    return tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in values)


def _outcome(fn: Callable[[], tuple[object, ...]]) -> tuple[object, ...]:
    """The bits of what ``fn`` returns, or the type of what it raised (a subnormal ATR divides by zero)."""
    try:
        return _bits(fn())
    except ArithmeticError as e:
        return ("raised", type(e))


_ANY = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, math.nan, 1.0, -1.0])


_SCORED = ("close", "ema_fast", "ema_mid", "ema_slow", "rsi", "macd_hist", "atr", "bb_mid", "bb_upper", "vwap")


@settings(max_examples=1000)
@given(
    # A few fields of a realistic bar replaced by edge values, the rest left as they are (so one NaN does not
    # hide every other branch behind a NaN total).
    values=st.dictionaries(
        st.sampled_from((*_SCORED, "vwap_upper", "volume_z")),
        _ANY | st.floats(-2.0, 2.0) | st.floats(59_000.0, 61_000.0),
        max_size=3,
    ),
    weights=st.tuples(*[st.floats(0.0, 100.0)] * 4).filter(lambda w: sum(w) > 0),
    threshold=st.floats(0.01, 1.0),
)
def test_score_is_bit_identical_to_the_plain_formulas(
    values: dict[str, float], weights: tuple[float, float, float, float], threshold: float
) -> None:
    """Same float operations in the same order as the formulas it replaced: the same bits for every output,
    NaN, infinities, signed zeros and the clip edges included (decisions depend on them)."""
    s = ScoringSettings(
        weight_trend=weights[0],
        weight_momentum=weights[1],
        weight_volatility=weights[2],
        weight_volume=weights[3],
        entry_threshold=threshold,
    )
    f = features(**values)

    def new() -> tuple[object, ...]:
        sc = score(f, s)
        return (sc.trend, sc.momentum, sc.volatility, sc.volume, sc.total, sc.side, sc.confidence)

    assert _outcome(new) == _outcome(lambda: _reference_score(f, s))


@given(side=st.sampled_from([Side.LONG, Side.SHORT]), entry=_ANY, atr=_ANY)
def test_levels_are_bit_identical_to_the_plain_formulas(side: Side, entry: float, atr: float) -> None:
    risk = S.stop_atr_mult * atr
    stop, targets = levels(side, entry, atr, S)
    if side is Side.LONG:
        want = (entry - risk, tuple(entry + r * risk for r in S.target_r))
    else:
        want = (entry + risk, tuple(entry - r * risk for r in S.target_r))
    assert _bits((stop, *targets)) == _bits((want[0], *want[1]))
