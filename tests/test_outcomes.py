"""Outcome labels against a brute force written bar by bar from the rules in the module doc."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_signals.research import outcomes
from ultra_signals.research.outcomes import (
    Bars,
    Costs,
    Trade,
    label,
    label_columns,
    label_each,
    label_many,
    trade_columns,
)

M = 60_000
FREE = Costs(fee_taker_bps=0.0, half_spread_bps=0.0, impact_bps_per_10k_usdt=0.0)


def brute(
    long: bool,
    entry_ref: float,
    stop: float,
    targets: list[float],
    tp_i: int,
    ts: int,
    horizon: int,
    rows: list[tuple[int, float, float, float, float]],
    c: Costs,
    funding: list[tuple[int, float]],
) -> tuple[str, float, tuple[bool, ...]]:
    """A per-bar loop: stop checked before the target on every bar; mark at the horizon's last close."""
    s = 1.0 if long else -1.0
    half, imp, fee = c.half_spread_bps / 1e4, c.impact_frac, c.fee_taker_bps / 1e4
    start = next(i for i, r in enumerate(rows) if r[0] >= ts)
    entry_t, op = rows[start][0], rows[start][1]
    entry = op * (1 + s * half) * (1 + s * imp)
    tp = targets[min(tp_i, len(targets)) - 1]
    inside = [r for r in rows[start:] if r[0] < entry_t + horizon]
    kind, trig, exit_t = "", 0.0, 0
    stop_bar = None
    for t, _o, h, lo, _cl in inside:
        if (lo <= stop) if long else (h >= stop):
            stop_bar = t
            break
    hits = []
    for tg in targets:
        hit_bar = next((t for t, _o, h, lo, _c in inside if (h >= tg if long else lo <= tg)), None)
        hits.append(hit_bar is not None and (stop_bar is None or hit_bar < stop_bar))
    for t, o, h, lo, _cl in inside:
        if (lo <= stop) if long else (h >= stop):
            kind, trig, exit_t = "stop", (min(o, stop) if long else max(o, stop)), t
            break
        if (h >= tp) if long else (lo <= tp):
            kind, trig, exit_t = "target", (max(o, tp) if long else min(o, tp)), t
            break
    else:
        t, _o, _h, _l, cl = inside[-1]
        full = any(r[0] >= entry_t + horizon for r in rows)
        kind, trig, exit_t = ("horizon" if full else "data_end"), cl, t
    ex = trig * (1 - s * half) * (1 - s * imp)
    paid = 0.0
    for ft, rate in funding:
        if entry_t < ft <= exit_t:
            k = next((r for r in rows if r[0] >= ft), rows[-1])
            paid += s * rate * k[1]
    r = (s * (ex - entry) - fee * (entry + ex) - paid) / abs(entry_ref - stop)
    return kind, r, tuple(hits)


def run(
    long: bool,
    rows: list[tuple[int, float, float, float, float]],
    *,
    stop: float,
    targets: list[float],
    horizon: int = 10 * M,
    costs: Costs = FREE,
    funding: list[tuple[int, float]] | None = None,
    tp_i: int = 1,
) -> tuple[str, float, tuple[bool, ...]]:
    o = label(
        long=long,
        entry_ref=100.0,
        stop=stop,
        targets=targets,
        take_profit_target=tp_i,
        decision_ts=M,
        horizon_ms=horizon,
        bars=Bars.from_rows(rows),
        costs=costs,
        funding=funding or [],
    )
    b = brute(long, 100.0, stop, targets, tp_i, M, horizon, rows, costs, funding or [])
    assert o.exit_kind == b[0]
    assert o.r == pytest.approx(b[1], abs=1e-12)
    assert o.target_hits == b[2]
    return o.exit_kind, o.r, o.target_hits


def bar(i: int, o: float, h: float, lo: float, c: float) -> tuple[int, float, float, float, float]:
    return (i * M, o, h, lo, c)


def test_stop_first() -> None:
    rows = [
        bar(0, 100, 100, 100, 100),
        bar(1, 100, 100.5, 99, 99.5),
        bar(2, 99.5, 100, 97, 98),
        bar(3, 98, 103, 98, 103),
    ]
    kind, r, hits = run(True, rows, stop=98.0, targets=[102.0, 104.0])
    assert (kind, r, hits) == ("stop", -1.0, (False, False))


def test_target_first() -> None:
    rows = [
        bar(0, 100, 100, 100, 100),
        bar(1, 100, 101, 99.5, 100.8),
        bar(2, 100.8, 102.5, 100.5, 102),
        bar(3, 102, 102, 97, 97),
    ]
    kind, r, hits = run(True, rows, stop=98.0, targets=[102.0, 104.0])
    assert (kind, r, hits) == ("target", 1.0, (True, False))


def test_stop_and_target_in_one_bar_takes_the_stop() -> None:
    rows = [bar(0, 100, 100, 100, 100), bar(1, 100, 103, 97, 101)]
    assert run(True, rows, stop=98.0, targets=[102.0]) == ("stop", -1.0, (False,))
    assert run(False, rows, stop=102.0, targets=[98.0]) == ("stop", -1.0, (False,))


def test_neither_within_the_horizon_marks_to_the_last_close() -> None:
    rows = [bar(i, 100, 101, 99, 100 + i / 10) for i in range(1, 20)]
    kind, r, _ = run(True, rows, stop=98.0, targets=[102.0], horizon=5 * M)
    assert kind == "horizon"
    assert r == pytest.approx((100.5 - 100.0) / 2.0)  # bars 1..5 open inside the horizon; close of bar 5


def test_data_end_before_the_horizon() -> None:
    rows = [bar(i, 100, 101, 99, 100.2) for i in range(1, 4)]
    assert run(True, rows, stop=98.0, targets=[102.0], horizon=60 * M)[0] == "data_end"


def test_gap_through_the_stop_fills_at_the_open() -> None:
    rows = [bar(1, 100, 100.5, 99.5, 100), bar(2, 96, 97, 95, 96)]
    assert run(True, rows, stop=98.0, targets=[102.0])[1] == pytest.approx(-2.0)


def test_short_with_costs_and_funding() -> None:
    rows = [bar(i, 100 - i / 5, 100.1 - i / 5, 99.8 - i / 5, 99.9 - i / 5) for i in range(1, 30)]
    c = Costs(fee_taker_bps=5.0, half_spread_bps=1.0, impact_bps_per_10k_usdt=0.5, notional=50_000)
    kind, r, hits = run(
        False, rows, stop=102.0, targets=[98.0, 96.0], costs=c, funding=[(3 * M, 0.001), (90 * M, 0.5)], horizon=60 * M
    )
    assert kind == "target" and hits == (True, True)  # 98 first; 96 is touched later, still before any stop
    assert r < 1.0  # the costs outweigh the funding a short receives at a positive rate


def test_no_bar_after_the_decision_is_unlabelled() -> None:
    o = label(
        long=True,
        entry_ref=100.0,
        stop=98.0,
        targets=[102.0],
        take_profit_target=1,
        decision_ts=10 * M,
        horizon_ms=M,
        bars=Bars.from_rows([bar(1, 100, 100, 100, 100)]),
        costs=FREE,
    )
    assert not o.labelled and math.isnan(o.r)


@settings(max_examples=150, deadline=None)
@given(
    long=st.booleans(),
    moves=st.lists(
        st.tuples(st.floats(-3, 3), st.floats(0, 3), st.floats(0, 3), st.floats(-3, 3)), min_size=1, max_size=25
    ),
    horizon_bars=st.integers(1, 30),
    tp_i=st.integers(1, 3),
    fee=st.floats(0, 10),
)
def test_matches_the_brute_force_on_random_series(
    long: bool, moves: list[tuple[float, float, float, float]], horizon_bars: int, tp_i: int, fee: float
) -> None:
    rows = []
    for i, (o, up, down, c) in enumerate(moves, start=1):
        op, cl = 100 + o, 100 + c
        rows.append(bar(i, op, max(op, cl) + up, min(op, cl) - down, cl))
    s = 1 if long else -1
    c = Costs(fee_taker_bps=fee, half_spread_bps=1.0, impact_bps_per_10k_usdt=0.5, notional=10_000)
    run(
        long,
        rows,
        stop=100 - s * 2.0,
        targets=[100 + s * 2.0, 100 + s * 4.0, 100 + s * 5.0],
        horizon=horizon_bars * M,
        costs=c,
        tp_i=tp_i,
        funding=[(5 * M, 0.0001), (12 * M, -0.0002)],
    )


def _bits(o: object) -> str:
    """Every field, floats by repr (keeps -0.0 and NaN apart from their look-alikes)."""
    return repr(o)


@pytest.mark.parametrize(("seed", "table_bars"), [(s, b) for s in range(6) for b in (None, 7)])
def test_label_many_equals_label_on_ties_gaps_and_odd_levels(
    seed: int, table_bars: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Coarse integer prices make exact ties (stop == open, target == high, stop == target) common; gaps in the
    # bars and horizons of every length exercise the lifting's blocks, which are powers of two; NaN and inf
    # levels must touch (or not) as the per-trade masks say.  table_bars=7: many table windows, each trade's
    # horizon reaching far past its own.
    if table_bars is not None:
        monkeypatch.setattr(outcomes, "_TABLE_BARS", table_bars)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    times = np.cumsum(rng.choice([1, 1, 1, 2, 5], size=n)) * M
    op = rng.integers(95, 106, size=n).astype(float)
    cl = rng.integers(95, 106, size=n).astype(float)
    hi = np.maximum(op, cl) + rng.integers(0, 3, size=n)
    lo = np.minimum(op, cl) - rng.integers(0, 3, size=n)
    bars = Bars(times.astype(np.int64), op, hi, lo, cl)
    odd = [math.nan, math.inf, -math.inf, 0.0, -0.0]
    trades = []
    for i in range(300):
        long = bool(rng.random() < 0.5)
        s = 1.0 if long else -1.0
        entry = float(rng.integers(95, 106))
        stop = entry - s * float(rng.integers(0, 6))
        targets = tuple(entry + s * float(rng.integers(0, 8)) for _ in range(int(rng.integers(0, 4))))
        if i % 17 == 0:
            stop = odd[i % len(odd)]
        if i % 23 == 0 and targets:
            targets = (*targets[:-1], odd[(i // 23) % len(odd)])
        ts = int(rng.integers(int(times[0]) - 3 * M, int(times[-1]) + 3 * M))
        costs = Costs(float(rng.uniform(0, 10)), float(rng.uniform(0, 3)), 0.5, float(rng.uniform(0, 1e5)))
        trades.append(Trade(long, entry, stop, targets, ts, costs))
    funding = sorted((int(t), float(r)) for t, r in zip(rng.choice(times, 5), rng.normal(0, 1e-3, 5), strict=True))
    nan_bars = Bars(bars.open_time, bars.open, bars.high.copy(), bars.low, bars.close)
    nan_bars.high[n // 2] = math.nan  # label() itself, through both entry points
    for b, tp in ((bars, 1), (bars, 2), (bars, 4), (nan_bars, 2)):
        for horizon in (M, 3 * M, 64 * M, 129 * M, 10_000 * M):
            for fund in ((), funding):
                want = [_bits(o) for o in label_each(trades, tp, horizon, b, fund)]
                got = label_many(trades, take_profit_target=tp, horizon_ms=horizon, bars=b, funding=fund)
                assert [_bits(o) for o in got] == want
                cols = label_columns(
                    **trade_columns(trades), take_profit_target=tp, horizon_ms=horizon, bars=b, funding=fund
                )
                assert [_bits(o) for o in cols] == want
