"""Sizing against the real exchangeInfo recording of 2021-07-22: rounding, caps, refusals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import require_data
from ultra_signals.core.decision import Side
from ultra_signals.core.instruments import ExchangeInfoError, SymbolFilters, parse_exchange_info
from ultra_signals.execution.sizing import size_order
from ultra_signals.execution.symbol_filters import load_exchange_info_file


@pytest.fixture(scope="module")
def filters() -> dict[str, SymbolFilters]:
    path = require_data("ws", "binance-futures-exchangeinfo-20210722.txt")
    return parse_exchange_info(load_exchange_info_file(path))


def test_recording_parses_real_filters(filters: dict[str, SymbolFilters]) -> None:
    btc = filters["BTCUSDT"]
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.min_notional) == (
        Decimal("0.01"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal("5"),
    )
    assert filters["SOLUSDT"].market_max_qty == Decimal("20000")  # MARKET_LOT_SIZE differs from LOT_SIZE
    assert filters["DOGEUSDT"].tick_size == Decimal("0.00001")
    assert len(filters) == 122


def test_risk_bound_size_rounds_quantity_down_and_stop_away(filters: dict[str, SymbolFilters]) -> None:
    # 10 000 USDT × 0.5 % = 50 USDT at risk; stop 31 800.004 rounds away from the entry to 31 800.00.
    s = size_order(
        side=Side.LONG,
        equity=10_000,
        entry=32_000.123,
        stop=31_800.004,
        take_profit=32_400.009,
        filters=filters["BTCUSDT"],
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=100_000,
    )
    assert s.ok, s.detail
    assert (s.entry, s.stop, s.take_profit) == (Decimal("32000.12"), Decimal("31800.00"), Decimal("32400.00"))
    # 50 / 200.12 = 0.24985 -> 0.249 (never up to 0.250, which would risk 50.03)
    assert s.qty == Decimal("0.249") and s.binding == "risk"
    assert s.risk_usdt <= 50.0


def test_short_rounds_stop_up_and_target_up(filters: dict[str, SymbolFilters]) -> None:
    s = size_order(
        side=Side.SHORT,
        equity=10_000,
        entry=0.2000049,
        stop=0.2100011,
        take_profit=0.1900019,
        filters=filters["DOGEUSDT"],
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=100_000,
    )
    assert s.ok, s.detail
    assert (s.entry, s.stop, s.take_profit) == (Decimal("0.20000"), Decimal("0.21001"), Decimal("0.19001"))
    assert s.qty == Decimal("4995")  # 50 / 0.01001 = 4995.005 -> step 1
    assert s.qty * (s.stop - s.entry) <= Decimal(50)


def test_leverage_and_notional_caps_bind(filters: dict[str, SymbolFilters]) -> None:
    common = {"side": Side.LONG, "entry": 30_000.0, "stop": 29_990.0, "take_profit": 30_010.0}
    lev = size_order(
        **common,
        equity=1_000,
        filters=filters["BTCUSDT"],
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=1e9,
    )
    assert lev.ok and lev.binding == "leverage" and lev.qty == Decimal("0.166")  # 5000 / 30000 = 0.1666
    cap = size_order(
        **common,
        equity=1_000,
        filters=filters["BTCUSDT"],
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=500,
    )
    assert cap.ok and cap.binding == "max_notional" and cap.qty == Decimal("0.016")
    assert cap.notional <= 500


def test_refusals_name_the_reason(filters: dict[str, SymbolFilters]) -> None:
    tiny = size_order(
        side=Side.LONG,
        equity=100,
        entry=30_000,
        stop=29_000,
        take_profit=31_000,
        filters=filters["BTCUSDT"],
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=1e9,
    )
    assert not tiny.ok and tiny.reason == "below_min_qty"
    small = size_order(
        side=Side.LONG,
        equity=100,
        entry=0.2,
        stop=0.15,
        take_profit=0.25,
        filters=filters["DOGEUSDT"],
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=1e9,
    )
    assert not small.ok and small.reason == "below_min_notional"  # 10 DOGE × 0.2 = 2 USDT < 5
    bad = size_order(
        side=Side.LONG,
        equity=100,
        entry=30_000,
        stop=31_000,
        take_profit=32_000,
        filters=filters["BTCUSDT"],
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=1e9,
    )
    assert not bad.ok and bad.reason == "invalid_prices"
    close = size_order(
        side=Side.LONG,
        equity=100,
        entry=30_000.001,
        stop=30_000.0,
        take_profit=30_001,
        filters=filters["BTCUSDT"],
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=1e9,
    )
    assert not close.ok and close.reason == "stop_too_close"
    pending = next(f for f in filters.values() if f.status != "TRADING")
    refused = size_order(
        side=Side.LONG,
        equity=1e6,
        entry=10,
        stop=9,
        take_profit=11,
        filters=pending,
        risk_fraction=0.005,
        max_leverage=5,
        max_notional=1e9,
    )
    assert not refused.ok and refused.reason == "symbol_not_trading"


def test_bad_exchange_info_names_symbol_and_field() -> None:
    with pytest.raises(ExchangeInfoError, match=r"FOOUSDT: LOT_SIZE\.stepSize missing"):
        parse_exchange_info(
            {
                "symbols": [
                    {
                        "symbol": "FOOUSDT",
                        "filters": [
                            {
                                "filterType": "PRICE_FILTER",
                                "tickSize": "0.1",
                                "minPrice": "0.1",
                                "maxPrice": "10",
                            }
                        ],
                    }
                ]
            }
        )


@settings(max_examples=300, deadline=None)
@given(
    sym=st.sampled_from(["BTCUSDT", "ETHUSDT", "DOGEUSDT", "XRPUSDT", "SOLUSDT", "1000SHIBUSDT", "LINKUSDT"]),
    equity=st.floats(10, 1e6),
    rel_price=st.floats(0.5, 50),
    stop_pct=st.floats(0.0005, 0.2),
    risk=st.floats(0.0005, 0.05),
    lev=st.floats(1, 20),
    max_notional=st.floats(10, 1e6),
    long=st.booleans(),
)
def test_size_never_exceeds_any_limit(
    filters: dict[str, SymbolFilters],
    sym: str,
    equity: float,
    rel_price: float,
    stop_pct: float,
    risk: float,
    lev: float,
    max_notional: float,
    long: bool,
) -> None:
    f = filters[sym]
    entry = float(f.min_price) * rel_price * 10
    sign = 1 if long else -1
    stop, tp = entry * (1 - sign * stop_pct), entry * (1 + sign * stop_pct)
    s = size_order(
        side=Side.LONG if long else Side.SHORT,
        equity=equity,
        entry=entry,
        stop=stop,
        take_profit=tp,
        filters=f,
        risk_fraction=risk,
        max_leverage=lev,
        max_notional=max_notional,
    )
    if not s.ok:
        assert s.reason in {"below_min_qty", "below_min_notional", "stop_too_close", "price_out_of_range"}
        return
    assert s.qty % f.market_step_size == 0 and s.qty >= f.market_min_qty and s.qty <= f.market_max_qty
    for p in (s.entry, s.stop, s.take_profit):
        assert p % f.tick_size == 0
    assert s.qty * abs(s.entry - s.stop) <= Decimal(str(equity)) * Decimal(str(risk))
    notional = s.qty * s.entry
    assert notional <= Decimal(str(max_notional)) and notional <= Decimal(str(equity)) * Decimal(str(lev))
    assert s.qty * s.entry >= f.min_notional
    # The stop was only ever moved away from the entry.
    assert (s.stop <= Decimal(str(stop))) if long else (s.stop >= Decimal(str(stop)))


def test_available_balance_caps_the_notional_and_none_left_refuses() -> None:
    f = SymbolFilters.unfiltered("BTCUSDT")
    common: dict[str, Any] = dict(
        side=Side.LONG, equity=10_000, entry=100.0, stop=99.0, take_profit=102.0, filters=f,
        risk_fraction=0.01, max_leverage=5, max_notional=1_000_000,
    )  # fmt: skip
    free = size_order(**common, available=10_000)  # 100 USDT at risk over 1.0: qty 100, notional 10 000
    assert free.ok and free.binding == "risk" and free.qty == Decimal(100)
    tight = size_order(**common, available=1_000)  # 1000 × 5x = 5000 USDT of notional at most
    assert tight.ok and tight.binding == "available" and tight.notional == pytest.approx(5_000.0)
    none_left = size_order(**common, available=0.0)
    assert not none_left.ok and none_left.reason == "no_available_balance"
    assert size_order(**common).binding == "risk"  # no figure: equity × leverage only
