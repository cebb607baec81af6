"""The runner end to end on real recorded candles: caps hold in every sliding window (checked from the journal),
MTF and cooldown really fire, a restart keeps the day's count, replay speed does not change decisions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_data
from ultra_signals.apps.report import max_in_sliding_window
from ultra_signals.bootstrap import build_runner
from ultra_signals.core.caps import DAY_MS, HOUR_MS
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.journal.writer import Journal
from ultra_signals.live.runner import RunStats
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.replay import ReplaySource
from ultra_signals.transport.notifier import NullNotifier

ALTS = ["ADABTC", "DASHBTC", "ETCBTC", "ETHBTC", "LTCBTC", "NXTBTC", "TRXBTC", "XLMBTC", "XMRBTC", "ZECBTC"]
DAY0 = 1_516_320_000_000  # 2018-01-19T00:00:00Z, inside the alt/BTC recordings


def settings(**over: Any) -> Settings:
    base = {"runtime.timeframes": "5m,15m,1h", "execution.broker": "none"}
    base.update(over)
    return load_settings(overrides=base, environ={})


def run(
    s: Settings,
    journal_url: str,
    symbols: list[str],
    start: int | None = None,
    end: int | None = None,
    **kw: Any,
) -> tuple[RunStats, list[dict[str, Any]]]:
    src = ReplaySource(require_data("klines"), symbols, s.runtime.timeframes, start, end, s.runtime.warmup_bars)
    journal = Journal(journal_url)
    runner = build_runner(
        s,
        source=src,
        journal=journal,
        notifier=NullNotifier(),
        metrics=Metrics(),
        executor=False,
        serve_metrics=False,
        **kw,
    )
    stats = asyncio.run(runner.run())
    rows = journal.decisions(stats.run_id)
    journal.close()
    return stats, rows


def test_ten_series_replay_never_exceeds_caps_and_every_sniper_gate_fires(tmp_path: Path) -> None:
    s = settings()
    stats, rows = run(s, f"sqlite:///{tmp_path}/j.db", ALTS, decisions_out=tmp_path / "d.jsonl")
    allowed = [r["ts"] for r in rows if r["allowed"]]
    assert stats.crash is None and not stats.errors
    assert len(allowed) > 10
    assert max_in_sliding_window(allowed, HOUR_MS) <= 2
    assert max_in_sliding_window(allowed, DAY_MS) <= 6
    # Demand exceeded the caps, and the windows were filled to them somewhere.
    assert max_in_sliding_window(allowed, DAY_MS) == 6 and max_in_sliding_window(allowed, HOUR_MS) == 2
    reasons = {r["reason"] for r in rows}
    assert {"mtf_required", "cooldown", "daily_cap"} <= reasons
    # The JSONL mirror holds exactly the journal's candidates.
    lines = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(lines) == len(rows)
    assert set(lines[0]) == {
        "ts",
        "symbol",
        "timeframe",
        "side",
        "score",
        "confidence",
        "decision",
        "reason",
        "entry",
        "stop",
        "targets",
    }
    assert sum(1 for x in lines if x["decision"] == "allowed") == len(allowed)


def test_mtf_blocks_on_real_data_against_the_higher_timeframe(tmp_path: Path) -> None:
    s = settings()
    _, rows = run(s, f"sqlite:///{tmp_path}/j.db", ["ETHBTC", "LTCBTC"])
    blocked = [r for r in rows if r["reason"] == "mtf_required"]
    assert blocked
    for r in rows:
        if r["allowed"]:
            htf = json.loads(r["features_json"])["htf_trend"]
            assert htf == (1.0 if r["side"] == "LONG" else -1.0)
    # Disagreement with a warm 15m trend is among the blocks (not only missing or stale bars).
    assert any(json.loads(r["features_json"])["htf_trend"] == (-1.0 if r["side"] == "LONG" else 1.0) for r in blocked)


def test_restart_mid_day_keeps_the_daily_count(tmp_path: Path) -> None:
    s = settings()
    url = f"sqlite:///{tmp_path}/j.db"
    _first, rows1 = run(s, url, ALTS, DAY0, DAY0 + 8 * HOUR_MS, namespace="desk")
    _second, rows2 = run(s, url, ALTS, DAY0 + 8 * HOUR_MS, DAY0 + 16 * HOUR_MS, namespace="desk")
    _fresh, rows3 = run(
        s, f"sqlite:///{tmp_path}/fresh.db", ALTS, DAY0 + 8 * HOUR_MS, DAY0 + 16 * HOUR_MS, namespace="desk"
    )
    a1 = [r["ts"] for r in rows1 if r["allowed"]]
    a2 = [r["ts"] for r in rows2 if r["allowed"]]
    a3 = [r["ts"] for r in rows3 if r["allowed"]]
    assert a1, "the first half-day must have allowed signals for this test to mean anything"
    assert max_in_sliding_window(a1 + a2, DAY_MS) <= 6
    assert len(a2) <= 6 - len(a1) < len(a3)  # without the journal the restarted runner would have allowed more
    assert "daily_cap" in {r["reason"] for r in rows2}


RANKED: dict[str, Any] = {
    "sniper.selection": "ranked",
    "sniper.budget_min_history": 5,
    "sniper.max_same_direction": 2,
    "sniper.quality": {"weights": {"momentum_s": 1.0, "volatility_s": -1.0, "adx": 2.0}},
}


@pytest.mark.parametrize("over", [{}, RANKED], ids=["first_come", "ranked"])
def test_two_replay_speeds_decide_identically(tmp_path: Path, over: dict[str, Any]) -> None:
    s = settings(**over)
    start, end = DAY0, DAY0 + 6 * HOUR_MS
    _, rows_fast = run(
        s,
        f"sqlite:///{tmp_path}/a.db",
        ["ETHBTC", "XMRBTC"],
        start,
        end,
        decisions_out=tmp_path / "fast.jsonl",
        run_id="same",
    )
    _, rows_paced = run(
        s,
        f"sqlite:///{tmp_path}/b.db",
        ["ETHBTC", "XMRBTC"],
        start,
        end,
        decisions_out=tmp_path / "paced.jsonl",
        run_id="same",
        speed=6 * 3600 / 2.0,  # 6 market hours in ~2 s
    )
    fast = (tmp_path / "fast.jsonl").read_text()
    assert fast and fast == (tmp_path / "paced.jsonl").read_text()
    # The journal too, with ranked's quality and the threshold each candidate was measured against.
    keep = ("decision_id", "reason", "features_json")
    assert [[r[k] for k in keep] for r in rows_fast] == [[r[k] for k in keep] for r in rows_paced]
    if over:
        assert "below_budget_threshold" in {r["reason"] for r in rows_fast}


def test_pause_blocks_new_signals_with_its_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    j = Journal(url)
    j.set_state("paused", "1")
    j.close()
    _, rows = run(settings(), url, ["ETHBTC"], DAY0, DAY0 + 12 * HOUR_MS)
    assert rows and all(not r["allowed"] and r["reason"] == "paused" for r in rows)


def test_malformed_bar_is_counted_and_skipped(tmp_path: Path) -> None:
    src_dir = require_data("klines")
    lines = (src_dir / "ETHBTC-5m.csv").read_text().splitlines()
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "ETHBTC-5m.csv").write_text("\n".join(lines) + "\n")
    s = settings()
    src = ReplaySource(folder, ["ETHBTC"], s.runtime.timeframes, DAY0, DAY0 + 6 * HOUR_MS, s.runtime.warmup_bars)
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    runner = build_runner(
        s, source=src, journal=journal, notifier=NullNotifier(), metrics=Metrics(), executor=False, serve_metrics=False
    )
    from ultra_signals.core.events import Kline

    async def poisoned() -> RunStats:
        orig = src.events

        async def events():  # type: ignore[no-untyped-def]
            n = 0
            async for ev in orig():
                n += 1
                if n == 3000 and isinstance(ev, Kline):
                    yield Kline(ev.symbol, ev.timeframe, ev.open_time + 1, ev.close_time + 1, float("nan"), 1, 1, 1, 1)
                yield ev

        src.events = events  # type: ignore[method-assign]
        return await runner.run()

    stats = asyncio.run(poisoned())
    journal.close()
    assert stats.crash is None and stats.errors["ValueError"] == 1
    assert stats.run_bars > 0


def test_runner_reports_health_to_the_executor_breakers(tmp_path: Path) -> None:
    """The latency breaker sees the runner's measured p95: an absurdly low limit trips it (what-if in shadow)."""
    from ultra_signals.execution.executor import make_executor

    s = settings(**{"execution.broker": "paper", "execution.breakers.max_latency_p95_ms": 1e-6})
    src = ReplaySource(
        require_data("klines"), ["ETHBTC"], s.runtime.timeframes, DAY0, DAY0 + 2 * DAY_MS, s.runtime.warmup_bars
    )
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    metrics = Metrics()
    notifier = NullNotifier()
    executor = make_executor(s, metrics, journal, notifier, "health-run")
    runner = build_runner(
        s,
        source=src,
        journal=journal,
        notifier=notifier,
        metrics=metrics,
        executor=executor,
        run_id="health-run",
        serve_metrics=False,
    )
    stats = asyncio.run(runner.run())
    journal.close()
    assert stats.crash is None
    assert metrics.registry.get_sample_value("breaker_trips_total", {"breaker": "latency_p95"}) == 1.0


def test_replayed_funding_and_filters_without_book_data(tmp_path: Path) -> None:
    """Funding files make near_funding work on a replay; spread without a book is "not evaluated", and counted."""
    import shutil

    from ultra_signals.apps.report import write_report

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(require_data("klines", "XRPUSDT-5m.csv"), data / "XRPUSDT-5m.csv")
    s = settings(
        **{
            "filters.max_spread_bps": 5.0,
            "filters.unavailable_data": "not_evaluated",
            "filters.funding_blackout_min": 60.0,
            "replay.funding_dir": str(require_data("funding")),
            "report.dir": str(tmp_path / "report"),
        }
    )
    src = ReplaySource(
        data, ["XRPUSDT"], s.runtime.timeframes, None, None, s.runtime.warmup_bars, funding_dir=s.replay.funding_dir
    )
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    runner = build_runner(
        s, source=src, journal=journal, notifier=NullNotifier(), metrics=Metrics(), executor=False, serve_metrics=False
    )
    st = asyncio.run(runner.run())
    assert st.crash is None and not st.errors
    rep = write_report(st, s, journal, Metrics())
    journal.close()
    assert st.blocked["near_funding"] > 0
    reached = sum(st.candidates.values()) - sum(
        v
        for k, v in st.blocked.items()
        if k in ("warmup", "stale_data", "volatility_band", "trend_strength", "min_confidence")
    )
    assert st.not_evaluated["max_spread"] == reached > 0
    assert rep.data["not_evaluated_by_filter"] == {"max_spread": reached}
    md = next(p for p in rep.paths if p.suffix == ".md").read_text()
    assert f"max_spread on {reached} candidates" in md


def test_tick_to_decision_counts_the_backlog_on_the_live_source(tmp_path: Path) -> None:
    """Issue 10: latency started when the runner took the event, so a runner 13 s behind still read
    sub-millisecond.  Now it starts at the socket read: the fake exchange sends 40 closed bars at once, the
    runner (slowed to >= 20 ms a bar) takes them one by one, and each waits behind the previous ones.

    The asserts are lower bounds that follow from the sleep alone (bar k cannot be decided before k x 20 ms
    after the burst was read), not timings of the machine.
    """
    import itertools
    import threading
    import time

    from tests.fakes.binance_server import FakeBinance, ManualClock, csv_kline_rows, ws_kline
    from ultra_signals.core.events import Kline
    from ultra_signals.execution.symbol_filters import load_exchange_info_file
    from ultra_signals.sources.binance.source import BinanceSource

    rows = csv_kline_rows(require_data("klines", "XRPUSDT-5m.csv"), "5m")
    info = load_exchange_info_file(require_data("ws", "binance-futures-exchangeinfo-20210722.txt"))
    clock = ManualClock(rows[300][0] + 60_000)
    n, slow_s = 40, 0.02

    # The fake exchange runs on its own thread and event loop, as the real one runs elsewhere: it keeps
    # sending while the runner is busy.
    fake = FakeBinance(clock.now_ms, exchange_info=info, klines={("XRPUSDT", "5m"): rows})
    floop = asyncio.new_event_loop()
    thread = threading.Thread(target=floop.run_forever, name="fake-binance", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), floop).result(10)

    async def burst() -> None:
        for r in rows[300 : 300 + n]:
            await fake.send(ws_kline("XRPUSDT", "5m", r))

    lats: list[float] = []

    async def go() -> tuple[RunStats, Metrics, list[float]]:
        s = load_settings(
            environ={},
            overrides={
                "runtime.source": "binance", "runtime.symbols": ["XRPUSDT"], "runtime.timeframes": ["5m"],
                "runtime.primary_timeframe": "5m", "runtime.warmup_bars": 210,
                "binance.rest_url": fake.rest_url, "binance.ws_url": fake.ws_url, "binance.close_grace_s": 0.2,
                "execution.broker": "none", "metrics.enabled": False, "sniper.mtf_confirm": False,
            },
        )  # fmt: skip
        m = Metrics()
        src = BinanceSource(s, m, clock=clock, duration_minutes=5 * n)
        journal = Journal(f"sqlite:///{tmp_path}/j.db")
        runner = build_runner(s, source=src, journal=journal, notifier=NullNotifier(), metrics=m, executor=False)
        engine = runner.engine
        decide = engine.on_event
        seen: list[float] = []

        def slow(ev: Any) -> Any:  # a runner that cannot keep up: >= 20 ms per live bar
            if isinstance(ev, Kline) and ev.close_time + 1 > src.run_start_ms:
                time.sleep(slow_s)
                seen.append(time.time())
            return decide(ev)

        engine.on_event = slow  # type: ignore[method-assign]
        observe = m.latency.observe

        def record(ms: float, *a: Any, **kw: Any) -> None:  # every tick-to-decision figure, in order
            lats.append(ms)
            observe(ms, *a, **kw)

        m.latency.observe = record  # type: ignore[method-assign]
        task = asyncio.create_task(runner.run())
        for _ in range(1000):  # bounded: warm-up loaded and both connections up
            if src.stats.warmup_bars >= 210 and len(fake.conns) >= 2:
                break
            await asyncio.sleep(0.01)
        # The market clock stays before the burst: REST cannot serve these bars, only the stream does.
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(burst(), floop))
        for _ in range(3000):  # bounded: every bar of the burst decided
            if len(seen) >= n:
                break
            await asyncio.sleep(0.01)
        clock.now = rows[300 + n + 2][0]  # past the run's end: the source finishes
        st = await asyncio.wait_for(task, 60)
        journal.close()
        return st, m, seen

    try:
        st, m, seen = asyncio.run(go())
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), floop).result(10)
        floop.call_soon_threadsafe(floop.stop)
        thread.join(10)
        floop.close()
    lat = lats[-n:]
    assert len(seen) == n and len(lat) == n
    # The burst reaches the socket in far less than 20 ms a bar, so the last bars waited behind (nearly) all the
    # others, each >= 20 ms: the figure grows with the backlog.  (Measured from when the runner took the event,
    # every bar would read ~20 ms.)  Bounds follow from the sleep, with half the burst as slack for how the
    # bytes happen to be split between socket reads.
    half = n // 2 * slow_s * 1000
    assert lat[-1] >= half and lat[-1] >= lat[0] + half, lat
    assert sum(b >= a for a, b in itertools.pairwise(lat)) >= n - 5, lat  # rising, bar after bar
    lag_count = [s.value for s in m.loop_lag.collect()[0].samples if s.name.endswith("_count")]
    assert lag_count and lag_count[0] >= 1 and st.loop_lag_max_s > 0  # the heartbeat ran and saw it late
    bar_close = [s.value for s in m.bar_close_to_decision.collect()[0].samples if s.name.endswith("_count")]
    assert bar_close == [float(n)]  # live bar close -> decision observed for every live bar


def test_an_allowed_signal_is_committed_before_its_order_and_its_card(tmp_path: Path) -> None:
    """Durability with every fast path on: at the moment the executor is handed an allowed decision, the moment the
    broker is asked to place its entry, and the moment the notifier is asked to announce it, the decision's row is
    already committed (read from another connection, which sees committed rows only)."""
    import sqlite3

    from ultra_signals.core.notices import Notice, SignalCard
    from ultra_signals.execution.executor import TradingExecutor

    db = tmp_path / "j.db"
    s = settings(**{"execution.broker": "paper"})
    src = ReplaySource(require_data("klines"), ALTS, s.runtime.timeframes, None, None, s.runtime.warmup_bars)
    journal = Journal(f"sqlite:///{db}")
    reader = sqlite3.connect(db)

    def committed(decision_id: str) -> bool:
        return reader.execute("select count(*) from decisions where decision_id = ?", (decision_id,)).fetchone()[0] == 1

    seen: dict[str, list[bool]] = {"executor": [], "broker": [], "notifier": []}

    class CheckingNotifier(NullNotifier):
        def publish(self, notice: Notice) -> None:
            if isinstance(notice.payload, SignalCard) and notice.payload.decision.allowed:
                seen["notifier"].append(committed(notice.payload.decision.id))

    runner = build_runner(
        s, source=src, journal=journal, notifier=CheckingNotifier(), metrics=Metrics(), serve_metrics=False
    )
    ex = runner.executor
    assert isinstance(ex, TradingExecutor)
    on_signal, submit = ex.on_signal, ex.router.broker.submit

    def checked_on_signal(d: Any) -> None:
        seen["executor"].append(committed(d.id))
        on_signal(d)

    def checked_submit(plan: Any) -> None:
        seen["broker"].append(committed(plan.decision_id))
        submit(plan)

    ex.on_signal = checked_on_signal  # type: ignore[method-assign]
    ex.router.broker.submit = checked_submit  # type: ignore[method-assign]
    stats = asyncio.run(runner.run())
    journal.close()
    reader.close()
    allowed = sum(stats.allowed.values())
    assert stats.crash is None and not stats.errors and allowed > 10
    assert seen["executor"] == [True] * allowed and seen["notifier"] == [True] * allowed
    assert seen["broker"] and all(seen["broker"])  # refused entries (a position open) never reach the broker


def test_a_stream_read_in_lists_runs_as_one_read_event_by_event(tmp_path: Path) -> None:
    """The replay's stream offers its events in lists (``events().lists()``), which the runner takes; the same
    stream read one event at a time (a wrapper without ``lists``) makes the same run: decisions, journal and every
    counter of the stats (events, warm-up, input and run bars, feed gaps, market end, chart series)."""
    from collections.abc import AsyncIterator

    from ultra_signals.core.events import MarketEvent

    s = settings(**{"runtime.timeframes": "1m,5m,15m,1h", "execution.broker": "paper"})
    outs = []
    for way in ("lists", "one_by_one"):
        src = ReplaySource(
            require_data("klines"), ["UNITTESTBTC"], s.runtime.timeframes, None, None, s.runtime.warmup_bars
        )
        if way == "one_by_one":

            async def single(orig: ReplaySource = src) -> AsyncIterator[MarketEvent]:
                async for ev in ReplaySource.events(orig):
                    yield ev

            src.events = single  # type: ignore[method-assign]
        journal = Journal(f"sqlite:///{tmp_path}/{way}.db")
        runner = build_runner(
            s,
            source=src,
            journal=journal,
            notifier=NullNotifier(),
            metrics=Metrics(),
            executor=True,
            serve_metrics=False,
            run_id="same",
            namespace=way,
            decisions_out=tmp_path / f"{way}.jsonl",
        )
        st = asyncio.run(runner.run())
        rows = [(r["decision_id"], r["reason"], r["features_json"]) for r in journal.decisions(st.run_id)]
        journal.close()
        outs.append(
            (
                (tmp_path / f"{way}.jsonl").read_text(),
                rows,
                st.status,
                st.crash,
                dict(st.events),
                st.warmup_events,
                st.input_bars,
                st.run_bars,
                st.max_feed_gap_s,
                st.market_start_ms,
                st.market_end_ms,
                st.prices,
                dict(st.candidates),
                dict(st.allowed),
                dict(st.blocked),
                dict(st.errors),
                len(st.latencies_ms),
            )
        )
    assert outs[0][0] and outs[0][4]["Kline"] + outs[0][5] > 10_000  # several lists of 4,096 events
    assert outs[0] == outs[1]
