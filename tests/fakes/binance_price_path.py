"""One price path from a real recording that drives both sides of the strict futures fake.

The market-data side (``kline_1m``, ``aggTrade``, ``markPrice@1s`` on ``/market``; ``bookTicker`` on ``/public``;
REST ``/fapi/v1/klines`` for warm-up) and the trading side (:meth:`FakeFuturesExchange.set_price`, which fills
market orders and triggers algo orders) read the same price at the same instant, so a stop placed by the runner
triggers exactly when the market the runner watches crosses it.

How the recording becomes a path (test data shaped from real bars, not a market):

* Recorded bars are replayed one per wall-clock minute as ``1m`` bars: the first ``history`` bars are already
  closed when :meth:`PricePath.start` is called (REST warm-up), the next one is the minute in progress.
* Inside a minute the price walks open → low → high → close (high first when the bar closed down), piecewise
  linear, with anchors at 0 %, 30 %, 60 % and 90 % of the minute, on the symbol's tick grid. A closed kline
  carries the bar's recorded open, high, low, close and volume (scaled, see below) merged with any tick the path
  emitted during the minute, so the stream and REST agree with what the trading side saw.
* Each bar is scaled so it opens at the price the previous one closed (``k = last / recorded open``): the path
  stays continuous; for consecutive recorded bars ``k`` stays about 1.
* Once a position is open on the fake with both brackets resting (a ``STOP_MARKET`` and a
  ``TAKE_PROFIT_MARKET`` algo order), the path goes fast: it looks for the first stretch of the recording after
  the current bar whose relative moves, scaled to start at the current price, reach the stop's trigger before the
  take-profit's, and plays that stretch's points (four per recorded bar) every ``fast_tick_s`` seconds. The stop
  then triggers from real recorded moves within seconds instead of hours. Afterwards bars resume one per minute
  from where the stretch ended.

Nothing here reads the network; every loop is bounded by :meth:`stop` or by the recording's length.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from tests.fakes.binance_futures_server import FakeFuturesExchange

MINUTE_MS = 60_000
ANCHORS = (0.0, 0.3, 0.6, 0.9)  # fractions of the minute where the four points of a bar are reached
FUNDING_RATE = "0.00010000"


@dataclass(frozen=True, slots=True)
class RecordedBar:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def points(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """The usual OHLC walk: a bar that closed up went down first, one that closed down went up first."""
        if self.close >= self.open:
            return (self.open, self.low, self.high, self.close)
        return (self.open, self.high, self.low, self.close)


def read_bars(path: Path) -> list[RecordedBar]:
    """A candle CSV of ``../shared/data/klines`` (open_time, open, high, low, close, volume), in order."""
    with path.open(newline="", encoding="utf-8") as f:
        return [
            RecordedBar(
                Decimal(r["open"]), Decimal(r["high"]), Decimal(r["low"]), Decimal(r["close"]), Decimal(r["volume"])
            )
            for r in csv.DictReader(f)
        ]


@dataclass(slots=True)
class _Live:
    """The minute in progress: its recorded bar (scaled) and what the path emitted in it."""

    open_ms: int
    points: tuple[Decimal, ...]
    o: Decimal
    h: Decimal
    low: Decimal
    c: Decimal
    volume: Decimal
    trades: int = 0


class PricePath:
    def __init__(
        self,
        ex: FakeFuturesExchange,
        symbol: str,
        bars: list[RecordedBar],
        *,
        history: int = 210,
        tick_s: float = 0.5,
        fast_tick_s: float = 0.1,
        max_stretch_bars: int = 240,
    ) -> None:
        if len(bars) <= history + 1:
            raise ValueError(f"{len(bars)} recorded bars: need more than history={history} + 1")
        self.ex = ex
        self.symbol = symbol
        self.stream_prefix = symbol.lower()
        self.bars = bars
        self.history = history
        self.tick_s = tick_s
        self.fast_tick_s = fast_tick_s
        self.max_stretch_bars = max_stretch_bars
        self.tick = ex.filters[symbol].tick_size
        self.next_index = history
        self.k = Decimal(1)
        self.last = bars[history - 1].close
        self.live: _Live | None = None
        self.rows: list[list[Any]] = []  # closed 1m kline rows, REST layout, oldest first
        self.fast: list[Decimal] = []  # points still to play quickly
        #: Every stretch played fast: (first recorded bar index, bars, the stop trigger it reached).
        self.stretches: list[tuple[int, int, Decimal]] = []
        self.closed_bars_published = 0
        self._armed_for: tuple[int, ...] = ()  # algo ids of the brackets a stretch was already played for
        self._trade_id = 700_000_001
        self._book_id = 900_000_001
        self._last_mark_s = 0
        self._task: asyncio.Task[None] | None = None
        self._after_stretch = False  # a stretch started in the minute in progress
        self._base_volume = Decimal(0)

    # -- lifecycle ------
    async def start(self) -> None:
        """Lay the history as closed bars ending at the last whole minute, open the minute in progress, run."""
        now = self.ex.now_ms()
        minute = now - now % MINUTE_MS
        first = minute - self.history * MINUTE_MS
        for i, bar in enumerate(self.bars[: self.history]):
            t = first + i * MINUTE_MS
            self.rows.append(self._row(t, bar.open, bar.high, bar.low, bar.close, bar.volume, 0))
        self._open_bar(minute)
        await self._emit(self._normal_price(now), now)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the loop ------
    async def _run(self) -> None:
        while True:
            fast = bool(self.fast)
            await asyncio.sleep(self.fast_tick_s if fast else self.tick_s - (time.time() % self.tick_s))
            now = self.ex.now_ms()
            live = self.live
            assert live is not None
            if now - now % MINUTE_MS != live.open_ms:
                await self._close_bar(now)
                self._open_bar(now - now % MINUTE_MS)
            self._maybe_go_fast()
            price = self.fast.pop(0) if self.fast else self._normal_price(now)
            await self._emit(price, now)

    def _open_bar(self, open_ms: int) -> None:
        bar = self.bars[self.next_index % len(self.bars)]
        self.next_index += 1
        self.k = self.last / bar.open
        pts = tuple(self._round(p * self.k) for p in bar.points())
        self.live = _Live(open_ms, pts, pts[0], pts[0], pts[0], pts[0], Decimal(0))
        self._base_volume = bar.volume

    def _normal_price(self, now: int) -> Decimal:
        """The bar's walk at this instant, on the tick grid (the last emitted price while a stretch is done)."""
        live = self.live
        assert live is not None
        if self._after_stretch:  # a stretch was played in this minute: hold its last price until the minute ends
            return live.c
        frac = (now - live.open_ms) / MINUTE_MS
        pts = live.points
        for i in range(len(ANCHORS) - 1):
            a, b = ANCHORS[i], ANCHORS[i + 1]
            if frac <= b:
                w = Decimal(str(max(0.0, (frac - a) / (b - a))))
                return self._round(pts[i] + (pts[i + 1] - pts[i]) * w)
        return pts[-1]

    async def _close_bar(self, now: int) -> None:
        """The minute is over: its kline closes (stream ``x: true``, and REST from now on)."""
        live = self.live
        assert live is not None
        if not self._after_stretch:
            # The bar ran its whole minute even if a tick came late: every anchor belongs to it.
            live.h = max(live.h, *live.points)
            live.low = min(live.low, *live.points)
            live.c = live.points[-1]
        self._after_stretch = False
        volume = max(live.volume, self._base_volume)
        row = self._row(live.open_ms, live.o, live.h, live.low, live.c, volume, live.trades)
        self.rows.append(row)
        self._store_rows(None)
        await self.ex.publish_market(f"{self.stream_prefix}@kline_1m", self._kline_event(row, True, now))
        self.closed_bars_published += 1
        self.last = live.c
        if self.ex.prices.get(self.symbol) != live.c:
            await self.ex.set_price(self.symbol, live.c)

    def _maybe_go_fast(self) -> None:
        """Position open with both brackets resting: play the first recorded stretch that reaches the stop."""
        if self.fast or self.ex.position(self.symbol) == 0:
            return
        algos = self.ex.open_algo_orders(self.symbol)
        stops = [a for a in algos if a.type == "STOP_MARKET"]
        tps = [a for a in algos if a.type == "TAKE_PROFIT_MARKET"]
        ids = tuple(sorted(a.algo_id for a in algos))
        if not stops or not tps or ids == self._armed_for:
            return
        self._armed_for = ids
        long = self.ex.position(self.symbol) > 0
        stop, tp = stops[0].trigger, tps[0].trigger
        cur = self.ex.prices[self.symbol]
        n = len(self.bars)
        for j in range(self.next_index, self.next_index + n):
            k = cur / self.bars[j % n].open
            out: list[Decimal] = []
            for m in range(self.max_stretch_bars):
                for p in self.bars[(j + m) % n].points():
                    x = self._round(p * k)
                    out.append(x)
                    if (long and x >= tp) or (not long and x <= tp):
                        break
                    if (long and x <= stop) or (not long and x >= stop):
                        self.fast = out + out[-1:] * 3  # a few more ticks at the trigger's far side
                        self.stretches.append((j % n, m + 1, stop))
                        self.next_index = j + m + 1
                        self._after_stretch = True
                        return
                else:
                    continue
                break

    # -- what goes out ------
    async def _emit(self, price: Decimal, now: int) -> None:
        live = self.live
        assert live is not None
        prev = self.ex.prices.get(self.symbol)
        qty = self._qty()
        live.h, live.low, live.c = max(live.h, price), min(live.low, price), price
        live.volume += qty
        live.trades += 1
        # Inside the minute, every anchor already passed belongs to the bar (the path may have started late).
        frac = (now - live.open_ms) / MINUTE_MS
        if not self._after_stretch:
            for a, p in zip(ANCHORS, live.points, strict=True):
                if a <= frac:
                    live.h, live.low = max(live.h, p), min(live.low, p)
        await self.ex.set_price(self.symbol, price)
        self._trade_id += 1
        sym = self.symbol
        s = self.stream_prefix
        await self.ex.publish_market(
            f"{s}@aggTrade",
            {"e": "aggTrade", "E": now, "a": self._trade_id, "s": sym, "p": str(price), "q": str(qty),
             "f": self._trade_id, "l": self._trade_id, "T": now, "m": prev is not None and price < prev},
        )  # fmt: skip
        self._book_id += 1
        await self.ex.publish_market(
            f"{s}@bookTicker",
            {"e": "bookTicker", "u": self._book_id, "E": now, "T": now, "s": sym, "b": str(price - self.tick),
             "B": "25000.0", "a": str(price + self.tick), "A": "25000.0"},
        )  # fmt: skip
        if now // 1000 != self._last_mark_s:
            self._last_mark_s = now // 1000
            funding = (now // (8 * 3_600_000) + 1) * 8 * 3_600_000
            await self.ex.publish_market(
                f"{s}@markPrice@1s",
                {"e": "markPriceUpdate", "E": now, "s": sym, "p": str(price), "i": str(price), "P": str(price),
                 "r": FUNDING_RATE, "T": funding},
            )  # fmt: skip
        row = self._row(live.open_ms, live.o, live.h, live.low, live.c, live.volume, live.trades)
        self._store_rows(row)
        await self.ex.publish_market(f"{s}@kline_1m", self._kline_event(row, False, now))

    def _store_rows(self, forming: list[Any] | None) -> None:
        """REST answers every closed bar and, like Binance, the one still forming."""
        self.ex.klines[(self.symbol, "1m")] = [*self.rows, forming] if forming is not None else list(self.rows)

    def _qty(self) -> Decimal:
        per_tick = self._base_volume / Decimal(int(MINUTE_MS / 1000 / self.tick_s))
        return max(Decimal("0.1"), per_tick.quantize(Decimal("0.1")))

    def _round(self, p: Decimal) -> Decimal:
        return (p / self.tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * self.tick

    @staticmethod
    def _row(t: int, o: Decimal, h: Decimal, low: Decimal, c: Decimal, v: Decimal, n: int) -> list[Any]:
        quote = (v * c).quantize(Decimal("0.0001"))
        return [t, str(o), str(h), str(low), str(c), str(v), t + MINUTE_MS - 1, str(quote), n, "0", "0", "0"]

    def _kline_event(self, row: list[Any], closed: bool, now: int) -> dict[str, Any]:
        k = {
            "t": row[0], "T": row[6], "s": self.symbol, "i": "1m", "f": 0, "L": 0, "o": row[1], "c": row[4],
            "h": row[2], "l": row[3], "v": row[5], "n": row[8], "x": closed, "q": row[7], "V": row[9],
            "Q": row[10], "B": "0",
        }  # fmt: skip
        return {"e": "kline", "E": now, "s": self.symbol, "k": k}
