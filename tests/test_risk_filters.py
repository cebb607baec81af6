"""Each risk filter passes a good candidate and refuses a bad one with exactly its own reason code."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.factories import T0, candidate, features
from ultra_signals.core.config import FeatureSettings, load_settings
from ultra_signals.core.events import BookDepth, BookTicker, Funding
from ultra_signals.engine.risk_filters import (
    REASONS,
    FilterContext,
    FlagFilter,
    MarketState,
    MaxSpreadFilter,
    MinConfidenceFilter,
    MinDepthFilter,
    NearFundingFilter,
    StaleDataFilter,
    TrendStrengthFilter,
    VolatilityBandFilter,
    WarmupFilter,
    first_refusal,
    standard_filters,
)
from ultra_signals.features.store import FeatureStore

NOW = T0 + 300_000  # the bar's close


def ctx(market: MarketState | None = None, now: int = NOW, **fkw: object) -> FilterContext:
    return FilterContext(
        candidate(),
        features(**fkw),
        FeatureStore(FeatureSettings(), ["5m", "15m"]),
        market or MarketState(),
        now,
    )


def test_warmup() -> None:
    assert WarmupFilter().check(ctx()) is None
    assert WarmupFilter().check(ctx(warm=False)) == "warmup"


def test_stale_data_runs_on_market_time() -> None:
    f = StaleDataFilter(max_age_ms=120_000)
    assert f.check(ctx(now=NOW + 120_000)) is None
    assert f.check(ctx(now=NOW + 120_001)) == "stale_data"


def test_volatility_band() -> None:
    f = VolatilityBandFilter(min_pct=0.05, max_pct=1.0)
    assert f.check(ctx()) is None  # 120 / 60600 = 0.198 %
    assert f.check(ctx(atr=10.0)) == "volatility_band"
    assert f.check(ctx(atr=1000.0)) == "volatility_band"


def test_trend_strength() -> None:
    assert TrendStrengthFilter(20).check(ctx()) is None
    assert TrendStrengthFilter(20).check(ctx(adx=12.0)) == "trend_strength"


def test_min_confidence() -> None:
    c = ctx()
    assert MinConfidenceFilter(0.7).check(c) is None
    c.candidate = replace(c.candidate, confidence=0.5)
    assert MinConfidenceFilter(0.7).check(c) == "min_confidence"


def test_spread_needs_fresh_book_and_a_narrow_spread() -> None:
    f = MaxSpreadFilter(max_bps=5.0, max_age_ms=60_000)
    assert f.check(ctx()) == "max_spread"  # no book seen: unknown spread is refused
    m = MarketState(book={"BTCUSDT": BookTicker("BTCUSDT", NOW - 1000, 60_000.0, 1.0, 60_006.0, 1.0)})
    assert f.check(ctx(market=m)) is None  # 1 bps
    m.book["BTCUSDT"] = BookTicker("BTCUSDT", NOW - 1000, 60_000.0, 1.0, 60_060.0, 1.0)
    assert f.check(ctx(market=m)) == "max_spread"  # 10 bps
    m.book["BTCUSDT"] = BookTicker("BTCUSDT", NOW - 61_000, 60_000.0, 1.0, 60_006.0, 1.0)
    assert f.check(ctx(market=m)) == "max_spread"  # stale book


def test_min_depth() -> None:
    f = MinDepthFilter(min_usdt=50_000.0, max_age_ms=60_000)
    m = MarketState(depth={"BTCUSDT": BookDepth("BTCUSDT", NOW, 80_000.0, 60_000.0, 0.1, 10.0)})
    assert f.check(ctx(market=m)) is None
    m.depth["BTCUSDT"] = BookDepth("BTCUSDT", NOW, 80_000.0, 20_000.0, 0.6, 10.0)
    assert f.check(ctx(market=m)) == "min_depth"


def test_near_funding() -> None:
    f = NearFundingFilter(blackout_ms=10 * 60_000)
    far = MarketState(funding={"BTCUSDT": Funding("BTCUSDT", NOW, 60_000.0, 1e-4, NOW + 3_600_000)})
    near = MarketState(funding={"BTCUSDT": Funding("BTCUSDT", NOW, 60_000.0, 1e-4, NOW + 5 * 60_000)})
    assert f.check(ctx(market=far)) is None
    assert f.check(ctx(market=near)) == "near_funding"


def test_missing_data_is_refused_or_not_evaluated_as_configured() -> None:
    """Never seen: refused by default, passed and noted with ``not_evaluated``; seen but stale: always refused."""
    for flt in (MaxSpreadFilter(5.0, 60_000, "not_evaluated"), MinDepthFilter(50_000.0, 60_000, "not_evaluated")):
        c = ctx()
        assert flt.check(c) is None and c.not_evaluated == [flt.name]
    assert MinDepthFilter(50_000.0, 60_000).check(ctx()) == "min_depth"
    stale = MarketState(book={"BTCUSDT": BookTicker("BTCUSDT", NOW - 61_000, 60_000.0, 1.0, 60_006.0, 1.0)})
    c = ctx(market=stale)
    assert MaxSpreadFilter(5.0, 60_000, "not_evaluated").check(c) == "max_spread" and c.not_evaluated == []
    c = ctx()
    assert NearFundingFilter(600_000).check(c) is None and c.not_evaluated == ["near_funding"]


def test_unavailable_data_setting_reaches_the_filters() -> None:
    from ultra_signals.core.config import load_settings

    s = load_settings(
        overrides={
            "filters.max_spread_bps": 5.0,
            "filters.min_depth_usdt": 1e4,
            "filters.unavailable_data": "not_evaluated",
        },
        environ={},
    )
    c = ctx()
    assert first_refusal(standard_filters(s), c) is None
    assert c.not_evaluated == ["max_spread", "min_depth"]


def test_flag_filter_reports_its_reason() -> None:
    assert FlagFilter("paused", lambda: None).check(ctx()) is None
    assert FlagFilter("paused", lambda: "paused").check(ctx()) == "paused"


def test_standard_pipeline_order_and_first_refusal_wins() -> None:
    s = load_settings(
        environ={"ULTRA_SIGNALS_FILTERS__MAX_SPREAD_BPS": "5", "ULTRA_SIGNALS_FILTERS__FUNDING_BLACKOUT_MIN": "10"}
    )
    filters = standard_filters(s)
    names = [f.name for f in filters]
    assert names == [
        "warmup",
        "stale_data",
        "volatility_band",
        "trend_strength",
        "min_confidence",
        "max_spread",
        "near_funding",
    ]
    assert all(n in REASONS for n in names)
    # Cold AND weak: the earlier filter (warmup) names the reason.
    assert first_refusal(filters, ctx(warm=False, adx=5.0)) == "warmup"
    assert first_refusal(filters, ctx(adx=5.0)) == "trend_strength"


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_code_is_snake_case(reason: str) -> None:
    assert reason.replace("_", "").isalpha() and reason.islower()
