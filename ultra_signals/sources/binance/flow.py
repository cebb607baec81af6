"""Taker flow per bar and cumulative volume delta (CVD) from the trade stream.

Binance's ``m`` flag says the buyer was the maker, i.e. the *taker sold*; flow is signed by the taker
because the taker is the side that moved price.  Bars are keyed by open time of one timeframe so the flow
lines up with the klines the pipeline decides on; memory is bounded to the last ``keep`` bars per symbol.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ultra_signals.core.events import Trade
from ultra_signals.core.timeframes import tf_ms


@dataclass(slots=True)
class FlowBar:
    symbol: str
    open_time: int
    taker_buy_qty: float = 0.0
    taker_sell_qty: float = 0.0
    taker_buy_usdt: float = 0.0
    taker_sell_usdt: float = 0.0
    trades: int = 0
    cvd: float = 0.0  # cumulative (buy - sell) quantity since the tracker started, up to this bar's last trade

    @property
    def delta(self) -> float:
        return self.taker_buy_qty - self.taker_sell_qty


class FlowTracker:
    def __init__(self, timeframe: str, keep: int = 500) -> None:
        self.timeframe = timeframe
        self._len = tf_ms(timeframe)
        self._keep = keep
        self._bars: dict[str, OrderedDict[int, FlowBar]] = {}
        self._cvd: dict[str, float] = {}

    def add(self, t: Trade) -> None:
        bars = self._bars.setdefault(t.symbol, OrderedDict())
        open_time = t.ts - t.ts % self._len
        bar = bars.get(open_time)
        if bar is None:
            if bars and open_time < next(iter(bars)):
                return  # older than anything kept: too late to matter
            newest = next(reversed(bars)) if bars else None
            bar = bars[open_time] = FlowBar(t.symbol, open_time)
            if newest is not None and open_time < newest:  # a late trade opened a missing bar: keep order
                ordered = sorted(bars.items())
                bars.clear()
                bars.update(ordered)
            while len(bars) > self._keep:
                bars.popitem(last=False)
        signed = -t.qty if t.buyer_is_maker else t.qty
        if t.buyer_is_maker:
            bar.taker_sell_qty += t.qty
            bar.taker_sell_usdt += t.qty * t.price
        else:
            bar.taker_buy_qty += t.qty
            bar.taker_buy_usdt += t.qty * t.price
        bar.trades += 1
        cvd = self._cvd[t.symbol] = self._cvd.get(t.symbol, 0.0) + signed
        bar.cvd = cvd

    def bar(self, symbol: str, open_time: int) -> FlowBar | None:
        return self._bars.get(symbol, OrderedDict()).get(open_time)

    def cvd(self, symbol: str) -> float:
        return self._cvd.get(symbol, 0.0)
