"""Exchange trading rules per symbol (tick size, step size, minimum notional) from Binance ``exchangeInfo``.

One home for both readers of the document: the market-data source checks that configured symbols exist and
trade, and execution sizes orders so they round exactly as the exchange will validate.  Decimal, not float,
so that ``0.1 + 0.2`` never turns a valid step multiple into a rejected order.  Pure: no I/O, so either
adapter can import it without depending on the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class ExchangeInfoError(ValueError):
    """The exchangeInfo document is malformed or lacks a rule; the message names the symbol and field."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolFilters:
    """Trading rules of one symbol, as exact decimals (orders are rounded to these)."""

    symbol: str
    status: str
    contract_type: str
    base_asset: str
    quote_asset: str
    price_precision: int
    quantity_precision: int
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
    onboard_ms: int = 0  # listing time (``onboardDate``); 0 when the document does not say
    delivery_ms: int = 0  # ``deliveryDate``: far in the future for a perpetual, near once a delisting is announced

    @property
    def trading(self) -> bool:
        return self.status == "TRADING"

    @classmethod
    def unfiltered(cls, symbol: str) -> SymbolFilters:
        """No exchange rules known (simulated or replayed data without a recording): round to 1e-8 only."""
        tiny, big = Decimal("0.00000001"), Decimal("1e12")
        return cls(
            symbol=symbol,
            status="TRADING",
            contract_type="",
            base_asset="",
            quote_asset="",
            price_precision=8,
            quantity_precision=8,
            tick_size=tiny,
            min_price=Decimal(0),
            max_price=big,
            step_size=tiny,
            min_qty=tiny,
            max_qty=big,
            market_step_size=tiny,
            market_min_qty=tiny,
            market_max_qty=big,
            min_notional=Decimal(0),
        )


def _filter(filters: list[Any], kind: str) -> Mapping[str, Any] | None:
    for f in filters:
        if isinstance(f, Mapping) and f.get("filterType") == kind:
            return f
    return None


def _dec(v: Any, symbol: str, field: str) -> Decimal:
    """A non-negative finite decimal; a negative, infinite or non-numeric rule would make every order wrong."""
    try:
        d = Decimal(str(v))
    except ArithmeticError:
        raise ExchangeInfoError(f"exchangeInfo {symbol}: {field}={v!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise ExchangeInfoError(f"exchangeInfo {symbol}: {field}={v!r} is out of range (finite, >= 0)")
    return d


def _rule(f: Mapping[str, Any] | None, key: str, symbol: str, kind: str) -> Decimal:
    if f is None or key not in f:
        raise ExchangeInfoError(f"exchangeInfo {symbol}: {kind}.{key} missing")
    return _dec(f[key], symbol, f"{kind}.{key}")


def _int(sym: Mapping[str, Any], key: str, symbol: str) -> int:
    v = sym.get(key, 0)
    if isinstance(v, bool):
        raise ExchangeInfoError(f"exchangeInfo {symbol}: {key}={v!r} is not an integer")
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ExchangeInfoError(f"exchangeInfo {symbol}: {key}={v!r} is not an integer") from None


def parse_exchange_info(obj: Any) -> dict[str, SymbolFilters]:
    """``/fapi/v1/exchangeInfo`` → ``{symbol: SymbolFilters}``; :class:`ExchangeInfoError` names symbol and field."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("symbols"), list):
        raise ExchangeInfoError("exchangeInfo: expected an object with a 'symbols' list")
    out: dict[str, SymbolFilters] = {}
    for sym in obj["symbols"]:
        if not isinstance(sym, Mapping) or not isinstance(sym.get("symbol"), str):
            raise ExchangeInfoError(f"exchangeInfo: bad symbol entry {sym!r}"[:200])
        name = sym["symbol"]
        filters = sym.get("filters", [])
        if not isinstance(filters, list):
            raise ExchangeInfoError(f"exchangeInfo {name}: filters={filters!r} is not a list"[:200])
        price = _filter(filters, "PRICE_FILTER")
        lot = _filter(filters, "LOT_SIZE")
        mlot = _filter(filters, "MARKET_LOT_SIZE") or lot
        notional = _filter(filters, "MIN_NOTIONAL")
        # USDT-M calls the field "notional"; spot-style documents call it "minNotional".
        nkey = "notional" if notional is None or "notional" in notional else "minNotional"
        min_notional = _dec(notional.get(nkey, "0"), name, f"MIN_NOTIONAL.{nkey}") if notional else Decimal(0)
        out[name] = SymbolFilters(
            symbol=name,
            # No status means we cannot tell it trades: treat it as not trading.
            status=str(sym.get("status", "")),
            contract_type=str(sym.get("contractType", "")),
            base_asset=str(sym.get("baseAsset", "")),
            quote_asset=str(sym.get("quoteAsset", "")),
            price_precision=_int(sym, "pricePrecision", name),
            quantity_precision=_int(sym, "quantityPrecision", name),
            tick_size=_rule(price, "tickSize", name, "PRICE_FILTER"),
            min_price=_rule(price, "minPrice", name, "PRICE_FILTER"),
            max_price=_rule(price, "maxPrice", name, "PRICE_FILTER"),
            step_size=_rule(lot, "stepSize", name, "LOT_SIZE"),
            min_qty=_rule(lot, "minQty", name, "LOT_SIZE"),
            max_qty=_rule(lot, "maxQty", name, "LOT_SIZE"),
            market_step_size=_rule(mlot, "stepSize", name, "MARKET_LOT_SIZE"),
            market_min_qty=_rule(mlot, "minQty", name, "MARKET_LOT_SIZE"),
            market_max_qty=_rule(mlot, "maxQty", name, "MARKET_LOT_SIZE"),
            min_notional=min_notional,
            onboard_ms=_int(sym, "onboardDate", name),
            delivery_ms=_int(sym, "deliveryDate", name),
        )
    return out
