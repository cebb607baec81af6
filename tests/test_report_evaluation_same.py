"""The report's evaluation section says exactly what it said before issue 13's third round made it cheaper.

Three changes, each compared here against the code it replaced (kept below as the reference):

- ``run_bars`` for a replay reads the label timeframe's columns (``replay_label_bars``) instead of streaming a
  second ``ReplaySource`` as ``Kline`` objects: same bars, bit for bit, on the shared recordings and on generated
  files with gaps, a file stopping mid-window, dated multi-file sets and label timeframes coarser than the files;
  and the same refusals.
- ``label_many`` labels a symbol's candidates in one pass: the same ``Outcome`` as ``label`` per candidate.
- ``run_bars`` inside a replay's report takes the candles the replay already parsed (``ReplaySource.parsed``)
  instead of parsing the files again: the same bars, and no file is read for them.
- ``cands_from_rows`` decodes with orjson (``json.loads`` for the NaN literals orjson refuses) and skips the
  quality-model row for the run table: the run table is the same JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import require_data
from ultra_signals.apps import evaluate as ev
from ultra_signals.apps.evaluate import EvaluationError, run_bars, run_table
from ultra_signals.core.config import load_settings
from ultra_signals.core.events import Kline
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.research.outcomes import Bars, Costs, Outcome, Trade, label_each, label_many
from ultra_signals.sources.base import SourceError
from ultra_signals.sources.candles_csv import CandleWriter
from ultra_signals.sources.replay import ReplaySource

M = 60_000
H = 60 * M


def _reference_bars(folder: Path, symbols: Sequence[str], label_tf: str, start_ms: int, end_ms: int) -> dict[str, Bars]:
    """``run_bars``' replay branch before the change: a second replay streamed as Klines."""
    try:
        src = ReplaySource(folder, list(symbols), [label_tf], start_ms, end_ms, 0)
    except SourceError as e:
        raise EvaluationError(f"bars for labelling: {e}") from None
    rows: dict[str, list[tuple[int, float, float, float, float]]] = {sym: [] for sym in symbols}
    step = tf_ms(label_tf)
    for e in src.iter_events():
        if (
            isinstance(e, Kline)
            and e.closed
            and e.timeframe == label_tf
            and e.symbol in rows
            and e.open_time >= start_ms - step
            and e.open_time + step <= end_ms + 1
        ):
            rows[e.symbol].append((e.open_time, e.open, e.high, e.low, e.close))
    return {sym: Bars.from_rows(r) for sym, r in rows.items()}


def _new_bars(folder: Path, symbols: Sequence[str], label_tf: str, start_ms: int, end_ms: int) -> dict[str, Bars]:
    s = load_settings(environ={})
    bars, tf = run_bars(s, "replay", symbols, [label_tf, "1d"], start_ms, end_ms, None, str(folder))
    assert tf == label_tf
    return bars


def _same(folder: Path, symbols: Sequence[str], label_tf: str, start_ms: int, end_ms: int) -> int:
    """Both ways give the same bars (dtype and bytes) or the same refusal; returns the number of bars."""
    try:
        want = _reference_bars(folder, symbols, label_tf, start_ms, end_ms)
    except EvaluationError as e:
        with pytest.raises(EvaluationError) as got:
            _new_bars(folder, symbols, label_tf, start_ms, end_ms)
        assert str(got.value) == str(e)
        return 0
    got_bars = _new_bars(folder, symbols, label_tf, start_ms, end_ms)
    assert list(got_bars) == list(want)
    for sym, w in want.items():
        g = got_bars[sym]
        for name in ("open_time", "open", "high", "low", "close"):
            a, b = getattr(g, name), getattr(w, name)
            assert a.dtype == b.dtype and a.shape == b.shape, (sym, label_tf, name)
            assert a.tobytes() == b.tobytes(), (sym, label_tf, name)
    # The replay's own parse (what its report passes): the same bars, and no file parsed again for them.
    parsed = ReplaySource(folder, list(symbols), [label_tf], start_ms, end_ms, 0).parsed()
    assert sorted(parsed) == sorted(symbols)  # these histories fit the replay's keep budget
    s = load_settings(environ={})
    read_set, ev.read_set = ev.read_set, _no_second_parse
    try:
        from_parse, _ = run_bars(s, "replay", symbols, [label_tf, "1d"], start_ms, end_ms, None, str(folder), parsed)
    finally:
        ev.read_set = read_set
    assert list(from_parse) == list(want)
    for sym, w in want.items():
        for name in ("open_time", "open", "high", "low", "close"):
            assert getattr(from_parse[sym], name).tobytes() == getattr(w, name).tobytes(), (sym, label_tf, name)
    return sum(len(b) for b in want.values())


def _no_second_parse(cs: Any) -> Any:
    raise AssertionError(f"{cs.paths} parsed again although the replay's columns were given")


def _span(path: Path) -> tuple[int, int]:
    """First and last open time of a candle file (layout a)."""
    lines = path.read_text().splitlines()
    return int(lines[1].split(",")[0]), int(lines[-1].split(",")[0])


@pytest.mark.parametrize(
    ("symbols", "label_tfs"),
    [
        (["UNITTESTBTC"], ["1m", "5m", "15m", "1h"]),
        (["ETHBTC", "XMRBTC"], ["5m", "15m", "1h", "4h"]),
        (["XRPUSDT"], ["5m", "1h"]),  # its 1h file is not used: the 5m file is the finest
    ],
)
def test_replay_bars_are_the_ones_the_second_replay_streamed(symbols: list[str], label_tfs: list[str]) -> None:
    folder = require_data("klines")
    first, last = _span(folder / f"{symbols[0]}-{'1m' if symbols[0] == 'UNITTESTBTC' else '5m'}.csv")
    total = 0
    # Whole files, unaligned windows inside, windows hanging over either end of the data.
    windows = [
        (first, last + 5 * M),
        (first + 7 * M + 13, first + (last - first) // 2 + 17),
        (first + (last - first) // 3, last - 30 * M + 1),
        (first - 10 * H, first + 3 * H),
        (last - 2 * H - 1, last + 10 * H),
    ]
    for tf in label_tfs:
        for a, b in windows:
            total += _same(folder, symbols, tf, a, b)
    assert total > 1000


def _write(path: Path, bars: list[Kline]) -> None:
    with CandleWriter(path) as w:
        for k in bars:
            w.write(k)


def _series(symbol: str, tf: str, start: int, n: int, seed: int, drop: float) -> list[Kline]:
    """A random walk of ``n`` bars with a fraction ``drop`` removed at random and one long gap."""
    rng = np.random.default_rng(seed)
    step = tf_ms(tf)
    price = 100.0
    out = []
    gap = range(n // 2, n // 2 + int(rng.integers(10, 200)))
    for i in range(n):
        o = price
        c = max(0.01, o * (1 + rng.normal(0, 0.002)))
        h = max(o, c) * (1 + abs(rng.normal(0, 0.001)))
        lo = min(o, c) * (1 - abs(rng.normal(0, 0.001)))
        price = c
        if i in gap or rng.random() < drop:
            continue
        t = start + i * step
        out.append(Kline(symbol, tf, t, t + step - 1, o, h, lo, c, float(rng.integers(1, 100))))
    return out


def test_generated_files_with_gaps_and_coarser_labels(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    day0 = 1_609_459_200_000  # 2021-01-01 00:00 UTC
    # AAA: 1m with random holes, stops mid-hour; BBB: 5m, starts mid-hour; CCC: two dated 1m files.
    aaa = _series("AAA", "1m", day0 + 3 * M, 3 * 1440 + 37, 1, 0.05)
    bbb = _series("BBB", "5m", day0 + 35 * M, 900, 2, 0.1)
    ccc = _series("CCC", "1m", day0 + 1440 * M * 29, 3 * 1440, 3, 0.02)
    _write(d / "AAA-1m.csv", aaa)
    _write(d / "BBB-5m.csv", bbb)
    feb = day0 + 31 * 1440 * M
    _write(d / "CCC-1m-2021-01.csv", [k for k in ccc if k.open_time < feb])
    _write(d / "CCC-1m-2021-02.csv", [k for k in ccc if k.open_time >= feb])
    (d / "AAA-mark-1h.csv").write_text("not candles\n")
    end = day0 + 40 * 1440 * M
    total = 0
    for symbols, tfs in ((["AAA"], ["1m", "3m", "5m", "15m", "1h", "4h"]), (["BBB", "AAA"], ["5m", "15m", "1h"])):
        for tf in tfs:
            for a, b in ((day0, end), (day0 + 61 * M + 5, day0 + 1440 * M + 7 * M), (day0 + 2000 * M, end)):
                total += _same(d, symbols, tf, a, b)
    for tf in ("1m", "5m", "1h", "1d"):
        total += _same(d, ["CCC"], tf, day0, end)
        total += _same(d, ["CCC"], tf, feb - 3 * H - 1, feb + 5 * H + 1)
    assert total > 10_000
    # The same refusals: a timeframe finer than a file, one that is not a multiple, no file, no bar in the window.
    for symbols, tf, a, b in (
        (["BBB"], "1m", day0, end),
        (["BBB"], "7m", day0, end),
        (["AAA", "NOPE"], "1m", day0, end),
        (["AAA"], "1h", end + H, end + 5 * H),
        (["AAA"], "1m", day0 + 5 * H, day0 + 5 * H),
    ):
        assert _same(d, symbols, tf, a, b) == 0


def test_parsed_candles_of_other_files_are_not_used(tmp_path: Path) -> None:
    """A replay's parsed columns stand in only for the very files the labels would read: another folder's file of
    the same symbol (other prices) is read, not replaced."""
    day0 = 1_609_459_200_000
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _write(a / "AAA-1m.csv", _series("AAA", "1m", day0, 600, 1, 0.05))
    _write(b / "AAA-1m.csv", _series("AAA", "1m", day0, 600, 2, 0.05))
    parsed_a = ReplaySource(a, ["AAA"], ["1m"], None, None, 0).parsed()
    s = load_settings(environ={})
    end = day0 + 600 * M
    got, _ = run_bars(s, "replay", ["AAA"], ["1m"], day0, end, None, str(b), parsed_a)
    want, _ = run_bars(s, "replay", ["AAA"], ["1m"], day0, end, None, str(b))
    other, _ = run_bars(s, "replay", ["AAA"], ["1m"], day0, end, None, str(a))
    assert got["AAA"].close.tobytes() == want["AAA"].close.tobytes() != other["AAA"].close.tobytes()


def _bars_for_labels(n: int, seed: int) -> Bars:
    k = _series("X", "1m", 1_609_459_200_000, n, seed, 0.03)
    return Bars.from_rows([(b.open_time, b.open, b.high, b.low, b.close) for b in k])


def _trades(bars: Bars, n: int, seed: int) -> list[Trade]:
    rng = np.random.default_rng(seed)
    t0, t1 = int(bars.open_time[0]), int(bars.open_time[-1])
    out = []
    for i in range(n):
        ts = int(rng.integers(t0 - 30 * M, t1 + 30 * M))
        j = min(int(np.searchsorted(bars.open_time, ts)), len(bars) - 1)
        entry = float(bars.close[max(0, j - 1)])
        long = bool(rng.random() < 0.5)
        sign = 1.0 if long else -1.0
        dist = entry * float(rng.uniform(0.0005, 0.01))
        stop = entry - sign * dist
        targets: tuple[float, ...] = tuple(entry + sign * dist * m for m in (1.0, 1.5, 2.5)[: 1 + i % 3])
        if i % 50 == 7:
            targets = (*targets[:-1], math.nan)
        if i % 97 == 3:
            stop = entry  # no risk: no_data
        if i % 89 == 5:
            targets = ()
        if i % 13 == 0:  # a stop or a target inside the first bar's range
            stop = entry - sign * dist * 0.01
        costs = Costs(5.0, 1.0, 0.5, float(rng.uniform(0, 50_000)))
        out.append(Trade(long, entry, stop, targets, ts, costs))
    return out


def _reference_labels(
    trades: Sequence[Trade], tp: int, horizon_ms: int, bars: Bars, funding: Sequence[tuple[int, float]]
) -> list[Outcome]:
    return label_each(trades, tp, horizon_ms, bars, funding)  # label() per trade, one call each


def _bits(o: Outcome) -> str:
    """Every field, floats by repr (the shortest text that reads back to the same bits; keeps -0.0 apart)."""
    return repr((o.exit_kind, o.r, o.gross_r, o.entry_ts, o.exit_ts, o.entry_price, o.exit_price, o.funding_r,
                 o.target_hits, [type(h) for h in o.target_hits]))  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_many_is_label_for_each_trade(seed: int) -> None:
    bars = _bars_for_labels(6 * 1440, seed)
    trades = _trades(bars, 1500, seed + 10)
    t0 = int(bars.open_time[0])
    funding = sorted({(t0 + k * 8 * H + (k % 3) * 17, float(r)) for k, r in enumerate(np.linspace(-1e-3, 1e-3, 20))})
    funding.append((funding[-1][0], 2e-4))  # two rates at one time: both counted, in list order
    kinds: set[str] = set()
    for tp in (1, 2, 5):
        for horizon in (30 * M, 6 * H, 24 * H):
            for fund in ((), funding):
                want = [_bits(o) for o in _reference_labels(trades, tp, horizon, bars, fund)]
                got = [_bits(o) for o in label_many(trades, take_profit_target=tp, horizon_ms=horizon, bars=bars,
                                                    funding=fund)]  # fmt: skip
                assert got == want
                kinds.update(g.split("'")[1] for g in got)
    assert {"stop", "target", "horizon", "data_end", "no_data"} <= kinds  # every branch was compared


def test_label_many_takes_label_itself_where_its_shortcuts_do_not_hold() -> None:
    bars = _bars_for_labels(1440, 5)
    trades = _trades(bars, 200, 6)
    nan_bars = Bars(bars.open_time, bars.open, bars.high.copy(), bars.low, bars.close)
    nan_bars.high[100:110] = math.nan
    unsorted = [(int(bars.open_time[500]), 1e-4), (int(bars.open_time[10]), -1e-4)]
    empty = Bars.from_rows([])
    for b, fund, horizon in ((nan_bars, (), 6 * H), (bars, unsorted, 6 * H), (bars, (), 0), (empty, (), 6 * H)):
        want = [_bits(o) for o in _reference_labels(trades, 1, horizon, b, fund)]
        assert [_bits(o) for o in label_many(trades, take_profit_target=1, horizon_ms=horizon, bars=b,
                                             funding=fund)] == want  # fmt: skip
    assert label_many([], take_profit_target=1, horizon_ms=H, bars=bars) == []


def _rows(bars: dict[str, Bars], run_id: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Journal-shaped decision rows (``Journal.decisions``) on the given bars."""
    rng = np.random.default_rng(seed)
    rows = []
    reasons = [None, None, "caps", "cooldown", "spread"]
    for i in range(n):
        sym = sorted(bars)[i % len(bars)]
        b = bars[sym]
        j = int(rng.integers(0, len(b)))
        bar_open = int(b.open_time[j])
        entry = float(b.close[j])
        long = bool(rng.random() < 0.5)
        sign = 1.0 if long else -1.0
        dist = entry * float(rng.uniform(0.001, 0.02))
        targets = [entry + sign * dist * m for m in (1.0, 2.0)]
        tj = json.dumps([*targets[:1], math.nan]) if i % 40 == 3 else json.dumps(targets)
        reason = reasons[int(rng.integers(0, len(reasons)))]
        rows.append(
            {
                "decision_id": f"{run_id}:{sym}:1m:{bar_open}",
                "ts": bar_open + M,
                "symbol": sym,
                "timeframe": "1m",
                "side": "LONG" if long else "SHORT",
                "reason": reason,
                "allowed": reason is None,
                "entry": entry,
                "stop": entry - sign * dist,
                "targets_json": tj,
                "score": float(rng.normal()),
                "confidence": float(rng.uniform()),
                "components_json": json.dumps({"trend": float(rng.normal()), "gap": None}),
                "features_json": json.dumps({"rsi": float(rng.uniform(0, 100)), "atr": 1e-7 * i}),
            }
        )
    rows.sort(key=lambda r: r["ts"])
    return rows


def _reference_run_table(monkeypatch: pytest.MonkeyPatch, *args: Any, **kw: Any) -> dict[str, Any]:
    """``run_table`` with the code it had before: ``json.loads``, the quality-model row, ``label`` per candidate."""
    orig_cands = ev.cands_from_rows

    def labels(args: Any) -> list[Outcome]:  # a Trade per candidate, label() per trade
        cands, bars, funding, (fee, half, impact), notionals, tp, horizon_ms = args
        trades = [Trade(c.long, c.entry, c.stop, c.targets, c.ts, Costs(fee, half, impact, n))
                  for c, n in zip(cands, notionals, strict=True)]  # fmt: skip
        return _reference_labels(trades, tp, horizon_ms, bars, funding)

    with monkeypatch.context() as m:
        m.setattr(ev, "_loads", json.loads)
        m.setattr(ev, "_label_symbol", labels)
        m.setattr(ev, "cands_from_rows", lambda rows, run_id, **_: orig_cands(rows, run_id))
        return run_table(*args, **kw)


def test_run_table_is_the_same_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(environ={})
    day0 = 1_609_459_200_000
    bars = {sym: _bars_for_labels(3 * 1440, seed) for seed, sym in enumerate(("AAA", "BBB"))}
    rows = _rows(bars, "r1", 900, 4)
    (tmp_path / "AAA-funding.csv").write_text(
        "funding_time,funding_rate\n" + "".join(f"{day0 + k * 8 * H},{(k % 5 - 2) * 1e-4}\n" for k in range(12))
    )
    for kw in ({}, {"funding_dir": tmp_path, "horizon_ms": 6 * H, "draws": 300, "seed": 3}):
        want = _reference_run_table(monkeypatch, s, rows, "r1", bars, **kw)
        got = run_table(s, rows, "r1", bars, **kw)
        assert got["status"] == "ok"
        assert json.dumps(got, sort_keys=True, default=str) == json.dumps(want, sort_keys=True, default=str)
    # The quality-model row is still decoded for evaluate --journal (it fits the model on it).
    full = ev.cands_from_rows(rows, "r1")
    assert all(len(c.x) > 0 for c in full)
    assert [c.targets for c in full] == [
        tuple(float(t) for t in json.loads(r["targets_json"])) for r in rows
    ]  # NaN literals included (orjson refuses them)


def test_run_table_on_a_replays_journal_is_the_same_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared recordings through the engine and the journal, then the report's table both ways."""
    from tests.test_report import _replay_run

    stats, journal, metrics = _replay_run(tmp_path, serve=False)
    rows = journal.decisions(stats.run_id)
    journal.close()
    metrics.stop()
    folder = require_data("klines")
    assert stats.market_start_ms is not None and stats.market_end_ms is not None
    start, end = stats.market_start_ms, stats.market_end_ms
    s = load_settings(overrides={"runtime.timeframes": "5m,15m,1h"}, environ={})
    new, tf = run_bars(s, "replay", stats.symbols, stats.timeframes, start, end, None, str(folder))
    old = _reference_bars(folder, stats.symbols, tf, start, end)
    assert {k: v.open_time.tobytes() + v.high.tobytes() for k, v in new.items()} == {
        k: v.open_time.tobytes() + v.high.tobytes() for k, v in old.items()
    }
    want = _reference_run_table(monkeypatch, s, rows, stats.run_id, old, draws=200)
    got = run_table(s, rows, stats.run_id, new, draws=200)
    assert got["status"] == "ok" and got["candidates"] == len(rows) > 30
    assert json.dumps(got, sort_keys=True, default=str) == json.dumps(want, sort_keys=True, default=str)
