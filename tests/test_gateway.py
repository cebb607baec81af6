"""Risk gateway throttles: each refusal names its limit."""

from __future__ import annotations

from ultra_signals.core.config import ThrottleSettings
from ultra_signals.execution.gateway import RiskGateway

T0 = 1_700_000_000_000


def gw(**kw: float) -> RiskGateway:
    base = {"max_orders_per_minute": 2, "max_notional_per_order": 1000.0, "max_notional_per_symbol": 1500.0}
    base.update(kw)
    return RiskGateway(ThrottleSettings(max_open_positions=2, **base))  # type: ignore[arg-type]


def test_orders_per_minute_is_a_sliding_market_time_window() -> None:
    g = gw()
    for ts in (T0, T0 + 10_000):
        assert g.check(symbol="BTCUSDT", notional=100, ts_ms=ts, open_notional={}).ok
        g.record(ts)
    v = g.check(symbol="BTCUSDT", notional=100, ts_ms=T0 + 59_999, open_notional={})
    assert not v.ok and v.reason == "throttle_orders_per_minute"
    assert g.check(symbol="BTCUSDT", notional=100, ts_ms=T0 + 60_000, open_notional={}).ok


def test_notional_per_order_and_per_symbol() -> None:
    g = gw()
    v = g.check(symbol="BTCUSDT", notional=1000.01, ts_ms=T0, open_notional={})
    assert not v.ok and v.reason == "throttle_order_notional"
    v = g.check(symbol="BTCUSDT", notional=600, ts_ms=T0, open_notional={"BTCUSDT": 1000})
    assert not v.ok and v.reason == "throttle_symbol_notional" and "BTCUSDT" in v.detail
    assert g.check(symbol="ETHUSDT", notional=600, ts_ms=T0, open_notional={"BTCUSDT": 1000}).ok


def test_max_open_positions_counts_other_symbols() -> None:
    g = gw()
    held = {"BTCUSDT": 100.0, "ETHUSDT": 100.0}
    v = g.check(symbol="SOLUSDT", notional=100, ts_ms=T0, open_notional=held)
    assert not v.ok and v.reason == "throttle_open_positions"
    assert g.check(symbol="SOLUSDT", notional=100, ts_ms=T0, open_notional={"BTCUSDT": 100.0, "ETHUSDT": 0.0}).ok
