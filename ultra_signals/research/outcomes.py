"""Outcome labels: what the executor's own exits would have made of a candidate, in R, after costs.

The exits are exactly the ones :class:`~ultra_signals.execution.executor.TradingExecutor` places: a market entry,
a reduce-only stop at the candidate's stop and one take-profit at target ``take_profit_target`` (1-based, clamped
to the last), both triggered on the last (contract) price — Binance ``workingType=CONTRACT_PRICE`` — which on
candles means the bar's high and low.  The fills follow the paper broker's bar model
(:mod:`ultra_signals.execution.brokers.paper`) so research and the shadow report agree:

- Entry: the open of the first bar that opens at or after the decision time (the latency is shorter than a bar),
  plus half the spread and the linear size impact, taker fee.
- Brackets are live on the entry bar itself (its whole range counts, pessimistically), and on every bar up to
  the horizon.  A stop fills at ``min(open, stop)`` for a long (a gap through the stop fills at the open), a
  take-profit at ``max(open, target)``; each less half the spread and the impact, taker fee.
- **Stop and target in the same bar: the stop is taken first** (the conservative order; a candle does not say
  which came first).
- **Neither within the horizon: marked to the close of the last bar inside the horizon** (bars opening before
  ``entry time + horizon``), as a market exit with the same costs.  When the data ends first the trade is marked
  at the last bar there is, with ``exit_kind == "data_end"``.
- Funding (when the data has it): a position open across a funding time pays ``rate × price`` per unit when
  long and receives it when short (negative rates reverse that), the price being the open of the first bar at
  or after the funding time.

R is the net profit per unit divided by the planned risk per unit ``|entry − stop|`` (the executor sizes on that
distance), so a clean stop-out is a little worse than −1 R and a clean target-1 hit a little less than +1 R.

Each target's first touch is labelled too (``target_hits``): target k counts as reached when a bar touches it
strictly before the first bar that touches the stop (same bar: stop first).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Bars:
    """One symbol's bars of the labelling timeframe, ascending by open time (gaps allowed)."""

    open_time: I64
    open: F64
    high: F64
    low: F64
    close: F64

    @staticmethod
    def from_rows(rows: Sequence[tuple[int, float, float, float, float]]) -> Bars:
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        return Bars(a[:, 0].astype(np.int64), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(), a[:, 4].copy())

    def __len__(self) -> int:
        return int(self.open_time.shape[0])


@dataclass(frozen=True, slots=True)
class Costs:
    """The paper broker's cost model (settings ``execution.*``), in its own units."""

    fee_taker_bps: float = 5.0
    half_spread_bps: float = 1.0
    impact_bps_per_10k_usdt: float = 0.5
    #: Notional of one trade in quote units, for the size impact (the executor's sizing gives it).
    notional: float = 0.0

    @property
    def impact_frac(self) -> float:
        return self.impact_bps_per_10k_usdt / 10_000.0 / 10_000.0 * self.notional


@dataclass(frozen=True, slots=True)
class Outcome:
    exit_kind: str  # stop | target | horizon | data_end | no_data
    r: float  # net R after fees, spread, impact and funding (nan when no_data)
    gross_r: float  # R of the trigger-to-trigger move, no costs
    entry_ts: int
    exit_ts: int  # open time of the exit bar (the bar that touched, or the last one for a mark)
    entry_price: float
    exit_price: float
    funding_r: float
    target_hits: tuple[bool, ...]

    @property
    def labelled(self) -> bool:
        return self.exit_kind != "no_data"


NO_DATA = Outcome("no_data", float("nan"), float("nan"), 0, 0, float("nan"), float("nan"), 0.0, ())


def _first(mask: npt.NDArray[np.bool_]) -> int:
    """Index of the first True, or len(mask) when none."""
    if mask.size == 0:
        return 0
    i = int(np.argmax(mask))
    return i if mask[i] else int(mask.size)


def label(
    *,
    long: bool,
    entry_ref: float,
    stop: float,
    targets: Sequence[float],
    take_profit_target: int,
    decision_ts: int,
    horizon_ms: int,
    bars: Bars,
    costs: Costs,
    funding: Sequence[tuple[int, float]] = (),
) -> Outcome:
    """The outcome of one candidate (see the module doc for every rule)."""
    risk = abs(entry_ref - stop)
    if risk <= 0 or not targets:
        return NO_DATA
    i0 = int(np.searchsorted(bars.open_time, decision_ts, side="left"))
    if i0 >= len(bars):
        return NO_DATA
    entry_ts = int(bars.open_time[i0])
    i1 = int(np.searchsorted(bars.open_time, entry_ts + horizon_ms, side="left"))  # bars [i0, i1) in horizon
    full = i1 < len(bars)  # a bar exists at or past the horizon: the horizon was fully observed
    hi = bars.high[i0:i1]
    lo = bars.low[i0:i1]
    half = costs.half_spread_bps / 10_000.0
    imp = costs.impact_frac
    fee = costs.fee_taker_bps / 10_000.0
    sign = 1.0 if long else -1.0
    op = float(bars.open[i0])
    # Entry: buy for a long (pay the ask), sell for a short (hit the bid), then the impact against us.
    entry_fill = op * (1 + sign * half) * (1 + sign * imp)
    tp = float(targets[min(take_profit_target, len(targets)) - 1])
    stop_hit = lo <= stop if long else hi >= stop
    tp_hit = hi >= tp if long else lo <= tp
    js = _first(stop_hit)
    jt = _first(tp_hit)
    n = int(hi.shape[0])
    hits = tuple(_first(hi >= t if long else lo <= t) < js for t in targets)
    if js < n and js <= jt:  # stop first, also when both fall in one bar
        j = js
        bar_open = float(bars.open[i0 + j])
        trigger = min(bar_open, stop) if long else max(bar_open, stop)
        kind = "stop"
    elif jt < n:
        j = jt
        bar_open = float(bars.open[i0 + j])
        trigger = max(bar_open, tp) if long else min(bar_open, tp)
        kind = "target"
    else:
        j = n - 1
        trigger = float(bars.close[i0 + j])
        kind = "horizon" if full else "data_end"
    # Exit: sell a long (the bid), buy back a short (the ask), then the impact.
    exit_fill = trigger * (1 - sign * half) * (1 - sign * imp)
    exit_ts = int(bars.open_time[i0 + j])
    paid = 0.0
    for ft, rate in funding:
        if entry_ts < ft <= exit_ts:
            k = min(int(np.searchsorted(bars.open_time, ft, side="left")), len(bars) - 1)
            paid += sign * rate * float(bars.open[k])
    gross = sign * (trigger - entry_ref) / risk
    net = (sign * (exit_fill - entry_fill) - fee * (entry_fill + exit_fill) - paid) / risk
    return Outcome(kind, net, gross, entry_ts, exit_ts, entry_fill, exit_fill, -paid / risk, hits)


@dataclass(frozen=True, slots=True)
class Trade:
    """One candidate's inputs to :func:`label` (the per-candidate keyword arguments), for :func:`label_many`."""

    long: bool
    entry_ref: float
    stop: float
    targets: Sequence[float]
    decision_ts: int
    costs: Costs


def label_each(
    trades: Sequence[Trade],
    take_profit_target: int,
    horizon_ms: int,
    bars: Bars,
    funding: Sequence[tuple[int, float]] = (),
) -> list[Outcome]:
    """:func:`label` for each trade, one call each: what :func:`label_many` must equal bit for bit, and what it
    falls back to where its vectorised form does not apply."""
    return [
        label(
            long=t.long,
            entry_ref=t.entry_ref,
            stop=t.stop,
            targets=t.targets,
            take_profit_target=take_profit_target,
            decision_ts=t.decision_ts,
            horizon_ms=horizon_ms,
            bars=bars,
            costs=t.costs,
            funding=funding,
        )
        for t in trades
    ]


def _tables(values: F64, levels: int, take_min: bool) -> list[F64]:
    """``t[k][i]`` = min (or max) of ``values[i : i + 2**k]`` for k in 0..levels: a sparse table (exact: a min or
    a max is one of its inputs, whatever the order it is taken in)."""
    op = np.minimum if take_min else np.maximum
    out = [values]
    for k in range(1, levels + 1):
        prev = out[-1]
        h = 1 << (k - 1)
        if prev.size <= h:
            break
        out.append(op(prev[:-h], prev[h:]))
    return out


def _first_touch(table: list[F64], start: I64, stop_at: I64, thr: F64, below: bool) -> I64:
    """Per row, the offset from ``start`` of the first value in ``[start, stop_at)`` that is ``<= thr``
    (``below``) or ``>= thr``, else ``stop_at - start``: the same index as ``argmax`` of that mask.

    Binary lifting over the sparse table: a block of 2**k values is skipped when its min (max) does not touch,
    which holds exactly when no value in it touches (also for a NaN threshold, where nothing touches)."""
    pos = start.copy()
    for k in range(len(table) - 1, -1, -1):
        t = table[k]
        w = 1 << k
        fits = pos + w <= stop_at
        v = t[np.minimum(pos, t.size - 1)]
        touched = (v <= thr) if below else (v >= thr)
        pos = np.where(fits & ~touched, pos + w, pos)
    return pos - start


def _range_extreme(table: list[F64], start: I64, length: I64, take_min: bool) -> F64:
    """min (max) of ``values[start : start + length]`` per row (``length >= 1``), from two table blocks."""
    k = np.zeros(length.shape, dtype=np.int64)
    for b in range(1, len(table)):
        k += length >= (1 << b)
    out = np.empty(length.shape)
    op = np.minimum if take_min else np.maximum
    for b in range(len(table)):
        sel = k == b
        if not sel.any():
            continue
        s = start[sel]
        t = table[b]
        out[sel] = op(t[s], t[s + length[sel] - (1 << b)])
    return out


#: Bars per sparse-table window in :func:`label_columns` (~45 days of 1m bars: ~12 MB of tables at a 1-day horizon).
_TABLE_BARS = 1 << 16


def _touches(
    low: F64, high: F64, i0: I64, i1: I64, long: npt.NDArray[np.bool_], stop: F64, tp: F64
) -> tuple[I64, F64, I64]:
    """Per trade on bars ``[i0, i1)``: the offset of the first bar touching the stop (``i1 - i0`` when none), the
    most favourable price strictly before it (NaN when the stop is the first bar), and the offset of the first bar
    touching the take-profit before the stop (0 when it is not touched before the stop)."""
    span = i1 - i0
    levels = int(span.max()).bit_length() - 1
    lo_t = _tables(low, levels, take_min=True)
    hi_t = _tables(high, levels, take_min=False)
    short = ~long
    js = np.empty_like(i0)
    js[long] = _first_touch(lo_t, i0[long], i1[long], stop[long], below=True)
    js[short] = _first_touch(hi_t, i0[short], i1[short], stop[short], below=False)
    seen = js > 0
    best = np.full(i0.shape, np.nan)
    lsel, ssel = seen & long, seen & short
    best[lsel] = _range_extreme(hi_t, i0[lsel], js[lsel], take_min=False)
    best[ssel] = _range_extreme(lo_t, i0[ssel], js[ssel], take_min=True)
    tp_before = seen & np.where(long, best >= tp, best <= tp)
    jt = np.zeros_like(i0)
    lt, st_ = tp_before & long, tp_before & short
    jt[lt] = _first_touch(hi_t, i0[lt], i0[lt] + js[lt], tp[lt], below=False)
    jt[st_] = _first_touch(lo_t, i0[st_], i0[st_] + js[st_], tp[st_], below=True)
    return js, best, jt


def label_many(
    trades: Sequence[Trade],
    *,
    take_profit_target: int,
    horizon_ms: int,
    bars: Bars,
    funding: Sequence[tuple[int, float]] = (),
) -> list[Outcome]:
    """``[label(...) for each trade]`` on one symbol's bars, bit for bit, at a fraction of the cost (issue 13).

    Why not a loop over :func:`label`: with ~10,000 candidates per report its fixed cost per call (two
    ``searchsorted``, a mask and an ``argmax`` per target, numpy's Python wrappers) was most of the labelling.
    Here every step runs on all trades at once.  The first bar that touches the stop (and the target) is found by
    binary lifting over sparse tables of the bars' lows and highs (a min, a max and a comparison are exact, so it
    is the index ``argmax`` of the mask gives); "target k touched before the stop" is ``max(high before the stop)
    >= target``, decided as the first-touch index does; the prices are the same IEEE operations in the same order
    as :func:`label`'s Python float expressions, elementwise (``min(a, b)`` is written ``b if b < a else a``, as
    Python's ``min`` picks).  Funding rows are visited per trade in the same order, only those that count.
    Bars holding NaN, an unsorted funding list or an empty horizon take :func:`label` itself.
    """
    if not trades:
        return []
    if _needs_reference(bars, horizon_ms, funding):
        return label_each(trades, take_profit_target, horizon_ms, bars, funding)
    return label_columns(
        **trade_columns(trades),
        take_profit_target=take_profit_target,
        horizon_ms=horizon_ms,
        bars=bars,
        funding=funding,
    )


def _needs_reference(bars: Bars, horizon_ms: int, funding: Sequence[tuple[int, float]]) -> bool:
    """Inputs the vectorised labels do not take (bars holding NaN, an unsorted funding list, no horizon): those go
    through :func:`label` itself."""
    return (
        len(bars) == 0
        or horizon_ms <= 0
        or bool(np.isnan(bars.high).any() or np.isnan(bars.low).any())
        or any(a[0] > b[0] for a, b in pairwise(funding))
    )


def trade_columns(trades: Sequence[Trade]) -> dict[str, list[Any]]:
    """The trades as :func:`label_columns`'s keyword columns."""
    return {
        "long": [t.long for t in trades],
        "entry_ref": [t.entry_ref for t in trades],
        "stop": [t.stop for t in trades],
        "targets": [t.targets for t in trades],
        "decision_ts": [t.decision_ts for t in trades],
        "fee_taker_bps": [t.costs.fee_taker_bps for t in trades],
        "half_spread_bps": [t.costs.half_spread_bps for t in trades],
        "impact_bps_per_10k_usdt": [t.costs.impact_bps_per_10k_usdt for t in trades],
        "notional": [t.costs.notional for t in trades],
    }


def label_columns(
    *,
    long: Sequence[bool],
    entry_ref: Sequence[float],
    stop: Sequence[float],
    targets: Sequence[Sequence[float]],
    decision_ts: Sequence[int],
    fee_taker_bps: Sequence[float],
    half_spread_bps: Sequence[float],
    impact_bps_per_10k_usdt: Sequence[float],
    notional: Sequence[float],
    take_profit_target: int,
    horizon_ms: int,
    bars: Bars,
    funding: Sequence[tuple[int, float]] = (),
) -> list[Outcome]:
    """:func:`label_many` with the trades given as columns (row i is ``Trade(long[i], …, Costs(fee_taker_bps[i],
    …, notional[i]))``): the same outcomes, for callers that hold their candidates as columns already (building
    a ``Trade`` and a ``Costs`` per candidate cost as much as labelling them)."""
    m = len(long)
    n = len(bars)
    if not m:
        return []
    if _needs_reference(bars, horizon_ms, funding):
        trades = [
            Trade(lg, e, sp, tg, ts, Costs(fe, hs, ib, nt))
            for lg, e, sp, tg, ts, fe, hs, ib, nt in zip(
                long,
                entry_ref,
                stop,
                targets,
                decision_ts,
                fee_taker_bps,
                half_spread_bps,
                impact_bps_per_10k_usdt,
                notional,
                strict=True,
            )
        ]
        return label_each(trades, take_profit_target, horizon_ms, bars, funding)
    ot = bars.open_time
    i0_all = np.searchsorted(ot, np.asarray(decision_ts, dtype=np.int64), side="left")
    long_all = np.asarray(long, dtype=np.bool_)
    entry_all = np.asarray(entry_ref, dtype=np.float64)
    stop_all = np.asarray(stop, dtype=np.float64)
    risk_all = np.abs(entry_all - stop_all)
    has_targets = np.fromiter((bool(t) for t in targets), np.bool_, m)
    ok = ~(risk_all <= 0) & has_targets & (i0_all < n)
    out: list[Outcome] = [NO_DATA] * m
    rows = np.flatnonzero(ok)
    if not rows.size:
        return out
    sub = [targets[i] for i in rows.tolist()]
    i0 = i0_all[rows]
    i1 = np.searchsorted(ot, ot[i0] + horizon_ms, side="left")
    span = i1 - i0  # >= 1: the horizon is positive
    lg_ = long_all[rows]
    stop_ = stop_all[rows]
    entry_ = entry_all[rows]
    risk = risk_all[rows]
    tp = np.fromiter((float(t[min(take_profit_target, len(t)) - 1]) for t in sub), np.float64, rows.size)
    half = np.asarray(half_spread_bps, dtype=np.float64)[rows] / 10_000.0
    imp = np.asarray(impact_bps_per_10k_usdt, dtype=np.float64)[rows] / 10_000.0 / 10_000.0
    imp = imp * np.asarray(notional, dtype=np.float64)[rows]
    fee = np.asarray(fee_taker_bps, dtype=np.float64)[rows] / 10_000.0
    # The first stop touch (js), the most favourable price strictly before it (best; none when the stop is the
    # first bar) and the first target touch before it (jt), over sparse tables of a window of the bars at a time
    # (trades grouped by entry bar): the tables' memory stays bounded however long the history is.
    js = np.empty_like(i0)
    jt = np.zeros_like(i0)
    best = np.full(i0.shape, np.nan)
    group = i0 // _TABLE_BARS
    for g in np.unique(group).tolist():
        sel = group == g
        a = int(i0[sel].min())
        b = int(i1[sel].max())
        js[sel], best[sel], jt[sel] = _touches(
            bars.low[a:b], bars.high[a:b], i0[sel] - a, i1[sel] - a, lg_[sel], stop_[sel], tp[sel]
        )
    seen = js > 0
    tp_before = seen & np.where(lg_, best >= tp, best <= tp)
    stopped = (js < span) & ~tp_before  # stop first, also when both fall in one bar
    j = np.where(stopped, js, np.where(tp_before, jt, span - 1))
    opens = bars.open
    bar_open = opens[i0 + j]
    level = np.where(stopped, stop_, tp)
    # Python's min(a, b) is ``b if b < a else a``, max(a, b) ``b if b > a else a``: a long's stop and a short's
    # target take the min, the others the max.
    take_lower = stopped == lg_
    trigger = np.where(
        take_lower,
        np.where(level < bar_open, level, bar_open),
        np.where(level > bar_open, level, bar_open),
    )
    marked = ~stopped & ~tp_before
    trigger = np.where(marked, bars.close[i0 + j], trigger)
    sign = np.where(lg_, 1.0, -1.0)
    entry_fill = opens[i0] * (1 + sign * half) * (1 + sign * imp)
    exit_fill = trigger * (1 - sign * half) * (1 - sign * imp)
    entry_ts = ot[i0]
    exit_ts = ot[i0 + j]
    paid = np.zeros(i0.shape)
    if funding:
        f_times = [ft for ft, _ in funding]
        times = ot.tolist()
        open_l = opens.tolist()
        for r, (e_ts, x_ts, sg) in enumerate(zip(entry_ts.tolist(), exit_ts.tolist(), sign.tolist(), strict=True)):
            p = 0.0
            for ft, rate in funding[bisect_right(f_times, e_ts) : bisect_right(f_times, x_ts)]:
                k = min(bisect_left(times, ft), n - 1)
                p += sg * rate * open_l[k]
            paid[r] = p
    gross = sign * (trigger - entry_) / risk
    net = (sign * (exit_fill - entry_fill) - fee * (entry_fill + exit_fill) - paid) / risk
    funding_r = -paid / risk
    full = i1 < n
    kinds = np.where(stopped, "stop", np.where(tp_before, "target", np.where(full, "horizon", "data_end"))).tolist()
    for r, t, lg, sn, b, kind, nt, gr, ets, xts, ef, xf, fr in zip(
        rows.tolist(),
        sub,
        lg_.tolist(),
        seen.tolist(),
        best.tolist(),
        kinds,
        net.tolist(),
        gross.tolist(),
        entry_ts.tolist(),
        exit_ts.tolist(),
        entry_fill.tolist(),
        exit_fill.tolist(),
        funding_r.tolist(),
        strict=True,
    ):
        if not sn:
            hits = tuple(False for _ in t)
        elif lg:
            hits = tuple([bool(b >= x) for x in t])
        else:
            hits = tuple([bool(b <= x) for x in t])
        out[r] = Outcome(kind, nt, gr, ets, xts, ef, xf, fr, hits)
    return out
