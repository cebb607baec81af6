"""A seeded market simulator: SIMULATED 1m bars, trades, book tickers and funding for any symbols.

Why a simulator at all: the service must be exercised end to end (caps, cooldowns, MTF confirmation, the
journal, metrics) without an exchange, and the run must be repeatable bit for bit from a seed.  It is not a
forecast of anything; everything it produces is labelled SIMULATED (``info.simulated``).

The model, per minute (all in log returns):

- a market factor ``e`` with GARCH(1,1) variance (volatility clusters; a jump feeds the next minutes'
  variance, as after a liquidation cascade) and rare jumps;
- the first symbol *is* the market factor; every other symbol is ``corr · e + sqrt(1 - corr²) · own shock``
  scaled by a larger volatility multiplier, so its correlation with the first symbol is about
  ``settings.correlation`` (a little lower: drift, jumps and mean reversion are not all shared);
- market regimes with persistent durations (tens to hundreds of minutes): *trending* up or down (a drift of a
  fraction of the minute volatility) and *ranging* (each price is pulled back to where the range began), so
  within a two-hour run trend filters and multi-timeframe confirmation both pass and fail;
- OHLC inside each minute: open = previous close, high/low beyond the body by a half-normal excursion,
  prices on a tick grid of six significant digits; volume rises with volatility and with |return|.

1m bars are aggregated into every configured timeframe by the bar aggregation module (its batch form, bit
for bit the same as :class:`~ultra_signals.features.aggregation.BarAggregator`), as the live feed's bars are.  Trades
(``ticks_per_bar`` per minute, the first at the open, the last at the close, touching the high and the low)
and a book ticker before each trade (and, once a minute, a depth summary derived from the touch: ``_depth``) are
produced inside the *run window* only: warm-up exists to warm bar
indicators, and a day of ticks the runner must skip would only slow it.  Funding comes at 00:00, 08:00 and
16:00 UTC, warm-up included.

Numbers are drawn with numpy per chunk of a day (vectorised); only the recursions (GARCH, mean reversion)
step minute by minute in plain Python floats.  Ticks draw from their own stream, so the bars of a seed do
not depend on ``ticks_per_bar``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ultra_signals.core.config import SimSettings
from ultra_signals.core.events import BookDepth, BookTicker, Funding, Kline, MarketEvent, Trade
from ultra_signals.core.timeframes import sort_timeframes, tf_ms
from ultra_signals.features.aggregation import aggregate_arrays, window_start
from ultra_signals.sources.base import SourceError, SourceInfo
from ultra_signals.sources.candles_csv import CandleWriter

MINUTE_MS = 60_000
FUNDING_MS = 8 * 3_600_000
#: Minutes generated per numpy chunk.  Part of the model: changing it changes the paths of a seed.
CHUNK_MINUTES = 1440

# GARCH(1,1) on the market factor: persistence alpha + beta = 0.98, a volatility half-life of ~35 minutes.
_GARCH_ALPHA = 0.08
_GARCH_BETA = 0.90
_MAX_VAR_MULT = 36.0  # variance never above (6 × base_vol)²: a jump must not make the market explode
_JUMP_SCALE = 8.0  # jump size, in current standard deviations
# Regimes: lognormal durations (median, sigma, clip) in minutes; trend drift as a fraction of base_vol.
_TREND_DURATION = (70.0, 0.6, 20, 360)
_RANGE_DURATION = (90.0, 0.6, 20, 480)
_TREND_DRIFT = (0.12, 0.35)
_TREND_AFTER_TREND = 0.35  # a trend is followed by the opposite trend this often, else by a range
_RANGE_KAPPA = 0.04  # pull back to the range's anchor per minute (half-life ~17 minutes)
_WICK = 0.5  # high/low excursion beyond the body, in minute standard deviations (half-normal)
_NOTIONAL_PER_MINUTE = 2.5e6  # USDT traded in a calm minute, whatever the symbol's price
_TRADE_NOTIONAL = 2500.0  # average USDT per trade (for the bar's trade count)
_SPREAD_BPS = 1.5  # book spread in a calm minute; widens with volatility


def parse_start(text: str) -> int:
    """``settings.start`` (ISO 8601; naive means UTC) as epoch ms, which must fall on a whole minute."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise SourceError(f"sim.start {text!r} is not an ISO 8601 time such as 2026-01-05T00:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = int(dt.timestamp() * 1000)
    if ms % MINUTE_MS:
        raise SourceError(f"sim.start {text!r} must fall on a whole minute")
    return ms


def _decimals(price: float) -> int:
    """Price decimals giving six significant digits (BTC at 60000 → 0.1 tick, ETH at 3000 → 0.01)."""
    return max(0, 5 - math.floor(math.log10(price)))


@dataclass(slots=True)
class MinuteChunk:
    """One chunk of generated minutes: arrays shaped (minutes, symbols), plus per-minute market arrays."""

    open_time: npt.NDArray[np.int64]  # (n,)
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]
    taker: npt.NDArray[np.float64]
    trades: npt.NDArray[np.int64]
    sigma: npt.NDArray[np.float64]  # per-minute standard deviation of each symbol's return
    regime: npt.NDArray[np.int8]  # (n,): +1 trending up, -1 trending down, 0 ranging


class MarketModel:
    """The model's state across chunks; :meth:`chunk` generates the next ``n`` minutes."""

    def __init__(self, settings: SimSettings, symbols: Sequence[str], start_ms: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64(settings.seed))
        # Funding draws from its own stream so the bars do not depend on how many funding times a run spans.
        self.rng_funding = np.random.Generator(np.random.PCG64(np.random.SeedSequence(settings.seed, spawn_key=(2,))))
        self.s = settings
        self.nsym = len(symbols)
        self.p0 = np.array([settings.start_prices.get(s, 100.0) for s in symbols], dtype=np.float64)
        if np.any(self.p0 <= 0):
            raise SourceError("sim.start_prices must all be positive")
        self.decimals = [_decimals(p) for p in self.p0.tolist()]
        # Each symbol beyond the first (the market) is more volatile, as alts are against BTC.
        self.vol_mult = np.array([1.0] + [min(2.0, 1.3 + 0.2 * (i - 1)) for i in range(1, self.nsym)])
        self.units = _NOTIONAL_PER_MINUTE / self.p0  # base-asset volume of a calm minute
        self.next_open = start_ms
        self.x = [0.0] * self.nsym  # log price relative to the start price
        self.anchor = [0.0] * self.nsym
        self.last_close = self.p0.copy()
        self.var = settings.base_vol**2
        self.e2 = self.var
        self.regime = 0
        self.regime_left = 0
        self.drift = 0.0

    def _regimes(self, n: int) -> tuple[list[int], list[float], list[bool]]:
        """Regime kind, drift and "a regime starts here" per minute (durations persist across chunks)."""
        rng, base = self.rng, self.s.base_vol
        kinds: list[int] = []
        drifts: list[float] = []
        starts: list[bool] = []
        while len(kinds) < n:
            if self.regime_left == 0:
                if self.regime == 0:
                    self.regime = 1 if rng.random() < 0.5 else -1
                elif rng.random() < _TREND_AFTER_TREND:
                    self.regime = -self.regime
                else:
                    self.regime = 0
                median, sigma, lo, hi = _TREND_DURATION if self.regime else _RANGE_DURATION
                self.regime_left = int(np.clip(round(median * math.exp(sigma * rng.standard_normal())), lo, hi))
                self.drift = self.regime * base * rng.uniform(*_TREND_DRIFT)
                starts.append(True)
            else:
                starts.append(False)
            take = min(self.regime_left, n - len(kinds))
            kinds.extend([self.regime] * take)
            drifts.extend([self.drift] * take)
            starts.extend([False] * (take - 1))
            self.regime_left -= take
        return kinds, drifts, starts

    def chunk(self, n: int) -> MinuteChunk:
        s, rng, nsym = self.s, self.rng, self.nsym
        base_var = s.base_vol**2
        # Every draw of the chunk, in a fixed order (the seed's reproducibility depends on it).
        z_market = rng.standard_normal(n)
        z_own = rng.standard_normal((n, nsym))
        jump_market = (rng.random(n) < s.jump_prob) * rng.standard_normal(n)
        jump_own = (rng.random((n, nsym)) < s.jump_prob / 2) * rng.standard_normal((n, nsym))
        wick = np.abs(rng.standard_normal((n, nsym, 2))) * _WICK
        vol_noise = rng.lognormal(0.0, 0.35, (n, nsym))
        taker_noise = rng.normal(0.0, 0.05, (n, nsym))
        kinds, drifts, starts = self._regimes(n)

        # GARCH(1,1) on the market factor: a recursion, so plain floats step by step.
        omega = base_var * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
        cap = base_var * _MAX_VAR_MULT
        var, e2 = self.var, self.e2
        sig = [0.0] * n
        eps = [0.0] * n
        for t, (z, j) in enumerate(zip(z_market.tolist(), jump_market.tolist(), strict=True)):
            var = min(omega + _GARCH_ALPHA * e2 + _GARCH_BETA * var, cap)
            sd = math.sqrt(var)
            e = sd * (z + _JUMP_SCALE * j)
            e2 = e * e
            sig[t] = sd
            eps[t] = e
        self.var, self.e2 = var, e2
        sd_m = np.array(sig)
        e_m = np.array(eps)
        drift = np.array(drifts)

        rho = s.correlation
        shock = np.empty((n, nsym))
        shock[:, 0] = e_m
        if nsym > 1:
            own = sd_m[:, None] * (z_own[:, 1:] + _JUMP_SCALE * jump_own[:, 1:])
            shock[:, 1:] = rho * e_m[:, None] + math.sqrt(1.0 - rho * rho) * own
        returns = (shock + drift[:, None]) * self.vol_mult
        sigma = sd_m[:, None] * self.vol_mult

        # Ranging regimes pull each log price back toward where the range began (another recursion).
        logp = np.empty((n, nsym))
        kappa = [0.0 if k else _RANGE_KAPPA for k in kinds]
        for i in range(nsym):
            x, a = self.x[i], self.anchor[i]
            col = [0.0] * n
            for t, (r, k, st) in enumerate(zip(returns[:, i].tolist(), kappa, starts, strict=True)):
                if st:
                    a = x
                x += r - k * (x - a)
                col[t] = x
            logp[:, i] = col
            self.x[i], self.anchor[i] = x, a

        close = self.p0 * np.exp(logp)
        for i, d in enumerate(self.decimals):
            close[:, i] = np.round(close[:, i], d)
        open_ = np.empty_like(close)
        open_[0] = self.last_close
        open_[1:] = close[:-1]
        self.last_close = close[-1].copy()
        body_hi = np.maximum(open_, close)
        body_lo = np.minimum(open_, close)
        high = body_hi * np.exp(wick[:, :, 0] * sigma)
        low = body_lo * np.exp(-wick[:, :, 1] * sigma)
        for i, d in enumerate(self.decimals):
            high[:, i] = np.round(high[:, i], d)
            low[:, i] = np.round(low[:, i], d)
        high = np.maximum(high, body_hi)  # rounding must not cut into the body
        low = np.minimum(low, body_lo)

        # Volume: more when volatile and when the minute moved a lot (|return| in its own sigmas).
        move = np.abs(returns) / sigma
        volume = np.round(self.units * (sd_m[:, None] / s.base_vol) ** 0.8 * (0.6 + 0.5 * move) * vol_noise, 3)
        volume = np.maximum(volume, 0.001)
        buy_share = np.clip(0.5 + 0.25 * np.tanh(returns / sigma) + taker_noise, 0.05, 0.95)
        taker = np.minimum(np.round(volume * buy_share, 3), volume)
        trades = np.maximum(1, np.rint(volume * close / _TRADE_NOTIONAL)).astype(np.int64)

        open_time = self.next_open + MINUTE_MS * np.arange(n, dtype=np.int64)
        self.next_open += n * MINUTE_MS
        return MinuteChunk(
            open_time, open_, high, low, close, volume, taker, trades, sigma, np.array(kinds, dtype=np.int8)
        )


class SimSource:
    """A :class:`~ultra_signals.sources.base.MarketSource` over the simulated market (see the module doc).

    The run window starts at ``settings.start`` and lasts ``duration_minutes``; before it comes
    ``warmup_bars`` bars of the coarsest timeframe of 1m history (bars closing before the start).
    """

    def __init__(
        self,
        settings: SimSettings,
        symbols: Sequence[str],
        timeframes: Sequence[str],
        duration_minutes: int,
        warmup_bars: int,
    ) -> None:
        if not symbols:
            raise SourceError("sim needs at least one symbol")
        if duration_minutes <= 0:
            raise SourceError(f"sim duration must be at least one minute (got {duration_minutes})")
        if warmup_bars < 0:
            raise SourceError(f"warmup_bars must be >= 0 (got {warmup_bars})")
        try:
            tfs = sort_timeframes(list(timeframes))
        except ValueError as e:
            raise SourceError(str(e)) from None
        if not tfs:
            raise SourceError("sim needs at least one timeframe")
        for tf in tfs:
            try:
                length = tf_ms(tf)
            except ValueError as e:
                raise SourceError(str(e)) from None
            if length % MINUTE_MS:
                raise SourceError(f"timeframe {tf} is not a whole number of minutes")
        self.settings = settings
        self.symbols = list(dict.fromkeys(symbols))
        self.timeframes = tfs
        self._start = parse_start(settings.start)
        self._end = self._start + duration_minutes * MINUTE_MS
        coarsest = tf_ms(tfs[-1])
        # History begins warmup_bars whole coarsest windows before the window holding the start.
        self.history_start = window_start(self._start, coarsest) - warmup_bars * coarsest
        self._closed = False
        #: Wall time (s) this source produced the event last yielded: the start of tick-to-decision.
        self.received_at: float | None = None
        self._info = SourceInfo(
            name="sim",
            simulated=True,
            symbols=list(self.symbols),
            timeframes=list(tfs),
            historical=True,
            notices=[
                f"SIMULATED market (seed {settings.seed}): generated prices, not exchange data",
                "simulated trades and book tickers are produced in the run window only",
            ],
        )

    @property
    def info(self) -> SourceInfo:
        return self._info

    async def open(self) -> None:
        return None  # the window is fixed by the files / settings: nothing to learn

    @property
    def run_start_ms(self) -> int:
        return self._start

    @property
    def run_end_ms(self) -> int:
        return self._end

    def iter_events(self) -> Iterator[MarketEvent]:
        """The whole stream, synchronously, chunk by chunk (memory stays bounded for long runs)."""
        for batch in self._batches():
            yield from batch

    async def events(self) -> AsyncIterator[MarketEvent]:
        for batch in self._batches():
            if self._closed:
                return
            await asyncio.sleep(0)  # let the runner's other tasks (metrics, health) breathe between chunks
            for ev in batch:
                self.received_at = time.time()  # "received" = produced by this source (see the runner's latency)
                yield ev

    async def aclose(self) -> None:
        self._closed = True

    def _batches(self) -> Iterator[list[MarketEvent]]:
        market = MarketModel(self.settings, self.symbols, self.history_start)
        ticks = _Ticks(self.settings, self.symbols, market.decimals) if self.settings.ticks_per_bar else None
        higher = _Higher(self.symbols, [tf for tf in self.timeframes if tf != "1m"])
        total = (self._end - self.history_start) // MINUTE_MS
        done = 0
        while done < total:
            n = min(CHUNK_MINUTES, total - done)
            c = market.chunk(CHUNK_MINUTES)  # always a full chunk: the paths must not depend on where we stop
            done += n
            yield self._assemble(c, n, higher.closed(c, n), ticks, market)

    def _assemble(
        self,
        c: MinuteChunk,
        n: int,
        higher: dict[int, list[Kline]],
        ticks: _Ticks | None,
        market: MarketModel,
    ) -> list[MarketEvent]:
        """One chunk in stream order: per minute its ticks, then the bars closing at its end (coarsest first,
        then symbol order; 1m last), then funding if the minute ends on a funding time."""
        symbols = self.symbols
        out: list[MarketEvent] = []
        ots = c.open_time[:n].tolist()
        minutes: list[tuple[Kline, ...]] | None = None
        if "1m" in self.timeframes:
            # Built column-wise per symbol with starmap (the cheapest way to make many Klines), then zipped
            # into minutes; a nested comprehension indexing every value cost twice as much.
            closes = [t + MINUTE_MS - 1 for t in ots]
            per_symbol = []
            for i, sym in enumerate(symbols):
                cols = [a[:n, i].tolist() for a in (c.open, c.high, c.low, c.close, c.volume)]
                extra = [itertools.repeat(True, n), c.taker[:n, i].tolist(), c.trades[:n, i].tolist()]
                args = zip(itertools.repeat(sym, n), itertools.repeat("1m", n), ots, closes, *cols, *extra, strict=True)
                per_symbol.append(list(itertools.starmap(Kline, args)))
            minutes = list(zip(*per_symbol, strict=True))
        tick_events = ticks.chunk(c, n, self._start) if ticks is not None else None
        start = self._start
        for t, ot in enumerate(ots):
            if tick_events is not None and ot >= start:
                out.extend(tick_events[t])
            boundary = ot + MINUTE_MS
            closed = higher.get(boundary)
            if closed:
                out.extend(closed)
            if minutes is not None:
                out.extend(minutes[t])
            if boundary % FUNDING_MS == 0:
                out.extend(self._funding(boundary, c.close[t].tolist(), int(c.regime[t]), market))
        return out

    def _funding(self, ts: int, marks: list[float], regime: int, market: MarketModel) -> list[Funding]:
        """Funding leans with the trend (longs pay in an up-trend), as perpetual funding does."""
        rates = 0.0001 + 0.00008 * regime + market.rng_funding.normal(0.0, 0.00004, len(marks))
        return [
            Funding(sym, ts, mark, float(np.clip(r, -0.003, 0.003)), ts + FUNDING_MS)
            for sym, mark, r in zip(self.symbols, marks, rates.tolist(), strict=True)
        ]


class _Higher:
    """Bars of the timeframes above 1m, chunk by chunk, keyed by the instant they close at.

    Uses :func:`~ultra_signals.features.aggregation.aggregate_arrays`, the batch form of ``BarAggregator``
    (bit-identical to it, property-tested), because a Python step per 1m bar per timeframe was half the
    simulator's time.  Windows still open at a chunk's end are carried: their 1m rows are prepended to the
    next chunk, and bars already emitted from those rows are not emitted twice.
    """

    def __init__(self, symbols: list[str], targets: list[str]) -> None:
        self.symbols = symbols
        self.targets = targets
        self.lengths = [tf_ms(tf) for tf in targets]
        self.tail: list[list[npt.NDArray[Any]]] = []

    def closed(self, c: MinuteChunk, n: int) -> dict[int, list[Kline]]:
        if not self.targets:
            return {}
        first_open = int(c.open_time[0])
        next_open = int(c.open_time[n - 1]) + MINUTE_MS
        keep_from = min(window_start(next_open, length) for length in self.lengths)
        bars: list[Kline] = []
        tails = []
        for i, sym in enumerate(self.symbols):
            cols: list[npt.NDArray[Any]] = [c.open_time[:n]] + [
                a[:n, i] for a in (c.open, c.high, c.low, c.close, c.volume, c.taker, c.trades)
            ]
            if self.tail:
                cols = [np.concatenate([t, x]) for t, x in zip(self.tail[i], cols, strict=True)]
            done = aggregate_arrays(sym, "1m", self.targets, *cols)
            bars.extend(k for k in done if k.close_time >= first_open)
            keep = cols[0] >= keep_from
            tails.append([x[keep] for x in cols])
        self.tail = tails
        # Per symbol the bars come in (close time, coarsest first) order; a stable sort keeps symbol order.
        bars.sort(key=_close_then_open)
        by_end: dict[int, list[Kline]] = {}
        for k in bars:
            by_end.setdefault(k.close_time + 1, []).append(k)
        return by_end


_close_then_open = attrgetter("close_time", "open_time")


class _Ticks:
    """Trades and book tickers inside each minute, consistent with its bar.

    The trades of a minute start at the open, end at the close and touch the high and the low (in the order
    the body implies: an up bar dips first), so a consumer rebuilding the bar from trades gets the same
    OHLC.  Each trade is preceded by a book ticker at the same instant whose touch it trades at; the spread
    is a few bps and widens with volatility.
    """

    def __init__(self, settings: SimSettings, symbols: Sequence[str], decimals: list[int]) -> None:
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(settings.seed, spawn_key=(1,))))
        self.per_bar = settings.ticks_per_bar
        self.base_vol = settings.base_vol
        self.symbols = list(symbols)
        self.scale = np.array([10.0**d for d in decimals])

    def chunk(self, c: MinuteChunk, n: int, run_start: int) -> list[list[MarketEvent]]:
        """Per minute of the chunk, its tick events in time order (none before ``run_start``)."""
        m0 = int(np.searchsorted(c.open_time[:n], run_start))  # first minute of the run window
        out: list[list[MarketEvent]] = [[] for _ in range(m0)]
        if m0 < n:
            out.extend(self._minutes(c, m0, n))
        return out

    def _minutes(self, c: MinuteChunk, m0: int, n: int) -> list[list[MarketEvent]]:
        k, rng, nsym = self.per_bar, self.rng, len(self.symbols)
        shape = (n - m0, nsym, k)
        # Draws first, for the whole span, in a fixed order.
        jitter = rng.uniform(0.1, 0.9, shape)
        inner = rng.random(shape)
        pos = rng.random((n - m0, nsym, 2))
        weights = rng.exponential(1.0, shape)
        spread_noise = rng.lognormal(0.0, 0.2, shape)
        size_noise = rng.uniform(0.5, 3.0, (n - m0, nsym, k, 2))
        coin = rng.random(shape)

        o, h, lo, cl = (a[m0:n, :, None] for a in (c.open, c.high, c.low, c.close))
        up = cl >= o
        price = lo + inner * (h - lo)  # interior trades anywhere in the bar's range
        price[:, :, 0] = o[:, :, 0]
        price[:, :, k - 1] = cl[:, :, 0]
        if k == 3:
            price[:, :, 1] = np.where(up[:, :, 0], lo[:, :, 0], h[:, :, 0])
        elif k >= 4:
            first_x = 1 + (pos[:, :, 0] * (k - 3)).astype(np.int64)  # in 1..k-3
            second_x = first_x + 1 + (pos[:, :, 1] * (k - 2 - first_x)).astype(np.int64)  # in first+1..k-2
            first_p = np.where(up[:, :, 0], lo[:, :, 0], h[:, :, 0])
            second_p = np.where(up[:, :, 0], h[:, :, 0], lo[:, :, 0])
            np.put_along_axis(price, first_x[:, :, None], first_p[:, :, None], axis=2)
            np.put_along_axis(price, second_x[:, :, None], second_p[:, :, None], axis=2)
        scale = self.scale[None, :, None]
        ticks = np.rint(price * scale)  # prices in whole ticks, so the book is built exactly on the grid
        price = ticks / scale
        # Taker side: a falling trade hit the bid (taker sold); an unchanged one is a coin flip.
        prev = np.concatenate([o, price[:, :, :-1]], axis=2)
        sold = np.where(price == prev, coin < 0.5, price < prev)
        qty = np.maximum(np.round(c.volume[m0:n, :, None] * weights / weights.sum(axis=2, keepdims=True), 3), 0.001)
        spread = np.clip(_SPREAD_BPS * (c.sigma[m0:n, :, None] / self.base_vol) ** 0.7 * spread_noise, 0.5, 50.0)
        away = ticks * spread / 10_000.0  # the spread in ticks
        bid = np.where(sold, ticks, np.minimum(np.floor(ticks - away), ticks - 1)) / scale
        ask = np.where(sold, np.maximum(np.ceil(ticks + away), ticks + 1), ticks) / scale
        bid_qty = np.round(qty * size_noise[..., 0], 3)
        ask_qty = np.round(qty * size_noise[..., 1], 3)
        slot = MINUTE_MS / k
        ts = c.open_time[m0:n, None, None] + ((np.arange(k)[None, None, :] + jitter) * slot).astype(np.int64)

        out: list[list[MarketEvent]] = []
        cols = [a.tolist() for a in (ts, price, qty, sold, bid, bid_qty, ask, ask_qty)]
        symbols = self.symbols
        for t in range(n - m0):
            tts, tp, tq, ts_sold, tb, tbq, ta, taq = (col[t] for col in cols)
            order = sorted((tts[i][j], i, j) for i in range(nsym) for j in range(k))
            evs: list[MarketEvent] = []
            for when, i, j in order:
                sym = symbols[i]
                evs.append(BookTicker(sym, when, tb[i][j], tbq[i][j], ta[i][j], taq[i][j]))
                if j == 0:  # the minute's depth summary, with its first book ticker
                    evs.append(_depth(sym, when, tb[i][j], tbq[i][j], ta[i][j], taq[i][j]))
                evs.append(Trade(sym, when, tp[i][j], tq[i][j], ts_sold[i][j]))
            out.append(evs)
        return out


#: Depth model: resting size within ``_DEPTH_BPS`` of the mid is this many times the touch's size, each side.
_DEPTH_LEVELS = 20.0
_DEPTH_BPS = 10.0


def _depth(sym: str, ts: int, bid: float, bid_qty: float, ask: float, ask_qty: float) -> BookDepth:
    """A :class:`BookDepth` summary derived from the touch (no draw of its own, so a seed's bars and ticks stay
    the same): ``_DEPTH_LEVELS`` levels of the touch's size on each side within ``_DEPTH_BPS`` of the mid."""
    total = bid_qty + ask_qty
    return BookDepth(
        sym,
        ts,
        _DEPTH_LEVELS * bid_qty * bid,
        _DEPTH_LEVELS * ask_qty * ask,
        (bid_qty - ask_qty) / total if total > 0 else 0.0,
        _DEPTH_BPS,
    )


def export_candles(
    settings: SimSettings,
    symbols: Sequence[str],
    days: int,
    out_dir: str | Path,
    timeframes: Sequence[str] = ("1m",),
) -> list[Path]:
    """Write ``days`` of simulated candles from ``settings.start`` as ``<SYMBOL>-<tf>.csv`` (layout (a)).

    For ``ultra-signals sim export``.  The folder also gets ``SIMULATED.txt`` so a replay of it is labelled
    simulated; 1m files are always written, ``timeframes`` adds aggregated ones.
    """
    if days <= 0:
        raise SourceError(f"sim export needs at least one day (got {days})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tfs = sort_timeframes(["1m", *timeframes])
    quiet = settings.model_copy(update={"ticks_per_bar": 0})
    src = SimSource(quiet, symbols, tfs, duration_minutes=days * 1440, warmup_bars=0)
    writers = {(s, tf): CandleWriter(out / f"{s}-{tf}.csv") for s, tf in itertools.product(src.symbols, tfs)}
    try:
        for ev in src.iter_events():
            if isinstance(ev, Kline):
                writers[(ev.symbol, ev.timeframe)].write(ev)
    except BaseException:
        for w in writers.values():
            w.close(keep=False)
        raise
    for w in writers.values():
        w.close()
    (out / "SIMULATED.txt").write_text(
        f"Simulated candles written by ultra-signals (seed {settings.seed}, start {settings.start}, {days} days).\n"
        "Not exchange data.  A replay of this folder is labelled simulated.\n",
        encoding="utf-8",
    )
    return [w.path for w in writers.values()]
