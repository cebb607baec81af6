"""core/instruments.py: one exchangeInfo parser for source and execution; bad rules name symbol and field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ultra_signals.core.instruments import ExchangeInfoError, SymbolFilters, parse_exchange_info


def _sym(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "symbol": "FOOUSDT",
        "status": "TRADING",
        "contractType": "PERPETUAL",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "0.1", "maxPrice": "1000"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "100"},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
        ],
    }
    s.update(over)
    return s


def test_market_lot_size_falls_back_to_lot_size_and_status_defaults_to_not_trading() -> None:
    doc = _sym()
    del doc["status"]
    f = parse_exchange_info({"symbols": [doc]})["FOOUSDT"]
    assert (f.market_step_size, f.market_min_qty, f.market_max_qty) == (f.step_size, f.min_qty, f.max_qty)
    assert f.tick_size == Decimal("0.10") and f.min_notional == Decimal("5") and f.price_precision == 2
    assert f.status == "" and not f.trading


def test_spot_style_min_notional_key_is_read() -> None:
    doc = _sym()
    doc["filters"][2] = {"filterType": "MIN_NOTIONAL", "minNotional": "10"}
    assert parse_exchange_info({"symbols": [doc]})["FOOUSDT"].min_notional == Decimal("10")


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([], r"expected an object with a 'symbols' list"),
        ({"symbols": None}, r"expected an object with a 'symbols' list"),
        ({"symbols": [{"filters": []}]}, r"bad symbol entry"),
        ({"symbols": [_sym(filters="nope")]}, r"FOOUSDT: filters='nope' is not a list"),
        ({"symbols": [_sym(pricePrecision="two")]}, r"FOOUSDT: pricePrecision='two' is not an integer"),
    ],
)
def test_malformed_documents_raise_with_the_place(doc: Any, match: str) -> None:
    with pytest.raises(ExchangeInfoError, match=match):
        parse_exchange_info(doc)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("abc", "is not a number"),
        ("-0.1", "is out of range"),
        ("Infinity", "is out of range"),
        ("NaN", "is out of range"),
    ],
)
def test_bad_rule_values_name_symbol_and_field(value: str, match: str) -> None:
    doc = _sym()
    doc["filters"][1] = dict(doc["filters"][1], stepSize=value)
    with pytest.raises(ExchangeInfoError, match=rf"FOOUSDT: LOT_SIZE\.stepSize='{value}' {match}"):
        parse_exchange_info({"symbols": [doc]})


def test_unfiltered_trades_and_rounds_to_1e8_only() -> None:
    f = SymbolFilters.unfiltered("XUSDT")
    assert f.trading and f.tick_size == f.step_size == Decimal("0.00000001") and f.min_notional == 0
