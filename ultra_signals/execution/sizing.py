"""Position sizing: risk a fixed fraction of equity, capped by leverage, available margin and notional, rounded.

``equity`` is the account's equity *including* the unrealized PnL of open positions (a losing book sizes
smaller), and ``available`` — what the venue would still accept as initial margin — caps the notional at
``available × max_leverage``: an order the margin cannot carry is sized down (or refused,
``no_available_balance``) here instead of being rejected by Binance with -2019.

Every rounding goes the safe way: quantity always down to the step (a cap is never exceeded by rounding
up), the stop away from the entry (so the loss at the stop stays within the risk budget computed from the
rounded stop) and the take-profit towards the entry (so it stays reachable).  A size the exchange would
refuse is refused here, with a reason code, rather than sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from ultra_signals.core.decision import Side
from ultra_signals.core.instruments import SymbolFilters


@dataclass(frozen=True, slots=True)
class Sizing:
    ok: bool
    reason: str | None  # refusal code: invalid_prices, stop_too_close, below_min_qty, below_min_notional, ...
    detail: str
    qty: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    stop: Decimal = Decimal(0)
    take_profit: Decimal = Decimal(0)
    risk_usdt: float = 0.0  # loss at the (rounded) stop for ``qty``
    binding: str = ""  # which limit set the size: risk | leverage | available | max_notional | max_qty

    @property
    def notional(self) -> float:
        return float(self.qty * self.entry)


def round_to(x: Decimal, step: Decimal, rounding: str) -> Decimal:
    """``x`` to a multiple of ``step`` (Decimal, exact), with the given rounding mode."""
    if step <= 0:
        return x
    return (x / step).to_integral_value(rounding=rounding) * step


def _refuse(reason: str, detail: str) -> Sizing:
    return Sizing(False, reason, detail)


def size_order(
    *,
    side: Side,
    equity: float,
    entry: float,
    stop: float,
    take_profit: float,
    filters: SymbolFilters,
    risk_fraction: float,
    max_leverage: float,
    max_notional: float,
    market: bool = True,
    available: float | None = None,
) -> Sizing:
    """Quantity and exchange-valid prices for one entry, or a refusal with its reason.

    ``available``: free margin (USDT); None when the caller has no such figure (the size is then capped by
    equity × leverage only).
    """
    if filters.status != "TRADING":
        return _refuse("symbol_not_trading", f"{filters.symbol} status is {filters.status}")
    if available is not None and available <= 0 and equity > 0:
        return _refuse("no_available_balance", f"available balance {available:.2f} USDT: no margin for an entry")
    if not (equity > 0 and entry > 0 and stop > 0 and take_profit > 0):
        return _refuse("invalid_prices", f"equity={equity} entry={entry} stop={stop} tp={take_profit}")
    long = side is Side.LONG
    if (long and not stop < entry < take_profit) or (not long and not take_profit < entry < stop):
        got = f"{stop}/{entry}/{take_profit}"
        return _refuse("invalid_prices", f"{side.value}: stop/entry/target out of order: {got}")
    tick = filters.tick_size
    e = round_to(Decimal(str(entry)), tick, ROUND_HALF_EVEN)
    s = round_to(Decimal(str(stop)), tick, ROUND_FLOOR if long else ROUND_CEILING)
    tp = round_to(Decimal(str(take_profit)), tick, ROUND_FLOOR if long else ROUND_CEILING)
    if (long and not s < e < tp) or (not long and not tp < e < s):
        return _refuse("stop_too_close", f"stop or target within one tick ({tick}) of entry {e}")
    if s < filters.min_price or tp < filters.min_price or max(e, s, tp) > filters.max_price:
        return _refuse("price_out_of_range", f"prices outside [{filters.min_price}, {filters.max_price}]")
    dist = abs(e - s)
    risk = Decimal(str(equity)) * Decimal(str(risk_fraction))
    step = filters.market_step_size if market else filters.step_size
    min_qty = filters.market_min_qty if market else filters.min_qty
    max_qty = filters.market_max_qty if market else filters.max_qty
    limits = {
        "risk": risk / dist,
        "leverage": Decimal(str(equity)) * Decimal(str(max_leverage)) / e,
        "max_notional": Decimal(str(max_notional)) / e,
        "max_qty": max_qty,
    }
    if available is not None:
        limits["available"] = Decimal(str(available)) * Decimal(str(max_leverage)) / e
    binding = min(limits, key=lambda k: limits[k])
    qty = round_to(limits[binding], step, ROUND_FLOOR)
    if qty < min_qty or qty <= 0:
        return _refuse(
            "below_min_qty", f"{binding} allows {limits[binding]:.8f} {filters.symbol}, minimum is {min_qty}"
        )
    if qty * e < filters.min_notional:
        return _refuse("below_min_notional", f"notional {qty * e:.4f} USDT below the minimum {filters.min_notional}")
    return Sizing(
        True,
        None,
        f"{qty} @ {e} (stop {s}, tp {tp}), risk {float(qty * dist):.2f} USDT, bound by {binding}",
        qty=qty,
        entry=e,
        stop=s,
        take_profit=tp,
        risk_usdt=float(qty * dist),
        binding=binding,
    )
