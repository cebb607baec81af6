"""Liquidation distance and leverage-bracket caps (pure)."""

from __future__ import annotations

import pytest

from ultra_signals.execution.liquidation import Bracket, check_liquidation, liquidation_price, parse_brackets

BRACKETS = parse_brackets(
    [
        {
            "symbol": "BTCUSDT",
            "brackets": [
                {"bracket": 2, "initialLeverage": 100, "notionalCap": 250000, "notionalFloor": 50000,
                 "maintMarginRatio": 0.005, "cum": 50.0},
                {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0,
                 "maintMarginRatio": 0.004, "cum": 0.0},
            ],
        }
    ]
)["BTCUSDT"]  # fmt: skip


def test_brackets_parse_sorted_by_floor() -> None:
    assert [b.floor for b in BRACKETS] == [0.0, 50000.0] and BRACKETS[0].max_leverage == 125


def test_isolated_liquidation_price_long_and_short() -> None:
    b = Bracket(0, 50000, 0.004, 0.0, 125)
    # long 1 BTC at 32000, 10x: WB 3200; LP = (3200 - 32000) / (0.004 - 1) = 28915.66…
    assert liquidation_price(True, 32000.0, 1.0, 10.0, b) == pytest.approx(28800 / 0.996)
    # short: LP = (3200 + 32000) / (0.004 + 1)
    assert liquidation_price(False, 32000.0, 1.0, 10.0, b) == pytest.approx(35200 / 1.004)


def test_stop_too_close_to_liquidation_is_refused_and_far_enough_passes() -> None:
    near = check_liquidation(
        long=True, entry=32000, stop=31800, qty=0.015, leverage=50, brackets=BRACKETS, min_buffer=0.01
    )
    assert near[0] is False and near[1] == "liquidation_buffer" and "needs 1.00%" in near[2]
    far = check_liquidation(
        long=True, entry=32000, stop=31800, qty=0.015, leverage=5, brackets=BRACKETS, min_buffer=0.01
    )
    assert far[0] is True
    short = check_liquidation(
        long=False, entry=32000, stop=32200, qty=0.015, leverage=50, brackets=BRACKETS, min_buffer=0.01
    )
    assert short[0] is False


def test_notional_beyond_the_leverage_allowance_is_refused() -> None:
    ok, why, detail = check_liquidation(
        long=True, entry=32000, stop=30000, qty=2.0, leverage=110, brackets=BRACKETS, min_buffer=0.0
    )
    assert (ok, why) == (False, "leverage_bracket_cap") and "50000 allowed at 110x" in detail
