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
    Here the entry and horizon bars of all trades come from two vectorised ``searchsorted``; per trade one mask
    finds the stop, "target k touched before the stop" is ``max(high before the stop) >= target`` (a max and a
    comparison are exact, so it decides as the first-touch index does), and the prices are the same Python
    float expressions in the same order.  Funding rows are visited in the same order, only those that count.
    Bars holding NaN, an unsorted funding list or an empty horizon take :func:`label` itself.
    """
    n = len(bars)
    if not trades:
        return []
    plain = (
        n == 0
        or horizon_ms <= 0
        or bool(np.isnan(bars.high).any() or np.isnan(bars.low).any())
        or any(a[0] > b[0] for a, b in pairwise(funding))
    )
    if plain:
        return label_each(trades, take_profit_target, horizon_ms, bars, funding)
    ot = bars.open_time
    i0s_a = np.searchsorted(ot, np.asarray([t.decision_ts for t in trades], dtype=np.int64), side="left")
    i1s = np.searchsorted(ot, ot[np.minimum(i0s_a, n - 1)] + horizon_ms, side="left").tolist()
    i0s = i0s_a.tolist()
    times = ot.tolist()
    opens = bars.open.tolist()
    closes = bars.close.tolist()
    highs = bars.high
    lows = bars.low
    f_times = [ft for ft, _ in funding]
    out: list[Outcome] = []
    for t, i0, i1 in zip(trades, i0s, i1s, strict=True):
        long = t.long
        entry_ref = t.entry_ref
        stop = t.stop
        targets = t.targets
        risk = abs(entry_ref - stop)
        if risk <= 0 or not targets or i0 >= n:
            out.append(NO_DATA)
            continue
        entry_ts = times[i0]
        full = i1 < n
        costs = t.costs
        half = costs.half_spread_bps / 10_000.0
        imp = costs.impact_frac
        fee = costs.fee_taker_bps / 10_000.0
        sign = 1.0 if long else -1.0
        op = opens[i0]
        entry_fill = op * (1 + sign * half) * (1 + sign * imp)
        tp = float(targets[min(take_profit_target, len(targets)) - 1])
        m = (lows[i0:i1] <= stop) if long else (highs[i0:i1] >= stop)
        span = i1 - i0
        js = int(m.argmax())
        if not m[js]:
            js = span
        # The most favourable price touched strictly before the stop's bar (none when the stop is the first bar).
        if js == 0:
            best = None
        elif long:
            best = float(highs[i0 : i0 + js].max())
        else:
            best = float(lows[i0 : i0 + js].min())
        if best is None:
            hits = tuple(False for _ in targets)
            tp_before = False
        elif long:
            hits = tuple([bool(best >= x) for x in targets])
            tp_before = best >= tp
        else:
            hits = tuple([bool(best <= x) for x in targets])
            tp_before = best <= tp
        if js < span and not tp_before:  # stop first, also when both fall in one bar
            j = js
            bar_open = opens[i0 + j]
            trigger = min(bar_open, stop) if long else max(bar_open, stop)
            kind = "stop"
        elif tp_before:
            mt = (highs[i0 : i0 + js] >= tp) if long else (lows[i0 : i0 + js] <= tp)
            j = int(mt.argmax())
            bar_open = opens[i0 + j]
            trigger = max(bar_open, tp) if long else min(bar_open, tp)
            kind = "target"
        else:
            j = span - 1
            trigger = closes[i0 + j]
            kind = "horizon" if full else "data_end"
        exit_fill = trigger * (1 - sign * half) * (1 - sign * imp)
        exit_ts = times[i0 + j]
        paid = 0.0
        if f_times:
            for ft, rate in funding[bisect_right(f_times, entry_ts) : bisect_right(f_times, exit_ts)]:
                k = min(bisect_left(times, ft), n - 1)
                paid += sign * rate * opens[k]
        gross = sign * (trigger - entry_ref) / risk
        net = (sign * (exit_fill - entry_fill) - fee * (entry_fill + exit_fill) - paid) / risk
        out.append(Outcome(kind, net, gross, entry_ts, exit_ts, entry_fill, exit_fill, -paid / risk, hits))
    return out
