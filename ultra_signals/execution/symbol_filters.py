"""Exchange trading rules per symbol (tick size, step size, minimum notional) from Binance ``exchangeInfo``.

Kept here, pure and small, because sizing must round exactly as the exchange will validate: Decimal, not
float, so that ``0.1 + 0.2`` never turns a valid step multiple into a rejected order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any


class ExchangeInfoError(ValueError):
    """The exchangeInfo document lacks a field sizing needs; the message names the symbol and field."""


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    symbol: str
    status: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal  # LOT_SIZE: limit orders
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal  # MARKET_LOT_SIZE: market orders (falls back to LOT_SIZE)
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal

    @classmethod
    def unfiltered(cls, symbol: str) -> SymbolFilters:
        """No exchange rules known (simulated or replayed data without a recording): round to 1e-8 only."""
        tiny, big = Decimal("0.00000001"), Decimal("1e12")
        return cls(symbol, "TRADING", tiny, Decimal(0), big, tiny, tiny, big, tiny, tiny, big, Decimal(0))


def _filter(sym: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for f in sym.get("filters", []):
        if f.get("filterType") == kind:
            return f  # type: ignore[no-any-return]
    return None


def _dec(f: Mapping[str, Any] | None, key: str, symbol: str, kind: str) -> Decimal:
    if f is None or key not in f:
        raise ExchangeInfoError(f"exchangeInfo {symbol}: {kind}.{key} missing")
    try:
        return Decimal(str(f[key]))
    except ArithmeticError as e:
        raise ExchangeInfoError(f"exchangeInfo {symbol}: {kind}.{key}={f[key]!r} is not a number") from e


def parse_exchange_info(obj: Mapping[str, Any]) -> dict[str, SymbolFilters]:
    """``{symbol: SymbolFilters}`` from an exchangeInfo answer; a symbol lacking a filter raises."""
    out: dict[str, SymbolFilters] = {}
    for sym in obj.get("symbols", []):
        name = str(sym["symbol"])
        price = _filter(sym, "PRICE_FILTER")
        lot = _filter(sym, "LOT_SIZE")
        mlot = _filter(sym, "MARKET_LOT_SIZE") or lot
        notional = _filter(sym, "MIN_NOTIONAL")
        out[name] = SymbolFilters(
            symbol=name,
            status=str(sym.get("status", "TRADING")),
            tick_size=_dec(price, "tickSize", name, "PRICE_FILTER"),
            min_price=_dec(price, "minPrice", name, "PRICE_FILTER"),
            max_price=_dec(price, "maxPrice", name, "PRICE_FILTER"),
            step_size=_dec(lot, "stepSize", name, "LOT_SIZE"),
            min_qty=_dec(lot, "minQty", name, "LOT_SIZE"),
            max_qty=_dec(lot, "maxQty", name, "LOT_SIZE"),
            market_step_size=_dec(mlot, "stepSize", name, "MARKET_LOT_SIZE"),
            market_min_qty=_dec(mlot, "minQty", name, "MARKET_LOT_SIZE"),
            market_max_qty=_dec(mlot, "maxQty", name, "MARKET_LOT_SIZE"),
            # USDT-M calls the field "notional"; spot-style documents call it "minNotional".
            min_notional=(
                Decimal(str(notional.get("notional", notional.get("minNotional", "0"))))
                if notional is not None
                else Decimal(0)
            ),
        )
    return out


def load_exchange_info_file(path: str | Path) -> dict[str, Any]:
    """A saved exchangeInfo answer: plain JSON, or a recording line ``<url> -> <time>: <json>``."""
    text = Path(path).read_text(encoding="utf-8")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if first.startswith("{"):
        data = json.loads(text)
    else:
        idx = first.find(": {")
        if idx < 0:
            raise ExchangeInfoError(f"{path}: neither JSON nor a '<url> -> <time>: <json>' recording line")
        data = json.loads(first[idx + 2 :])
    if not isinstance(data, dict) or "symbols" not in data:
        raise ExchangeInfoError(f"{path}: no 'symbols' list: not an exchangeInfo answer")
    return data
