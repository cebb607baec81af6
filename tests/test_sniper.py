"""Sniper mode: MTF confirmation on the latest closed higher bar, cooldown in bars, then caps (only for passers)."""

from __future__ import annotations

from tests.factories import T0, candidate, features
from ultra_signals.core.caps import CapPolicy
from ultra_signals.core.config import FeatureSettings, SniperSettings
from ultra_signals.core.decision import Side
from ultra_signals.core.events import Kline
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.engine.risk_filters import FilterContext, MarketState
from ultra_signals.engine.sniper import CooldownFilter, MtfConfirmFilter, Sniper
from ultra_signals.features.store import FeatureStore

M15 = 900_000


def store_with_15m(trend: int, bars: int = 260, last_close: int = T0 + 300_000) -> FeatureStore:
    """A real feature store fed a steady 15m trend whose last bar closes at ``last_close``."""
    store = FeatureStore(FeatureSettings(), ["5m", "15m"])
    first_open = last_close - bars * M15
    for i in range(bars):
        p = 100.0 + trend * 0.1 * i + (0.05 if i % 2 else -0.05)
        ot = first_open + i * M15
        store.update(Kline("BTCUSDT", "15m", ot, ot + M15 - 1, p, p + 0.2, p - 0.2, p + 0.02 * trend, 10.0 + i % 3))
    return store


def ctx_for(store: FeatureStore, side: Side = Side.LONG, open_time: int = T0) -> FilterContext:
    c = candidate(side=side, open_time=open_time)
    return FilterContext(c, features(), store, MarketState(), c.ts)


MTF = MtfConfirmFilter({"5m": "15m", "15m": "1h"})


def test_mtf_agrees() -> None:
    assert MTF.check(ctx_for(store_with_15m(+1), Side.LONG)) is None
    assert MTF.check(ctx_for(store_with_15m(-1), Side.SHORT)) is None


def test_mtf_disagreement_blocks() -> None:
    assert MTF.check(ctx_for(store_with_15m(-1), Side.LONG)) == "mtf_required"
    assert MTF.check(ctx_for(store_with_15m(+1), Side.SHORT)) == "mtf_required"


def test_mtf_missing_cold_or_stale_blocks() -> None:
    empty = FeatureStore(FeatureSettings(), ["5m", "15m"])
    assert MTF.check(ctx_for(empty)) == "mtf_required"
    assert MTF.check(ctx_for(store_with_15m(+1, bars=30))) == "mtf_required"  # not warm
    old = store_with_15m(+1, last_close=T0 + 300_000 - M15 - 1)
    assert MTF.check(ctx_for(old)) == "mtf_required"  # latest 15m bar closed more than one 15m bar ago
    ok = store_with_15m(+1, last_close=T0 + 300_000 - M15)
    assert MTF.check(ctx_for(ok)) is None  # exactly one bar old is still the latest closed one


def test_mtf_unmapped_timeframe_blocks() -> None:
    assert MtfConfirmFilter({}).check(ctx_for(store_with_15m(+1))) == "mtf_required"


def test_cooldown_in_bars_of_the_signal_timeframe() -> None:
    cd = CooldownFilter(bars=10)
    store = store_with_15m(+1)
    first = ctx_for(store, open_time=T0)
    assert cd.check(first) is None
    cd.record(first.candidate)
    assert cd.check(ctx_for(store, open_time=T0 + 9 * 300_000)) == "cooldown"
    assert cd.check(ctx_for(store, open_time=T0 + 10 * 300_000)) is None
    other = FilterContext(candidate(symbol="ETHUSDT"), features(), store, MarketState(), T0)
    assert cd.check(other) is None  # per symbol


def test_caps_only_spent_by_candidates_that_pass_mtf_and_cooldown() -> None:
    counters = MemoryCounters(CapPolicy.from_limits(2, 6))
    sniper = Sniper(SniperSettings(cooldown_bars=0), counters, "run1")
    up, down = store_with_15m(+1), store_with_15m(-1)
    assert sniper.check(ctx_for(down, Side.LONG, T0)) == "mtf_required"
    assert counters.window_counts(T0 + 300_000) == {"hour": 0, "day": 0}
    assert sniper.check(ctx_for(up, Side.LONG, T0)) is None
    assert sniper.check(ctx_for(up, Side.LONG, T0 + 300_000)) is None
    assert sniper.check(ctx_for(up, Side.LONG, T0 + 600_000)) == "hourly_cap"
    assert counters.window_counts(T0 + 900_000) == {"hour": 2, "day": 2}


def test_cooldown_blocks_before_a_cap_slot_is_taken() -> None:
    counters = MemoryCounters(CapPolicy.from_limits(5, 6))
    sniper = Sniper(SniperSettings(max_signals_per_hour=5, cooldown_bars=10), counters, "run1")
    up = store_with_15m(+1)
    assert sniper.check(ctx_for(up, Side.LONG, T0)) is None
    assert sniper.check(ctx_for(up, Side.LONG, T0 + 300_000)) == "cooldown"
    assert counters.window_counts(T0 + 600_000)["hour"] == 1


def test_disabled_sniper_passes_everything() -> None:
    counters = MemoryCounters(CapPolicy.from_limits(1, 1))
    sniper = Sniper(SniperSettings(enabled=False, max_signals_per_hour=1, daily_signal_cap=1), counters, "r")
    down = store_with_15m(-1)
    assert sniper.check(ctx_for(down, Side.LONG, T0)) is None
    assert sniper.check(ctx_for(down, Side.LONG, T0 + 300_000)) is None
