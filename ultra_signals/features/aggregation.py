"""Exact higher-timeframe bars from closed base bars (e.g. 1m → 5m, 15m, 1h), the way Binance draws them.

Why here and not in each source: the simulator, the candle replay and the live feed (which only streams the
timeframes it subscribes to) must all produce *the same* 15m bar from the same 1m bars, or a replay would not
decide as live did.

Rules, in the order a reader of a chart would check them:

- Windows are aligned to epoch multiples of the timeframe (a 1h bar opens on the hour), except weekly
  windows, which Binance opens on Monday 00:00 UTC (the epoch fell on a Thursday).
- open = first base open, high = max, low = min, close = last base close, volume = sum (also taker-buy
  volume and trade counts when every base bar carries them).  ``close_time = open_time + tf - 1``.
- A window is emitted as soon as its last base bar arrives, or, when that bar is missing (an exchange
  outage, a gap in a CSV), as soon as a bar of a later window arrives: the later bar proves the window is
  over.  A window whose end has not been proven stays pending; :meth:`BarAggregator.flush` hands it over
  only when a caller knows the window really closed.
- Gaps stay gaps: a window without base bars produces no bar.  Nothing is ever invented.

Two forms, bit for bit the same bars (property-tested): :class:`BarAggregator` steps bar by bar (live feed,
any stream); :func:`aggregate_arrays` works on whole numpy columns (replay, simulator), where a Python step
per base bar per timeframe would dominate the run.

Pure logic: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from ultra_signals.core.events import Kline
from ultra_signals.core.timeframes import tf_ms

WEEK_MS = 604_800_000
#: Binance opens weekly bars on Monday 00:00 UTC: four days after the epoch (a Thursday).
WEEK_OFFSET_MS = 4 * 86_400_000


def window_start(ts_ms: int, length_ms: int) -> int:
    """Open time of the window of length ``length_ms`` that contains ``ts_ms`` (Binance alignment)."""
    offset = WEEK_OFFSET_MS if length_ms % WEEK_MS == 0 else 0
    return ts_ms - (ts_ms - offset) % length_ms


class _Window:
    """The bar being built for one target timeframe (mutable, unlike the Kline it becomes)."""

    __slots__ = (
        "close",
        "high",
        "length",
        "low",
        "open",
        "start",
        "taker",
        "tf",
        "trades",
        "volume",
    )

    def __init__(self, tf: str, length: int) -> None:
        self.tf = tf
        self.length = length
        self.start = -1  # open time of the window being built; -1: none pending
        self.open = self.high = self.low = self.close = self.volume = 0.0
        self.taker: float | None = None
        self.trades: int | None = None

    def begin(self, start: int, bar: Kline) -> None:
        self.start = start
        self.open = bar.open
        self.high = bar.high
        self.low = bar.low
        self.close = bar.close
        self.volume = bar.volume
        self.taker = bar.taker_buy_volume
        self.trades = bar.trades

    def emit(self, symbol: str) -> Kline:
        start = self.start
        self.start = -1
        return Kline(
            symbol,
            self.tf,
            start,
            start + self.length - 1,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            True,
            self.taker,
            self.trades,
        )


#: Event time first; on a tie the coarsest timeframe comes first (it opened earliest).
_emit_order = attrgetter("close_time", "open_time")


class BarAggregator:
    """Closed base bars of one symbol in, closed bars of each target timeframe out.

    ``add`` returns the bars the new base bar completed (or proved complete), ordered by event time and,
    on ties, coarsest first; a caller that also emits the base bar puts it *after* them, since a base bar
    closing with a coarser one is the finest of that instant.  Duplicates and bars older than the latest
    one are ignored (a redelivered bar is not news) and counted in :attr:`ignored`.
    """

    __slots__ = ("_last", "_windows", "base_ms", "base_tf", "ignored", "symbol", "target_tfs")

    def __init__(self, symbol: str, base_tf: str, target_tfs: Sequence[str]) -> None:
        self.symbol = symbol
        self.base_tf = base_tf
        self.base_ms = tf_ms(base_tf)
        lengths = {tf: tf_ms(tf) for tf in target_tfs}
        for tf, length in lengths.items():
            if length <= self.base_ms or length % self.base_ms:
                raise ValueError(
                    f"cannot aggregate {base_tf} bars into {tf}: {tf} must be a larger multiple of {base_tf}"
                )
            if length % WEEK_MS == 0 and self.base_ms % WEEK_MS and WEEK_OFFSET_MS % self.base_ms:
                raise ValueError(f"cannot aggregate {base_tf} bars into {tf}: weeks open on Monday 00:00 UTC")
        self.target_tfs = sorted(lengths, key=lengths.__getitem__, reverse=True)  # coarsest first
        self._windows = [_Window(tf, lengths[tf]) for tf in self.target_tfs]
        self._last = -1
        self.ignored = 0

    def add(self, bar: Kline) -> list[Kline]:
        """Feed the next closed base bar; return the higher-timeframe bars now known to be closed."""
        ot = bar.open_time
        if ot <= self._last:
            self.ignored += 1
            return []
        if bar.symbol != self.symbol or bar.timeframe != self.base_tf:
            raise ValueError(f"aggregator for {self.symbol} {self.base_tf} got a {bar.symbol} {bar.timeframe} bar")
        if window_start(ot, self.base_ms) != ot:
            raise ValueError(f"{self.symbol} {self.base_tf} bar at {ot} is not aligned to its timeframe")
        self._last = ot
        out: list[Kline] = []
        end = ot + self.base_ms  # the base bar's end: a window ending here is complete
        high, low, close, volume = bar.high, bar.low, bar.close, bar.volume
        taker, trades = bar.taker_buy_volume, bar.trades
        for w in self._windows:
            length = w.length
            start = ot - ot % length if length % WEEK_MS else window_start(ot, length)
            if start == w.start:
                # extend, inlined: this is the hot path (every base bar, every target)
                if high > w.high:
                    w.high = high
                if low < w.low:
                    w.low = low
                w.close = close
                w.volume += volume
                # An optional field survives only if every base bar has it: a partial sum would lie.
                if w.taker is not None:
                    w.taker = None if taker is None else w.taker + taker
                if w.trades is not None:
                    w.trades = None if trades is None else w.trades + trades
            else:
                if w.start >= 0:
                    out.append(w.emit(self.symbol))  # its last base bar never came; this bar proves it over
                w.begin(start, bar)
            if start + length == end:
                out.append(w.emit(self.symbol))
        if len(out) > 1:
            out.sort(key=_emit_order)
        return out

    def pending(self) -> list[Kline]:
        """Windows still being built, as they would close now (for inspection; nothing is consumed)."""
        return sorted(
            (
                Kline(
                    self.symbol,
                    w.tf,
                    w.start,
                    w.start + w.length - 1,
                    w.open,
                    w.high,
                    w.low,
                    w.close,
                    w.volume,
                    True,
                    w.taker,
                    w.trades,
                )
                for w in self._windows
                if w.start >= 0
            ),
            key=_emit_order,
        )

    def flush(self) -> list[Kline]:
        """Emit every pending window.  Only call this when the windows are known to have ended.

        At the end of a CSV the last window is usually *not* known to be closed (the file may simply stop
        mid-hour), so the replay does not flush; a caller whose data provably covers the windows may.
        """
        out = [w.emit(self.symbol) for w in self._windows if w.start >= 0]
        out.sort(key=_emit_order)
        return out


def aggregate_series(bars: Sequence[Kline], base_tf: str, target_tfs: Sequence[str]) -> list[Kline]:
    """Every bar :class:`BarAggregator` would emit for this series (without ``flush``), in the same order.

    ``bars`` must be one symbol's base bars in increasing open time.  See :func:`aggregate_arrays`.
    """
    if not bars:
        return []
    if any(k.symbol != bars[0].symbol or k.timeframe != base_tf for k in bars):
        raise ValueError(f"aggregate_series for {bars[0].symbol} {base_tf} got bars of another series")
    n = len(bars)
    nan = math.nan
    taker = np.fromiter((nan if k.taker_buy_volume is None else k.taker_buy_volume for k in bars), np.float64, n)
    trades = np.fromiter((nan if k.trades is None else k.trades for k in bars), np.float64, n)
    return aggregate_arrays(
        bars[0].symbol,
        base_tf,
        target_tfs,
        np.fromiter((k.open_time for k in bars), np.int64, n),
        np.fromiter((k.open for k in bars), np.float64, n),
        np.fromiter((k.high for k in bars), np.float64, n),
        np.fromiter((k.low for k in bars), np.float64, n),
        np.fromiter((k.close for k in bars), np.float64, n),
        np.fromiter((k.volume for k in bars), np.float64, n),
        taker,
        trades,
    )


def aggregate_arrays(
    symbol: str,
    base_tf: str,
    target_tfs: Sequence[str],
    ot: npt.NDArray[np.int64],
    op: npt.NDArray[np.float64],
    hi: npt.NDArray[np.float64],
    lo: npt.NDArray[np.float64],
    cl: npt.NDArray[np.float64],
    vol: npt.NDArray[np.float64],
    taker: npt.NDArray[np.float64] | None = None,
    trades: npt.NDArray[np.float64] | npt.NDArray[np.int64] | None = None,
    *,
    final_proven: bool = False,
) -> list[Kline]:
    """Batch form of :class:`BarAggregator` over columns (the replay's path): bit for bit the same bars.

    numpy over whole columns instead of a Python step per base bar per target.  Volume is summed in arrival
    order, as the streaming form does, because float addition is not associative; ``taker``/``trades`` may
    hold NaN where a base bar lacks the field (the window then lacks it too).

    ``final_proven``: the caller knows a later base bar exists (the columns are one chunk of a longer series,
    cut on a boundary no window straddles), so the last window is over too and is emitted.
    """
    nan = math.nan
    out: list[Kline] = []
    for w in aggregate_columns(
        symbol, base_tf, target_tfs, ot, op, hi, lo, cl, vol, taker, trades, final_proven=final_proven
    ):
        done = len(w.start)
        nans = [nan] * done
        tsum = nans if w.taker is None else w.taker.tolist()
        nsum = nans if w.trades is None else w.trades.tolist()
        tf = w.tf
        length = w.length
        # NaN marks a window where some base bar lacked the optional field (x != x only for NaN).
        out.extend(
            Kline(
                symbol, tf, s, s + length - 1, o, h, lw, c, v, True, None if t != t else t, None if q != q else int(q)
            )
            for s, o, h, lw, c, v, t, q in zip(
                w.start.tolist(),
                w.open.tolist(),
                w.high.tolist(),
                w.low.tolist(),
                w.close.tolist(),
                w.volume.tolist(),
                tsum,
                nsum,
                strict=True,
            )
        )
    out.sort(key=_emit_order)
    return out


@dataclass(slots=True)
class WindowColumns:
    """The complete windows of one target timeframe as columns (what :func:`aggregate_columns` returns).

    ``taker``/``trades`` are None when no base bar carries the field, else float sums with NaN where some base
    bar of the window lacks it (trade counts are whole numbers held exactly as floats).
    """

    tf: str
    length: int
    start: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]
    taker: npt.NDArray[np.float64] | None
    trades: npt.NDArray[np.float64] | None


def aggregate_columns(
    symbol: str,
    base_tf: str,
    target_tfs: Sequence[str],
    ot: npt.NDArray[np.int64],
    op: npt.NDArray[np.float64],
    hi: npt.NDArray[np.float64],
    lo: npt.NDArray[np.float64],
    cl: npt.NDArray[np.float64],
    vol: npt.NDArray[np.float64],
    taker: npt.NDArray[np.float64] | None = None,
    trades: npt.NDArray[np.float64] | npt.NDArray[np.int64] | None = None,
    *,
    final_proven: bool = False,
) -> list[WindowColumns]:
    """:func:`aggregate_arrays`' windows as columns, one entry per target timeframe in the aggregator's order:
    the same values, for a caller (the streaming replay) that orders and builds the bars itself."""
    agg = BarAggregator(symbol, base_tf, target_tfs)  # validates the timeframes
    base = agg.base_ms
    n = len(ot)
    if not n:
        return []
    if n > 1 and not bool(np.all(ot[1:] > ot[:-1])):
        raise ValueError(f"{symbol} {base_tf} bars are not in increasing open_time")
    if bool(np.any(_starts(ot, base) != ot)):
        raise ValueError(f"{symbol} {base_tf} bars are not aligned to their timeframe")
    tk = None if taker is None or bool(np.all(np.isnan(taker))) else taker.astype(np.float64)
    tr = None if trades is None or bool(np.all(np.isnan(trades))) else trades.astype(np.float64)
    out: list[WindowColumns] = []
    for w in agg._windows:
        length = w.length
        ws, new_window, first, last, done = window_runs(ot, base, length, final_proven)
        if not done:
            continue
        group = np.cumsum(new_window) - 1
        col = (ot - ws) // base
        width = length // base
        out.append(
            WindowColumns(
                w.tf,
                length,
                ws[first[:done]],
                op[first[:done]],
                np.maximum.reduceat(hi, first)[:done],
                np.minimum.reduceat(lo, first)[:done],
                cl[last[:done]],
                _ordered_sums(vol, group, col, done, width),
                None if tk is None else _ordered_sums(tk, group, col, done, width),
                None if tr is None else _ordered_sums(tr, group, col, done, width),
            )
        )
    return out


def window_runs(
    ot: npt.NDArray[np.int64], base_ms: int, length: int, final_proven: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.intp], npt.NDArray[np.intp], int]:
    """How checked base bars (ascending open times ``ot``, at least one) fall into ``length`` windows: each bar's
    window start, whether it opens a window, the first and last bar index of each window, and how many windows are
    complete.  The final window counts only when its end is proven (``final_proven``, or its last base bar is
    there): the streaming form keeps it pending, so every reader of aggregated columns must drop it the same way."""
    n = len(ot)
    ws = _starts(ot, length)
    new_window = np.empty(n, dtype=bool)
    new_window[0] = True
    np.not_equal(ws[1:], ws[:-1], out=new_window[1:])
    first = np.flatnonzero(new_window)
    last = np.append(first[1:], n) - 1
    done = len(first)
    if not final_proven and int(ot[-1]) + base_ms != int(ws[-1]) + length:
        done -= 1
    return ws, new_window, first, last, done


def _starts(ts: npt.NDArray[np.int64], length: int) -> npt.NDArray[np.int64]:
    offset = WEEK_OFFSET_MS if length % WEEK_MS == 0 else 0
    result: npt.NDArray[np.int64] = ts - (ts - offset) % length
    return result


def _ordered_sums(
    x: npt.NDArray[np.float64], group: npt.NDArray[np.int64], col: npt.NDArray[np.int64], ngroups: int, width: int
) -> npt.NDArray[np.float64]:
    """Per-window sums added left to right in time order, exactly as the streaming aggregator adds them.

    The windows are laid out as rows of a (windows × base bars per window) grid, missing bars as 0.0 (adding
    0.0 changes nothing), then the columns are added one by one: vectorised across windows, sequential within.
    """
    keep = group < ngroups
    grid = np.zeros((ngroups, width), dtype=np.float64)
    grid[group[keep], col[keep]] = x[keep]
    acc = grid[:, 0].copy()
    for j in range(1, width):
        acc += grid[:, j]
    return acc
